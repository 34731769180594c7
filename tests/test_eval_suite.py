"""eval_suite.py on tiny random models: one model gives a JSON record per task with every field (pubmedqa's numbers
are pubmedqa.py's, general_bpb's is loss_eval.evaluate's on the same windows), a markdown table, and on a CPU the
estimate first; --compare gives eval_stats' paired comparison of the same per-question scores and the summary line,
and counts the prompts a short context cuts; bad inputs are one line, before any model loads."""
import json
import math
import sys
from contextlib import nullcontext

import pytest
import torch

from conftest import REPO, SHARED, make_dataset, need

sys.path.insert(0, str(REPO / 'evals' / 'pubmedqa'))
from pubmedqa_data import LABELS, doc_to_text, official_test_split, spread_subset  # noqa: E402

pytest.importorskip('lm_eval')
pytestmark = pytest.mark.usefixtures('one_thread', 'offline')


@pytest.fixture(scope='module')
def pqal():
    return need(SHARED / 'data' / 'pubmedqa')


@pytest.fixture(scope='module')
def mmlu_dir():
    return need(SHARED / 'data' / 'mmlu-medical')


@pytest.fixture(scope='module')
def models(mmlu_dir, tmp_path_factory):
    """Two random Llamas with tokenizers of their own: a reads 2,048 tokens (every prompt fits), b 256 (PubMedQA's
    do not)."""
    from hf_folders import llama_folder
    texts = (mmlu_dir / 'test' / 'anatomy_test.csv').read_text().splitlines() * 3
    root = tmp_path_factory.mktemp('models')
    return (llama_folder(root / 'a', texts, vocab_size=1200, max_position_embeddings=2048),
            llama_folder(root / 'b', texts, vocab_size=900, max_position_embeddings=256))


@pytest.fixture(scope='module')
def text_a(models, tmp_path_factory):
    """A prepared folder of text tokenized with model a's tokenizer (val.bin: about 8 windows of 1,024 tokens)."""
    from tokenizer import model_tokenizer
    return make_dataset(tmp_path_factory.mktemp('text'), n_docs=2000, spec=model_tokenizer(str(models[0])))


def suite(capsys, *args):
    """eval_suite.py's command in this process: (its report, stdout, stderr)."""
    import eval_suite
    report = eval_suite.main(['--device=cpu', *map(str, args)])
    out, err = capsys.readouterr()
    return report, out, err


def test_one_model_gives_every_field_pubmedqa_py_s_numbers_and_loss_eval_s_bpb(models, pqal, mmlu_dir, text_a, tmp_path,
                                                                               capsys):
    import pubmedqa
    from dataloader import eval_starts, load_meta, open_tokens, read_windows
    from eval_suite import check_report, pubmedqa_result
    from model_card import check_pubmedqa_figures
    from hf import from_pretrained
    from loss_eval import evaluate
    out_json = tmp_path / 'suite.json'
    report, out, err = suite(capsys, f'--hf={models[0]}', '--tasks=pubmedqa,mmlu_anatomy,mmlu_medical_genetics,'
                             'general_bpb', '--limit=6', f'--pubmedqa={pqal}', f'--mmlu_dir={mmlu_dir}',
                             f'--general_text={text_a}', f'--out_json={out_json}')
    written = json.loads(out_json.read_text())
    assert written == json.loads(json.dumps(report))
    assert [r['task']
            for r in written['records']] == ['pubmedqa', 'mmlu_anatomy', 'mmlu_medical_genetics', 'general_bpb']
    for r in written['records']:
        assert {'task', 'model', 'n', 'stderr', 'ci_low', 'ci_high', 'seconds', 'value'} <= set(r) and r['n'] == 6
        assert r['ci_low'] < r['value'] < r['ci_high'] or r['stderr'] == 0 and r['model'] == str(models[0])
        assert len(r['scores']) == len(r['doc_ids']) == 6 and sum(r['scores']) / 6 == pytest.approx(r['value'])
    pubmed, anatomy, _, bpb = written['records']
    assert anatomy['accuracy'] == anatomy['value'] and anatomy['stderr'] == pytest.approx(
        math.sqrt(anatomy['value'] * (1 - anatomy['value']) / 5))  # lm-eval's: sqrt(p(1-p)/(n-1))
    assert pubmed['truncated'] == 0 and 'note' not in ''.join(written['notes'])
    # pubmedqa: the numbers of pubmedqa.py (the same task, the same 6 questions spread over the split), which the
    # model card reads as it reads pubmedqa.py's
    alone = pubmedqa.evaluate_folder(str(models[0]), pubmedqa_dir=pqal, limit=6)
    figures = pubmedqa_result(written)
    assert figures == {k: v for k, v in alone.items() if k not in ('items', 'pubmedqa_dir')}
    assert check_pubmedqa_figures(figures) and check_report(written) == written
    # general_bpb: loss_eval.evaluate on the same windows (6 of val.bin's, spread) of the model as our GPT
    assert (bpb['metric'], bpb['higher_is_better'], bpb['window']) == ('bpb', False, 1024)
    meta, gpt = load_meta(text_a), from_pretrained(str(models[0]))
    tokens = open_tokens(text_a, 'val', meta)
    starts = eval_starts(tokens, 1024, 6)
    x, y = (torch.from_numpy(t) for t in read_windows(tokens, starts, 1024))
    token_bytes = torch.tensor(meta['token_bytes'] + [0] * (gpt.config.vocab_size - len(meta['token_bytes'])))
    assert bpb['bpb'] == pytest.approx(evaluate(gpt, [(x, y)], token_bytes, nullcontext())['val_bpb'], rel=1e-9)
    # the table on stdout, and in the markdown file beside the JSON; the estimate on stderr before the first task
    assert out == (tmp_path / 'suite.md').read_text()
    assert '| general_bpb (bits per byte, lower is better) | 6 |' in out and '| mmlu_anatomy (acc) | 6 |' in out
    assert err.index('estimate: ') < err.index(f'{models[0]}: pubmedqa (6 questions, 0-shot)')
    assert f'estimate: {models[0]} takes about ' in err and 'the time a token took in a timed forward pass)' in err


