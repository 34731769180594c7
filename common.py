"""
Small pieces every script shares: writing a file so it is never half-written, reading a pickle as
data, and choosing the device, its precision and its peak FLOP/s.

torch is imported inside the device functions only: data/pubmed/prepare.py writes files through
this module and has no use for torch's few seconds of start-up.
"""
import ctypes
import errno
import hashlib
import os
import pickle
import re
import resource
import shutil
import signal
import sys
import time
from contextlib import contextmanager, nullcontext


def fail(message, code=1):
    """The commands' way out: one `error:` line on stderr and a non-zero exit code (2 = bad usage)."""
    print(f'error: {message}', file=sys.stderr)
    sys.exit(code)


def first_line(error):
    """An exception's first line: what one `error:` line quotes of another library's message."""
    return (str(error).splitlines() or [type(error).__name__])[0]


# dense bf16/fp16 tensor-core peaks (FLOP/s); the first name contained in torch.cuda.get_device_name() wins
GPU_PEAK_FLOPS = (('H100 NVL', 835e12), ('H100 PCIe', 756e12), ('H100', 989e12), ('H200', 989e12), ('B200', 2250e12),
                  ('A100', 312e12), ('A800', 312e12), ('L40S', 362e12), ('L4', 121e12), ('A10G', 70e12),
                  ('A10', 125e12), ('V100', 125e12), ('T4', 65e12), ('RTX 4090', 165e12), ('RTX 3090', 71e12))
DTYPES = ('auto', 'float32', 'bfloat16', 'float16')


