"""
Train a GPT on the token files that data/pubmed/prepare.py writes.

    python train.py config/train_pubmed_cpu.py                       # CPU, a few minutes
    python train.py config/train_pubmed.py --compile=False           # one GPU
    torchrun --standalone --nproc_per_node=8 train.py config/train_pubmed.py
    torchrun --standalone --nproc_per_node=8 train.py config/finetune_1b_fsdp.py --init_from=models/llama-3.2-1b
    python train.py config/finetune_1b_fsdp.py --init_from=models/llama-3.2-1b --plan=True   # memory per GPU, then exit
    python train.py --init_from=resume --out_dir=out                 # continue exactly where ckpt.pt stopped

Every module-level value below is a `--key=value` option (configurator.py), and so is every field of
GPTConfig in model.py (--n_layer, --pos, ...). Training stops at the first budget reached: max_iters,
max_tokens, max_seconds. Time budgets count training time only: evaluation and checkpoint writing are
excluded, so runs with different eval settings compare. The learning rate warms up over warmup_iters,
then decays with the progress of the run: the largest fraction used of lr_decay_iters (or max_iters),
max_tokens and max_seconds, so a run bounded by time or tokens still ends its schedule at min_lr
exactly when it stops. Every parameter group (AdamW's and Muon's) follows the same factor of its own
base lr. (Time-driven schedules are not bit-reproducible.)

gradient_accumulation_steps counts micro-batches per optimizer step summed over all processes, so
the same command trains the same way on 1 or 8 GPUs: the global batch of step k is the same set of
windows for any split of (processes x micro-steps per process) (dataloader.TrainLoader).

--parallel=fsdp shards the weights, gradients and optimizer state over the processes (parallel.py) and
writes sharded checkpoints, folders NAME.dcp (checkpoint.py), which resume on any number of processes.
"""
import dataclasses
import gc
import json
import math
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from datetime import timedelta
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import (CheckpointError, check_resumable, checkpoint_fields, checkpoint_fields_of, first_line, latest_checkpoint,
                        load_checkpoint, load_sharded, make_checkpoint, model_from_checkpoint, read_train_state,
                        save_checkpoint, save_sharded, sharded)
from common import (DTYPES, DeviceError, atomic_write, device_peak_flops, die_with_parent, is_rank0, peak_memory_mb,
                    precision, resolve_device, writable_folder)
from configurator import config_from_globals, configure, fail
from dataloader import DataError, TrainLoader, eval_starts, load_meta, open_tokens, read_windows, split_step
from loss_eval import evaluate
from model import GPT, GPTConfig
from parallel import parallelize, whole_model
from tokenizer import TokenizerError, fingerprint, spec_from_hf_folder

# -----------------------------------------------------------------------------------------------
# options
# I/O
out_dir = 'out'
init_from = 'scratch'           # 'scratch', 'resume' (from out_dir/ckpt.pt), or an open model to continue pretraining
                                # on data prepared with its tokenizer: a local Hugging Face folder (GPT-2, Llama, Qwen2,
                                # Qwen3, Arcee) or 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' (cache or download)
eval_interval = 2000            # evaluate every this many iterations (0 = only at the start and end)
eval_interval_seconds = 0.0     # and/or whenever this much training time passed since the last eval (0 = off)
eval_iters = 200                # the fixed val set is eval_iters * batch_size windows
log_interval = 1
eval_only = False               # evaluate the model of init_from (resume: out_dir's checkpoint) once, print it, write nothing
save_latest = True              # write ckpt.pt, the state --init_from=resume continues from, at every evaluation
save_best = True                # write best.pt whenever val loss improves
ckpt_every_tokens = 0           # > 0: also keep snapshots ckpt_<tokens seen>.pt every this many tokens
overwrite = False               # a new run into an out_dir that holds a previous run's files replaces them (else refused)
allow_config_change = False     # resume even with a batch, accumulation, seed or window alignment other than the run's
eval_pubmedqa = False           # at the end, PubMedQA zero-shot with lm-evaluation-harness (pubmedqa.py), into metrics.jsonl
pubmedqa_dir = ''               # its data: '' = $PUBMEDQA_DIR, data/pubmedqa or ../shared/data/pubmedqa
pubmedqa_limit = 0              # only the first N test questions (0 = all 500)
# wandb
wandb_log = False
wandb_project = 'pubmed-gpt'
wandb_run_name = 'run'
# data
data_dir = 'data/pubmed'        # a folder with train.bin, val.bin, meta.pkl
batch_size = 12                 # windows per micro-batch
gradient_accumulation_steps = 40  # micro-batches per step, summed over all processes
align_windows = False           # training windows start where documents start (see window_starts), not every block_size
# model: the fields of GPTConfig (model.py), defaults there (GPT-2 small); on resume the checkpoint's shape is used.
# block_size is the training window: a model from scratch reads as far; an open model with rotary positions keeps
# its own context when that is longer (GPT-2's position table is cut to the window)
# optimizer
optimizer = 'adamw'             # 'adamw', or 'muon' for the blocks' matrices (AdamW for the rest)
learning_rate = 6e-4            # AdamW's peak lr
muon_lr = 0.02                  # Muon's peak lr
muon_momentum = 0.95
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0                 # 0 = off
# budgets: the first one reached stops training (0 = no limit)
max_iters = 600000
max_tokens = 0
max_seconds = 0.0
# learning-rate schedule: warmup, then cosine (or warmup-stable-decay, or constant) down to min_lr
schedule = 'cosine'             # 'cosine', 'wsd' or 'constant' (no decay)
warmup_iters = 2000
lr_decay_iters = 0              # the decay spans this many iterations (0 = max_iters), or max_tokens / max_seconds
min_lr = 6e-5                   # the floor, as lr of AdamW; every group decays by the same factor
cooldown_frac = 0.2             # wsd: the last fraction of training decays linearly to min_lr
# system
device = 'auto'                 # 'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'                  # 'auto' (bf16 if supported, else fp16 on GPU; fp32 on CPU), 'float32', 'bfloat16', 'float16'
compile = True
seed = 1337
peak_flops = 0.0                # FLOP/s of one device for MFU; 0 = known GPU table, else a measured matmul peak
dist_timeout = 600.0            # seconds a process waits for the others (torchrun) before it stops and names the straggler
parallel = 'ddp'                # 'ddp': each process holds the whole model; 'fsdp': FSDP2 shards it (parallel.py)
activation_checkpointing = False  # recompute each block's activations in backward: far less memory, ~1/3 more compute
cpu_offload = False             # fsdp: keep the sharded weights, gradients and optimizer state in CPU memory
plan = False                    # print the memory per GPU of this run (plan.py) under DDP and FSDP, and exit
plan_gpus = 8                   # ... for this many GPUs (torchrun's world size when run under it)
plan_gpu_gb = 80.0              # ... of this much memory each
# -----------------------------------------------------------------------------------------------

MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GPTConfig) if f.name != 'vocab_size'}
RENAMED = {  # old option names (nanoGPT's, or this project's before) that keep working, with a note
    'always_save_checkpoint': (True, 'save_latest', lambda value, c: value),
    'dataset': ('pubmed', 'data_dir', lambda value, c: os.path.join('data', value)),
    'decay_lr': (True, 'schedule', lambda value, c: c['schedule'] if value else 'constant'),
}
GPT2_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
DERIVED = ('n_kv_head', 'head_dim', 'mlp_hidden', 'norm_eps', 'rope_scaling')  # 0 / None: worked out by GPTConfig
CHOICES = {'optimizer': ('adamw', 'muon'), 'schedule': ('cosine', 'wsd', 'constant'), 'dtype': DTYPES,
           'parallel': ('ddp', 'fsdp')}
AT_LEAST_ONE = ('batch_size', 'gradient_accumulation_steps', 'eval_iters', 'log_interval', 'plan_gpus')
NOT_NEGATIVE = ('eval_interval', 'eval_interval_seconds', 'ckpt_every_tokens', 'pubmedqa_limit', 'learning_rate', 'muon_lr',
                'weight_decay', 'grad_clip', 'max_iters', 'max_tokens', 'max_seconds', 'warmup_iters', 'lr_decay_iters',
                'min_lr', 'seed', 'peak_flops')
# resuming: options whose change would not continue the run's data stream exactly, and those never taken from it
EXACT_RESUME_KEYS = ('batch_size', 'gradient_accumulation_steps', 'seed', 'align_windows')
NOT_RESUMED = ('out_dir', 'init_from', 'eval_only', 'overwrite', 'allow_config_change', 'plan')


def options(argv=None):
    """This run's options: the defaults above, then config files and --key=value from argv (default
    sys.argv); on resume the checkpoint's run fills in what argv does not set. A mistake that a run would
    only hit later is one line and exit 2, before anything is written."""
    defaults, given = {**config_from_globals(globals()), **MODEL_DEFAULTS}, set()
    config = configure(defaults, argv, RENAMED, given)
    if config['init_from'] == 'resume':
        config = with_resumed_run(config, given)
    check_options(config)
    return config


def with_resumed_run(config, given):
    """The options of the run ckpt.pt continues: its own, except where argv says otherwise (noted). A change
    that breaks the exact continuation of its data stream is refused unless allow_config_change."""
    path = latest_checkpoint(config['out_dir'], config['parallel'] if 'parallel' in given else None)
    if not os.path.exists(sharded(path)):  # main() says there is none
        return config
    try:
        stored = checkpoint_fields_of(path).get('config')
    except CheckpointError as e:
        fail(str(e))
    if not isinstance(stored, dict):
        fail(f'{path}: no run options (config) in it: not a checkpoint to resume from')
    kept = {k: v for k, v in stored.items() if k in config and k not in NOT_RESUMED}
    changed = sorted(k for k in kept if k in given and config[k] != kept[k])
    breaking = [k for k in changed if k in EXACT_RESUME_KEYS]
    if breaking and not config['allow_config_change']:
        fail(f"{', '.join(f'--{k}={config[k]!r}' for k in breaking)}: the run in {config['out_dir']} has "
             f"{', '.join(f'{k}={kept[k]!r}' for k in breaking)}; resuming with another would not continue its data "
             'stream exactly (leave it out, or pass --allow_config_change=True)', 2)
    for k in changed:
        if k in MODEL_DEFAULTS:
            print(f"note: ignoring --{k}={config[k]!r}: resuming keeps the checkpoint's model ({k}={kept[k]!r})")
        else:
            print(f'note: resuming with {k}={config[k]!r} (the run had {kept[k]!r})')
    return {**config, **{k: v for k, v in kept.items() if k not in given or k in MODEL_DEFAULTS}}


