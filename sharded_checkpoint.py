"""
Sharded checkpoints: the folder NAME.dcp train.py --parallel=fsdp writes, one per checkpoint.

Each process writes its shards of 'model' and 'optimizer' there with torch.distributed.checkpoint (keyed by
parameter name, so the folder loads on any number of processes), and rank 0 adds train_state.pt: every other key
of the checkpoint (checkpoint.make_fields). The folder is written as NAME.dcp.tmp and renamed into place, so a kill
leaves the previous one whole. It is read as data: dcp reads its .metadata and the optimizer's non-tensor values
with plain pickle, which can run code, so here .metadata goes through an allow-list unpickler and those values
through torch.load(weights_only=True) first; shards come only from files of the folder.

checkpoint.py's verbs (save_state, load_state, read_fields, load_checkpoint) use this for folders. torch's
distributed checkpointing is imported inside the functions that use it: seconds of start-up that only sharded
checkpoints need (sample.py, export_hf.py and a DDP run never pay them).
"""
import io
import os
import pickle
import shutil
import warnings

import torch
import torch.distributed as dist

from common import CheckpointError, DiskFullError, atomic_write, disk_full_message, first_line, is_rank0

TRAIN_STATE = 'train_state.pt'  # every key of the checkpoint but the shards


def sharded_folder(path):
    """The folder of the sharded checkpoint `path`: a kill between save_sharded's two renames leaves it as path.old."""
    return path + '.old' if not os.path.exists(path) and os.path.isdir(path + '.old') else path


def save_sharded(path, model, optimizers, fields):
    """Write the folder `path`: every rank's shards of the model and optimizer state (torch.distributed.checkpoint,
    keyed by parameter name), and fields (make_fields) as train_state.pt. A collective under torchrun. Written
    into path.tmp and renamed into place: a kill mid-save leaves the previous checkpoint. CheckpointError, on every
    rank, for weights that are not all finite."""
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_state, optimizer_state = get_state_dict(model, optimizers)
    if not agreed_finite(model_state):
        raise CheckpointError('the weights are not finite (inf or nan)')
    rank0, tmp, old = is_rank0(), path + '.tmp', path + '.old'
    if rank0 and os.path.exists(tmp):  # a killed save's
        shutil.rmtree(tmp)
    if dist.is_initialized():
        dist.barrier()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', 'torch.distributed is disabled')
            dcp.save({'model': model_state, 'optimizer': optimizer_state}, checkpoint_id=tmp)
    except BaseException as e:  # dcp gathers every rank's exceptions into a BaseException
        full = disk_full_message(tmp, next(iter(getattr(e, 'failures', {}).values()), (e, ))[0])
        if full:
            raise DiskFullError(f'{full}; nothing was replaced') from e
        raise
    if rank0:
        write_train_state(fields, os.path.join(tmp, TRAIN_STATE))
        if os.path.exists(path):
            if os.path.exists(old):  # a kill after the rename below left it: path is whole, so old is stale
                shutil.rmtree(old)
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()


def write_train_state(fields, path):
    with atomic_write(path) as f:
        torch.save(fields, f)


def load_sharded(path, model, optimizers=()):
    """Fill model, and optimizers if given (else the weights alone are read), sharded by FSDP on any number of
    processes or whole on one, from the folder, read as data (DataReader, DataLoadPlanner). CheckpointError, on every
    rank, when its shards do not fit or their weights are not all finite."""
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_state_dict, set_model_state_dict,
                                                         set_state_dict)
    folder = sharded_folder(path)
    if optimizers:
        model_state, optimizer_state = get_state_dict(model, optimizers)
        state = {'model': model_state, 'optimizer': optimizer_state}
    else:
        state = {'model': get_model_state_dict(model)}
    try:
        load_as_data(state, folder)
        if optimizers:
            set_state_dict(model, optimizers, model_state_dict=state['model'], optim_state_dict=state['optimizer'])
        else:
            set_model_state_dict(model, state['model'])
    except (Exception, CheckpointException) as e:  # dcp gathers every rank's exceptions into a BaseException
        cause = next(iter(getattr(e, 'failures', {}).values()), (e, ))[0]  # the first rank's
        if isinstance(cause, CheckpointError):  # read_sharded_metadata's, through DataReader
            raise cause
        if isinstance(cause, pickle.UnpicklingError):
            raise CheckpointError(f'{path}: its shards hold objects other than tensors and plain data, and loading '
                                  'those could run code (refused)')
        raise CheckpointError(f'{path}: its shards do not fit this model and optimizer ({type(cause).__name__}: '
                              f'{first_line(cause)})')
    if not agreed_finite(model.state_dict()):
        raise CheckpointError(f'{path}: the weights are not finite (inf or nan): the run that wrote it had blown up')


def agreed_finite(state_dict):
    """Whether every rank's (local shards of the) weights are finite: a collective under torchrun."""
    finite = all_finite({k: getattr(v, '_local_tensor', v) for k, v in state_dict.items()})
    if not dist.is_initialized():
        return finite
    # nccl reduces tensors on this process's GPU only (shards may live in CPU memory: cpu_offload)
    flag = torch.tensor(float(finite), device='cuda' if dist.get_backend() == 'nccl' else 'cpu')
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