@contextmanager
def atomic_write(path, mode='wb', needed=None):
    """Write through a temp file beside `path`, fsync it, then rename it over `path`: after a crash
    (even kill -9 or a power cut once the rename is done) `path` holds the old content or the new,
    whole. An exception inside the block removes the temp file and leaves `path` as it was; one that a
    full disk caused is a DiskFullError saying so (`needed`: the bytes the file takes, if known). The temp
    files a killed writer of `path` left are removed first."""
    remove_stale_temporaries(os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = disk_full_message(path, e, needed)  # before the temp file goes: the disk as the failure left it
        if os.path.exists(tmp):
            os.remove(tmp)
        if full and not isinstance(e, DiskFullError):
            raise DiskFullError(f'{full}; nothing was replaced') from e
        raise


def remove_stale_temporaries(folder, of=None):
    """Remove the NAME.<pid>.tmp files or folders (and replace_folder's NAME.<pid>.old) that a process no longer
    running left in `folder` (a kill mid-write), of the file named `of` or of every file: for a large checkpoint,
    gigabytes each. A running writer's are left alone."""
    pattern = re.compile((re.escape(of) if of else '.+') + r'\.(\d+)\.(tmp|old)')
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        found = pattern.fullmatch(entry)
        if found and not process_running(int(found.group(1))):
            stale = os.path.join(folder, entry)
            shutil.rmtree(stale, ignore_errors=True) if os.path.isdir(stale) else os.remove(stale)


def process_running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def file_md5(path):
    """The MD5 of a file (NCBI's checksum for its downloads; a cache's key for a local file), read a megabyte at a
    time."""
    md5 = hashlib.md5()
    with open(path, 'rb') as f:
        while block := f.read(1 << 20):
            md5.update(block)
    return md5.hexdigest()


def natural_key(name):
    """'pubmed24n0010.xml.gz' sorts after 'pubmed24n0009.xml.gz' (and n1220 after n999)."""
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def writable_folder(path, create=True):
    """Whether files can be written in `path` (an existing folder, or one that can be created there)."""
    while create and not os.path.exists(path) and path != os.path.dirname(path):
        path = os.path.dirname(os.path.abspath(path))
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


# a write that failed for want of space: the disk, the user's quota, the largest file the filesystem (or ulimit) allows
DISK_FULL = {
    errno.ENOSPC: 'the disk is full', errno.EDQUOT: 'the disk quota is used up',
    errno.EFBIG: 'the file is larger than the filesystem (or ulimit -f) allows'
}
FULL_BELOW = 1 << 20  # bytes: a filesystem left with less than this after a write failed is what failed it


class DiskFullError(OSError):
    """A write that failed for want of space (ENOSPC), with its one line to show: str(error)."""

    def __init__(self, message):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.message = message

    def __str__(self):
        return self.message

    def __reduce__(self):  # as a pool worker's error it crosses to the parent process pickled
        return DiskFullError, (self.message, )


def is_disk_full(error):
    return isinstance(error, OSError) and error.errno in DISK_FULL


def size_text(n):
    for unit, scale in (('GB', 1e9), ('MB', 1e6), ('kB', 1e3)):
        if n >= scale:
            return f'{n / scale:,.1f} {unit}'
    return f'{n:,} bytes'


def disk_full_message(path, error, needed=None):
    """One line for a write to `path` (a file, or a folder of them) that `error` stopped for want of space: that the
    disk is full, where, what it needed when the caller knows, and what is free there now; None for another error.
    Some writers say it in their own words (torch.save: "unexpected pos", safetensors: an IoError string): a failed
    write that left its filesystem with under a megabyte free counts too."""
    causes = [error]
    while len(causes) < 10 and (causes[-1].__cause__ or causes[-1].__context__) is not None:
        causes.append(causes[-1].__cause__ or causes[-1].__context__)
    full = next((c for c in causes if is_disk_full(c)), None)
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if full is None and not (isinstance(error, Exception) and free is not None and free < FULL_BELOW):
        return None
    reason, cause = (DISK_FULL[full.errno], f'{full.strerror}; ') if full is not None else (DISK_FULL[errno.ENOSPC], '')
    need = f'{size_text(needed)} needed, ' if needed else ''
    free = 'free space unknown' if free is None else f'{size_text(free)} free'
    return f'{path}: {reason} ({cause}{need}{free}): make room there, or write elsewhere'


REPO = os.path.dirname(os.path.abspath(__file__))


def replacing_would_lose(folder, keep):
    """Why removing `folder` whole would lose something, or None: it is, or lies above, one of `keep` ({path:
    what it is}), the current folder or this repository. Symlinks are followed: what would be removed counts."""
    target = os.path.realpath(folder)
    for path, what in {**keep, os.getcwd(): 'the current folder', REPO: 'the repository'}.items():
        real = os.path.realpath(path)
        if real == target or real.startswith(target.rstrip(os.sep) + os.sep):
            return f'{folder} is or holds {what} ({path}): it would be deleted'
    return None


def replace_folder(staging, folder):
    """Put the whole folder `staging` at `folder` (the folder a symlink there points to), replacing what is there:
    renamed aside, then removed once the new one is in place, so a kill leaves one or the other whole."""
    target = os.path.realpath(folder)
    old = f'{target}.{os.getpid()}.old'
    if os.path.isdir(target):
        os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


# what a pickle of builtins and numpy arrays refers to by name: nothing here runs code of the file's choosing
PICKLE_DATA_CLASSES = {('numpy', 'ndarray'), ('numpy', 'dtype'), ('numpy._core.multiarray', '_reconstruct'),
                       ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', 'scalar'),
                       ('numpy.core.multiarray', 'scalar')}


class DataUnpickler(pickle.Unpickler):
    """Unpickles builtins (dicts, lists, str, bytes, numbers) and numpy arrays, and refuses anything else,
    so a pickle from someone else (a shared meta.pkl, a cache) is read as data: a __reduce__ payload
    never runs. The way torch.load(weights_only=True) reads checkpoints."""

    def find_class(self, module, name):
        if (module, name) in PICKLE_DATA_CLASSES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'it refers to {module}.{name}, which is not plain data: refused (a pickle '
                                     'can run code when loaded; this one was not written by this project)')


def load_data_pickle(f):
    """The next pickle of an open binary file, read with DataUnpickler."""
    return DataUnpickler(f).load()


