# Continued pretraining of a 1B-class open model (Llama-3.2-1B, TinyLlama, Qwen3-1.7B...) on PubMed with
# FSDP2 on 8 x 80 GB GPUs (one node, or more with scripts/slurm.sh / scripts/pbs.sh):
#   huggingface-cli download meta-llama/Llama-3.2-1B --local-dir models/llama-3.2-1b
#   python data/pubmed/prepare.py --tokenizer=models/llama-3.2-1b --out_dir=data/pubmed-llama
#   python train.py config/finetune_1b_fsdp.py --init_from=models/llama-3.2-1b --plan=True   # memory per GPU
#   torchrun --standalone --nproc_per_node=8 train.py config/finetune_1b_fsdp.py \
#       --init_from=models/llama-3.2-1b --data_dir=data/pubmed-llama
# The optimisation is config/finetune_pubmed.py's (a learning rate ~10x below pretraining's, short warmup,
# cosine to a tenth, AdamW). FSDP shards weights, gradients and AdamW's state over the 8 GPUs: plan.py puts
# this run at ~32 GB per GPU (DDP: ~52 GB). Activation checkpointing brings it to ~9 GB at ~1/3 more compute:
# turn it on for 24-40 GB GPUs or longer contexts.
out_dir = 'out-finetune-1b'
parallel = 'fsdp'
activation_checkpointing = False
block_size = 2048  # the model's own context is 131,072 for Llama-3.2-1B: 2,048 covers an abstract
dropout = 0.0

# 8 windows x 32 micro-batches x 2,048 tokens = 524,288 tokens a step (4 micro-steps on each of 8 GPUs)
batch_size = 8
gradient_accumulation_steps = 32

optimizer = 'adamw'  # weight decay 0.1, betas (0.9, 0.95), clipping at 1.0, cosine: train.py's defaults
learning_rate = 3e-5
min_lr = 3e-6
warmup_iters = 100
max_iters = 4000  # ~2.1B tokens: a few epochs of PubMed's abstracts

eval_interval = 200  # also the checkpoint interval: what a requeued job loses at most
eval_iters = 25
log_interval = 10
dtype = 'auto'  # bf16 on GPUs that have it (FSDP: bf16 compute, fp32 gradient reduction)
compile = True
