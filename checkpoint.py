"""
Checkpoints: the one schema, written atomically, read as data.

A checkpoint is a plain dict of tensors and builtins, so torch.load(weights_only=True) reads it and
loading one never runs code. make_checkpoint() is the only place its keys are written:

    model          the model's state_dict (never with torch.compile's '_orig_mod.' prefix)
    model_args     GPTConfig's fields (dataclasses.asdict): the model is rebuilt from these
    tokenizer      the tokenizer spec (tokenizer.py): sample.py and the export need no data folder
    token_bytes    UTF-8 bytes of each token id (bits per byte)
    version        CKPT_VERSION
  and, in the ones train.py writes to resume from (TRAINING_KEYS):
    optimizer      a list of optimizer state dicts (AdamW, then Muon if used)
    scaler         the fp16 GradScaler's state (only when fp16 trains)
    iter_num, tokens_seen, train_seconds, best_val_loss
    config         every option of the run (train.py's)
    rng            per rank: {'torch': CPU generator state, 'cuda': the GPU's (on GPUs)}
    loader         the data position (dataloader.TrainLoader.state_dict)

Under FSDP (train.py --parallel=fsdp) a checkpoint is a folder, NAME.dcp: each process writes its shards
of 'model' and 'optimizer' there with torch.distributed.checkpoint (keyed by parameter name, so it loads
on any number of processes), and rank 0 adds train_state.pt, every other key above. load_checkpoint()
reads such a folder as the one-file dict (consolidate.py writes it out as a ckpt.pt).
"""
import dataclasses
import os
import pickle
import shutil
import warnings

import torch
import torch.distributed as dist

from common import atomic_write, is_rank0
from model import GPT, GPTConfig
from tokenizer import fingerprint

CKPT_VERSION = 1
TRAIN_STATE = 'train_state.pt'  # in a sharded checkpoint's folder
TRAINING_KEYS = ('optimizer', 'scaler', 'iter_num', 'tokens_seen', 'train_seconds', 'best_val_loss', 'config',
                 'rng', 'loader')


class CheckpointError(Exception):
    pass


def make_checkpoint(model, tokenizer, token_bytes, **training):
    """The checkpoint dict of a model (a GPT) and its tokenizer; `training`: the TRAINING_KEYS to resume from.
    CheckpointError for a model whose weights are not all finite: such a checkpoint is never written."""
    if not all_finite(model.state_dict()):
        raise CheckpointError('the weights are not finite (inf or nan)')
    return {'model': model.state_dict(), **checkpoint_fields(model, tokenizer, token_bytes, **training)}


def checkpoint_fields(model, tokenizer, token_bytes, **training):
    """Every key of the checkpoint but the weights."""
    unknown = set(training) - set(TRAINING_KEYS)
    assert not unknown, f'not checkpoint keys: {sorted(unknown)}'
    return {'model_args': dataclasses.asdict(model.config), 'tokenizer': tokenizer, 'token_bytes': token_bytes,
            **training, 'version': CKPT_VERSION}


def save_checkpoint(ckpt, path):
    """Write atomically: a crash mid-save leaves the previous file intact."""
    with atomic_write(path) as f:
        torch.save(ckpt, f)


def load_checkpoint(path, map_location='cpu'):
    """The checkpoint dict, read as data (weights_only), or CheckpointError saying what is wrong. A sharded
    checkpoint's folder comes back as the same dict (consolidated in this process's memory)."""
    if os.path.isdir(sharded(path)):
        return consolidate(sharded(path))
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such checkpoint (train one with train.py)')
    ckpt = read_checkpoint_file(path, map_location)
    if not isinstance(ckpt.get('model'), dict) or not isinstance(ckpt.get('model_args'), dict):
        raise CheckpointError(f'{path}: no model or model_args in it: not a checkpoint of this project')
    # a model saved under torch.compile has its keys prefixed
    ckpt['model'] = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}
    return ckpt


