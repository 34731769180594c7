"""
Turn a sharded checkpoint (a folder NAME.dcp that train.py --parallel=fsdp writes) into one file:

    python consolidate.py --ckpt=out/ckpt.dcp --out=out/ckpt.pt

The file is what train.py writes under DDP: sample.py, export_hf.py and pubmedqa.py read it (they also
read the folder directly, consolidating it in memory each time), and `train.py --init_from=resume
--parallel=ddp` continues the run from it. Runs in one process; needs CPU memory for the whole weights
and optimizer state (16 bytes a parameter with AdamW).
"""
import os

from checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sharded_folder
from common import DiskFullError
from configurator import config_from_globals, configure, fail

ckpt = 'out/ckpt.dcp'      # the sharded checkpoint folder
out = 'out/ckpt.pt'        # the file to write
overwrite = False          # replace --out if it exists


def main():
    c = configure(config_from_globals(globals()))
    if not os.path.isdir(sharded_folder(c['ckpt'])):
        fail(f"--ckpt={c['ckpt']}: not a folder (a sharded checkpoint is the folder NAME.dcp train.py "
             '--parallel=fsdp writes)', 2)
    if os.path.isdir(c['out']):
        fail(f"--out={c['out']}: is a folder; name the file to write, e.g. --out=out/ckpt.pt", 2)
    if os.path.exists(c['out']) and not c['overwrite']:
        fail(f"--out={c['out']} exists: pass --overwrite=True to replace it", 2)
    try:
        checkpoint = load_checkpoint(c['ckpt'])
    except CheckpointError as e:
        fail(str(e))
    try:
        save_checkpoint(checkpoint, c['out'])
    except DiskFullError as e:
        fail(str(e))
    n = sum(t.numel() for t in checkpoint['model'].values())
    print(f"wrote {c['out']}: {n / 1e6:.2f}M weights"
          + (f", optimizer state and the run at iter {checkpoint['iter_num']}" if 'iter_num' in checkpoint else ''))


if __name__ == '__main__':
    main()
