"""evals/local_tasks.py: lm-eval's MMLU medical, MedMCQA and MedQA tasks read from local files ask lm-eval's own
questions to the byte, and score them as lm-eval's own tasks do when those read the same rows as a hub dataset
(built here as a local folder: no network); bad local files are one line naming the file and the line."""
import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED, need

sys.path.insert(0, str(REPO / 'evals'))
from local_tasks import MMLU_MEDICAL, local_medmcqa_task, local_medqa_task, local_mmlu_tasks  # noqa: E402

pytest.importorskip('lm_eval')
pytestmark = pytest.mark.usefixtures('one_thread', 'offline')
SPLITS = {'test': 'test', 'validation': 'val', 'dev': 'dev'}  # the hub's split: the CSV folder's


@pytest.fixture(scope='module')
def mmlu_dir():
    return need(SHARED / 'data' / 'mmlu-medical')


def lm_eval_own_tasks(folder, specs):
    """lm-eval's own tasks (its registered configs, whole) with their hub dataset replaced by a local folder: a
    group-member override, the one override lm-eval merges into a registered config. The index covers only the
    folder of these tasks' YAMLs (the same files; 0.1 s where the whole index takes 10 s)."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager
    tasks_dir = Path(lm_eval.tasks.__file__).parent
    manager = TaskManager(include_defaults=False, include_path=[str(tasks_dir / f) for f in folder])
    return manager.load([{'group': 'hub', 'task': specs}])['tasks']


@pytest.fixture(scope='module')
def hub_mmlu(mmlu_dir, tmp_path_factory):
    """cais/mmlu's layout (a parquet file per subject and split, its columns and ClassLabel answer) written from the
    CSVs by pandas, a reader independent of the one under test; returns subject -> lm-eval's own mmlu_<subject>."""
    import datasets
    import pandas as pd
    root = tmp_path_factory.mktemp('hub') / 'cais' / 'mmlu'
    features = datasets.Features({
        'question': datasets.Value('string'), 'subject': datasets.Value('string'),
        'choices': datasets.Sequence(datasets.Value('string')), 'answer': datasets.ClassLabel(names=list('ABCD'))
    })
    configs = []
    for subject in MMLU_MEDICAL:
        (root / subject).mkdir(parents=True)
        configs.append(f'- config_name: {subject}\n  data_files:\n')
        for split, csv_split in SPLITS.items():
            table = pd.read_csv(mmlu_dir / csv_split / f'{subject}_{csv_split}.csv', header=None, dtype=str,
                                keep_default_na=False)
            rows = [{'question': r[0], 'subject': subject, 'choices': list(r[1:5]), 'answer': 'ABCD'.index(r[5])}
                    for r in table.itertuples(index=False)]
            datasets.Dataset.from_list(rows, features=features).to_parquet(str(root / subject / f'{split}.parquet'))
            configs.append(f'  - split: {split}\n    path: {subject}/{split}.parquet\n')
    (root / 'README.md').write_text('---\nconfigs:\n' + ''.join(configs) + '---\n')
    cache = str(tmp_path_factory.mktemp('hf_cache'))
    return lm_eval_own_tasks(['mmlu/default'],
                             [{'task': f'mmlu_{s}', 'dataset_path': str(root), 'dataset_kwargs': {'cache_dir': cache}}
                              for s in MMLU_MEDICAL])


def requests(task, shots, limit=None):
    task.set_config('num_fewshot', shots)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return [(i.doc_id, i.idx, i.args) for i in task.instances]


def test_local_mmlu_asks_lm_evals_own_requests_zero_and_five_shot(mmlu_dir, hub_mmlu):
    local = {t.task_name: t for t in local_mmlu_tasks(mmlu_dir)}
    assert list(local) == [f'mmlu_{s}' for s in MMLU_MEDICAL]  # the names tables and the leaderboard use
    for name, theirs in hub_mmlu.items():
        ours = local[name]
        # the same documents, fields in the same order: lm-eval's doc_hash (json of the doc) is the same
        assert [json.dumps(d) for d in ours.eval_docs] == [json.dumps(d) for d in theirs.eval_docs]
        assert requests(ours, 0) == requests(theirs, 0)
        assert requests(ours, 5, limit=12) == requests(theirs, 5, limit=12)  # the first 5 dev questions, as lm-eval
    assert len(local['mmlu_professional_medicine'].eval_docs) == 282
    fewshot = requests(local['mmlu_anatomy'], 5, limit=1)[0][2][0]
    assert fewshot.startswith('The following are multiple choice questions (with answers) about anatomy.\n\n')
    assert fewshot.count('\nAnswer: ') == 5 and fewshot.endswith('\nAnswer:')
    assert len(local_mmlu_tasks(mmlu_dir, ['anatomy'], num_fewshot=5)[0].eval_docs) == 135


@pytest.fixture(scope='module')
def tiny_models(mmlu_dir, tmp_path_factory):
    """Two random Llamas with tokenizers of their own (trained on the anatomy questions, other vocabularies)."""
    from hf_folders import llama_folder
    texts = [line for line in (mmlu_dir / 'test' / 'anatomy_test.csv').read_text().splitlines()] * 3
    root = tmp_path_factory.mktemp('models')
    return [
        llama_folder(root / name, texts, vocab_size=size, max_position_embeddings=1024)
        for name, size in (('a', 1200), ('b', 900))
    ]


