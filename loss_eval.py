"""
Evaluation: val loss, perplexity and bits per byte (summed over all windows: evaluate; or per window: window_sums).

Bits per byte = the summed cross-entropy (nats) of the targets that carry text, divided by
ln 2 x their UTF-8 bytes (meta.pkl's token_bytes). It does not depend on the tokenizer, so models
with different vocabularies compare; <|endoftext|> carries no bytes and is left out of it (its loss
still counts in val loss).
"""
import math

import torch
import torch.distributed as dist


def loss_sums(nats, targets, token_bytes):
    """(sum of nats, token count, sum of nats over byte-carrying targets, their bytes) of per-token losses."""
    nbytes = token_bytes[targets.view(-1)]
    counted = nbytes > 0
    return torch.stack([
        nats.sum(),
        torch.tensor(float(nats.numel()), device=nats.device), nats[counted].sum(),
        nbytes.sum().to(nats.dtype)
    ])


def bits_per_byte(nats_on_text, text_bytes):
    return nats_on_text / (math.log(2) * text_bytes)


@torch.no_grad()
def evaluate(model, batches, token_bytes, autocast):
    """{'val_loss', 'val_ppl', 'val_bpb'} over the (x, y) batches of every rank (summed across ranks
    when torch.distributed is initialised). token_bytes: a tensor on the batches' device."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=token_bytes.device)
    for x, y in batches:
        with autocast:
            nats = model(x, y, reduction='none')
        sums += loss_sums(nats.double(), y, token_bytes)
    if dist.is_initialized():
        dist.all_reduce(sums)
    model.train(was_training)
    nats, count, nats_on_text, text_bytes = sums.tolist()
    val_loss = nats / count
    return {
        'val_loss': val_loss, 'val_ppl': math.exp(min(val_loss, 700)),
        'val_bpb': bits_per_byte(nats_on_text, text_bytes)
    }


@torch.no_grad()
def window_sums(model, batches, token_bytes, autocast):
    """loss_sums of each window (row) of the (x, y) batches, one process: a (windows, 4) float64 tensor on the CPU. Its
    column sums are what evaluate adds up; kept per window, they give statistics over windows (eval_suite.py's
    general_bpb: an interval for bits per byte, and a paired comparison of two models on the same windows)."""
    was_training = model.training
    model.eval()
    rows = []
    for x, y in batches:
        with autocast:
            nats = model(x, y, reduction='none').view(x.size(0), -1).double()
        rows += [loss_sums(n, t, token_bytes) for n, t in zip(nats, y)]
    model.train(was_training)
    return torch.stack(rows).cpu()