def check_options(c):
    """Exit 2 with one line on the first option no run can use."""
    for key, allowed in CHOICES.items():
        if c[key] not in allowed:
            fail(f"{key}={c[key]!r}: expected one of {', '.join(allowed)}", 2)
    if c['init_from'] not in ('scratch', 'resume', *GPT2_NAMES):
        if not os.path.isdir(c['init_from']):
            fail(f"init_from={c['init_from']!r}: expected scratch, resume, {', '.join(GPT2_NAMES)} "
                 f"or a Hugging Face model folder", 2)
        if not os.path.isfile(os.path.join(c['init_from'], 'config.json')):
            fail(f"init_from={c['init_from']!r}: not a Hugging Face model folder (it has no config.json)", 2)
    if c['eval_only'] and c['init_from'] == 'scratch':
        fail('eval_only=True evaluates an existing model: --init_from=resume (the run in out_dir) or a model folder', 2)
    if c['block_size'] == 0 and c['init_from'] == 'scratch':
        fail("block_size=0 (the model's own context) needs an open model to come from: --init_from=FOLDER", 2)
    try:
        GPTConfig(**{k: c[k] for k in MODEL_DEFAULTS if k != 'block_size'}, block_size=max(1, c['block_size']))
        resolve_device(c['device'])
    except (ValueError, DeviceError) as e:
        fail(str(e), 2)
    problems = [(c[k] < 1, f'{k}={c[k]}: must be at least 1') for k in AT_LEAST_ONE]
    problems += [(c[k] < 0, f'{k}={c[k]}: must be 0 or more') for k in NOT_NEGATIVE]
    problems += [(not 0 <= c[k] < 1, f'{k}={c[k]}: must be in [0, 1)') for k in ('beta1', 'beta2', 'muon_momentum')]
    if c['eval_pubmedqa']:
        import pubmedqa
        try:  # read and checked now, not after the training run
            pubmedqa.official_test_split(pubmedqa.find_pubmedqa(c['pubmedqa_dir'] or None))
        except (FileNotFoundError, ValueError) as e:
            fail(f'eval_pubmedqa=True: {e}', 2)
    problems += [(c['parallel'] == 'fsdp' and c['dtype'] == 'float16', 'dtype=float16 with parallel=fsdp: use bfloat16 '
                  '(float16 needs a gradient scaler, which is wired for DDP only)'),
                 (c['cpu_offload'] and c['parallel'] != 'fsdp', 'cpu_offload=True: only with parallel=fsdp'),
                 (c['plan_gpu_gb'] <= 0, f"plan_gpu_gb={c['plan_gpu_gb']}: must be positive")]
    problems += [(not 0 <= c['cooldown_frac'] <= 1, f"cooldown_frac={c['cooldown_frac']}: must be in [0, 1]"),
                 (c['dist_timeout'] <= 0, f"dist_timeout={c['dist_timeout']}: must be positive"),
                 (os.path.exists(c['out_dir']) and not os.path.isdir(c['out_dir']), f"out_dir={c['out_dir']}: is a file"),
                 (not writable_folder(c['out_dir']), f"out_dir={c['out_dir']}: cannot create or write to it")]
    for bad, message in problems:
        if bad:
            fail(message, 2)


def lr_multiplier(it, progress, warmup_iters, schedule, min_ratio, cooldown_frac):
    """Factor applied to every group's base lr: linear warmup over warmup_iters, then cosine (or
    constant, then a linear cooldown, for 'wsd'; or constant) from 1 down to min_ratio as progress goes 0 -> 1."""
    if it < warmup_iters:
        return (it + 1) / (warmup_iters + 1)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == 'constant':
        return 1.0
    if schedule == 'wsd':
        start = 1.0 - cooldown_frac
        if progress <= start:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * (progress - start) / max(cooldown_frac, 1e-12)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_step(model, optimizers, scaler, batches, autocast, grad_clip=0.0):
    """One optimizer step over this rank's micro-batches [(x, y)]: gradients accumulate over them (under
    DDP they are averaged across ranks on the last one only), are clipped to a global norm, and every
    optimizer steps. Returns this rank's mean loss as a tensor on the device: reading it (.item(), or
    mean_over_ranks) waits for the device, so the loop does that only when it logs."""
    ddp = isinstance(model, DDP)
    loss_sum = torch.zeros((), device=batches[0][0].device)
    for i, (x, y) in enumerate(batches):
        with model.no_sync() if ddp and i < len(batches) - 1 else nullcontext():
            with autocast:
                _, loss = model(x, y)
            loss = loss / len(batches)
            scaler.scale(loss).backward()
        loss_sum += loss.detach()
    if grad_clip:
        for opt in optimizers:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return loss_sum


def mean_over_ranks(loss):
    """A loss tensor averaged over the processes, as a float: waits for the device (and the other processes)."""
    if dist.is_initialized():
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= dist.get_world_size()
    return loss.item()


def next_step_batches(loader, device):
    """This rank's batches of the loader's next step on the device, the loader not moved: read while the device
    still computes the step before (to_device's copies from pinned memory do not wait for it)."""
    return [to_device(x, y, device) for x, y in loader.read_step()]


