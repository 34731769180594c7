"""
Peak memory per process and tokens/s of DDP vs FSDP, each with and without activation checkpointing,
for a model that is large for a CPU (12 x 768, GPT-2 small's shape), 2 processes under torchrun (gloo).

    python bench/bench_fsdp.py --data_dir=data/pubmed          # ~5 minutes on 2 cores
    python bench/bench_fsdp.py --data_dir=... --block_size=256 --steps=8

Each setting is train.py itself (fp32, compile off, no checkpoints, one thread per process), run one
after the other in this one run, with glibc's mmap threshold fixed (see train()). Memory: rank 0's peak resident set
(train.py's peak_memory_mb), which
on CPU includes the Python and torch runtime (measured here as a 1-layer model's) and, under FSDP, the
model built whole before it is sharded. Beside it, plan.py's estimate for the same shapes in fp32 (the
model state, working weights and activations, without the runtime). tokens/s: the median step after
the first two.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
from types import SimpleNamespace

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
import plan
from configurator import configure
from dataloader import load_meta
from model import GPTConfig
from run import figure

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'data_dir': 'data/pubmed',          # a prepared data folder (data/pubmed/prepare.py)
    'n_layer': 12,                     # the model benchmarked: blocks
    'n_head': 12,                      # ... heads
    'n_embd': 768,                     # ... width
    'block_size': 128,                 # ... training window
    'batch_size': 4,                    # windows per process per step
    'steps': 6,                        # training steps per setting
}
# yapf: enable
SETTINGS = [('ddp', False), ('ddp', True), ('fsdp', False), ('fsdp', True)]


def train(o, tmp, parallel, checkpointing, layers):
    out = os.path.join(tmp, f'{parallel}-{checkpointing}-{layers}')
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
        f'--data_dir={o.data_dir}', f'--out_dir={out}', f'--n_layer={layers}', f'--n_head={o.n_head}',
        f'--n_embd={o.n_embd}', f'--block_size={o.block_size}', f'--batch_size={o.batch_size}',
        '--gradient_accumulation_steps=2', f'--max_iters={o.steps}', '--eval_interval=0', '--eval_iters=1',
        '--save_latest=False', '--save_best=False', '--compile=False', '--warmup_iters=0', '--peak_flops=1e12',
        f'--parallel={parallel}', f'--activation_checkpointing={checkpointing}'
    ]
    # glibc's malloc keeps large freed blocks for reuse once its mmap threshold has adapted to them, so the resident
    # set keeps FSDP's freed gathered weights and counts them as live: a fixed threshold returns them to the system
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MALLOC_MMAP_THRESHOLD_': '131072'}
    r = subprocess.run(cmd, cwd=_ROOT, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f'error: {parallel} (activation_checkpointing={checkpointing}) failed:\n{r.stderr[-3000:]}')
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        logs = [rec for rec in map(json.loads, f) if rec['kind'] == 'train']
    return logs[-1]['peak_memory_mb'], statistics.median(rec['tokens_per_s'] for rec in logs[2:])


def main(o):
    meta = load_meta(o.data_dir)
    config = GPTConfig(n_layer=o.n_layer, n_head=o.n_head, n_embd=o.n_embd, block_size=o.block_size,
                       vocab_size=64 * -(-meta['vocab_size'] // 64))
    estimates = plan.estimate(config, o.batch_size, world=2, bf16=False)
    with tempfile.TemporaryDirectory() as tmp:
        runtime, _ = train(o, tmp, 'ddp', False, 1)
        figure('fsdp_bench_runtime_memory_1_layer', round(runtime), 'MB')
        measured = {s: train(o, tmp, *s, o.n_layer) for s in SETTINGS}
    ddp_memory, ddp_speed = measured['ddp', False]
    for (parallel, checkpointing), (memory, speed) in measured.items():
        tag = f"{parallel}{'_ac' if checkpointing else ''}"
        figure(f'fsdp_bench_peak_memory_{tag}', round(memory), 'MB per process', baseline=round(ddp_memory),
               ratio=round(memory / ddp_memory,
                           3), plan_estimate=round(estimates[parallel, checkpointing]['total'] / 2**20),
               params=plan.parameter_counts(config)[0], processes=2)
        figure(f'fsdp_bench_tokens_per_s_{tag}', round(speed), 'tokens/s', baseline=round(ddp_speed),
               ratio=round(speed / ddp_speed, 3))


if __name__ == '__main__':
    main(SimpleNamespace(**configure(OPTIONS)))
