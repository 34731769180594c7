# GPT-2-small class model on all of PubMed, for GPU nodes:
#   python data/pubmed/prepare.py                                   # full baseline, BPE of 32,768 tokens
#   torchrun --standalone --nproc_per_node=8 train.py config/train_pubmed.py
# The CPU speedrun recipe (config/train_pubmed_cpu.py, bench/speedrun.py) at 12 layers x 768, 1024-token
# context: rotary, RMSNorm, ReLU^2, untied head, zero-init projections, Muon + AdamW, warmup-stable-decay.
# No QK-norm and no logit softcap, so that the model exports as a standard architecture (Arcee, a
# Llama with a ReLU^2 MLP) that transformers, lm-evaluation-harness and vLLM load; their cost at equal
# training time was measured on the CPU recipe (docs/open-models.md, export).
# Learning rates are not tuned at this scale (the CPU model's AdamW lr of 1e-2 is for a 128-wide model).
#
# Expected speed. The model has N = 110.1M non-embedding parameters (135.3M in all) and costs
# F = 6N + 12 * n_layer * n_embd * block_size = 0.774 GFLOP per token, so
#     tokens/s          = MFU * peak FLOP/s per GPU * n_gpus / 0.774e9
#     seconds per step  = 524,288 * 0.774e9 / (MFU * peak * n_gpus) = 4.06e14 / (MFU * peak * n_gpus)
# e.g. at MFU 40%: one A100 (312 TFLOP/s bf16) 161k tokens/s, 3.3 s/step; 8 x A100 0.41 s/step, 10,000
# steps (5.2B tokens) in 68 minutes; 8 x H100 SXM (989 TFLOP/s) 4.1M tokens/s, 0.13 s/step, 21 minutes.
# The MFU each run achieves is printed every log_interval and recorded in out_dir/metrics.jsonl.
out_dir = 'out-pubmed'
dtype = 'auto'  # bf16 where supported, else fp16 with a gradient scaler
compile = True

n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
dropout = 0.0
bias = False
pos = 'rotary'
norm = 'rmsnorm'
mlp = 'relu2'
qk_norm = False  # exports as ArceeForCausalLM: ReLU² with QK-norm or a logit softcap has no standard
tie_embeddings = False
logit_softcap = 0.0  # architecture that transformers and vLLM load (docs/open-models.md: export)
zero_init_proj = True

# 16 windows x 1024 tokens x 32 micro-steps = 524,288 tokens per step, on any number of GPUs dividing 32
# (8 GPUs: 4 micro-steps each). Lower batch_size and raise the accumulation if memory runs out.
batch_size = 16
gradient_accumulation_steps = 32

optimizer = 'muon'
learning_rate = 1.5e-3  # AdamW: embeddings, head, gains
muon_lr = 0.02
muon_momentum = 0.95
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
schedule = 'wsd'
cooldown_frac = 0.3
warmup_iters = 200
min_lr = 1.5e-4
max_iters = 10000  # 5.2B tokens, about one epoch of PubMed's English abstracts

eval_interval = 250
eval_iters = 100  # 1,600 fixed val windows, 1.6M tokens
log_interval = 10
save_latest = True
ckpt_every_tokens = 1_000_000_000  # keep a snapshot every 1B tokens
