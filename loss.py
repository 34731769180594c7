"""
The training loss: cross-entropy of the head's logits (model.py's forward with targets), computed without
ever storing them.

For a small model the head dominates a step, and its (tokens x vocab) logits are too big for the cache:
every elementwise pass over them (softcap, log-softmax and their backward) runs at memory speed, and
storing them for backward costs tokens x vocab x 4 bytes (2,048 x 8,192 = 64 MB for the CPU config; 16k x
32k = 2 GB per micro-batch for the GPU one). Here they are computed a few hundred rows at a time, with their
gradients in the same pass, and never stored whole: the loss and gradients are F.cross_entropy's (tested),
1.47x faster per CPU step (256-row chunks, the CPU config), and the memory is the gradient of x (tokens x n_embd)
instead of the logits. The price: the head's matmuls run in chunks (head_rows), and the gradient is computed even
if backward never runs, which is why forward without targets (sampling) and evaluation under no_grad take the
plain per-row path.
"""
import torch


def head_rows(device_type, vocab_size):
    """Rows of logits chunked_cross_entropy computes at once. Each chunk adds its (vocab x n_embd) gradient of the
    head to the total: on CPU, at SmolLM2's shapes, that addition costs as much as a 256-row chunk's logits, and
    1,024 rows a chunk are 1.1x faster a step (1 x 2,048 and 4 x 256, bf16; dev/LOG.md 2026-12-07). On a GPU few
    large kernels, but at most 2^27 logits (0.5 GB in fp32 per buffer, of three) so a 128k vocabulary does not cost
    gigabytes."""
    return 1024 if device_type == 'cpu' else max(256, min(8192, 2**27 // vocab_size))


def chunked_cross_entropy(x, weight, targets, softcap=0.0, reduction='mean', rows=256):
    """F.cross_entropy(logits, targets, ignore_index=-1, reduction=reduction) of the logits x @ weight.T
    (x: (N, C), weight: (vocab, C)), capped to softcap * tanh(logits / softcap) if softcap, computed
    `rows` rows at a time. The gradients are computed in the same pass; reduction='none' is for evaluation."""
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        losses = head_losses(x, weight, targets, softcap, rows)
        return {'none': losses, 'sum': losses.sum(), 'mean': losses.sum() / (targets != -1).sum()}[reduction]
    if reduction not in ('mean', 'sum'):
        raise ValueError(f"reduction={reduction!r} with gradients: expected 'mean' or 'sum' ('none' is for evaluation)")
    loss = SummedHeadLoss.apply(x, weight, targets, softcap, rows)
    return loss / (targets != -1).sum() if reduction == 'mean' else loss


class SummedHeadLoss(torch.autograd.Function):
    """The summed loss of head_losses; its gradients come out of the forward pass, chunk by chunk."""

    @staticmethod
    def forward(ctx, x, weight, targets, softcap, rows):
        grads = torch.empty_like(x), torch.zeros_like(weight, dtype=torch.float32)
        loss = head_losses(x, weight, targets, softcap, rows, grads).sum()
        ctx.save_for_backward(*grads)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_weight = ctx.saved_tensors
        return grad_x * grad_loss, (grad_weight * grad_loss).to(ctx.weight_dtype), None, None, None


def head_losses(x, weight, targets, softcap, rows, grads=None):
    """Cross-entropy (nats, float32) of each row, 0 where the target is -1. With grads=(grad_x, grad_weight),
    also writes the gradient of their sum into them."""
    losses = torch.empty(x.size(0), device=x.device, dtype=torch.float32)
    matmul_dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else weight.dtype
    for i in range(0, x.size(0), rows):
        xi, counted = x[i:i + rows], (targets[i:i + rows] != -1)[:, None]
        target = targets[i:i + rows].clamp(min=0)[:, None]
        if softcap:  # dividing x, not the logits, saves a pass over them
            capped = torch.tanh(((xi / softcap) @ weight.t()).float())
            logits = softcap * capped
        else:
            logits = (xi @ weight.t()).float()
        logp = torch.log_softmax(logits, dim=-1)
        losses[i:i + rows] = torch.where(counted, -logp.gather(1, target), 0.0).squeeze(1)
        if grads is not None:
            dlogits = logp.exp_()  # softmax, minus one at the target
            dlogits.scatter_add_(1, target, torch.full_like(target, -1, dtype=dlogits.dtype))
            if softcap:  # tanh' = 1 - tanh^2
                dlogits.addcmul_(dlogits * capped, capped, value=-1)
            # cast once to the matmuls' precision (autocast would cast it once for each matmul); ignored rows are
            # zeroed on the small side of the matmuls
            dlogits = dlogits.to(matmul_dtype)
            grads[0][i:i + rows] = (dlogits @ weight) * counted
            grads[1].add_(dlogits.t() @ (xi * counted))
    return losses