def to_device(x, y, device):
    """numpy (x, y) -> tensors on the device (through pinned memory to a GPU, so the copy overlaps)."""
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    if device.type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def val_batches(tokens, starts, batch_size, block, device):
    for i in range(0, len(starts), batch_size):
        yield to_device(*read_windows(tokens, starts[i:i + batch_size], block), device)


def rng_states(device):
    """Every rank's random state (dropout draws from it), gathered: a collective, called on every rank."""
    state = {'torch': torch.get_rng_state()}
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    if not dist.is_initialized():
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def set_rng_state(state, device):
    torch.set_rng_state(state['torch'])
    if device.type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)


def is_gpt2_folder_without_tokenizer(folder):
    """A GPT-2 of OpenAI's vocabulary saved with save_pretrained alone (no tokenizer files of its own): it reads
    GPT-2's tokens. A folder with tokenizer files is judged by them, as prepare.py --tokenizer=FOLDER does."""
    if any(os.path.exists(os.path.join(folder, name)) for name in ('tokenizer.json', 'vocab.json', 'merges.txt')):
        return False
    try:
        with open(os.path.join(folder, 'config.json')) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return False  # the import says what is wrong with it
    return isinstance(config, dict) and config.get('model_type') == 'gpt2' and config.get('vocab_size') == 50257


def check_tokenizer_of(init_from, meta, data_dir):
    """Exit unless the data is tokenized with the tokenizer of the model init_from names."""
    ours = meta['tokenizer']
    if init_from in GPT2_NAMES or is_gpt2_folder_without_tokenizer(init_from):
        same, how = ours['name'] == 'gpt2' and meta['vocab_size'] == 50257, '--tokenizer=gpt2'
    else:
        try:
            theirs = spec_from_hf_folder(init_from)
        except TokenizerError as e:
            fail(f'init_from={init_from!r}: {e}')
        same = {k: v for k, v in theirs.items() if k != 'name'} == {k: v for k, v in ours.items() if k != 'name'}
        how = f'--tokenizer={init_from}'
    if not same:
        fail(f"init_from={init_from!r} reads its own tokenizer's tokens, but {data_dir} is tokenized with "
             f"{fingerprint(ours)}: prepare it with {how}")


def run_origin(init_from, ckpt):
    """What the weights started from, for the model card; a resumed run carries its checkpoint's (None where an
    older checkpoint did not record it)."""
    if init_from == 'resume':
        return ckpt.get('origin')
    if init_from == 'scratch':
        return {'from': 'scratch'}
    if init_from in GPT2_NAMES:
        return {'from': init_from, 'name': init_from, 'hub_id': f'openai-community/{init_from}'}
    path = os.path.abspath(init_from)
    # a folder of the Hugging Face cache (.../models--ORG--NAME/snapshots/HASH) names its hub id; others do not
    parts = path.split(os.sep)
    cached = [p for p in parts if p.startswith('models--') and p.count('--') >= 2]
    return {'from': path, 'name': os.path.basename(path), 'hub_id': '/'.join(cached[-1].split('--')[1:3]) if cached else None}


def data_facts(meta, data_dir):
    """The data folder's facts for the model card (meta.pkl; None for what an older data folder did not record)."""
    keys = ('records', 'excluded_pmids', 'split', 'languages', 'train_tokens', 'val_tokens', 'train_docs', 'val_docs')
    return {'data_dir': os.path.abspath(data_dir), 'files': len(meta.get('files') or []), **{k: meta.get(k) for k in keys}}


def save_training(names, raw_model, meta, optimizers, scaler, loader, config, device, **progress):
    """Write the checkpoints `names` ('best', 'ckpt', ...) of the run so far to out_dir: NAME.pt, or under FSDP the
    folder NAME.dcp of every rank's shards. A collective under torchrun (every rank's RNG state goes in). Exits
    rather than checkpoint a blown-up model. progress: iter_num, train_seconds, best_val_loss, and the run's facts
    (checkpoint.RECORD_KEYS)."""
    training = dict(tokens_seen=loader.windows_seen * loader.block, config=config, rng=rng_states(device),
                    loader=loader.state_dict(), **({'scaler': scaler.state_dict()} if scaler.is_enabled() else {}), **progress)
    paths = [os.path.join(config['out_dir'], name) for name in names]
    try:
        if config['parallel'] == 'fsdp':
            fields = checkpoint_fields(raw_model, meta['tokenizer'], meta['token_bytes'], **training)
            for path in paths:
                save_sharded(path + '.dcp', raw_model, optimizers, fields)
        else:
            ckpt = make_checkpoint(raw_model, meta['tokenizer'], meta['token_bytes'],
                                   optimizer=[o.state_dict() for o in optimizers], **training)
            for path in paths if is_rank0() else []:
                save_checkpoint(ckpt, path + '.pt')
    except CheckpointError as e:
        fail(f"{e} after iter {progress['iter_num']}: stopping without writing it; the checkpoints in "
             f"{config['out_dir']} are untouched (try a lower learning_rate, grad_clip=1.0 or dtype=float32)")


def previous_run(out_dir):
    """The files of a previous run in out_dir, which a new run would replace."""
    if not os.path.isdir(out_dir):
        return []
    names = sorted(os.listdir(out_dir))
    return [n for n in names if n.removesuffix('.pt').removesuffix('.dcp') in ('ckpt', 'best')
            or (n.startswith('ckpt_') and n.endswith(('.pt', '.dcp')))
            or (n == 'metrics.jsonl' and os.path.getsize(os.path.join(out_dir, n)))]


