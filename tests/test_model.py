import math

import pytest
import torch

from torch.nn import functional as F

from checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
from conftest import fixed_steps
from loss import chunked_cross_entropy
import model as model_module
from model import GPT, GPTConfig, causal_attention

V, T, C, L = 64, 16, 32, 2
SWITCHES = {
    'gpt2': {},
    'no_bias': dict(bias=False),
    'dropout': dict(dropout=0.1),
    'rotary': dict(pos='rotary'),
    'rmsnorm': dict(norm='rmsnorm'),
    'swiglu': dict(mlp='swiglu'),
    'relu2': dict(mlp='relu2'),
    'qk_norm': dict(qk_norm=True),
    'untied': dict(tie_embeddings=False),
    'softcap': dict(logit_softcap=2.0),
    'zero_init_proj': dict(zero_init_proj=True),
    'modern': dict(pos='rotary', norm='rmsnorm', mlp='relu2', qk_norm=True, tie_embeddings=False, bias=False,
                   logit_softcap=15.0, zero_init_proj=True),
}

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny models


def tiny(**switches):
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=L, n_head=2, n_embd=C, **switches))


def fixed_batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (4, T), generator=g)
    return x, torch.randint(0, V, (4, T), generator=g)


def train_steps(model, steps, lr=3e-3):
    return fixed_steps(model, [fixed_batch()], steps, lr)


@pytest.mark.parametrize('name', SWITCHES)
def test_every_switch_starts_at_ln_vocab_and_trains(name):
    model = tiny(**SWITCHES[name])
    losses = train_steps(model, 25)
    assert losses[0] == pytest.approx(math.log(V), abs=0.05)
    assert losses[-1] < losses[0] - 0.5


def test_switches_change_the_architecture():
    names = {k: {n for n, _ in tiny(**s).named_parameters()} for k, s in SWITCHES.items()}
    assert 'transformer.wpe.weight' in names['gpt2'] and 'transformer.wpe.weight' not in names['rotary']
    assert 'transformer.h.0.attn.q_norm.weight' in names['qk_norm'] - names['gpt2']
    assert not any(n.endswith('.bias') for n in names['no_bias'])
    assert not any(n.endswith('ln_1.bias') for n in names['rmsnorm'])  # RMSNorm has no bias
    assert tiny(mlp='swiglu').transformer.h[0].mlp.c_fc.weight.shape == (2 * 128, C)  # 2 x 64*ceil(8C/3/64)
    untied = tiny(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    tied = tiny()
    assert tied.lm_head.weight is tied.transformer.wte.weight
    zero = tiny(zero_init_proj=True)
    assert all(torch.all(p == 0) for n, p in zero.named_parameters() if n.endswith('c_proj.weight'))
    x, _ = fixed_batch()
    big = tiny(logit_softcap=2.0)
    big.lm_head.weight.data *= 100
    logits = big(x, all_logits=True)
    assert logits.abs().max() <= 2.0 and logits.abs().max() > 1.9
    relu2, gelu = tiny(mlp='relu2'), tiny()
    assert not torch.allclose(relu2(x, all_logits=True), gelu(x, all_logits=True))


def test_tiny_model_overfits_a_fixed_batch():
    losses = train_steps(tiny(), 150, lr=1e-2)
    assert losses[-1] < 0.2


def test_parameter_count_and_flops_by_hand():
    model = tiny()
    per_layer = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C)
    n = V * C + L * per_layer + 2 * C  # tied head, learned positions excluded
    assert model.num_params() == n
    assert model.num_params(non_embedding=False) == n + T * C
    assert model.flops_per_token() == 6 * n + 12 * L * C * T
    assert model.flops_per_token(8) == 6 * n + 12 * L * C * 8
    untied = tiny(tie_embeddings=False, pos='rotary')
    assert untied.num_params() == n  # the untied token table is an embedding (a lookup); the head is counted
    assert untied.num_params(non_embedding=False) == n + V * C


def test_adamw_decays_matrices_only_and_muon_takes_hidden_matrices():
    model = tiny(tie_embeddings=False)
    adamw, = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    decay, no_decay = adamw.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert all(p.dim() == 2 for p in decay['params']) and all(p.dim() == 1 for p in no_decay['params'])
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))
    adamw, muon = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', optimizer='muon', muon_lr=0.05)
    hidden = {id(p) for n, p in model.named_parameters() if n.startswith('transformer.h.') and p.dim() == 2}
    assert {id(p) for p in muon.param_groups[0]['params']} == hidden
    assert {id(p) for g in adamw.param_groups for p in g['params']}.isdisjoint(hidden)
    assert muon.param_groups[0]['base_lr'] == 0.05 and adamw.param_groups[0]['base_lr'] == 1e-3


