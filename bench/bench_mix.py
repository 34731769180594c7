"""
A data mixture costs no speed: train.py on one source (--data_dir) and on a two-source mixture of the same
tokens (--data_mix, 3:1) side by side, in alternating rounds; tokens/s of each, the median of its steady steps.

    python bench/bench_mix.py                   # ~2 minutes on 2 cores (config/train_pubmed_cpu.py's model)
    python bench/bench_mix.py --steps=40 --rounds=3

Both read the same model, batch and windows per step; only where each window comes from differs (the mixture's
loader picks each window's source by smooth weighted round-robin and reads from two memory-mapped files).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
from configurator import Option, at_least, configure
from dataloader import write_meta
from run import figure
from tokenizer import EOT

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'config': 'config/train_pubmed_cpu.py',  # the recipe whose steps are timed
    'steps': Option(30, at_least(4)),        # training steps per run (the first quarter is warm-up, not counted)
    'rounds': Option(2, at_least(1)),        # alternating rounds of (one source, mixture)
    'tokens': Option(4_000_000, at_least(100_000)),  # tokens in each synthetic source's train.bin
}
# yapf: enable


def synthetic_folder(path, n_tokens, seed):
    """A prepared data folder of random tokens of an 8k vocabulary (the CPU recipe's): what training reads is the same
    whatever the text."""
    rng = np.random.default_rng(seed)
    spec = {
        'name': 'bench', 'pattern': r'\S+',
        'tokens': [bytes([b]) for b in range(256)] + [f'<{i}>'.encode() for i in range(8191 - 256)],
        'special_tokens': {EOT: 8191}
    }
    os.makedirs(path, exist_ok=True)
    for split, n in (('train', n_tokens), ('val', 50_000)):
        rng.integers(0, 8191, n, dtype=np.uint16).tofile(os.path.join(path, f'{split}.bin'))
    write_meta(path, spec, train_tokens=n_tokens, val_tokens=50_000)
    return path


def tokens_per_s(o, out, data_args):
    """The median tokens/s of a run's steps after its first quarter."""
    r = subprocess.run([
        sys.executable, 'train.py', o['config'], *data_args, f'--out_dir={out}', '--overwrite=True',
        f"--max_iters={o['steps']}", '--eval_interval=0', '--eval_iters=1', '--log_interval=1', '--save_latest=False',
        '--save_best=False'
    ], cwd=_ROOT, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f'error: train.py {" ".join(data_args)} failed:\n{r.stderr[-3000:]}')
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        steps = [rec['tokens_per_s'] for rec in map(json.loads, f) if rec['kind'] == 'train']
    return statistics.median(steps[len(steps) // 4:])


def main():
    o = configure(OPTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = (synthetic_folder(os.path.join(tmp, name), o['tokens'], seed) for name, seed in (('a', 0), ('b', 1)))
        runs = {'one_source': [f'--data_dir={a}'], 'mixture': [f'--data_mix={a}:0.75,{b}:0.25']}
        rates = {name: [] for name in runs}
        for _ in range(o['rounds']):  # alternating: both see the same machine
            for name, args in runs.items():
                rates[name].append(tokens_per_s(o, os.path.join(tmp, name), args))
    one, mix = max(rates['one_source']), max(rates['mixture'])  # the fastest round: others only slow a run down
    figure('mix_tokens_per_s_one_source', round(one), 'tokens/s', rounds=rates['one_source'], config=o['config'])
    figure('mix_tokens_per_s_two_sources', round(mix), 'tokens/s', baseline=round(one), ratio=round(mix / one, 3),
           rounds=rates['mixture'], weights='0.75/0.25')


if __name__ == '__main__':
    main()
