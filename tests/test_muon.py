import copy

import pytest
import torch

from conftest import fixed_steps
from model import GPT, GPTConfig
from muon import Muon, orthogonalize

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny models


@pytest.mark.parametrize('shape', [(128, 64), (64, 128), (384, 128)])
def test_orthogonalize_brings_singular_values_near_one(shape):
    g = torch.Generator().manual_seed(0)
    G = torch.randn(*shape, generator=g) * torch.linspace(0.2, 5.0, shape[1])  # columns of very different scale
    before = torch.linalg.svdvals(G)
    after = torch.linalg.svdvals(orthogonalize(G))
    assert before.max() / before.min() > 10
    assert after.min() > 0.6 and after.max() < 1.25  # Muon's quintic: a band around 1, not exactly 1


def test_first_step_moves_each_matrix_by_an_orthogonal_update():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(48, 32))
    w0 = w.detach().clone()
    opt = Muon([w], lr=0.1, momentum=0.9, nesterov=False)
    w.grad = torch.randn(48, 32)
    opt.step()
    update = (w0 - w.detach()) / (0.1 * (48 / 32)**0.5)  # lr scaled by sqrt(rows / cols) for tall matrices
    s = torch.linalg.svdvals(update)
    assert s.min() > 0.6 and s.max() < 1.2
    # same directions as the gradient's SVD
    U, _, Vh = torch.linalg.svd(w.grad, full_matrices=False)
    assert torch.allclose(update, U @ Vh, atol=0.35)


def test_muon_training_lowers_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32, pos='rotary', norm='rmsnorm'))
    assert isinstance(model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), 'cpu', optimizer='muon')[1], Muon)
    x = torch.randint(0, 64, (4, 16))
    losses = fixed_steps(model, [(x, torch.roll(x, -1, dims=1))], 15, 3e-3, optimizer='muon', muon_lr=0.02)
    assert losses[-1] < losses[0] - 1.0


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(16, 8))
    opt = Muon([w], lr=0.05, weight_decay=0.1)
    grads = [torch.randn(16, 8) for _ in range(4)]
    for g in grads[:2]:
        w.grad = g.clone()
        opt.step()
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = Muon([w2], lr=0.05, weight_decay=0.1)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as torch.save + torch.load would
    for g in grads[2:]:
        w.grad, w2.grad = g.clone(), g.clone()
        opt.step()
        opt2.step()
    assert torch.equal(w, w2)


def test_rejects_non_matrices():
    with pytest.raises(ValueError, match='only handles 2-D'):
        Muon([torch.nn.Parameter(torch.zeros(4))])