def read_checkpoint_file(path, map_location='cpu'):
    """A torch.save'd dict of this project's format version, read as data."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: never for a file of unknown origin
        raise CheckpointError(f'{path}: not a checkpoint of this project: it holds objects other than tensors and '
                              'plain data, and loading those could run code (refused)')
    except Exception as e:
        raise CheckpointError(f'{path}: not a readable checkpoint ({type(e).__name__}: {first_line(e)}; an empty, '
                              'truncated or corrupt file)')
    version = ckpt.get('version') if isinstance(ckpt, dict) else None
    if version != CKPT_VERSION:
        raise CheckpointError(f'{path}: checkpoint format version {version!r}, this code reads version {CKPT_VERSION}')
    return ckpt


# sharded checkpoints (FSDP): a folder per checkpoint
def sharded(path):
    """The folder of the sharded checkpoint `path`: a kill between save_sharded's two renames leaves it as path.old."""
    return path + '.old' if not os.path.exists(path) and os.path.isdir(path + '.old') else path


def save_sharded(path, model, optimizers, fields):
    """Write the folder `path`: every rank's shards of the model and optimizer state (torch.distributed.checkpoint,
    keyed by parameter name), and fields (checkpoint_fields) as train_state.pt. A collective under torchrun. Written
    into path.tmp and renamed into place: a kill mid-save leaves the previous checkpoint. CheckpointError, on every
    rank, for weights that are not all finite."""
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_state, optimizer_state = get_state_dict(model, optimizers)
    finite = torch.tensor(float(all_finite({k: getattr(v, '_local_tensor', v) for k, v in model_state.items()})))
    distributed = dist.is_initialized()
    if distributed:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not finite:
        raise CheckpointError('the weights are not finite (inf or nan)')
    rank0, tmp = is_rank0(), path + '.tmp'
    if rank0 and os.path.exists(tmp):  # a killed save's
        shutil.rmtree(tmp)
    if distributed:
        dist.barrier()
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'torch.distributed is disabled')
        dcp.save({'model': model_state, 'optimizer': optimizer_state}, checkpoint_id=tmp)
    if rank0:
        save_checkpoint(fields, os.path.join(tmp, TRAIN_STATE))
        if os.path.exists(path):
            os.rename(path, path + '.old')
        os.rename(tmp, path)
        shutil.rmtree(path + '.old', ignore_errors=True)
    if distributed:
        dist.barrier()


def load_sharded(path, model, optimizers):
    """Fill model and optimizers, sharded by FSDP on any number of processes or whole on one, from the folder."""
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    model_state, optimizer_state = get_state_dict(model, optimizers)
    state = {'model': model_state, 'optimizer': optimizer_state}
    try:
        with warnings.catch_warnings():  # on one process without torchrun, dcp says it loads in one process: yes
            warnings.filterwarnings('ignore', 'torch.distributed is disabled')
            dcp.load(state, checkpoint_id=sharded(path))
        set_state_dict(model, optimizers, model_state_dict=state['model'], optim_state_dict=state['optimizer'])
    except Exception as e:  # dcp gathers every rank's exceptions into one
        raise CheckpointError(f'{path}: its shards do not fit this model and optimizer ({type(e).__name__}: '
                              f'{first_line(e)})')


def latest_checkpoint(out_dir, parallel=None):
    """A run's checkpoint to continue or sample: out_dir/ckpt.pt (DDP) or the folder ckpt.dcp (FSDP); without
    parallel, the one there is (the newer, if both: consolidate.py writes a ckpt.pt beside the folder)."""
    paths = [os.path.join(out_dir, 'ckpt.pt'), os.path.join(out_dir, 'ckpt.dcp')]
    if parallel:
        return paths[parallel == 'fsdp']
    there = [p for p in paths if os.path.exists(sharded(p))]
    return max(there, key=lambda p: os.path.getmtime(sharded(p))) if there else paths[0]


def checkpoint_fields_of(path):
    """The keys of the checkpoint `path` (a file or a sharded folder) without reading its weights (a file is mmapped)."""
    return read_train_state(path) if os.path.isdir(sharded(path)) else torch.load(path, mmap=True, weights_only=True)