def cut_by_hand(folder, prompts, choices, context):
    """Questions with a prompt + answer longer than context + 1 tokens (lm-eval scores the answer after the last
    `context` tokens), counted with transformers' tokenizer alone."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    return sum(any(len(tok(p + c)['input_ids']) > context + 1 for c in choices) for p in prompts)


def mmlu_prompts(mmlu_dir, subject, n):
    import csv
    with open(mmlu_dir / 'test' / f'{subject}_test.csv', newline='') as f:
        rows = list(csv.reader(f))[:n]
    head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    return [head + r[0].strip() + ''.join(f'\n{k}. {v}' for k, v in zip('ABCD', r[1:5])) + '\nAnswer:' for r in rows]


def test_compare_is_eval_stats_on_the_same_questions_and_a_short_context_is_counted(models, pqal, mmlu_dir, tmp_path,
                                                                                    capsys):
    from eval_stats import compare_task, summary_line
    from eval_suite import card_rows
    a, b = map(str, models)
    report, out, err = suite(capsys, f'--hf={a}', f'--compare={b}', '--tasks=pubmedqa,mmlu_anatomy', '--limit=8',
                             f'--pubmedqa={pqal}', f'--mmlu_dir={mmlu_dir}', f'--out_json={tmp_path / "c.json"}')
    written = json.loads((tmp_path / 'c.json').read_text())
    own = {(r['model'], r['task']): r for r in written['records']}
    assert len(written['comparisons']) == 2
    for c in written['comparisons']:
        ra, rb = own[(a, c['task'])], own[(b, c['task'])]
        samples = [[{'doc_id': i, 'acc': s} for i, s in zip(r['doc_ids'], r['scores'])] for r in (ra, rb)]
        assert c == compare_task(c['task'], *samples, names=(a, b))
        assert c['difference'] == pytest.approx(ra['accuracy'] - rb['accuracy']) and c['n'] == 8
    rows = card_rows(written)
    assert [(r['task'], r['value'], r['base_value'], r['verdict']) for r in rows] == \
        [(c['task'], own[(a, c['task'])]['value'], own[(b, c['task'])]['value'], c['verdict'])
         for c in written['comparisons']]
    line = summary_line(written['comparisons'])
    assert written['summary'] == line and f'\n\n{line}\n' in out and f'model: {a}; base: {b}' in out
    # b reads 256 tokens: the prompts it cuts are counted with its tokenizer and said, one line per task
    rows = spread_subset(official_test_split(pqal), 8)
    cut = {
        'pubmedqa': cut_by_hand(b, [doc_to_text(r) for r in rows], [' ' + label for label in LABELS], 256),
        'mmlu_anatomy': cut_by_hand(b, mmlu_prompts(mmlu_dir, 'anatomy', 8), [' A', ' B', ' C', ' D'], 256)
    }
    assert cut['pubmedqa'] == 8
    for task, count in cut.items():
        assert own[(b, task)]['truncated'] == count and own[(a, task)]['truncated'] == 0
        said = f"note: {b}: {task}: {count} of 8 prompts are longer than the model's 256 tokens"
        assert (said in err) == (count > 0)


def test_bits_per_byte_statistics_by_hand_and_lower_is_better():
    """general_bpb's interval: the delta method for the ratio of summed bits over summed bytes; a model with fewer
    bits on every window is the better one."""
    from eval_stats import compare_task
    from eval_suite import bpb_record
    bits, nbytes = [300.0, 410.0, 280.0, 520.0, 350.0], [200.0, 260.0, 190.0, 330.0, 240.0]
    sums = torch.tensor([[0, 0, b * math.log(2), n] for b, n in zip(bits, nbytes)], dtype=torch.float64)
    record, samples = bpb_record('m', sums, range(5), {})
    bpb, n, mean = sum(bits) / sum(nbytes), 5, sum(nbytes) / 5
    residuals = [b - bpb * m for b, m in zip(bits, nbytes)]
    stderr = math.sqrt(sum(r**2 for r in residuals) / (n - 1)) / mean / math.sqrt(n)
    assert (record['bpb'], record['stderr']) == pytest.approx((bpb, stderr), rel=1e-12)
    assert record['ci_high'] == pytest.approx(bpb + 1.959964 * stderr)
    fewer = bpb_record('m', sums * torch.tensor([1, 1, 0.9, 1]), range(5), {})[1]
    better = compare_task('general_bpb', fewer, samples, metric='bpb', higher_is_better=False)
    assert better['difference'] == pytest.approx(-0.1 * bpb) and better['verdict'] == 'better'


def release_files(root):
    """MedMCQA's dev.json and MedQA's 4-option test file, two questions each, in the releases' formats."""
    rows = [('Which nerve supplies the deltoid?', ['Axillary', 'Radial', 'Ulnar', 'Median'], 0),
            ('Drug of choice for absence seizures?', ['Ethosuximide', 'Phenytoin', 'Carbamazepine', 'None'], 0)]
    medmcqa, medqa = root / 'dev.json', root / 'phrases_no_exclude_test.jsonl'
    medmcqa.write_text(''.join(
        json.dumps(dict(id=str(i), question=q, **dict(zip(('opa', 'opb', 'opc', 'opd'), o)), cop=a + 1)) + '\n'
        for i, (q, o, a) in enumerate(rows)))
    medqa.write_text(''.join(
        json.dumps(dict(question=q, options=dict(zip('ABCD', o)), answer_idx='ABCD'[a])) + '\n' for q, o, a in rows))
    return medmcqa, medqa


