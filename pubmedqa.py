"""
PubMedQA zero-shot with lm-evaluation-harness, on a checkpoint or an exported Hugging Face folder:

    python pubmedqa.py --ckpt=out/ckpt.pt                     # exports to a temporary folder first
    python pubmedqa.py --hf=hf/ --pubmedqa=path/to/pubmedqa

The numbers are lm-eval's own: the task evals/pubmedqa/pubmedqa_local.yaml has the prompt and the
yes/no/maybe log-likelihood scoring of lm-eval's `pubmedqa` task, on the official 500-PMID test split
of PQA-L read from local files. Prints accuracy and macro-F1, and the majority-class baseline beside
them (a model that always answers the commonest label: 'yes', 55.2% of the test set).

This is the suite's pubmedqa task (eval_suite.py --tasks=pubmedqa runs the same task, with the other tasks, intervals
and comparisons): pubmedqa.py runs it through eval_suite's functions and adds each question's log-likelihoods.
"""
import json
import os
import sys
import tempfile
from pathlib import Path

from checkpoint import CheckpointError, load_checkpoint
from hf import ExportError, export, load_hf_model, raw_config
from common import DeviceError, DiskFullError, atomic_write, fail, resolve_device, writable_folder
from configurator import Option, at_least, configure
from eval_suite import language_model, macro_f1, measure_requests, pubmedqa_figures, pubmedqa_task, run_lm_task, say_cut

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / 'evals' / 'pubmedqa'))
from pubmedqa_data import LABELS, find_pubmedqa, official_test_split

__all__ = ['macro_f1']  # PubMedQA's macro-F1, kept here by name for the scripts that import it from pubmedqa.py

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'ckpt': 'out/ckpt.pt',        # the checkpoint to evaluate (exported to a temporary folder)
    'hf': '',                     # or an exported Hugging Face folder (wins over ckpt)
    'pubmedqa': '',               # folder of ori_pqal.json + test_ground_truth.json; '' = $PUBMEDQA_DIR, data/pubmedqa,
                                  # ../shared
    'batch_size': Option(16, at_least(1)),  # questions per forward pass
    'device': 'auto',             # 'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1'
    'limit': Option(0, at_least(0)),  # only N test questions, spread over the split to keep its label mix (0 = all 500)
    'out_json': '',               # also write the figures and every question's log-likelihoods here
}
# yapf: enable


def evaluate_folder(folder, pubmedqa_dir=None, batch_size=16, device='cpu', limit=0):
    """lm-eval's pubmedqa_local on a Hugging Face folder (eval_suite's pubmedqa task): accuracy, macro-F1, the
    majority baseline, and per question its PMID, gold label and the log-likelihoods of ' yes', ' no', ' maybe'. A
    folder whose weights do not match its config is refused naming the tensor (CheckpointError: hf.load_hf_model)."""
    data = find_pubmedqa(pubmedqa_dir)  # FileNotFoundError, as before the suite
    item = pubmedqa_task(str(data), limit)
    lm = language_model(load_hf_model(folder).to(device), folder, batch_size)
    say_cut(folder, item, measure_requests(lm, item), lm.max_length)  # prompts longer than the model reads, counted
    results, samples = run_lm_task(lm, item)
    items = [{
        'pmid': s['doc']['pmid'], 'gold': LABELS.index(s['doc']['final_decision']),
        'loglikelihoods': [r[0] for r in s['filtered_resps']]
    } for s in samples]
    return {**pubmedqa_figures(samples), 'accuracy': results['acc,none'], 'pubmedqa_dir': str(data), 'items': items}


def evaluate_checkpoint(checkpoint, **kwargs):
    """evaluate_folder on a loaded checkpoint, exported to a temporary folder (ExportError if it has no standard
    architecture)."""
    with tempfile.TemporaryDirectory() as folder:
        export(checkpoint, folder)
        return evaluate_folder(folder, **kwargs)


def check_model_folder(folder):
    """Exit unless `folder` has the config.json of a Hugging Face model (lm-eval's traceback otherwise)."""
    if not os.path.isfile(os.path.join(folder, 'config.json')):
        fail(f'--hf={folder}: not a Hugging Face model folder (no config.json)', 2)
    try:
        raw_config(folder)
    except CheckpointError as e:
        fail(str(e))


def summary(r):
    return (f"PubMedQA (PQA-L test, {r['questions']} questions): accuracy {r['accuracy']:.4f}, macro-F1 "
            f"{r['macro_f1']:.4f}; "
            f"majority class '{r['majority_label']}': accuracy {r['majority_accuracy']:.4f}, macro-F1 "
            f"{r['majority_macro_f1']:.4f}")


def main():
    c = configure(OPTIONS)
    if c['out_json'] and not writable_folder(os.path.dirname(os.path.abspath(c['out_json'])), create=False):
        fail(f"--out_json={c['out_json']}: its folder does not exist or is not writable", 2)
    try:
        official_test_split(find_pubmedqa(c['pubmedqa'] or None))  # read and checked before any model is
    except FileNotFoundError as e:
        fail(str(e), 2)
    except ValueError as e:
        fail(str(e))
    try:
        device = str(resolve_device(c['device']))
    except DeviceError as e:
        fail(str(e), 2)
    options = dict(pubmedqa_dir=c['pubmedqa'] or None, batch_size=c['batch_size'], device=device, limit=c['limit'])
    if c['hf']:
        check_model_folder(c['hf'])
        try:
            result = evaluate_folder(c['hf'], **options)
        except CheckpointError as e:
            fail(f"--hf={c['hf']}: {e}")
    else:
        try:
            result = evaluate_checkpoint(load_checkpoint(c['ckpt']), **options)
        except (CheckpointError, ExportError) as e:
            fail(f"cannot evaluate {c['ckpt']}: {e}")
    print(summary(result))
    if c['out_json']:
        try:
            with atomic_write(c['out_json'], 'w') as f:
                json.dump(result, f, indent=1)
        except DiskFullError as e:
            fail(str(e))


if __name__ == '__main__':
    main()
