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

import torch

from common import atomic_write
from model import GPT, GPTConfig

CKPT_VERSION = 1
TRAINING_KEYS = ('optimizer', 'scaler', 'iter_num', 'tokens_seen', 'train_seconds', 'best_val_loss', 'config',
                 'rng', 'loader')


class CheckpointError(Exception):
    pass


def make_checkpoint(model, tokenizer, token_bytes, **training):
    """The checkpoint dict of a model (a GPT) and its tokenizer; `training`: the TRAINING_KEYS to resume from."""
    unknown = set(training) - set(TRAINING_KEYS)
    assert not unknown, f'not checkpoint keys: {sorted(unknown)}'
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
    except Exception as e:
        raise CheckpointError(f'{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})')
    version = ckpt.get('version') if isinstance(ckpt, dict) else None
    if version != CKPT_VERSION:
        raise CheckpointError(f'{path}: checkpoint format version {version!r}, this code reads version {CKPT_VERSION}')
    # a model saved under torch.compile has its keys prefixed
    ckpt['model'] = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}
    return ckpt


def model_from_checkpoint(ckpt):
    """The GPT a checkpoint holds, or CheckpointError when its arguments or weights don't fit this model.py."""
    try:
        model = GPT(GPTConfig(**ckpt['model_args']))
        model.load_state_dict(ckpt['model'])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f'checkpoint does not fit this model.py ({type(e).__name__}: {str(e).splitlines()[0]})')
    return model


def tokenizer_of(ckpt, path):
    """The tokenizer spec stored in a checkpoint, or CheckpointError (checkpoints of other tools have none)."""
    if 'tokenizer' not in ckpt:
        raise CheckpointError(f'{path}: no tokenizer stored in the checkpoint')
    return ckpt['tokenizer']
