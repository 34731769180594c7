# A small GPT trained on 2 CPU cores in 5 minutes of training time: val loss falls steadily from the
# first evaluation. The starting point of the project's recipe (see the speedrun, bench/speedrun.py):
# rotary positions, RMSNorm, ReLU^2 MLP, untied head, zero-initialised output projections, Muon for
# the blocks' matrices with AdamW for embeddings/head/gains, warmup-stable-decay. No logit softcap: on
# CPU its tanh over every logit cost more time than it saved (dev/LOG.md, speedrun ablation). No
# QK-norm: with ReLU^2 it has no standard Hugging Face architecture, without it the model exports as
# ArceeForCausalLM (docs/open-models.md, export: the cost measured at equal time).
# Expects data/pubmed prepared with a small BPE (the head dominates the cost of a model this size):
#   python data/pubmed/prepare.py --vocab_size=8192        (or --input=PATH for local XML)
#   python train.py config/train_pubmed_cpu.py
out_dir = 'out-pubmed-cpu'
device = 'cpu'
dtype = 'float32'
compile = False  # its ~20 s compile counts in a time budget: loses at 90 s, about even at 300 s (dev/LOG.md)

# model: 4 layers x 128 wide, 128-token context (~1.3M parameters with the 8k head)
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
dropout = 0.0
bias = False
pos = 'rotary'
norm = 'rmsnorm'
mlp = 'relu2'
qk_norm = False  # exports as ArceeForCausalLM (ReLU² + QK-norm has no standard architecture); cost: docs/open-models.md
tie_embeddings = False
logit_softcap = 0.0
zero_init_proj = True

# 16 windows x 128 tokens = 2,048 tokens per step
batch_size = 16
gradient_accumulation_steps = 1

# optimizer and schedule: the time budget drives the schedule (its last 30% is the cooldown)
optimizer = 'muon'
learning_rate = 1e-2  # AdamW: embeddings, head, gains (3e-3: 0.08 bpb worse after 2 min)
muon_lr = 0.02
muon_momentum = 0.95
weight_decay = 0.0
grad_clip = 1.0
schedule = 'wsd'
cooldown_frac = 0.3
warmup_iters = 10  # in steps: a few seconds on CPU
min_lr = 1e-3
max_seconds = 300.0
max_iters = 1_000_000

# evaluate every 30 s of training on 40 x 16 fixed val windows (~82k tokens: all of a small val.bin)
eval_interval = 0
eval_interval_seconds = 30.0
eval_iters = 40
log_interval = 50