def evaluate(folder, task, limit=40):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    model = HFLM(pretrained=str(folder), device='cpu', dtype='float32', batch_size=16)
    # the tasks are built: an empty TaskManager spares the 10 s of indexing the one simple_evaluate would make
    out = simple_evaluate(model=model, tasks=[task], num_fewshot=0, limit=limit, log_samples=True,
                          task_manager=TaskManager(include_defaults=False))
    return out['results'][task.task_name], out['samples'][task.task_name]


@pytest.fixture(scope='module')
def anatomy_runs(mmlu_dir, hub_mmlu, tiny_models):
    """The first 40 anatomy questions: model a on the local task and on lm-eval's own, model b on the local task."""
    return {
        'local': evaluate(tiny_models[0],
                          local_mmlu_tasks(mmlu_dir,
                                           ['anatomy'])[0]), 'own': evaluate(tiny_models[0], hub_mmlu['mmlu_anatomy']),
        'local_b': evaluate(tiny_models[1],
                            local_mmlu_tasks(mmlu_dir, ['anatomy'])[0])
    }


def test_local_mmlu_scores_every_question_as_lm_evals_own_task(anatomy_runs):
    (ours, our_items), (theirs, their_items) = anatomy_runs['local'], anatomy_runs['own']
    assert len(our_items) == len(their_items) == 40
    assert ours['acc,none'] == theirs['acc,none'] and ours['acc_stderr,none'] == theirs['acc_stderr,none']
    for mine, other in zip(our_items, their_items):
        same = ('doc_id', 'acc', 'filtered_resps', 'arguments', 'doc_hash', 'prompt_hash', 'target_hash')
        assert {k: mine[k] for k in same} == {k: other[k] for k in same}


def test_the_stderr_is_lm_evals_and_two_models_compare_question_by_question(anatomy_runs):
    from eval_stats import accuracy_record, compare_task
    (results, items), (results_b, items_b) = anatomy_runs['local'], anatomy_runs['local_b']
    record = accuracy_record('mmlu_anatomy', 'a', items)
    assert record['accuracy'] == results['acc,none'] and record['stderr'] == pytest.approx(
        results['acc_stderr,none'], rel=1e-12)
    # other tokenizers, the same questions: the prompts (text) hash the same
    comparison = compare_task('mmlu_anatomy', items, items_b, names=('a', 'b'))
    assert comparison['n'] == 40
    assert comparison['difference'] == pytest.approx(results['acc,none'] - results_b['acc,none'])
    assert comparison['ci_low'] <= comparison['difference'] <= comparison['ci_high']
    same = compare_task('mmlu_anatomy', items, anatomy_runs['own'][1])  # one model, two tasks asking the same
    assert (same['difference'], same['ci_low'], same['ci_high'], same['verdict']) == (0.0, 0.0, 0.0, 'tied')


# ---------------------------------------------------------------- bad CSVs: one line, the file and the line


def mmlu_copy(mmlu_dir, folder, subject='anatomy', test_text=None):
    for split in ('dev', 'test'):
        (folder / split).mkdir(parents=True)
        source = (mmlu_dir / split / f'{subject}_{split}.csv').read_text(encoding='utf-8')
        text = test_text(source) if split == 'test' and test_text else source
        (folder / split / f'{subject}_{split}.csv').write_text(text, encoding='utf-8')
    return folder


def one_line_error(call):
    with pytest.raises(ValueError) as e:
        call()
    assert '\n' not in str(e.value)
    return str(e.value)


MULTILINE = '"A question whose text\nspans two lines",w,x,y,z,B\n'  # line 1 and 2 of the file: the next row is line 3


def test_bad_mmlu_csvs_are_one_line_naming_the_file_and_line(mmlu_dir, tmp_path):
    short = mmlu_copy(mmlu_dir, tmp_path / 'short', test_text=lambda t: MULTILINE + 'Which bone?,a,b,c,A\n' + t)
    path = short / 'test' / 'anatomy_test.csv'
    assert one_line_error(lambda: local_mmlu_tasks(short, ['anatomy'])) == \
        f'{path}, line 3: 5 columns; expected 6 (question, A, B, C, D, answer letter)'
    letter = mmlu_copy(mmlu_dir, tmp_path / 'letter', test_text=lambda t: MULTILINE + 'Which bone?,a,b,c,d,E\n' + t)
    assert one_line_error(lambda: local_mmlu_tasks(letter, ['anatomy'])) == \
        f"{letter / 'test' / 'anatomy_test.csv'}, line 3: answer 'E'; expected one of A, B, C, D"
    anatomy_only = mmlu_copy(mmlu_dir, tmp_path / 'anatomy_only')
    missing = one_line_error(lambda: local_mmlu_tasks(anatomy_only, ['anatomy', 'medical_genetics']))
    assert missing.startswith(
        f"{anatomy_only / 'test' / 'medical_genetics_test.csv'}: not found; put the original MMLU CSVs")
    assert 'dev/medical_genetics_dev.csv and test/medical_genetics_test.csv' in missing
    assert "lm-eval has no task mmlu_anatomyy (close: anatomy" in one_line_error(
        lambda: local_mmlu_tasks(short, ['anatomyy']))


