"""
Training throughput and MFU on CPU for config/train_pubmed_cpu.py: fp32, torch.compile off and on.

    python bench/bench_train.py                       # ~1-2 minutes
    python bench/bench_train.py --steps=50 --config=config/train_pubmed_cpu.py --vocab_size=8192

Times train.py's own optimizer step (train.train_step: forward, backward, grad clip, AdamW/Muon step)
on random tokens of the config's shape (token values do not change the cost). MFU = model FLOPs per token x
tokens/s / peak, where the peak is a large fp32 matmul measured in the same run, as train.py does.
Compile off and on (and the matmul peak) are timed in alternating rounds, step by step; the figures
use the fastest step and peak (other processes on a shared machine only ever slow them down) and
also give the median.
Prints one JSON line per figure, then the ops that take the time (torch.profiler, compile off).
On a machine other jobs keep busy, --threads=1 gives the per-core figure (step and peak on one thread):
two threads then wait on each other's descheduled halves and the step can take 10x longer.
"""
import os
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
import torch

import train
from run_options import MODEL_DEFAULTS
from common import measure_matmul_peak
from configurator import configure
from model import GPT, GPTConfig
from run import figure

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'config': 'config/train_pubmed_cpu.py',   # the recipe whose step is timed
    'vocab_size': 8192,                 # the data's vocabulary (config/train_pubmed_cpu.py expects a BPE of 8k)
    'steps': 20,                        # timed steps per setting (alternating rounds)
    'warmup': 3,                        # untimed steps first (compilation happens here)
    'peak_seconds': 2.0,                # how long to measure the matmul peak
    'profile': True,                    # print the top ops of one step
    'threads': 0,                       # torch threads (0 = torch's default: one per core)
}
# yapf: enable


def make_step(c, compiled, vocab_size):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=vocab_size, **{k: getattr(c, k) for k in MODEL_DEFAULTS}))
    optimizers = gpt.configure_optimizers(c.weight_decay, c.learning_rate, (c.beta1, c.beta2), 'cpu',
                                          optimizer=c.optimizer, muon_lr=c.muon_lr, muon_momentum=c.muon_momentum)
    model = torch.compile(gpt) if compiled else gpt
    scaler = torch.amp.GradScaler('cpu', enabled=False)  # fp32, as the CPU config trains
    shape = (c.batch_size, c.block_size)
    batches = [(torch.randint(0, vocab_size, shape), torch.randint(0, vocab_size, shape))
               for _ in range(c.gradient_accumulation_steps)]
    return gpt, lambda: train.train_step(model, optimizers, scaler, batches, nullcontext(), c.grad_clip)


def main(o):
    c = train.options([os.path.join(_ROOT, o.config)])
    if o.threads:
        torch.set_num_threads(o.threads)
    tokens_per_step = c.batch_size * c.block_size * c.gradient_accumulation_steps
    peak = measure_matmul_peak(torch.device('cpu'), torch.float32, seconds=o.peak_seconds)
    settings = {'compile_off': make_step(c, False, o.vocab_size), 'compile_on': make_step(c, True, o.vocab_size)}
    times = {tag: [] for tag in settings}
    for tag, (_, step) in settings.items():
        t0 = time.perf_counter()
        for _ in range(o.warmup):
            step()
        figure(f'train_cpu_warmup_{tag}', round(time.perf_counter() - t0, 1), 's', steps=o.warmup)
    for _ in range(o.steps):  # alternate, so the steps and the peak see the same machine
        for tag, (_, step) in settings.items():
            t0 = time.perf_counter()
            step()
            times[tag].append(time.perf_counter() - t0)
        peak = max(peak, measure_matmul_peak(torch.device('cpu'), torch.float32, seconds=0.2))
    figure('cpu_fp32_matmul_peak', round(peak / 1e9, 2), 'GFLOP/s', threads=torch.get_num_threads())
    for tag, (gpt, step) in settings.items():
        best, median = min(times[tag]), sorted(times[tag])[len(times[tag]) // 2]
        tokens_per_s = tokens_per_step / best
        flops = gpt.flops_per_token(c.block_size)
        off = tokens_per_step / min(times['compile_off'])
        base = {'baseline': round(off, 1), 'ratio': round(tokens_per_s / off, 3)} if tag == 'compile_on' else {}
        figure(f'train_cpu_tokens_per_s_{tag}', round(tokens_per_s, 1), 'tokens/s', **base,
               median=round(tokens_per_step / median, 1))
        figure(f'train_cpu_mfu_{tag}', round(flops * tokens_per_s / peak, 4), 'fraction', target=0.45,
               median=round(flops * tokens_per_step / median / peak, 4), flops_per_token=flops, params=gpt.num_params())
    if o.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            settings['compile_off'][1]()
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops)
        top = [[e.key, round(e.self_cpu_time_total / total, 3)] for e in ops[:8]]
        figure('train_cpu_top_ops_compile_off', top, 'share of step time')


if __name__ == '__main__':
    main(SimpleNamespace(**configure(OPTIONS)))
