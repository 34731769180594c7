"""
Generation speed with and without the KV cache, in the same run: tokens/s for max_new_tokens new
tokens at batch 1 and batch 8, on the model of config/train_pubmed_cpu.py (random weights: speed does
not depend on them). 512 new tokens is past that model's 128-token context, so the sliding window
(a re-read of half a context every half context) is part of what is measured.

    python bench/bench_sample.py
    python bench/bench_sample.py --n_layer=6 --n_head=6 --n_embd=384 --block_size=256 --batch_sizes=1

Prints one JSON line per figure; the cached line carries the uncached one as baseline and the speedup
as ratio. Each figure is the best of `repeats` interleaved runs (the others on a busy machine only slow it).
A third line is the ceiling of any cache: the same number of forward passes over a single position
(no attention to past positions at all), the least work one decoded token can cost in this model.py.
"""
import os
import sys
import time
from types import SimpleNamespace

import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
import train
from run_options import MODEL_DEFAULTS
from configurator import configure
from model import GPT, GPTConfig
from run import figure

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'config': 'config/train_pubmed_cpu.py',   # model arguments are read from this training config
    'vocab_size': 8192,                       # the vocabulary that config expects (prepare.py --vocab_size=8192)
    'n_layer': 0,                             # > 0: override the config's model size
    'n_head': 0,                              # ... its heads
    'n_embd': 0,                              # ... its width
    'block_size': 0,                          # ... its context
    'prompt_tokens': 16,                      # random prompt tokens before generating
    'max_new_tokens': 512,                    # tokens generated per sample
    'batch_sizes': '1,8',                     # samples generated together, comma-separated settings
    'repeats': 3,                             # timed runs per setting (the fastest counts)
    'threads': 0,                             # torch threads; 0 = torch's default
    'seed': 1337,                             # the random model and prompts
}
# yapf: enable


def seconds_to_generate(model, prompt, use_cache, max_new_tokens):
    t0 = time.perf_counter()
    for _ in model.generate_stream(prompt, max_new_tokens, temperature=0, use_cache=use_cache):
        pass
    return time.perf_counter() - t0


def seconds_for_one_position_forwards(model, prompt, max_new_tokens):
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(max_new_tokens):
            model(prompt[:, -1:])
    return time.perf_counter() - t0


def main():
    o = SimpleNamespace(**configure(OPTIONS))
    if o.threads:
        torch.set_num_threads(o.threads)
    torch.manual_seed(o.seed)
    path = o.config if os.path.isfile(o.config) else os.path.join(_ROOT, o.config)
    training = train.options([path])  # train.py's options as that config sets them
    sizes = {
        k: v
        for k, v in (('n_layer', o.n_layer), ('n_head', o.n_head), ('n_embd', o.n_embd), ('block_size', o.block_size))
        if v
    }
    args = {**{k: getattr(training, k) for k in MODEL_DEFAULTS}, **sizes, 'vocab_size': o.vocab_size, 'dropout': 0.0}
    model = GPT(GPTConfig(**args)).eval()
    c = model.config
    shape = (f'{c.n_layer}x{c.n_embd}, block {c.block_size}, vocab {c.vocab_size}, '
             f'{model.num_params() / 1e6:.2f}M params')
    for batch in [int(b) for b in o.batch_sizes.split(',')]:
        prompt = torch.randint(o.vocab_size, (batch, o.prompt_tokens))
        seconds_to_generate(model, prompt[:, :4], True, o.max_new_tokens)  # warm-up
        best = {True: float('inf'), False: float('inf'), 'floor': float('inf')}
        for _ in range(o.repeats):
            for use_cache in (True, False):
                best[use_cache] = min(best[use_cache], seconds_to_generate(model, prompt, use_cache, o.max_new_tokens))
            best['floor'] = min(best['floor'], seconds_for_one_position_forwards(model, prompt, o.max_new_tokens))
        rate = {k: batch * o.max_new_tokens / s for k, s in best.items()}
        note = (f'{o.max_new_tokens} new tokens after {o.prompt_tokens}, greedy, {torch.get_num_threads()} threads; '
                f'{shape}')
        plain = round(rate[False], 1)
        figure(f'sample_tokens_per_s_batch{batch}_no_cache', plain, 'tokens/s', note=note)
        figure(f'sample_tokens_per_s_batch{batch}_kv_cache', round(rate[True], 1), 'tokens/s', baseline=plain,
               ratio=round(rate[True] / rate[False], 2), note=note)
        figure(f'sample_tokens_per_s_batch{batch}_one_position_ceiling', round(rate['floor'], 1), 'tokens/s',
               baseline=plain, ratio=round(rate['floor'] / rate[False], 2),
               note='a forward of one position per token, no sampling: the most any KV cache could reach; ' + note)


if __name__ == '__main__':
    main()