def keep_metrics_until(path, iter_num):
    """Drop the records after iter_num (and a last line cut short by a kill) from metrics.jsonl: a resumed
    run logs those iterations again, so each is in the file once."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)['iter'] <= iter_num:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass
    if kept != lines:
        with atomic_write(path, 'w') as f:
            f.writelines(kept)


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
        last = {r: store.get(f'pubmed-gpt/iter/{r}').decode() if store.check([f'pubmed-gpt/iter/{r}']) else 'none'
                for r in stalled}
        who = ', '.join(f'rank {r} (its last step: iter {last[r]})' for r in stalled) or 'none found'
    except Exception:
        who = 'unknown (torchrun\'s store is not reachable)'
    return (f'rank {rank}: waited {timeout:g} s (--dist_timeout) for the other processes; stalled or dead: {who} '
            f'[{first_line(error)}]')


def evaluate_pubmedqa(model, meta, c, device):
    """pubmedqa.py's figures for the model as it is (exported to a temporary folder), printed."""
    import pubmedqa
    from hf import ExportError
    try:
        result = pubmedqa.evaluate_checkpoint(make_checkpoint(model, meta['tokenizer'], meta['token_bytes']),
                                              pubmedqa_dir=c.pubmedqa_dir or None, limit=c.pubmedqa_limit, device=str(device))
    except (ExportError, FileNotFoundError) as e:
        fail(f'eval_pubmedqa: {e} (the checkpoints are written)')
    print(pubmedqa.summary(result))
    return result


def print_plan(config, world):
    """--plan=True: the memory per GPU this run would need, from the model's shape alone (no data, no weights)."""
    import plan
    c = SimpleNamespace(**config)
    if c.init_from == 'resume':
        try:
            model_config = GPTConfig(**checkpoint_fields_of(latest_checkpoint(c.out_dir, c.parallel))['model_args'])
        except Exception as e:
            fail(f'plan: no checkpoint to resume from in {c.out_dir} ({first_line(e)})')
    elif c.init_from == 'scratch':
        vocab = load_meta(c.data_dir)['vocab_size'] if os.path.exists(os.path.join(c.data_dir, 'meta.pkl')) else 50257
        model_config = GPTConfig(**{k: config[k] for k in MODEL_DEFAULTS}, vocab_size=64 * math.ceil(vocab / 64))
    else:
        from hf import shapes_of
        try:
            model_config = shapes_of(c.init_from, c.block_size or None)
        except CheckpointError as e:
            fail(f'plan: {e}')
    if c.block_size and model_config.pos == 'rotary':  # activations are those of the training window
        model_config = dataclasses.replace(model_config, block_size=c.block_size)
    try:
        micro_batch = split_step(c.batch_size, c.gradient_accumulation_steps, world)[1]
    except ValueError as e:
        fail(str(e), 2)
    half = c.dtype != 'float32'  # 'auto' is bf16 on the GPUs planned for
    print(plan.report(model_config, micro_batch, world, c.plan_gpu_gb, half, c.optimizer))


def record(path, wandb_run, rec):
    """One line of metrics.jsonl (and a wandb log): rank 0 only."""
    with open(path, 'a') as f:
        f.write(json.dumps(rec) + '\n')
    if wandb_run is not None:
        wandb_run.log({k: v for k, v in rec.items() if k != 'kind'}, step=rec['iter'])