def test_checkpoint_of_a_compiled_model_loads(tmp_path):
    model = tiny(pos='rotary')
    compiled = torch.compile(model)  # state_dict keys gain '_orig_mod.'; no compilation happens until a call
    assert all(k.startswith('_orig_mod.') for k in compiled.state_dict())
    save_checkpoint(make_checkpoint(compiled, {}, []), tmp_path / 'c.pt')
    loaded = model_from_checkpoint(load_checkpoint(tmp_path / 'c.pt'))
    x, _ = fixed_batch()
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize('softcap', [0.0, 2.0])
def test_chunked_loss_equals_cross_entropy_of_the_full_logits_values_and_gradients(softcap):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(50, C, generator=g), torch.randn(V, C, generator=g)  # 50 rows: chunks of 16 and a last of 2
    targets = torch.randint(0, V, (50, ), generator=g)
    targets[[3, 20, 49]] = -1

    def plain(x, w, reduction):
        logits = x @ w.t()
        logits = softcap * torch.tanh(logits / softcap) if softcap else logits
        return F.cross_entropy(logits, targets, ignore_index=-1, reduction=reduction)

    for reduction in ('mean', 'sum'):
        grads = []
        for loss_of in (plain, lambda x, w, r: chunked_cross_entropy(x, w, targets, softcap, r, rows=16)):
            xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
            loss = loss_of(xg, wg, reduction)
            (2.5 * loss).backward()  # a scaled loss, as gradient accumulation makes it
            grads.append((loss.detach(), xg.grad, wg.grad))
        for ours, theirs in zip(grads[1], grads[0]):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        per_token = chunked_cross_entropy(x, w, targets, softcap, 'none', rows=16)
    torch.testing.assert_close(per_token, plain(x, w, 'none'), rtol=1e-5, atol=1e-6)
    assert per_token[[3, 20, 49]].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="'none' is for evaluation"):
        chunked_cross_entropy(x.requires_grad_(), w, targets, softcap, 'none')


def test_chunked_loss_under_bf16_autocast_matches_the_full_logits_loss():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(50, C, generator=g), torch.randn(V, C, generator=g)
    targets = torch.randint(0, V, (50, ), generator=g)
    grads = []
    for loss_of in (lambda x, w: F.cross_entropy(x @ w.t(), targets),
                    lambda x, w: chunked_cross_entropy(x, w, targets, rows=16)):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = loss_of(xg, wg)
        loss.backward()
        grads.append((loss.detach(), xg.grad, wg.grad))
    assert grads[1][1].dtype == grads[1][2].dtype == torch.float32  # the parameters' dtype, as autograd's
    for ours, theirs in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize('groups', [1, 3])
def test_cpu_training_attention_equals_sdpa_values_and_gradients(groups):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 6, 20, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 6 // groups, 20, 8, generator=g, dtype=torch.float64) for _ in range(2))
    grad_out = torch.randn(2, 6, 20, 8, generator=g, dtype=torch.float64)
    results = []
    for attend in (causal_attention,
                   lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=groups > 1)):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out = attend(*inputs)
        out.backward(grad_out)
        results.append([out.detach()] + [t.grad for t in inputs])
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    with torch.autocast('cpu', dtype=torch.bfloat16):  # SDPA's precision under autocast
        assert causal_attention(q.float(), k.float(), v.float()).dtype == torch.bfloat16


def test_model_trains_alike_through_either_attention(monkeypatch):
    """Compiled training on CPU at a short window takes causal_attention; the loss and gradients are SDPA's (which
    eager training, evaluation, sampling and long windows take): grouped-query heads, rotary positions, qk-norm.
    (aot_eager: traced as torch.compile traces, nothing compiled to C++.)"""
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(block_size=T, vocab_size=V, n_layer=L, n_head=4, n_kv_head=2, n_embd=C, pos='rotary', norm='rmsnorm',
                  mlp='swiglu', qk_norm=True, bias=False)).double()
    x, y = fixed_batch()
    taken = []
    monkeypatch.setattr(model_module, 'causal_attention', lambda *a: taken.append(1) or causal_attention(*a))
    results = []
    for run in (torch.compile(model, backend='aot_eager'), model):
        model.zero_grad()
        loss = run(x, y)
        loss.backward()
        results.append([loss.detach()] + [p.grad.clone() for p in model.parameters()])
    assert len(taken) == L  # the compiled run's layers, once each; eager took SDPA
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_compiled_model_gives_the_same_loss_and_gradients():
    model, x, y = tiny(**SWITCHES['modern']), *fixed_batch()
    losses, grads = [], []
    for m in (model, torch.compile(model)):
        model.zero_grad()
        loss = m(x, y)
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
