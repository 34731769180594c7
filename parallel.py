"""
How a training run spreads over the processes torchrun starts: DDP or FSDP2 (--parallel).

DDP (the default) keeps the whole model, its gradients and the optimizer state on every process (16
bytes a parameter with AdamW) and all-reduces the gradients. FSDP2 (torch.distributed.fsdp.fully_shard)
shards all three over the processes: each transformer block is one unit whose weights are gathered
just before it runs (forward and backward) and freed after; the embeddings, final norm and head form
the root unit. Its gradients are reduce-scattered at every micro-step (accumulating whole gradients
would cost the memory FSDP saves). With bf16, FSDP gathers the weights and computes in bf16 and
reduces gradients in fp32 over fp32 master weights and optimizer state (MixedPrecisionPolicy, the
standard recipe on GPUs); without it, as on CPU, everything stays fp32. plan.py says which fits.

On one process nothing is sharded or wrapped, whatever --parallel says (checkpoints keep its format).

Also here: what keeps the processes of a run together when one of them stalls or a scheduler stops them
(progress in torchrun's store and the stall report; SIGTERM/SIGUSR1).
"""
import os
import signal
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

from common import first_line
from model import GPT


def parallelize(raw_model, parallel, device, ptdtype, compiled=False, cpu_offload=False):
    """The module train_step runs, on `device`: raw_model compiled and wrapped in DDP, or raw_model itself sharded in
    place by FSDP2 (its blocks compiled one by one, as torchtitan does). Call before making the optimizers. A model
    built on the meta device gets empty storage (its weights come from a checkpoint next), except under FSDP when
    rank 0 has weights: then rank 0 sends each rank its shards, and no other process ever holds the whole model."""
    weightless = raw_model.lm_head.weight.is_meta
    if parallel == 'fsdp' and dist.is_initialized():
        whole = {} if weightless else raw_model.state_dict()  # rank 0's, in CPU memory
        from_rank0 = torch.tensor(float(not weightless), device=device)
        dist.all_reduce(from_rank0)
        mixed = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if ptdtype == torch.bfloat16 else MixedPrecisionPolicy()
        options = dict(
            mp_policy=mixed,
            offload_policy=CPUOffloadPolicy(pin_memory=device.type == 'cuda') if cpu_offload else OffloadPolicy())
        for block in raw_model.transformer.h:
            if compiled:
                block.compile()
            fully_shard(block, **options)
        fully_shard(raw_model, **options)
        if weightless:  # offloaded shards live in CPU memory (as torchtitan initialises them)
            raw_model.materialize('cpu' if cpu_offload else device)
        if from_rank0.item():
            set_model_state_dict(raw_model, whole, options=StateDictOptions(full_state_dict=True,
                                                                            broadcast_from_rank0=True))
        return raw_model
    raw_model.materialize(device) if weightless else raw_model.to(device)
    model = torch.compile(raw_model) if compiled else raw_model
    if dist.is_initialized():  # gradients in DDP's buckets themselves: no second copy of them
        model = DDP(model, device_ids=[device.index] if device.type == 'cuda' else None, gradient_as_bucket_view=True)
    return model


def is_sharded(model):
    return any(hasattr(p, 'full_tensor') for p in model.parameters())


def whole_model(raw_model):
    """A plain copy of the model on CPU with all its weights, for rank 0 (a collective under FSDP: every
    rank calls it; the others get None). Unsharded models come back as they are."""
    if not is_sharded(raw_model):
        return raw_model
    state = get_model_state_dict(raw_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    model = GPT(raw_model.config)
    model.load_state_dict(state)
    return model


# progress of each rank in torchrun's key-value store: when a collective times out, the ranks that waited
# name the ones that never arrived
def progress_store():
    return dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), is_master=False,
                         timeout=timedelta(seconds=30))


def stall_report(error, timeout):
    """The one line a rank prints when it waited dist_timeout seconds for the others."""
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    try:
        store = progress_store()
        store.set(f'pubmed-gpt/timed_out/{rank}', '1')
        time.sleep(2)  # the other waiting ranks time out at about the same moment
        stalled = [r for r in range(world) if not store.check([f'pubmed-gpt/timed_out/{r}'])]
        last = {
            r: store.get(f'pubmed-gpt/iter/{r}').decode() if store.check([f'pubmed-gpt/iter/{r}']) else 'none'
            for r in stalled
        }
        who = ', '.join(f'rank {r} (its last step: iter {last[r]})' for r in stalled) or 'none found'
    except Exception:
        who = 'unknown (torchrun\'s store is not reachable)'
    return (f'rank {rank}: waited {timeout:g} s (--dist_timeout) for the other processes; stalled or dead: {who} '
            f'[{first_line(error)}]')


# SIGTERM (a scheduler's preemption or requeue, torchrun passing its own on) and SIGUSR1 (a scheduler's warning
# before the time limit) end a training loop at the next step as a budget would: evaluate, write ckpt, exit
# 128 + signal. Before the loop starts they stop the process at once, as by default.
STOP_SIGNALS = []


def stop_on_signals():
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda signum, frame: STOP_SIGNALS.append(signal.Signals(signum).name))
