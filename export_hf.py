"""
Export a checkpoint as a Hugging Face model directory (transformers loads it with no custom code):

    python export_hf.py --ckpt=out/ckpt.pt --out=hf/

What maps to what, and what is refused, is in hf.py; the README.md written beside the weights (the model
card: what the model is, what it read and how it scores) is model_card.py's.
"""
import json
import os
import shutil

from checkpoint import CheckpointError, load_checkpoint, tensor_bytes
from common import (disk_full_message, fail, remove_stale_temporaries, replace_folder, replacing_would_lose,
                    writable_folder)
from configurator import configure
from hf import ExportError, export
from model_card import card, check_pubmedqa_figures, check_suite_row, folder_name, pubmedqa_of, suite_of

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'ckpt': 'out/ckpt.pt',        # the checkpoint to export (a file, or a sharded folder NAME.dcp)
    'out': 'hf',                  # the folder to write (config.json, weights, tokenizer, README.md model card)
    'overwrite': False,           # replace --out if it holds files (else refused: stale weight files would be loaded
                                  # too)
    'pubmedqa_json': '',          # PubMedQA figures for the model card: a pubmedqa.py --out_json file ('' = the run's
                                  # metrics.jsonl)
    'suite_json': '',             # the evaluation suite's figures for the card: an eval_suite.py --out_json file of
                                  # this model (and the --compare base beside it) ('' = the run's metrics.jsonl)
}
# yapf: enable


def check_out(path, replace, ckpt):
    """Exit 2 unless `path` can become the export folder: empty or absent, or replaced with --overwrite=True when
    that loses nothing but an earlier export (never the checkpoint, the current folder or the repository)."""
    if not path:
        fail('--out is empty: name the folder to write, e.g. --out=hf', 2)
    if os.path.exists(path) and not os.path.isdir(path):
        fail(f'--out={path}: is a file, not a folder', 2)
    lost = replacing_would_lose(path, {ckpt: 'the checkpoint to export'})
    if lost:
        fail(f'--out={lost}: export into a folder of its own, e.g. --out=hf', 2)
    if os.path.isdir(path) and os.listdir(path) and not replace:
        fail(
            f"--out={path} holds files ({', '.join(sorted(os.listdir(path))[:4])}...): a loader would mix them with "
            "the "
            'export; use an empty folder, or --overwrite=True to replace this one', 2)
    if not writable_folder(os.path.dirname(os.path.realpath(path))):
        fail(f'--out={path}: cannot write beside it', 2)


def read_pubmedqa_json(path):
    """The figures of a pubmedqa.py --out_json file, or exit 2 naming it."""
    try:
        with open(path, encoding='utf-8') as f:
            return check_pubmedqa_figures(json.load(f))
    except (OSError, ValueError) as e:
        fail(f'--pubmedqa_json={path}: not a file pubmedqa.py --out_json wrote ({type(e).__name__}: {e})', 2)


def read_suite_json(path):
    """The card's suite (its rows and the base's name) from an eval_suite.py --out_json file, with PubMedQA's figures
    where it ran pubmedqa (or None); exit 2 naming the file otherwise."""
    from eval_suite import card_rows, check_report, pubmedqa_result
    try:
        with open(path, encoding='utf-8') as f:
            report = check_report(json.load(f))
        rows = [check_suite_row(row) for row in card_rows(report)]
        pubmedqa = pubmedqa_result(report)
        pubmedqa = check_pubmedqa_figures(pubmedqa) if pubmedqa else None
    except (OSError, ValueError) as e:
        fail(f'--suite_json={path}: not a file eval_suite.py --out_json wrote ({type(e).__name__}: {e})', 2)
    base = folder_name(report['models'][1]) if len(report['models']) > 1 else None
    return {'rows': rows, 'base': base}, pubmedqa


def main():
    c = configure(OPTIONS)
    check_out(c['out'], c['overwrite'], c['ckpt'])
    pubmedqa = read_pubmedqa_json(c['pubmedqa_json']) if c['pubmedqa_json'] else None
    suite, suite_pubmedqa = read_suite_json(c['suite_json']) if c['suite_json'] else (None, None)
    pubmedqa = pubmedqa or suite_pubmedqa
    target_folder = os.path.realpath(c['out'])
    remove_stale_temporaries(os.path.dirname(target_folder), os.path.basename(target_folder))  # a killed export's
    staging = f'{target_folder}.{os.getpid()}.tmp'  # the folder appears whole, with nothing stale in it
    checkpoint = {}
    try:
        checkpoint = load_checkpoint(c['ckpt'])
        # the figures of the files given, else what train.py --eval_tasks recorded at this iteration beside the
        # checkpoint
        metrics = os.path.join(os.path.dirname(os.path.abspath(c['ckpt'])), 'metrics.jsonl')
        try:
            pubmedqa = pubmedqa or pubmedqa_of(metrics, checkpoint.get('iter_num'))
            suite = suite or suite_of(metrics, checkpoint.get('iter_num'))
        except ValueError as e:
            fail(f'{e}: give the figures with --suite_json=FILE (eval_suite.py --out_json), or mend that line')
        target = export(checkpoint, staging)
        with open(os.path.join(staging, 'README.md'), 'w', encoding='utf-8') as f:
            f.write(card(checkpoint, os.path.basename(os.path.realpath(c['out'])), target, pubmedqa, suite))
        umask = os.umask(0)
        os.umask(umask)
        for name in os.listdir(staging):  # the same permissions for every file (safetensors writes 0600)
            os.chmod(os.path.join(staging, name), 0o666 & ~umask)
        replace_folder(staging, c['out'])
    except (CheckpointError, ExportError) as e:
        fail(f'cannot export {c["ckpt"]}: {e}')
    except Exception as e:  # safetensors and the tokenizer's writer each say "disk full" in their own words
        full = disk_full_message(os.path.join(staging, 'model.safetensors'), e, tensor_bytes(checkpoint.get('model')))
        if not full:
            raise
        fail(f"{full.replace(staging, c['out'])}; nothing was replaced")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f'wrote {target} model, tokenizer and model card (README.md) to {os.path.realpath(c["out"])}')
    context, window = checkpoint['model_args']['block_size'], (checkpoint.get('config') or {}).get('block_size')
    if window and window < context:
        print(f'note: trained on windows of {window} tokens of a context of {context} (max_position_embeddings)')


if __name__ == '__main__':
    main()
