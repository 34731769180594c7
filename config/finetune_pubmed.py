# Continued pretraining of an open model on PubMed (domain-adaptive pretraining, as BioMedLM, Meditron
# and PMC-LLaMA did): a Llama-family model (Llama 3.x, SmolLM2, TinyLlama), Qwen2/Qwen3, Arcee or GPT-2,
# from a local Hugging Face folder, on PubMed tokenized with the model's own tokenizer:
#   huggingface-cli download HuggingFaceTB/SmolLM2-135M --local-dir models/smollm2
#   python data/pubmed/prepare.py --tokenizer=models/smollm2 --out_dir=data/pubmed-smollm2
#   python data/text/prepare.py --input=DIR --tokenizer=models/smollm2 --out_dir=data/general-smollm2
#   python train.py config/finetune_pubmed.py --init_from=models/smollm2
#   torchrun --standalone --nproc_per_node=8 train.py config/finetune_pubmed.py --init_from=models/smollm2
# (general text: your .jsonl/.parquet/.txt files, or --hf_dataset=HuggingFaceFW/fineweb-edu --max_tokens=N streamed;
# --data_mix= --data_dir=FOLDER trains on PubMed alone)
# The model keeps its architecture, weights and context length; what changes from pretraining is the
# optimisation: a learning rate ~10x below the original peak (a pretrained model forgets what it knew
# under a large one), a short warmup (its optimizer state starts empty), cosine decay to a tenth.
# The lr was measured on the real SmolLM2-135M-Instruct (dev/LOG.md, 2026-12-02): of 1.5e-5, 5e-5, 1.5e-4 and
# 5e-4, 1.5e-4 gave the lowest held-out bpb after 40 steps with PubMedQA not falling. For models of 1B and more,
# pretrained at lower peaks, start lower (config/finetune_1b_fsdp.py).
# On a CPU with avx512_bf16 or AMX, --dtype=bfloat16 trains at 2.2-3.3x the tokens/s of float32
# (bench/bench_continue.py).
# AdamW: Muon was measured for training from scratch only (dev/LOG.md), not for a pretrained model.
out_dir = 'out-finetune'
# 5% general text replayed: at lr 1e-3, where 40 steps on PubMed alone raised SmolLM2's general-text bpb 3.8%, 5% kept
# it 2.1% below the base for 0.0008 of the 0.0695 bpb PubMed gained; 25% gave up 11x that (dev/LOG.md, 2026-12-06)
data_mix = 'data/pubmed-smollm2:0.95,data/general-smollm2:0.05'
block_size = 0  # 0 = the model's own context (max_position_embeddings); set lower to save memory
dropout = 0.0

# 8 windows x 16 micro-steps x the context (2,048: 262,144 tokens/step for SmolLM2 at block_size=2048)
batch_size = 8
gradient_accumulation_steps = 16

optimizer = 'adamw'
learning_rate = 1.5e-4
min_lr = 1.5e-5
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
schedule = 'cosine'
warmup_iters = 100
max_iters = 5000

eval_interval = 250
eval_iters = 50
log_interval = 10
dtype = 'auto'  # bf16 on GPUs that have it
compile = True
