"""
Export a checkpoint as a Hugging Face model directory (transformers loads it with no custom code):

    python export_hf.py --ckpt=out/ckpt.pt --out=hf/

What maps to what, and what is refused, is in hf.py.
"""
import os

from checkpoint import CheckpointError, load_checkpoint
from configurator import config_from_globals, configure, fail
from hf import ExportError, export

ckpt = 'out/ckpt.pt'
out = 'hf'


def main():
    c = configure(config_from_globals(globals()))
    try:
        target = export(load_checkpoint(c['ckpt']), c['out'])
    except (CheckpointError, ExportError) as e:
        fail(f'cannot export {c["ckpt"]}: {e}')
    print(f'wrote {target} model and tokenizer to {os.path.abspath(c["out"])}')


if __name__ == '__main__':
    main()