# ---------------------------------------------------------------- MedMCQA and MedQA from their releases' files

QUESTIONS = [('Which nerve supplies the deltoid?', ['Axillary', 'Radial', 'Ulnar', ' Median '], 0),
             ('Drug of choice for absence seizures?', ['Ethosuximide', 'Phenytoin', 'Carbamazepine', 'None'], 0),
             ('A 30-year-old woman has a fever. Next step?', ['Wait', 'Blood cultures', 'CT', 'Discharge'], 1),
             ('Vitamin deficient in scurvy "C"?', ['A', 'B12', 'C', 'D'], 2)]


def options(o):
    return dict(opa=o[0], opb=o[1], opc=o[2], opd=o[3])


def release_files(root):
    """The releases' files: MedMCQA's dev.json (cop 1-4), MedQA's US/4_options test file (answer_idx a letter)."""
    (root / 'medmcqa').mkdir()
    medmcqa = [
        dict(id=f'q{i}', question=q, **options(o), cop=a + 1, choice_type='single', exp=None, subject_name='Anatomy',
             topic_name=None) for i, (q, o, a) in enumerate(QUESTIONS)
    ]
    (root / 'medmcqa' / 'dev.json').write_text(''.join(json.dumps(r) + '\n' for r in medmcqa))
    folder = root / 'medqa' / 'data_clean' / 'questions' / 'US' / '4_options'
    folder.mkdir(parents=True)
    medqa = [
        dict(question=q, answer=o[a], options=dict(zip('ABCD', o)), meta_info='step1', answer_idx='ABCD'[a])
        for q, o, a in QUESTIONS
    ]
    (folder / 'phrases_no_exclude_test.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in medqa))
    return root / 'medmcqa' / 'dev.json', folder / 'phrases_no_exclude_test.jsonl'


def hub_folders(root):
    """The same rows in the hub datasets' columns (openlifescienceai/medmcqa: cop 0-3; GBaker/MedQA-USMLE-4-options-hf:
    sent1, ending0-3, label), in every split lm-eval's configs name."""
    import pandas as pd
    medmcqa = [dict(id=f'q{i}', question=q, **options(o), cop=a) for i, (q, o, a) in enumerate(QUESTIONS)]
    medqa = [
        dict(id=str(i), sent1=q, sent2='', **{f'ending{k}': o[k]
                                              for k in range(4)}, label=a) for i, (q, o, a) in enumerate(QUESTIONS)
    ]
    for name, rows in (('hub_medmcqa', medmcqa), ('hub_medqa', medqa)):
        (root / name).mkdir()
        for split in ('train', 'validation', 'test'):
            pd.DataFrame(rows).to_parquet(root / name / f'{split}.parquet')
    return root / 'hub_medmcqa', root / 'hub_medqa'


def test_local_medmcqa_and_medqa_ask_lm_evals_own_requests(tmp_path):
    dev, test = release_files(tmp_path)
    hub_medmcqa, hub_medqa = hub_folders(tmp_path)
    cache = {'cache_dir': str(tmp_path / 'hf_cache')}
    specs = [
        dict(task='medmcqa', dataset_path=str(hub_medmcqa), dataset_kwargs=cache),
        dict(task='medqa_4options', dataset_path=str(hub_medqa), dataset_kwargs=cache)
    ]
    own = lm_eval_own_tasks(['medmcqa', 'medqa'], specs)
    for ours in (local_medmcqa_task(tmp_path / 'medmcqa'), local_medqa_task(tmp_path / 'medqa')):
        theirs = own[ours.task_name]
        assert requests(ours, 0) == requests(theirs, 0)
        answers = [ours.doc_to_target(d) for d in ours.eval_docs]
        assert answers == [theirs.doc_to_target(d) for d in theirs.eval_docs] == [0, 0, 1, 2]
    assert requests(ours, 0)[0][2] == ('Question: Which nerve supplies the deltoid?\nA. Axillary\nB. Radial\nC. Ulnar\n'
                                       'D.  Median \nAnswer:', ' A')
    # bad lines: one line naming the file and the line
    dev.write_text(dev.read_text().replace('"cop": 3', '"cop": 0'))
    assert one_line_error(lambda: local_medmcqa_task(dev)).startswith(f'{dev}, line 4: cop 0; expected 1, 2, 3 or 4')
    test.write_text(test.read_text().replace('"D": "D"}', '"D": "D", "E": "E"}'))
    assert one_line_error(lambda: local_medqa_task(test)).startswith(
        f"{test}, line 4: options ['A', 'B', 'C', 'D', 'E']")
    missing = one_line_error(lambda: local_medqa_task(tmp_path))
    assert missing.startswith(
        f'{tmp_path / "phrases_no_exclude_test.jsonl"}: not found; put phrases_no_exclude_test.jsonl')