def read_train_state(path):
    """train_state.pt of the sharded checkpoint `path`: every key but the weights and optimizer state."""
    folder = sharded(path)
    if not os.path.isfile(os.path.join(folder, TRAIN_STATE)) or not os.path.isfile(os.path.join(folder, '.metadata')):
        raise CheckpointError(f'{path}: not a sharded checkpoint of this project (no {TRAIN_STATE} or .metadata in it)')
    return read_checkpoint_file(os.path.join(folder, TRAIN_STATE))


def consolidate(path):
    """The one-file checkpoint dict of a sharded checkpoint: the whole weights, and the optimizer state as train.py
    under DDP stores it (so the result also resumes on DDP). Runs in one process, in CPU memory."""
    fields = read_train_state(path)
    model = model_from_checkpoint({**fields, 'model': None})
    c = fields['config']  # train.py's run: its optimizers, made as the run made them, take the optimizer state
    optimizers = model.configure_optimizers(c['weight_decay'], c['learning_rate'], (c['beta1'], c['beta2']), 'cpu',
                                            optimizer=c['optimizer'], muon_lr=c['muon_lr'], muon_momentum=c['muon_momentum'])
    load_sharded(path, model, optimizers)
    if not all_finite(model.state_dict()):
        raise CheckpointError(f'{path}: the weights are not finite (inf or nan)')
    training = {k: v for k, v in fields.items() if k in TRAINING_KEYS}
    return make_checkpoint(model, fields['tokenizer'], fields['token_bytes'], **training,
                           optimizer=[o.state_dict() for o in optimizers])


def all_finite(state_dict):
    return all(torch.isfinite(t).all() for t in state_dict.values() if t.is_floating_point())


def model_from_checkpoint(ckpt):
    """The GPT a checkpoint holds, or CheckpointError when its arguments or weights don't fit this model.py
    or are not finite."""
    try:
        model = GPT(GPTConfig(**ckpt['model_args']))
        if ckpt['model'] is not None:  # None: weights to come from a sharded checkpoint
            model.load_state_dict(ckpt['model'])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f'checkpoint does not fit this model.py ({type(e).__name__}: {first_line(e)})')
    if ckpt['model'] is not None and not all_finite(ckpt['model']):
        raise CheckpointError('the checkpoint\'s weights are not finite (inf or nan): the run that wrote it had blown up')
    return model


def check_resumable(ckpt, meta, path, data_dir):
    """CheckpointError unless train.py can continue from ckpt on the data described by meta."""
    in_shards = ('optimizer',) if os.path.isdir(sharded(path)) else ()  # a sharded checkpoint's optimizer state
    missing = [k for k in TRAINING_KEYS if k not in ckpt and k not in ('scaler', *in_shards)]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint to resume from (no {', '.join(missing)}): sample it or export it, "
                              'or start a new run from it with another tool')
    rng, loader = ckpt['rng'], ckpt['loader']
    if not (isinstance(rng, list) and rng and all(isinstance(r, dict) and isinstance(r.get('torch'), torch.Tensor)
                                                  and r['torch'].dtype == torch.uint8 for r in rng)):
        raise CheckpointError(f'{path}: its random state (rng) is not one torch wrote: the file was altered')
    if not (isinstance(loader, dict) and isinstance(loader.get('windows_seen'), int) and loader['windows_seen'] >= 0):
        raise CheckpointError(f'{path}: its data position (loader) is not valid: the file was altered')
    if ckpt.get('tokenizer') != meta['tokenizer']:
        raise CheckpointError(f"{data_dir} is tokenized with another tokenizer ({fingerprint(meta['tokenizer'])}) than the "
                              f"run in {path} ({fingerprint(ckpt.get('tokenizer'))}): resume on the data the run trained on")


def first_line(e):
    return (str(e).splitlines() or [type(e).__name__])[0]


def tokenizer_of(ckpt, path):
    """The tokenizer spec stored in a checkpoint, or CheckpointError (checkpoints of other tools have none)."""
    if 'tokenizer' not in ckpt:
        raise CheckpointError(f'{path}: no tokenizer stored in the checkpoint')
    return ckpt['tokenizer']
