"""
Memory per GPU of a training run, before it starts: weights, gradients, optimizer state and
activations under DDP and FSDP, with and without activation checkpointing, and whether it fits.

    python train.py config/finetune_1b_fsdp.py --init_from=models/llama-3.2-1b --plan=True
    # docs/scale.md's table: 124M to 8B on 8 x 80 GB GPUs (--gpus, --gpu_gb, --micro_batch, --block_size)
    python plan.py

Estimates from the shapes, in bytes per GPU (P parameters, W processes, t tokens per micro-batch):
  - state: fp32 weights 4P, fp32 gradients 4P, AdamW's two moments 8P (Muon: one 4-byte buffer per
    matrix parameter it owns). DDP holds all of it on every GPU; FSDP holds 1/W of it.
  - working weights: DDP under bf16 autocast keeps bf16 copies of the weights (2P). FSDP gathers one
    unit at a time: the root (embeddings, head) and two blocks (the one running and the next,
    prefetched) in bf16, and a block's gradients in bf16 and fp32 before they are reduce-scattered.
  - activations: what backward keeps of each block, per token (h = n_embd, kv = key/value width,
    m = MLP width): the residual stream twice (norm inputs, 2h) in its dtype, and 5h + 2kv + k m in
    the compute dtype (norm outputs, q, k, v, attention output and its copy, MLP; k = 2 for gelu and
    relu2, 4 for swiglu). Attention scores are not stored (SDPA's flash/efficient kernels). With
    activation checkpointing only each block's input is kept, plus one block's activations recomputed.
  - the head: the chunked loss keeps the gradient of its input (t h) and of the head (fp32, V h), and
    works on model.head_rows() x V logits at a time (three fp32 buffers).
Allocator fragmentation, CUDA context (~0.5-1 GB) and communication buffers come on top: "fits" leaves
10% of the GPU free. On CPU the same arithmetic with fp32 everywhere; bench/bench_fsdp.py measures it.
"""
import dataclasses
import os

import torch

from checkpoint import CheckpointError, latest_checkpoint, read_fields
from common import fail, first_line
from dataloader import load_meta, split_step
from loss import head_rows
from model import GPT, GPTConfig
from run_options import model_config

GB = 1e9
# published shapes (docs/scale.md's table)
SHAPES = {
    '124M (GPT-2)': dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50304),
    '350M (GPT-2 medium)': dict(n_layer=24, n_head=16, n_embd=1024, vocab_size=50304),
    '1B (Llama-3.2-1B)': dict(n_layer=16, n_head=32, n_kv_head=8, n_embd=2048, mlp_hidden=8192, vocab_size=128256),
    '3B (Llama-3.2-3B)': dict(n_layer=28, n_head=24, n_kv_head=8, n_embd=3072, mlp_hidden=8192, vocab_size=128256),
    '8B (Llama-3.1-8B)': dict(n_layer=32, n_head=32, n_kv_head=8, n_embd=4096, mlp_hidden=14336, vocab_size=128256,
                              tie_embeddings=False),
}
LLAMA = dict(pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False, rope_base=500000.0)


def parameter_counts(config):
    """(all parameters, of one block, of the blocks' matrices) of the model, from a one-block copy built on the meta
    device: no memory, and as fast for 10^6 layers as for 12 (the blocks are all alike)."""
    with torch.device('meta'):
        model = GPT(dataclasses.replace(config, n_layer=1))
    block = sum(p.numel() for p in model.transformer.h[0].parameters())
    matrices = sum(p.numel() for p in model.transformer.h[0].parameters() if p.dim() == 2)
    root = sum(p.numel() for p in model.parameters()) - block
    return root + config.n_layer * block, block, config.n_layer * matrices


def estimate(config, micro_batch, world, bf16=True, optimizer='adamw'):
    """{(parallel, activation_checkpointing): bytes per GPU} and the parts they add up from."""
    P, P_block, P_matrix = parameter_counts(config)
    P_root = P - config.n_layer * P_block
    c = config
    compute, residual = (2, 4) if bf16 else (4, 4)  # DDP: autocast keeps the residual stream in fp32
    t = micro_batch * c.block_size
    h, kv, m = c.n_embd, c.n_kv_head * c.head_dim, c.mlp_hidden
    k_mlp = 4 if c.mlp == 'swiglu' else 2
    optimizer_bytes = 8 * P if optimizer == 'adamw' else 8 * (P - P_matrix) + 4 * P_matrix
    state = 8 * P + optimizer_bytes
    head = t * h * compute + 4 * c.vocab_size * h + 3 * 4 * min(head_rows('cuda', c.vocab_size), t) * c.vocab_size
    plans = {}
    for parallel in ('ddp', 'fsdp'):
        if parallel == 'fsdp' and bf16:  # FSDP's policy: everything the blocks compute and keep is bf16
            residual = 2
        per_layer = t * (residual * 2 * h + compute * (5 * h + 2 * kv + k_mlp * m))
        if parallel == 'ddp':
            working = 2 * P if bf16 else 0
            sharded = state
        else:
            unit = 2 if bf16 else 4  # gathered weights, and gradients before the reduce-scatter
            working = unit * P_root + 2 * P_block * (unit + unit + (4 if bf16 else 0))
            sharded = state / world
        for checkpointing in (False, True):
            activations = (c.n_layer * t * residual * h + per_layer) if checkpointing else c.n_layer * per_layer
            plans[parallel, checkpointing] = dict(state=sharded, working=working, activations=activations, head=head,
                                                  total=sharded + working + activations + head)
    return plans