def test_multimedqa_is_its_nine_tasks_with_our_pubmedqa_from_local_files(pqal, mmlu_dir, tmp_path):
    from eval_suite import Settings, plan_suite
    medmcqa, medqa = release_files(tmp_path)
    planned = plan_suite(
        Settings(tasks='multimedqa,mmlu_anatomy', pubmedqa_dir=str(pqal), mmlu_dir=str(mmlu_dir), medmcqa=str(medmcqa),
                 medqa=str(medqa), num_fewshot=5))
    assert [t.name for t in planned.tasks] == [
        'pubmedqa', 'medmcqa', 'medqa_4options', 'mmlu_anatomy', 'mmlu_clinical_knowledge', 'mmlu_college_medicine',
        'mmlu_medical_genetics', 'mmlu_professional_medicine', 'mmlu_college_biology'
    ]
    assert all(t.source.startswith('local: ') and t.metric == 'acc' for t in planned.tasks)
    assert [t.shots for t in planned.tasks] == [0, 0, 0] + [5] * 6  # no examples of their own: zero-shot, said
    assert any(n.startswith('multimedqa: its pubmedqa is ours') for n in planned.notes)
    assert any(n.startswith('medmcqa: zero-shot') for n in planned.notes)


def mmlu_copy(mmlu_dir, folder, first_line):
    """anatomy's dev and test CSVs, the test file with another first line."""
    for split in ('dev', 'test'):
        (folder / split).mkdir(parents=True)
        text = (mmlu_dir / split / f'anatomy_{split}.csv').read_text(encoding='utf-8')
        (folder / split / f'anatomy_{split}.csv').write_text(first_line + text if split == 'test' else text)
    return folder


