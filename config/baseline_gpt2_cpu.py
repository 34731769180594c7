# The speedrun's baseline (bench/speedrun.py): nanoGPT's GPT-2 recipe at the size of nanoGPT's README
# CPU run (4 layers, 128 wide, 4 heads, block 64, batch 12, no dropout). GPT-2 architecture (learned
# positions, LayerNorm, GELU, biases, tied head), AdamW (0.9, 0.95) with weight decay 0.1, linear
# warmup then cosine to lr/10, on data prepared with the GPT-2 tokenizer
# (python data/pubmed/prepare.py --tokenizer=gpt2). bench/speedrun.py sets data_dir, out_dir and the
# time budget (max_seconds; the cosine spans it).
n_layer = 4
n_head = 4
n_embd = 128
block_size = 64
batch_size = 12
gradient_accumulation_steps = 1
dropout = 0.0
bias = True
pos = 'learned'
norm = 'layernorm'
mlp = 'gelu'
qk_norm = False
tie_embeddings = True
logit_softcap = 0.0
zero_init_proj = False

optimizer = 'adamw'
learning_rate = 1e-3  # nanoGPT's rate for its small CPU models (config/train_shakespeare_char.py)
min_lr = 1e-4
beta1, beta2 = 0.9, 0.95
weight_decay = 0.1
grad_clip = 1.0
schedule = 'cosine'
warmup_iters = 100

device = 'cpu'
compile = False  # as nanoGPT's CPU command line
