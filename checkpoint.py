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
"""
import dataclasses
import os
import pickle

import torch

from common import atomic_write
from model import GPT, GPTConfig
from tokenizer import fingerprint

CKPT_VERSION = 1
TRAINING_KEYS = ('optimizer', 'scaler', 'iter_num', 'tokens_seen', 'train_seconds', 'best_val_loss', 'config',
                 'rng', 'loader')


class CheckpointError(Exception):
    pass


def make_checkpoint(model, tokenizer, token_bytes, **training):
    """The checkpoint dict of a model (a GPT) and its tokenizer; `training`: the TRAINING_KEYS to resume from.
    CheckpointError for a model whose weights are not all finite: such a checkpoint is never written."""
    unknown = set(training) - set(TRAINING_KEYS)
    assert not unknown, f'not checkpoint keys: {sorted(unknown)}'
    if not all_finite(model.state_dict()):
        raise CheckpointError('the weights are not finite (inf or nan)')
    return {'model': model.state_dict(), 'model_args': dataclasses.asdict(model.config), 'tokenizer': tokenizer,
            'token_bytes': token_bytes, **training, 'version': CKPT_VERSION}


def save_checkpoint(ckpt, path):
    """Write atomically: a crash mid-save leaves the previous file intact."""
    with atomic_write(path) as f:
        torch.save(ckpt, f)


def load_checkpoint(path, map_location='cpu'):
    """The checkpoint dict, read as data (weights_only), or CheckpointError saying what is wrong."""
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such checkpoint (train one with train.py)')
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
    if not isinstance(ckpt.get('model'), dict) or not isinstance(ckpt.get('model_args'), dict):
        raise CheckpointError(f'{path}: no model or model_args in it: not a checkpoint of this project')
    # a model saved under torch.compile has its keys prefixed
    ckpt['model'] = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}
    return ckpt


def all_finite(state_dict):
    return all(torch.isfinite(t).all() for t in state_dict.values() if t.is_floating_point())


def model_from_checkpoint(ckpt):
    """The GPT a checkpoint holds, or CheckpointError when its arguments or weights don't fit this model.py
    or are not finite."""
    try:
        model = GPT(GPTConfig(**ckpt['model_args']))
        model.load_state_dict(ckpt['model'])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f'checkpoint does not fit this model.py ({type(e).__name__}: {first_line(e)})')
    if not all_finite(ckpt['model']):
        raise CheckpointError('the checkpoint\'s weights are not finite (inf or nan): the run that wrote it had blown up')
    return model


def check_resumable(ckpt, meta, path, data_dir):
    """CheckpointError unless train.py can continue from ckpt on the data described by meta."""
    missing = [k for k in TRAINING_KEYS if k not in ckpt and k != 'scaler']
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
