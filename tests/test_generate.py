"""The KV cache: generation with it is token-for-token the plain full-recompute path, for every
architecture switch, also past block_size where the window slides."""
import pytest
import torch

from conftest import tiny_model
from model import KVCache, sample_next
from tokenizer import encoding_from_spec

ARCHS = {
    'gpt2': {},
    'gpt2-nobias-untied': dict(bias=False, tie_embeddings=False),
    'llama': dict(pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False),
    'qk_norm': dict(pos='rotary', norm='rmsnorm', mlp='swiglu', qk_norm=True, bias=False),
    'relu2-softcap': dict(pos='rotary', norm='rmsnorm', mlp='relu2', logit_softcap=15.0, tie_embeddings=False),
    'learned-qk_norm': dict(qk_norm=True),
}

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module', params=list(ARCHS))
def model(request, spec):
    return tiny_model(spec, **ARCHS[request.param])[0]


def prompt(spec, text='Aspirin reduces the'):
    return torch.tensor([encoding_from_spec(spec).encode_ordinary(text)])


def test_cached_logits_equal_full_forward_at_every_step(model, spec):
    idx = prompt(spec)
    cache = KVCache(model.config, 1, 'cpu')
    logits = model(idx, cache=cache)
    for step in range(model.config.block_size - idx.size(1)):
        full = model(idx)
        torch.testing.assert_close(logits[:, -1], full[:, -1], atol=1e-5, rtol=0)
        next_token = full[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat((idx, next_token), dim=1)
        logits = model(next_token, cache=cache)
    assert cache.pos == model.config.block_size


def test_greedy_with_cache_is_the_full_recompute_path_far_past_block_size(model, spec):
    block = model.config.block_size
    idx = prompt(spec)
    cached = model.generate(idx, 3 * block, temperature=0)
    plain = model.generate(idx, 3 * block, temperature=0, use_cache=False)
    assert cached.shape == (1, idx.size(1) + 3 * block)
    assert cached.tolist() == plain.tolist()
    assert len(set(cached[0, idx.size(1):].tolist())) > 10  # a varied continuation, not one token repeated


def test_sampling_with_cache_matches_plain_path_for_the_same_seed(model, spec):
    idx = prompt(spec).repeat(3, 1)
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(1)
        runs.append(model.generate(idx, 50, temperature=1.5, top_k=20, top_p=0.95, use_cache=use_cache, generator=g))
    assert runs[0].tolist() == runs[1].tolist()
    assert len({tuple(row) for row in runs[0].tolist()}) > 1  # the batch rows are sampled independently


def test_long_prompt_keeps_its_last_block_size_tokens(model, spec):
    block = model.config.block_size
    long = prompt(spec, 'The protein kinase phosphorylates the receptor in vitro. ' * 6)
    assert long.size(1) > block
    for use_cache in (True, False):
        out = model.generate(long, 40, temperature=0, use_cache=use_cache)[:, long.size(1):]
        cropped = model.generate(long[:, -block:], 40, temperature=0, use_cache=use_cache)[:, block:]
        assert out.tolist() == cropped.tolist()


def test_sample_next_top_k_top_p_and_greedy():
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0, -1.0]])
    assert sample_next(logits, temperature=0).tolist() == [[1]]
    g = torch.Generator().manual_seed(0)
    many = lambda **kw: {sample_next(logits, generator=g, **kw).item() for _ in range(300)}
    assert many(top_k=1) == {1}
    assert many(top_k=2) == {1, 2}
    assert many(top_p=0.5) == {1}  # p(1) = 0.64 already reaches 0.5
    assert many(top_p=0.8) == {1, 2}  # p(1) + p(2) = 0.88
    assert many() == {0, 1, 2, 3, 4}


@pytest.mark.slow
def test_bench_sample_prints_cache_speedup_and_ceiling_per_batch_size():
    import json
    import subprocess
    import sys
    from conftest import REPO
    done = subprocess.run([
        sys.executable,
        str(REPO / 'bench' / 'bench_sample.py'), '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=16',
        '--vocab_size=64', '--max_new_tokens=40', '--batch_sizes=1,2', '--repeats=1', '--threads=1'
    ], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    figures = {f['name']: f for f in map(json.loads, done.stdout.splitlines())}
    for b in (1, 2):
        plain = figures[f'sample_tokens_per_s_batch{b}_no_cache']['value']
        for kind in ('kv_cache', 'one_position_ceiling'):
            f = figures[f'sample_tokens_per_s_batch{b}_{kind}']
            assert f['baseline'] == plain and f['ratio'] == pytest.approx(f['value'] / plain, abs=0.01)
    assert '1x32, block 16, vocab 64' in figures['sample_tokens_per_s_batch1_kv_cache']['note']
    assert len(figures) == 6