# A sharded checkpoint's .metadata is a pickle, and dcp reads it (and the optimizer's non-tensor values) with plain
# pickle / torch.load(weights_only=False): a folder from someone else could run code. Read both as data instead.
DCP_METADATA = 'torch.distributed.checkpoint.metadata'
DCP_CLASSES = {(DCP_METADATA, name)
               for name in ('Metadata', 'MetadataIndex', 'StorageMeta', 'TensorProperties', 'TensorStorageMetadata',
                            'BytesStorageMetadata', 'ChunkStorageMetadata', '_MEM_FORMAT_ENCODING')
               } | {('torch.distributed.checkpoint.filesystem', '_StorageInfo'), ('torch', 'Size'),
                    ('torch.serialization', '_get_layout'), ('pathlib', 'PosixPath'), ('pathlib', 'WindowsPath'),
                    ('pathlib', 'PurePosixPath'), ('pathlib', 'PureWindowsPath')}


class DcpMetadataUnpickler(pickle.Unpickler):
    """Unpickles dcp's metadata classes, torch sizes and dtypes and builtins; refuses anything else."""

    def find_class(self, module, name):
        if (module, name) in DCP_CLASSES or (module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise CheckpointError(f'it refers to {module}.{name}, which is not checkpoint metadata (a pickle can run code '
                              'when loaded: refused)')


def read_sharded_metadata(folder):
    """The dcp Metadata of a sharded checkpoint's folder, read as data, whose shards are files of that folder and as
    long as it says, and whose non-tensor values (the optimizer's hyperparameters) are plain data, whatever a command
    goes on to read of it; CheckpointError saying what is wrong."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata
    try:
        with open(os.path.join(folder, '.metadata'), 'rb') as f:
            metadata = DcpMetadataUnpickler(f).load()
    except OSError as e:
        raise CheckpointError(f'{folder}: cannot read its .metadata ({e.strerror})')
    except CheckpointError as e:
        raise CheckpointError(f'{folder}/.metadata: {e}')
    except Exception as e:
        raise CheckpointError(f'{folder}/.metadata: not readable ({type(e).__name__}: {first_line(e)}; a truncated or '
                              'corrupt file)')
    if not isinstance(metadata, Metadata) or not isinstance(getattr(metadata, 'storage_data', None), dict):
        raise CheckpointError(f'{folder}/.metadata: not the metadata of a sharded checkpoint')
    ends = {}
    for info in metadata.storage_data.values():
        name, offset, length = (getattr(info, k, None) for k in ('relative_path', 'offset', 'length'))
        if not (isinstance(name, str) and name == os.path.basename(name) and name not in ('', '.', '..') and
                isinstance(offset, int) and isinstance(length, int) and min(offset, length) >= 0):
            raise CheckpointError(f'{folder}/.metadata: names a shard {name!r} that is not a file of the folder')
        ends[name] = max(ends.get(name, 0), offset + length)
    for name, end in sorted(ends.items()):
        shard = os.path.join(folder, name)
        if not os.path.isfile(shard):
            raise CheckpointError(f'{folder}: the shard {name} is missing (an incomplete copy?)')
        if os.path.getsize(shard) < end:
            raise CheckpointError(
                f'{folder}: the shard {name} is cut short ({os.path.getsize(shard):,} bytes of {end:,})')
    for index, info in metadata.storage_data.items():
        if isinstance(metadata.state_dict_metadata.get(getattr(index, 'fqn', None)), BytesStorageMetadata):
            check_plain_data(folder, info)
    return metadata


def check_plain_data(folder, info):
    """CheckpointError unless the non-tensor value stored at `info` (dcp pickles it with torch.save, and unpickles it
    with torch.load(weights_only=False)) holds nothing but tensors and plain data."""
    if getattr(info, 'transform_descriptors', None):
        raise CheckpointError(f'{folder}: its shards are stored with transforms ({info.transform_descriptors}): not a '
                              'sharded checkpoint of this project')
    with open(os.path.join(folder, info.relative_path), 'rb') as f:
        f.seek(info.offset)
        value = io.BytesIO(f.read(info.length))
    try:
        torch.load(value, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f'{folder}: its shards hold objects other than tensors and plain data, and loading those '
                              'could run code (refused)')
    except Exception as e:
        raise CheckpointError(f'{folder}: a value in its shards does not read ({type(e).__name__}: {first_line(e)})')


def load_as_data(state, folder):
    """dcp.load of the folder into state, with .metadata read as data and the non-tensor values checked first
    (read_sharded_metadata): dcp's own reader and planner read both with plain pickle."""
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.metadata import StorageMeta

    class DataReader(dcp.FileSystemReader):

        def read_metadata(self, *args, **kwargs):
            metadata = read_sharded_metadata(str(self.path))
            metadata.storage_meta = metadata.storage_meta or StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    with warnings.catch_warnings():  # on one process without torchrun, dcp says it loads in one process: yes
        warnings.filterwarnings('ignore', 'torch.distributed is disabled')
        dcp.load(state, storage_reader=DataReader(folder))


def all_finite(state_dict):
    return all(torch.isfinite(t).all() for t in state_dict.values() if t.is_floating_point())