def die_with_parent():
    """Ask Linux to kill this process when its parent dies (prctl PR_SET_PDEATHSIG): a worker whose launcher
    was killed (kill -9 of torchrun's agent, or of prepare.py) must not run on as an orphan. SIGKILL, not SIGTERM:
    train.py takes SIGTERM as "checkpoint and stop", which could wait on a collective for dist_timeout. No-op
    elsewhere."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class DeviceError(ValueError):
    pass


class CheckpointError(Exception):
    """A checkpoint (ours, or a model folder of another tool) that cannot be read, written or used: the message says
    which file and why."""


def resolve_device(name, local_rank=0):
    """The torch.device for a --device option: 'auto' is CUDA when present (this process's GPU under
    torchrun), else the CPU. DeviceError when the name is no device or the device is not here."""
    import torch
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f'--device={name}: not a device (cpu, cuda, cuda:1, mps)')
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise DeviceError(f'--device={name}: CUDA is not available here (use --device=cpu or auto)')
        if device.index is None:
            device = torch.device('cuda', local_rank)
        if device.index >= torch.cuda.device_count():
            raise DeviceError(f'--device={name}: this machine has {torch.cuda.device_count()} GPU(s)')
    if device.type == 'mps' and not torch.backends.mps.is_available():
        raise DeviceError(f'--device={name}: MPS (Apple GPUs) is not available here (use --device=cpu or auto)')
    if device.type not in ('cpu', 'cuda', 'mps'):
        raise DeviceError(f'--device={name}: not supported here (cpu, cuda, cuda:1, mps)')
    return device


def precision(device, dtype='auto'):
    """(torch dtype, autocast context) for a device and a --dtype: 'auto' is bf16 where the GPU
    supports it, else fp16 on GPU, and fp32 elsewhere; fp32 runs without autocast."""
    import torch
    if dtype == 'auto':
        dtype = 'float32' if device.type != 'cuda' else 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
    ptdtype = getattr(torch, dtype)
    return ptdtype, nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type=device.type,
                                                                                  dtype=ptdtype)


# keep_freed_memory's settings as glibc reads them from the environment (for a process that does not call it)
KEPT_MEMORY_ENV = {'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': str(2**31 - 1)}


def keep_freed_memory():
    """Tell glibc's malloc to keep the memory a CPU training step frees for the next step, instead of handing it back
    to the system (Linux; elsewhere nothing). glibc gives each large buffer (logits, gradients, activations: tens to
    hundreds of MB at SmolLM2's shapes) its own mmap and unmaps it when freed, so every step faults the same memory
    in again, page by page, and the kernel zeroes each page: a quarter of a compiled SmolLM2 step on CPU (4 x 256,
    bf16, 2 cores: 1.9 s -> 1.45 s; dev/LOG.md 2026-12-07). The environment can do the same for any process:
    KEPT_MEMORY_ENV. The resident memory stays near the step's peak, which a
    step reaches anyway. True when glibc took the settings."""
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no mallopt (macOS)
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # malloc.h
    return bool(mallopt(M_MMAP_MAX, int(KEPT_MEMORY_ENV['MALLOC_MMAP_MAX_']))) and bool(
        mallopt(M_TRIM_THRESHOLD, int(KEPT_MEMORY_ENV['MALLOC_TRIM_THRESHOLD_'])))


def is_rank0():
    """Whether this process writes the files: rank 0 under torchrun, or the only process."""
    import torch.distributed as dist
    return not dist.is_initialized() or dist.get_rank() == 0


def peak_memory_mb(device):
    """This process's peak memory so far, MB: what the allocator handed out on a GPU, the peak resident set on CPU."""
    import torch
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def measure_matmul_peak(device, dtype, seconds=0.5):
    """FLOP/s of a square matmul on this device, as the MFU denominator where no table applies.
    The fastest of repeated runs: on a shared machine the other processes only ever slow it down. On CPU
    n=512 (1.4 ms on 2 cores) so some runs see every core free: a busy machine rarely lets a 1024 matmul
    (~25 ms) have all of them, and then the "peak" falls below one core's rate and inflates MFU."""
    import torch
    n = 512 if device.type == 'cpu' else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    a @ b
    sync()
    best, start = float('inf'), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def device_peak_flops(device, ptdtype):
    """Peak FLOP/s of one device: the table for known GPUs in bf16/fp16, else measured."""
    import torch
    if device.type == 'cuda' and ptdtype in (torch.bfloat16, torch.float16):
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS:
            if key in name:
                return flops
    return measure_matmul_peak(device, ptdtype)