def main(config):
    c = SimpleNamespace(**config)

    # processes: one per device under torchrun, each with its rank; rank 0 writes every file
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')) if ddp else (0, 0, 1)
    master = rank == 0
    if c.plan:
        return print_plan(config, int(os.environ.get('WORLD_SIZE', c.plan_gpus)))
    fsdp = c.parallel == 'fsdp'  # sharded checkpoints; the model is sharded when there are processes to share it
    ckpt_path = latest_checkpoint(c.out_dir, c.parallel)
    try:
        meta = load_meta(c.data_dir)
        ckpt = None
        if c.init_from == 'resume':  # a sharded checkpoint's weights and optimizer state come once the model is sharded
            ckpt = {**read_train_state(ckpt_path), 'model': None} if fsdp else load_checkpoint(ckpt_path)
            check_resumable(ckpt, meta, ckpt_path, c.data_dir)
        dev = resolve_device(c.device, local_rank)
    except (DataError, CheckpointError, DeviceError) as e:
        fail(str(e))
    previous = previous_run(c.out_dir) if c.init_from != 'resume' and not c.eval_only else []
    if previous and not c.overwrite:
        fail(f"{c.out_dir} holds a previous run ({', '.join(previous)}): continue it with --init_from=resume, "
             'train into another --out_dir, or pass --overwrite=True to replace it', 2)
    if dev.type == 'cuda':
        torch.cuda.set_device(dev)
    if ddp:
        die_with_parent()  # if torchrun's agent is killed, its workers must not train on as orphans
        dist.init_process_group(backend='nccl' if dev.type == 'cuda' else 'gloo', timeout=timedelta(seconds=c.dist_timeout))
        store = progress_store()
        # small agreements (stop flags) on the host: beside nccl, a gloo group, so they never wait on a GPU
        host_group = dist.new_group(backend='gloo', timeout=timedelta(seconds=c.dist_timeout)) if dev.type == 'cuda' else None
    ptdtype, autocast = precision(dev, c.dtype)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    # the model: built from the options, read from a checkpoint, or an open model's weights. Under FSDP on several
    # processes only rank 0 initialises or reads the weights (parallelize sends each rank its shards); the others,
    # and every process resuming from a sharded checkpoint, build the model on the meta device: shapes, no memory
    torch.manual_seed(c.seed)  # the same initial weights on every rank (DDP)
    weightless = fsdp and ((ddp and not master) or c.init_from == 'resume')
    with torch.device('meta') if weightless else nullcontext():
        if c.init_from == 'scratch':
            model_args = {k: config[k] for k in MODEL_DEFAULTS}
            raw_model = GPT(GPTConfig(**model_args, vocab_size=64 * math.ceil(meta['vocab_size'] / 64)))  # padded: fast matmuls
        elif c.init_from == 'resume':
            try:
                raw_model = model_from_checkpoint(ckpt)
            except CheckpointError as e:
                fail(f'{ckpt_path}: {e}')
        else:  # an open model reads the tokens of its own tokenizer only
            check_tokenizer_of(c.init_from, meta, c.data_dir)
            from hf import from_pretrained, shapes_of
            try:
                raw_model = GPT(shapes_of(c.init_from, c.block_size or None, c.dropout)) if weightless else \
                    from_pretrained(c.init_from, window=c.block_size or None, dropout=c.dropout)
            except CheckpointError as e:
                fail(str(e))
        ignored = [f'{k}={config[k]!r}' for k in MODEL_DEFAULTS if k != 'block_size'  # the window: see below
                   and config[k] != getattr(raw_model.config, k) and not (k in DERIVED and not config[k])]
        if master and ignored:
            print(f'note: init_from={c.init_from!r} fixes the architecture; ignoring {", ".join(ignored)}')
    # what the export's model card says of the run (checkpoint.RECORD_KEYS), kept in every checkpoint it writes
    facts = {'origin': run_origin(c.init_from, ckpt), 'data': data_facts(meta, c.data_dir), 'processes': world,
             'precision': f'{str(ptdtype).removeprefix("torch.")} on {dev.type}',
             **({'last_eval': ckpt['last_eval']} if ckpt and 'last_eval' in ckpt else {})}
    if raw_model.config.vocab_size < meta['vocab_size']:
        fail(f"the model's vocabulary ({raw_model.config.vocab_size}) is smaller than the data's ({meta['vocab_size']})")
    raw_model.activation_checkpointing = c.activation_checkpointing
    # the training window (what a batch holds) and the model's context (how far it reads): a rotary model continued
    # on short windows keeps the context of the model it came from (hf.config_from_hf)
    block = c.block_size or raw_model.config.block_size
    if master and block < raw_model.config.block_size:
        print(f'note: training on windows of {block} tokens of a context of {raw_model.config.block_size} (the model '
              'reads, samples and exports that context)')
    model = parallelize(raw_model, c.parallel, dev, ptdtype, c.compile, c.cpu_offload)
    if fsdp and ddp:  # FSDP's policy casts the weights to bf16 itself; autocast is for DDP
        autocast = nullcontext()

    # data: this rank's share of every step's windows, and of the fixed val windows
    train_tokens, val_tokens = open_tokens(c.data_dir, 'train', meta), open_tokens(c.data_dir, 'val', meta)
    if min(len(train_tokens), len(val_tokens)) <= block:
        fail(f'{c.data_dir}: train.bin and val.bin need more than block_size={block} tokens each')
    try:
        loader = TrainLoader(train_tokens, block, c.batch_size, c.gradient_accumulation_steps, c.seed, rank, world,
                             eot=meta['eot_token'] if c.align_windows else None)
    except ValueError as e:
        fail(str(e), 2)
    if not len(loader.starts):
        fail(f"{c.data_dir}: align_windows=True found no <|endoftext|> (id {meta['eot_token']}) in train.bin to align to")
    if master and loader.micro_batch != c.batch_size:
        print(f'note: each of the {world} processes trains {loader.micro_batch * loader.micro_steps} windows a step, '
              f'in {loader.micro_steps} micro-batch(es) of {loader.micro_batch}: the global batch of batch_size x '
              f'gradient_accumulation_steps = {c.batch_size * c.gradient_accumulation_steps} windows, split {world} ways')
    val_starts = eval_starts(val_tokens, block, c.eval_iters * c.batch_size)  # fewer if val.bin is short
    if fsdp:  # every rank runs the same number of forward passes: FSDP gathers weights for each
        val_starts = val_starts[:len(val_starts) - len(val_starts) % world]
    val_starts = val_starts[rank::world]
    token_bytes = torch.tensor(meta['token_bytes'] + [0] * (raw_model.config.vocab_size - len(meta['token_bytes'])), device=dev)
    tokens_per_step = c.batch_size * c.gradient_accumulation_steps * block  # all ranks

    # optimizers, and the training state of a resumed run
    optimizers = raw_model.configure_optimizers(c.weight_decay, c.learning_rate, (c.beta1, c.beta2), dev.type,
                                                optimizer=c.optimizer, muon_lr=c.muon_lr, muon_momentum=c.muon_momentum)
    scaler = torch.amp.GradScaler(dev.type, enabled=ptdtype == torch.float16)
    iter_num, train_seconds, best_val_loss = 0, 0.0, float('inf')
    torch.manual_seed(c.seed + rank)  # dropout differs across ranks
    if ckpt is not None:
        if ckpt['config'].get('optimizer', 'adamw') != c.optimizer:
            fail(f"{ckpt_path} was trained with optimizer={ckpt['config']['optimizer']!r}: resume with the same optimizer")
        base_lrs = [[g['base_lr'] for g in opt.param_groups] for opt in optimizers]  # this run's config counts
        try:
            if fsdp:
                load_sharded(ckpt_path, raw_model, optimizers)
            for opt, state in zip(optimizers, [] if fsdp else ckpt['optimizer']):
                opt.load_state_dict(state)
            if 'scaler' in ckpt:
                scaler.load_state_dict(ckpt['scaler'])
        except CheckpointError as e:
            fail(str(e))
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            fail(f'{ckpt_path}: its optimizer state does not fit the model ({type(e).__name__}: {first_line(e)})')
        for opt, bases in zip(optimizers, base_lrs):
            for g, base in zip(opt.param_groups, bases):
                g['base_lr'] = base
        iter_num, train_seconds, best_val_loss = ckpt['iter_num'], ckpt['train_seconds'], ckpt['best_val_loss']
        loader.load_state_dict(ckpt['loader'])
        if len(ckpt['rng']) == world:  # on another number of processes only dropout's stream differs
            set_rng_state(ckpt['rng'][rank], dev)
        ckpt = None  # free memory

    # logging: MFU is model FLOPs per second over the peak of all devices
    flops_per_token = raw_model.flops_per_token(block)
    peak = c.peak_flops or device_peak_flops(dev, ptdtype)
    # out_dir: touched only now that every option, the data and the model have been checked
    metrics_path = os.path.join(c.out_dir, 'metrics.jsonl')
    if master and not c.eval_only:  # evaluating a run leaves its files as they are
        os.makedirs(c.out_dir, exist_ok=True)
        if c.init_from == 'resume':
            keep_metrics_until(metrics_path, iter_num)  # what a killed run logged after its checkpoint comes again
        else:
            for name in previous:  # only with --overwrite=True (checked above)
                path = os.path.join(c.out_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            open(metrics_path, 'w').close()
    wandb_run = None
    if master and c.wandb_log and not c.eval_only:
        import wandb
        wandb_run = wandb.init(project=c.wandb_project, name=c.wandb_run_name, config=config, dir=c.out_dir)
    if master:
        print(f'{raw_model.num_params() / 1e6:.2f}M parameters, {tokens_per_step:,} tokens per step on {world} process(es), '
              f'device {dev}, {str(ptdtype).removeprefix("torch.")}, peak {peak / 1e12:.3f} TFLOP/s per device')

    min_ratio = c.min_lr / c.learning_rate if c.learning_rate else 0.0
    first_iter, last_eval_seconds = iter_num, train_seconds
    stop_on_signals()  # from now on a stop signal checkpoints first; before, it stops the process at once
    log_seconds, log_iters, batches = 0.0, 0, None
    while True:
        if ddp:
            store.set(f'pubmed-gpt/iter/{rank}', str(iter_num))
        tokens_seen = loader.windows_seen * block
        progress = iter_num / max(1, c.lr_decay_iters or c.max_iters)
        if c.max_tokens:
            progress = max(progress, tokens_seen / c.max_tokens)
        if c.max_seconds:
            progress = max(progress, train_seconds / c.max_seconds)
        # rank 0's clock decides time budgets for everyone; a stop signal to any process stops them all. The flags
        # are agreed on the host (gloo): no process waits for its device here
        flags = torch.tensor([master and train_seconds >= c.max_seconds > 0,
                              master and train_seconds - last_eval_seconds >= c.eval_interval_seconds > 0,
                              bool(STOP_SIGNALS)], dtype=torch.float32)
        if ddp:
            dist.all_reduce(flags, group=host_group)
        out_of_time, eval_due, signalled = (bool(f) for f in flags.tolist())
        done = (out_of_time or signalled or iter_num >= c.max_iters or (c.max_tokens and tokens_seen >= c.max_tokens)
                or c.eval_only)

        # evaluate at the start, on schedule and at the end (a resumed run's start was its predecessor's end)
        resumed_here = c.init_from == 'resume' and iter_num == first_iter and not c.eval_only
        if (done or eval_due or (c.eval_interval and iter_num % c.eval_interval == 0) or iter_num == first_iter) and not resumed_here:
            ev = evaluate(model, val_batches(val_tokens, val_starts, c.batch_size, block, dev), token_bytes, autocast)
            last_eval_seconds = train_seconds
            if master:
                rec = {'kind': 'eval', 'iter': iter_num, 'tokens': tokens_seen, 'train_seconds': round(train_seconds, 3), **ev}
                print(f"eval iter {iter_num}: val loss {ev['val_loss']:.4f}, ppl {ev['val_ppl']:.2f}, bpb {ev['val_bpb']:.4f}")
                if c.eval_only:  # the whole record on stdout; the run's metrics.jsonl is left as it is
                    print(json.dumps(rec))
                else:
                    record(metrics_path, wandb_run, rec)
            if not math.isfinite(ev['val_loss']):
                fail(f'val loss is {ev["val_loss"]} at iter {iter_num}: stopping; the checkpoints in {c.out_dir} are untouched')
            facts['last_eval'] = {'iter': iter_num, **{k: ev[k] for k in ('val_loss', 'val_ppl', 'val_bpb')}}
            improved = ev['val_loss'] < best_val_loss
            best_val_loss = min(best_val_loss, ev['val_loss'])
            if not c.eval_only and iter_num > 0 and (c.save_latest or (improved and c.save_best)):
                # best first: a kill between the two leaves ckpt behind it, and the resumed run writes best again
                names = [name for name, wanted in (('best', improved and c.save_best), ('ckpt', c.save_latest)) if wanted]
                save_training(names, raw_model, meta, optimizers, scaler, loader, config, dev, **facts, iter_num=iter_num,
                              train_seconds=train_seconds, best_val_loss=best_val_loss)
        if done:
            break

        # one optimizer step
        mult = lr_multiplier(iter_num, progress, c.warmup_iters, c.schedule, min_ratio, c.cooldown_frac)
        for opt in optimizers:
            for group in opt.param_groups:
                group['lr'] = group['base_lr'] * mult
        # the device runs the step while the host reads the next one's batches; the host waits for the device only
        # when it logs (so time is measured between logs: the wait lands in the logging step)
        t0 = time.perf_counter()
        loss = train_step(model, optimizers, scaler, batches or next_step_batches(loader, dev), autocast, c.grad_clip)
        loader.advance()
        batches = next_step_batches(loader, dev)
        iter_num += 1
        tokens_seen = loader.windows_seen * block
        if iter_num % c.log_interval == 0:
            lossf = mean_over_ranks(loss)
        dt = time.perf_counter() - t0
        train_seconds += dt
        log_seconds, log_iters = log_seconds + dt, log_iters + 1
        if iter_num % c.log_interval == 0:
            if not math.isfinite(lossf):
                fail(f'training loss is {lossf} at iter {iter_num}: stopping; the checkpoints in {c.out_dir} are untouched '
                     f'(try a lower learning_rate, grad_clip=1.0 or dtype=float32)')
            tokens_per_s = tokens_per_step * log_iters / log_seconds
            mfu = flops_per_token * tokens_per_s / (peak * world)
            if master:
                memory = peak_memory_mb(dev)
                record(metrics_path, wandb_run, {
                    'kind': 'train', 'iter': iter_num, 'tokens': tokens_seen, 'train_seconds': round(train_seconds, 3),
                    'loss': lossf, 'lr': c.learning_rate * mult, 'ms_per_iter': 1000 * log_seconds / log_iters,
                    'tokens_per_s': tokens_per_s, 'mfu': mfu, 'peak_memory_mb': round(memory, 1)})
                print(f'iter {iter_num}: loss {lossf:.4f}, lr {c.learning_rate * mult:.2e}, '
                      f'{1000 * log_seconds / log_iters:.1f} ms/iter, {tokens_per_s:,.0f} tok/s, mfu {100 * mfu:.1f}%, '
                      f'peak memory {memory:,.0f} MB')
            log_seconds, log_iters = 0.0, 0
        if c.ckpt_every_tokens and tokens_seen // c.ckpt_every_tokens > (tokens_seen - tokens_per_step) // c.ckpt_every_tokens:
            save_training([f'ckpt_{tokens_seen:012d}'], raw_model, meta, optimizers, scaler, loader, config, dev, **facts,
                          iter_num=iter_num, train_seconds=train_seconds, best_val_loss=best_val_loss)

    if c.eval_pubmedqa and not c.eval_only and not signalled:
        whole = whole_model(raw_model)  # under FSDP: gathered from every rank, onto rank 0
    if master and c.eval_pubmedqa and not c.eval_only and not signalled:
        result = evaluate_pubmedqa(whole.to(dev), meta, c, dev)
        record(metrics_path, wandb_run, {'kind': 'pubmedqa', 'iter': iter_num, 'tokens': tokens_seen,
                                         **{k: v for k, v in result.items() if k not in ('items', 'pubmedqa_dir')}})
    if wandb_run is not None:
        wandb_run.finish()
    if ddp:  # DDP's reducer (or FSDP's state) holds on to the process group: free it first, or gloo sometimes aborts
        dist.barrier()
        del model
        gc.collect()
        dist.destroy_process_group()
    if signalled:
        name = STOP_SIGNALS[0] if STOP_SIGNALS else 'SIGTERM'  # (to another process)
        if master:
            print(f'stopped by {name} at iter {iter_num}' + (f': {latest_checkpoint(c.out_dir, c.parallel)} written; '
                  'continue with --init_from=resume' if c.save_latest and iter_num else ''))
        sys.exit(128 + signal.Signals[name])


# SIGTERM (a scheduler's preemption or requeue, torchrun passing its own on) and SIGUSR1 (a scheduler's warning
# before the time limit) end the run at the next step as a budget would: evaluate, write ckpt, exit 128 + signal
STOP_SIGNALS = []


def stop_on_signals():
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda signum, frame: STOP_SIGNALS.append(signal.Signals(signum).name))


if __name__ == '__main__':
    config = options()
    try:
        main(config)
    except RuntimeError as e:  # under torchrun: a collective that waited dist_timeout for a stalled process
        if 'RANK' not in os.environ or 'timed out' not in str(e).lower():
            raise
        fail(stall_report(e, config['dist_timeout']))
