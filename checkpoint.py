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
  and what the export's model card says of the run (RECORD_KEYS; checkpoints from before have none):
    origin         what the weights started from: {'from': 'scratch'} or an open model's {'from', 'name', 'hub_id'}
    data           the data folder's facts (meta.pkl): records kept and dropped, excluded PMIDs, split, tokens
    first_eval, last_eval   the run's first evaluation (at iter 0: the model it started from) and its latest:
                   {'iter', 'val_loss', 'val_ppl', 'val_bpb'} of the followed source, and a mixture's 'sources':
                   {name: the same three}
    processes      how many processes trained; precision: the dtype they computed in, on which device type

Under FSDP (train.py --parallel=fsdp) a checkpoint is a folder, NAME.dcp (sharded_checkpoint.py: the shards of
'model' and 'optimizer', and train_state.pt with every other key above). load_checkpoint() reads such a folder
as the one-file dict, weights whole (consolidate.py writes one out as a ckpt.pt, with the optimizer state).

train.py uses two verbs whichever the format: save_state(paths, ...) and load_state(path, model, optimizers),
with read_fields(path) for everything but the weights (to rebuild the model and its run before loading).
"""
import dataclasses
import os
import pickle

import torch

from common import CheckpointError, atomic_write, first_line, is_rank0
from model import GPT, GPTConfig
from sharded_checkpoint import (TRAIN_STATE, all_finite, load_sharded, read_sharded_metadata, save_sharded,
                                sharded_folder)
from tokenizer import fingerprint

CKPT_VERSION = 1
TRAINING_KEYS = ('optimizer', 'scaler', 'iter_num', 'tokens_seen', 'train_seconds', 'best_val_loss', 'config', 'rng',
                 'loader')
RECORD_KEYS = ('origin', 'data', 'first_eval', 'last_eval', 'processes', 'precision')


def make_checkpoint(model, tokenizer, token_bytes, **training):
    """The checkpoint dict of a model (a GPT) and its tokenizer; `training`: the TRAINING_KEYS to resume from
    (and RECORD_KEYS).
    CheckpointError for a model whose weights are not all finite: such a checkpoint is never written."""
    if not all_finite(model.state_dict()):
        raise CheckpointError('the weights are not finite (inf or nan)')
    return {'model': model.state_dict(), **make_fields(model, tokenizer, token_bytes, **training)}


def make_fields(model, tokenizer, token_bytes, **training):
    """Every key of the checkpoint but the weights (and, sharded, the optimizer state)."""
    unknown = set(training) - set(TRAINING_KEYS) - set(RECORD_KEYS)
    assert not unknown, f'not checkpoint keys: {sorted(unknown)}'
    return {
        'model_args': dataclasses.asdict(model.config), 'tokenizer': tokenizer, 'token_bytes': token_bytes,
        **training, 'version': CKPT_VERSION
    }


def save_checkpoint(ckpt, path):
    """Write atomically: a crash mid-save leaves the previous file intact (DiskFullError on a full disk)."""
    with atomic_write(path, needed=tensor_bytes(ckpt)) as f:
        torch.save(ckpt, f)


def tensor_bytes(value):
    """The bytes of the tensors in a nested dict/list: about what torch.save writes of it."""
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    return sum(tensor_bytes(v) for v in value) if isinstance(value, (list, tuple)) else 0


# training state: the two verbs train.py uses, for either format (NAME.pt, or the sharded folder NAME.dcp)
def save_state(paths, model, optimizers, tokenizer, token_bytes, **training):
    """Write the checkpoints `paths` of a training run: NAME.pt files (rank 0 writes them) or NAME.dcp folders of
    every rank's shards (a collective). `training`: TRAINING_KEYS and RECORD_KEYS but the optimizer state.
    CheckpointError for weights that are not all finite: then nothing is written."""
    for path in (p for p in paths if p.endswith('.dcp')):
        save_sharded(path, model, optimizers, make_fields(model, tokenizer, token_bytes, **training))
    files = [p for p in paths if not p.endswith('.dcp')]
    if files:
        ckpt = make_checkpoint(model, tokenizer, token_bytes, optimizer=[o.state_dict() for o in optimizers],
                               **training)
        for path in files if is_rank0() else []:
            save_checkpoint(ckpt, path)


def load_state(path, model, optimizers):
    """Fill a model built from read_fields(path)['model_args'] (on the meta device and given storage is fine) and its
    optimizers from the checkpoint `path`, either format; CheckpointError saying what does not fit."""
    if path.endswith('.dcp'):
        return load_sharded(path, model, optimizers)
    ckpt = load_checkpoint(path)
    try:
        model.load_state_dict(ckpt['model'])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f'{path}: checkpoint does not fit this model.py ({type(e).__name__}: {first_line(e)})')
    if not all_finite(ckpt['model']):
        raise CheckpointError(
            f"{path}: the checkpoint's weights are not finite (inf or nan): the run that wrote it had "
            'blown up')
    try:
        for opt, state in zip(optimizers, ckpt['optimizer'], strict=True):
            opt.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            f'{path}: its optimizer state does not fit the model ({type(e).__name__}: {first_line(e)})')


def read_fields(path):
    """Every key of the checkpoint `path` but the weights (a file is mmapped: its tensors stay on disk; a sharded
    folder's train_state.pt, its .metadata checked); CheckpointError when there is none, or it does not read."""
    folder = sharded_folder(path)
    if os.path.isdir(folder):
        if not os.path.isfile(os.path.join(folder, TRAIN_STATE)) or not os.path.isfile(os.path.join(
                folder, '.metadata')):
            raise CheckpointError(
                f'{path}: not a sharded checkpoint of this project (no {TRAIN_STATE} or .metadata in it)')
        read_sharded_metadata(folder)
        return read_checkpoint_file(os.path.join(folder, TRAIN_STATE))
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such checkpoint (train one with train.py)')
    return read_checkpoint_file(path, mmap=True)


def load_checkpoint(path, map_location='cpu'):
    """The checkpoint dict, read as data (weights_only), or CheckpointError saying what is wrong. A sharded
    checkpoint's folder comes back as the same dict, its weights whole in this process's memory (without the
    optimizer state: consolidate.py writes a file that resumes)."""
    if os.path.isdir(sharded_folder(path)):
        fields = read_fields(path)
        model = model_from_checkpoint({**fields, 'model': None})
        load_sharded(path, model)  # refuses weights that are not finite
        return make_checkpoint(model, fields['tokenizer'], fields['token_bytes'],
                               **{k: v
                                  for k, v in fields.items() if k in TRAINING_KEYS + RECORD_KEYS})
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such checkpoint (train one with train.py)')
    ckpt = read_checkpoint_file(path, map_location)
    if not isinstance(ckpt.get('model'), dict) or not isinstance(ckpt.get('model_args'), dict):
        raise CheckpointError(f'{path}: no model or model_args in it: not a checkpoint of this project')
    # a model saved under torch.compile has its keys prefixed
    ckpt['model'] = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}
    return ckpt


