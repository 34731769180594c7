"""pubmedqa.py and the lm-evaluation-harness task: the project command's numbers are lm_eval's own, and lm_eval's
log-likelihoods are the model's, computed directly."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from conftest import REPO, SHARED, need, write_tiny_checkpoint
from tokenizer import encoding_from_spec

sys.path.insert(0, str(REPO / 'evals' / 'pubmedqa'))
from pubmedqa_data import LABELS, doc_to_text, official_test_split, spread_subset

pytest.importorskip('lm_eval')
pytestmark = pytest.mark.usefixtures('one_thread')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_DATASETS_OFFLINE': '1', 'HF_HUB_OFFLINE': '1'}


@pytest.fixture(scope='module')
def pqal():
    return need(SHARED / 'data' / 'pubmedqa')


@pytest.fixture(scope='module')
def model_ckpt(tmp_path_factory, spec):
    """A tiny exportable model whose context holds a whole question (no truncation anywhere)."""
    path = tmp_path_factory.mktemp('eval') / 'ckpt.pt'
    write_tiny_checkpoint(path, spec, steps=20, pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False)
    ckpt = load_checkpoint(path)
    ckpt['model_args']['block_size'] = 4096  # rotary: only the rope tables grow, no weight depends on it
    save_checkpoint(ckpt, path)
    return path


def test_the_test_split_is_the_official_500_and_its_majority_is_yes(pqal):
    rows = official_test_split(pqal)
    assert len(rows) == 500 and sum(r['final_decision'] == 'yes' for r in rows) == 276  # 55.2%
    assert doc_to_text(rows[0]).startswith('Abstract: ') and doc_to_text(
        rows[0]).endswith(f"\nQuestion: {rows[0]['QUESTION']}\nAnswer:")


@pytest.mark.slow
def test_pubmedqa_py_equals_lm_eval_cli_and_the_models_own_log_likelihoods(model_ckpt, pqal, tmp_path, spec):
    ours = subprocess.run([
        sys.executable, 'pubmedqa.py', f'--ckpt={model_ckpt}', f'--pubmedqa={pqal}', '--limit=12',
        f'--out_json={tmp_path / "ours.json"}'
    ], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert ours.returncode == 0, ours.stderr[-3000:]
    result = json.loads((tmp_path / 'ours.json').read_text())
    assert ours.stdout.startswith('PubMedQA (PQA-L test, 12 questions): accuracy ')
    assert result['questions'] == 12 and f"majority class '{result['majority_label']}'" in ours.stdout
    # the same exported folder through lm_eval's own command line
    subprocess.run([sys.executable, 'export_hf.py', f'--ckpt={model_ckpt}', f'--out={tmp_path / "hf"}'], cwd=REPO,
                   env=ENV, check=True, capture_output=True)
    cli = subprocess.run([
        str(Path(sys.executable).parent / 'lm_eval'), '--model', 'hf', '--model_args',
        f'pretrained={tmp_path / "hf"},dtype=float32', '--tasks', 'pubmedqa_local', '--include_path',
        str(REPO / 'evals' / 'pubmedqa'), '--device', 'cpu', '--metadata',
        json.dumps({'pubmedqa_dir': str(pqal), 'questions': 12}), '--output_path',
        str(tmp_path / 'cli')
    ], env=ENV, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr[-3000:]
    reported = json.loads(next((tmp_path / 'cli').rglob('results_*.json')).read_text())
    assert reported['results']['pubmedqa_local']['acc,none'] == result['accuracy']
    # each log-likelihood is log p(' yes' | prompt) of our model, computed here without lm_eval
    model, enc = model_from_checkpoint(load_checkpoint(model_ckpt)).eval(), encoding_from_spec(spec)
    rows = spread_subset(official_test_split(pqal), 12)
    assert [row['final_decision'] for row in rows].count('yes') == 7  # the split's mix (its file is sorted by label)
    for row, item in zip(rows, result['items']):
        assert item['pmid'] == row['pmid'] and LABELS[item['gold']] == row['final_decision']
        prompt = doc_to_text(row)
        for label, theirs in zip(LABELS, item['loglikelihoods']):
            context, whole = enc.encode_ordinary(prompt), enc.encode_ordinary(prompt + ' ' + label)
            with torch.no_grad():
                logits = model(torch.tensor([whole[:-1]]), all_logits=True)
            logp = torch.log_softmax(logits[0, len(context) - 1:].double(), dim=-1)
            direct = sum(logp[i, t].item() for i, t in enumerate(whole[len(context):]))
            assert direct == pytest.approx(theirs, abs=1e-4)


def test_macro_f1_by_hand():
    import pubmedqa
    golds, preds = [0, 0, 1, 2, 2], [0, 1, 1, 2, 0]
    # yes: tp 1, 2 predicted, 2 true -> 0.5; no: tp 1, 2 predicted, 1 true -> 2/3; maybe: tp 1, 1 predicted, 2 true ->
    # 2/3
    assert pubmedqa.macro_f1(golds, preds) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert pubmedqa.macro_f1([0, 0, 1], [0, 0, 0]) == pytest.approx((0.8 + 0 + 0) / 3)


def pubmedqa_copy(source, folder, change_truth=None, change_labelled=None):
    folder.mkdir()
    for name, change in (('test_ground_truth.json', change_truth), ('ori_pqal.json', change_labelled)):
        text = (source / name).read_text()
        (folder / name).write_text(change(text) if change else text)
    return folder


@pytest.mark.slow
def test_the_pubmedqa_folder_given_is_the_one_evaluated(model_ckpt, pqal, tmp_path):
    """lm-eval hands metadata only to a TaskManager it makes: the folder must reach the task another way. A copy whose
    labels are all changed changes the figures; without the fix the defaults (../shared) were read instead."""
    import pubmedqa
    shift = {'yes': 'no', 'no': 'maybe', 'maybe': 'yes'}
    relabelled = pubmedqa_copy(
        pqal, tmp_path / 'relabelled',
        change_truth=lambda t: json.dumps({pmid: shift[label]
                                           for pmid, label in json.loads(t).items()}))
    ckpt = load_checkpoint(model_ckpt)
    results = [pubmedqa.evaluate_checkpoint(ckpt, pubmedqa_dir=folder, limit=8) for folder in (pqal, relabelled)]
    assert all(shift[LABELS[i['gold']]] == LABELS[j['gold']] for i, j in zip(results[0]['items'], results[1]['items']))
    assert results[1]['pubmedqa_dir'] == str(
        relabelled) and results[0]['majority_label'] != results[1]['majority_label']


@pytest.mark.slow
def test_pubmedqa_data_and_model_folders_that_do_not_read_are_one_line(model_ckpt, pqal, tmp_path):
    first = next(iter(json.loads((pqal / 'test_ground_truth.json').read_text())))
    cases = {
        'missing pmid': (dict(
            change_labelled=lambda t: json.dumps({k: v
                                                  for k, v in json.loads(t).items() if k != first})),
                         f'ori_pqal.json: no question (QUESTION and CONTEXTS) for the test PMID {first}'),
        'truncated': (dict(change_truth=lambda t: t[:len(t) // 2]), 'test_ground_truth.json: not readable JSON'),
        'capitalised': (dict(change_truth=lambda t: t.replace('"yes"', '"Yes"', 1)),
                        "is labelled 'Yes'; expected one of yes, no, maybe"),
    }
    runs = [[f'--ckpt={model_ckpt}', f'--pubmedqa={pubmedqa_copy(pqal, tmp_path / name.replace(" ", "_"), **change)}']
            for name, (change, _) in cases.items()]
    messages = [message for _, message in cases.values()]
    for name, config in (('no_type', '{"vocab_size": 300}'), ('bad_json', '{"model_type": ')):
        (tmp_path / name).mkdir()
        (tmp_path / name / 'config.json').write_text(config)
        runs.append([f'--hf={tmp_path / name}', f'--pubmedqa={pqal}'])
    messages += ['not a Hugging Face model config (a JSON object with a model_type)', 'config.json: not readable JSON']
    procs = [
        subprocess.Popen([sys.executable, 'pubmedqa.py', *args], cwd=REPO, env=ENV, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE) for args in runs
    ]
    for proc, message in zip(procs, messages):
        code, err = proc.wait(timeout=300), proc.stderr.read()
        assert code == 1 and err.count('\n') == 1 and message in err, err