def test_bad_inputs_are_one_line_before_any_model_loads(models, pqal, mmlu_dir, text_a, tmp_path, capsys):
    a, b = map(str, models)
    broken = tmp_path / 'broken'
    broken.mkdir()
    for f in models[1].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / 'config.json').write_text('{"model_type": ')
    five, letter = (mmlu_copy(mmlu_dir, tmp_path / name, line)
                    for name, line in (('five', 'Which bone?,a,b,c,A\n'), ('letter', 'Which bone?,a,b,c,d,E\n')))
    model, anatomy = f'--hf={a}', '--tasks=mmlu_anatomy'
    cases = [
        ([model, '--tasks=pubmedqa,medqa'], 2, "--tasks: no task 'medqa' (close: medmcqa, ", 'medqa_4options)'),
        ([model, '--tasks=medmcqa,mmlu_astronomy,hellaswag'], 1,
         "lm-eval's hub data cannot be had here (HF_HUB_OFFLINE is set): medmcqa (or MedMCQA's release dev.json "
         '(github.com/medmcqa/medmcqa) with --medmcqa=FILE); mmlu_astronomy (or the original CSVs '
         'test/astronomy_test.csv and dev/astronomy_dev.csv in --mmlu_dir=DIR (../shared/data/mmlu-medical has the six '
         'medical subjects)); hellaswag (no local form: run it online)'),
        ([model, anatomy, f'--mmlu_dir={five}'], 1,
         f"{five / 'test' / 'anatomy_test.csv'}, line 1: 5 columns; expected 6 (question, A, B, C, D, answer letter)"),
        ([model, anatomy, f'--mmlu_dir={letter}'], 1,
         f"{letter / 'test' / 'anatomy_test.csv'}, line 1: answer 'E'; expected one of A, B, C, D"),
        ([model, anatomy, f'--mmlu_dir={mmlu_dir}',
          f'--compare={broken}'], 1, f"--compare={broken}: {broken / 'config.json'}: not readable JSON"),
        ([model, '--tasks=general_bpb', f'--compare={b}',
          f'--general_text={text_a}'], 1, f'general_bpb: {b} reads ', f", but {text_a} is tokenized with "),
        ([model, '--tasks=general_bpb'], 2, 'general_bpb needs --general_text=FOLDER'),
    ]
    for args, code, message, *more in cases:
        with pytest.raises(SystemExit) as e:
            suite(capsys, f'--pubmedqa={pqal}', *args)
        out, err = capsys.readouterr()
        assert (e.value.code, out) == (code, '') and err.startswith(f'error: {message}') and err.count('\n') == 1, err
        assert all(m in err for m in more), err


def test_train_py_s_entry_points_on_a_checkpoint_in_memory(pqal, tmp_path, spec):
    """What train.py calls: plan_suite when the run starts (check_text_tokens with its data's tokenizer), then
    evaluate_checkpoint on the model it trained: a report whose pubmedqa figures the model card reads."""
    from checkpoint import load_checkpoint
    from conftest import write_tiny_checkpoint
    from eval_suite import (Settings, SuiteError, check_text_tokens, evaluate_checkpoint, markdown_table, plan_suite,
                            pubmedqa_result)
    from model_card import check_pubmedqa_figures
    from conftest import TINY_TEXT
    from tokenizer import train_bpe
    write_tiny_checkpoint(tmp_path / 'ckpt.pt', spec, steps=10, pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False)
    text = make_dataset(tmp_path / 'text', spec=spec, n_docs=300)
    planned = plan_suite(Settings(tasks='pubmedqa,general_bpb', pubmedqa_dir=str(pqal), general_text=str(text),
                                  limit=4))
    check_text_tokens(planned, [('this run', spec, 32)])
    assert planned.bpb_window == 32
    other = {**train_bpe([TINY_TEXT], 280), 'name': 'other'}
    with pytest.raises(SuiteError, match=f'general_bpb: the run reads the tokens of other, .* but {text} is tokenized'):
        check_text_tokens(planned, [('the run', other, 1024)])
    report = evaluate_checkpoint(load_checkpoint(tmp_path / 'ckpt.pt'), planned)
    assert [(r['task'], r['model'], r['n']) for r in report['records']] == [('pubmedqa', 'this model', 4),
                                                                            ('general_bpb', 'this model', 4)]
    assert all('scores' not in r for r in report['records']) and report['records'][1]['window'] == 32
    assert check_pubmedqa_figures(pubmedqa_result(report))['questions'] == 4
    assert markdown_table(report).startswith('| task | n | value | 95% interval | seconds |')