def read_checkpoint_file(path, map_location='cpu', mmap=False):
    """A torch.save'd dict of this project's format version, read as data (mmap: tensors stay in the file)."""
    with open(path, 'rb') as f:
        magic = f.read(4)
    if magic != b'PK\x03\x04' and magic[:1] != b'\x80':  # torch.save writes a zip (or, before 1.6, a pickle)
        raise CheckpointError(
            f'{path}: not a readable checkpoint ({"an empty file" if not magic else "not a file torch.save wrote"})')
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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


def latest_checkpoint(out_dir, parallel=None):
    """A run's checkpoint to continue or sample: out_dir/ckpt.pt (DDP) or the folder ckpt.dcp (FSDP); without
    parallel, the one there is (the newer, if both: consolidate.py writes a ckpt.pt beside the folder)."""
    paths = [os.path.join(out_dir, 'ckpt.pt'), os.path.join(out_dir, 'ckpt.dcp')]
    if parallel:
        return paths[parallel == 'fsdp']
    there = [p for p in paths if os.path.exists(sharded_folder(p))]
    return max(there, key=lambda p: os.path.getmtime(sharded_folder(p))) if there else paths[0]


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
        raise CheckpointError(
            'the checkpoint\'s weights are not finite (inf or nan): the run that wrote it had blown up')
    return model


def check_resumable(ckpt, meta, path, data_dir):
    """CheckpointError unless train.py can continue from ckpt on the data described by meta."""
    in_shards = ('optimizer', ) if os.path.isdir(sharded_folder(path)) else ()  # a sharded checkpoint's optimizer state
    missing = [k for k in TRAINING_KEYS if k not in ckpt and k not in ('scaler', *in_shards)]
    if missing:
        raise CheckpointError(
            f"{path}: not a checkpoint to resume from (no {', '.join(missing)}): sample it or export it, "
            'or start a new run from it with another tool')
    rng, loader = ckpt['rng'], ckpt['loader']
    if not (isinstance(rng, list) and rng and all(
            isinstance(r, dict) and isinstance(r.get('torch'), torch.Tensor) and r['torch'].dtype == torch.uint8
            for r in rng)):
        raise CheckpointError(f'{path}: its random state (rng) is not one torch wrote: the file was altered')
    if not (isinstance(loader, dict) and isinstance(loader.get('windows_seen'), int) and loader['windows_seen'] >= 0):
        raise CheckpointError(f'{path}: its data position (loader) is not valid: the file was altered')
    if ckpt.get('tokenizer') != meta['tokenizer']:
        raise CheckpointError(
            f"{data_dir} is tokenized with another tokenizer ({fingerprint(meta['tokenizer'])}) than the "
            f"run in {path} ({fingerprint(ckpt.get('tokenizer'))}): resume on the data the run trained on")


def tokenizer_of(ckpt, path):
    """The tokenizer spec stored in a checkpoint, or CheckpointError (checkpoints of other tools have none)."""
    if 'tokenizer' not in ckpt:
        raise CheckpointError(f'{path}: no tokenizer stored in the checkpoint')
    return ckpt['tokenizer']
