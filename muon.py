"""
Muon: MomentUm Orthogonalized by Newton-Schulz (Keller Jordan, 2024; github.com/KellerJordan/Muon,
used in the modded-nanogpt speedruns).

For a 2-D weight, SGD momentum is computed as usual, then the update is replaced by the nearest
semi-orthogonal matrix U V^T of its SVD U S V^T: every direction the gradient points to moves by the
same amount, so rare directions are not drowned out by the dominant ones. The orthogonalisation is
approximated by five iterations of a quintic Newton-Schulz polynomial, which runs in plain matmuls
(in bf16 on GPUs). Its coefficients are tuned for speed, not exactness: singular values land in a
band around 1 (roughly 0.7 to 1.2), which works as well as the exact U V^T in practice.

Only for hidden matrices: embeddings, the output head, norms and biases stay with AdamW (see
GPT.configure_optimizers). Under DDP the gradients are already all-reduced, so every rank computes
the same update. Under FSDP each rank holds rows of each matrix: the update is gathered whole (one
all-gather per matrix per step, as the published distributed Muon implementations do), orthogonalised
by every rank alike, and each keeps its own rows. Its state (one momentum buffer per matrix, sharded
like the matrix) goes through the standard state_dict.
"""
import torch
from torch.distributed.tensor import DTensor, distribute_tensor


@torch.no_grad()
def orthogonalize(G, steps=5, eps=1e-7):
    """Approximately U V^T for G = U S V^T, by Newton-Schulz iteration (quintic, Muon's coefficients)."""
    assert G.ndim == 2
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    tall = X.size(0) > X.size(1)
    if tall:  # iterate on the smaller Gram matrix
        X = X.T
    X = X / (X.norm() + eps)  # Frobenius norm >= spectral norm: all singular values in [0, 1]
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if tall else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, orthogonalised, for 2-D parameters.

    lr is the size of the update in spectral norm terms (scaled by sqrt(rows / cols) for tall
    matrices); weight_decay is decoupled, as in AdamW (p *= 1 - lr * weight_decay).
    """

    def __init__(self, params, lr=0.02, momentum=0.95, weight_decay=0.0, nesterov=True, ns_steps=5):
        params = list(params)
        if any(p.ndim != 2 for p in params):
            raise ValueError('Muon only handles 2-D parameters: give embeddings, norms and biases to AdamW')
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, ns_steps=ns_steps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group['lr'], group['momentum']
            for p in group['params']:
                if p.grad is None:
                    continue
                state = self.state[p]
                if 'momentum_buffer' not in state:
                    state['momentum_buffer'] = torch.zeros_like(p.grad)
                buf = state['momentum_buffer']
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group['nesterov'] else buf
                if isinstance(update,
                              DTensor):  # FSDP: gather the whole matrix, orthogonalise it, keep this rank's rows
                    whole = orthogonalize(update.full_tensor(), group['ns_steps'])
                    update = distribute_tensor(whole, update.device_mesh, update.placements, src_data_rank=None)
                else:
                    update = orthogonalize(update, group['ns_steps'])
                p.mul_(1 - lr * group['weight_decay'])
                p.add_(update, alpha=-lr * max(1.0, p.size(0) / p.size(1))**0.5)
        return loss
