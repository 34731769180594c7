"""
Turn a sharded checkpoint (a folder NAME.dcp that train.py --parallel=fsdp writes) into one file:

    python consolidate.py --ckpt=out/ckpt.dcp --out=out/ckpt.pt

The file is what train.py writes under DDP: sample.py, export_hf.py and pubmedqa.py read it (they also
read the folder directly, consolidating it in memory each time), and `train.py --init_from=resume
--parallel=ddp` continues the run from it. Runs in one process; needs CPU memory for the whole weights
and optimizer state (16 bytes a parameter with AdamW).
"""
import os

from checkpoint import (RECORD_KEYS, TRAINING_KEYS, CheckpointError, make_checkpoint, model_from_checkpoint,
                        read_fields, save_checkpoint)
from run_options import optimizers_of
from sharded_checkpoint import load_sharded, sharded_folder
from common import DiskFullError, fail
from configurator import configure

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'ckpt': 'out/ckpt.dcp',       # the sharded checkpoint folder
    'out': 'out/ckpt.pt',         # the file to write
    'overwrite': False,           # replace --out if it exists
}
# yapf: enable


def consolidated(path):
    """The one-file checkpoint of a sharded one: the whole weights, and the optimizer state as train.py under DDP
    stores it (so the file also resumes on DDP), taken into the optimizers the run made (its options, which the
    checkpoint records). Runs in one process, in CPU memory."""
    fields = read_fields(path)
    model = model_from_checkpoint({**fields, 'model': None})
    optimizers = optimizers_of(model, fields['config'], 'cpu')
    load_sharded(path, model, optimizers)  # refuses weights that are not finite
    return make_checkpoint(model, fields['tokenizer'], fields['token_bytes'],
                           optimizer=[o.state_dict() for o in optimizers],
                           **{k: v
                              for k, v in fields.items() if k in TRAINING_KEYS + RECORD_KEYS})


def main():
    c = configure(OPTIONS)
    if not os.path.isdir(sharded_folder(c['ckpt'])):
        fail(
            f"--ckpt={c['ckpt']}: not a folder (a sharded checkpoint is the folder NAME.dcp train.py "
            '--parallel=fsdp writes)', 2)
    if os.path.isdir(c['out']):
        fail(f"--out={c['out']}: is a folder; name the file to write, e.g. --out=out/ckpt.pt", 2)
    if os.path.exists(c['out']) and not c['overwrite']:
        fail(f"--out={c['out']} exists: pass --overwrite=True to replace it", 2)
    try:
        checkpoint = consolidated(sharded_folder(c['ckpt']))
    except CheckpointError as e:
        fail(str(e))
    try:
        save_checkpoint(checkpoint, c['out'])
    except DiskFullError as e:
        fail(str(e))
    n = sum(t.numel() for t in checkpoint['model'].values())
    print(f"wrote {c['out']}: {n / 1e6:.2f}M weights" +
          (f", optimizer state and the run at iter {checkpoint['iter_num']}" if 'iter_num' in checkpoint else ''))


if __name__ == '__main__':
    main()