def print_run_plan(opts, world):
    """train.py --plan=True: the memory per GPU the run of `opts` would need, from the model's shape alone (no data,
    no weights read): the model train.py would build (run_options.model_config), on its training windows."""
    vocab = load_meta(opts.data_dir)['vocab_size'] if os.path.exists(os.path.join(opts.data_dir, 'meta.pkl')) else 50257
    try:
        resumed = read_fields(latest_checkpoint(opts.out_dir, opts.parallel)) if opts.init_from == 'resume' else None
        config = model_config(opts, vocab, resumed)
    except CheckpointError as e:
        fail(f'plan: no checkpoint to resume from in {opts.out_dir} ({first_line(e)})' if opts.init_from ==
             'resume' else f'plan: {e}')
    if opts.block_size and config.pos == 'rotary':  # activations are those of the training window
        config = dataclasses.replace(config, block_size=opts.block_size)
    try:
        micro_batch = split_step(opts.batch_size, opts.gradient_accumulation_steps, world)[1]
    except ValueError as e:
        fail(str(e), 2)
    half = opts.dtype != 'float32'  # 'auto' is bf16 on the GPUs planned for
    print(report(config, micro_batch, world, opts.plan_gpu_gb, half, opts.optimizer))


def fits(total, gpu_bytes):
    return total <= 0.9 * gpu_bytes


def report(config, micro_batch, world, gpu_gb, bf16=True, optimizer='adamw'):
    """The plan as lines of text: one per parallel x activation checkpointing."""
    P = parameter_counts(config)[0]
    size = f'{P / 1e9:.3g}B' if P >= 1e9 else f'{P / 1e6:.3g}M'
    lines = [
        f'memory plan: {size} parameters, {micro_batch} x {config.block_size} tokens per micro-batch, '
        f'{world} GPU(s) of {gpu_gb:g} GB, {"bf16" if bf16 else "fp32"}, {optimizer} (GB per GPU, estimates: plan.py)'
    ]
    for (parallel, checkpointing), p in estimate(config, micro_batch, world, bf16, optimizer).items():
        lines.append(f"  {parallel:4} {'activation_checkpointing' if checkpointing else '':24} "
                     f"state {p['state'] / GB:7.1f}  working weights {p['working'] / GB:6.1f}  activations "
                     f"{p['activations'] / GB:7.1f}  head {p['head'] / GB:5.1f}  total {p['total'] / GB:7.1f}  "
                     f"{'fits' if fits(p['total'], gpu_gb * GB) else 'does not fit'}")
    return '\n'.join(lines)


def table(micro_batch=8, block_size=2048, world=8, gpu_gb=80):
    """docs/scale.md's markdown table."""
    rows = ['| model | params | DDP | DDP + AC | FSDP | FSDP + AC |', '|---|---|---|---|---|---|']
    for name, shape in SHAPES.items():
        config = GPTConfig(block_size=block_size, **({} if 'GPT-2' in name else LLAMA), **shape)
        plans = estimate(config, micro_batch, world)
        cells = [
            f"{p['total'] / GB:.1f} GB{'' if fits(p['total'], gpu_gb * GB) else ' ✗'}"
            for p in (plans['ddp', False], plans['ddp', True], plans['fsdp', False], plans['fsdp', True])
        ]
        rows.append(f'| {name} | {parameter_counts(config)[0] / 1e9:.2f}B | ' + ' | '.join(cells) + ' |')
    return (f'GB per GPU, {world} x {gpu_gb:g} GB, micro-batch {micro_batch} x {block_size} tokens, bf16, AdamW '
            f'(✗: does not fit in 90% of the GPU)\n\n' + '\n'.join(rows))


if __name__ == '__main__':
    from configurator import Option, configure, positive
    # yapf: disable (a table: its comments aligned)
    OPTIONS = {  # python plan.py: docs/scale.md's table for
        'micro_batch': Option(8, positive),     # windows per GPU per micro-step
        'block_size': Option(2048, positive),   # tokens per window
        'gpus': Option(8, positive),            # processes the model is spread over
        'gpu_gb': Option(80.0, positive),       # memory of each
    }
    # yapf: enable
    o = configure(OPTIONS)
    print(table(o['micro_batch'], o['block_size'], o['gpus'], o['gpu_gb']))
