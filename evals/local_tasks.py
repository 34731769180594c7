"""
lm-evaluation-harness's own MultiMedQA tasks reading local files, for machines without network: the six MMLU
medical subjects from the original CSV layout, MedMCQA from its release's dev.json, MedQA (USMLE, 4 options)
from its release's phrases_no_exclude_test.jsonl.

Each task is lm-eval's own config, loaded from the YAML file lm-eval ships (mmlu/default/mmlu_anatomy.yaml ...),
with only its dataset swapped: `custom_dataset` returns the local rows in the hub dataset's columns. The prompt,
the description, the few-shot sampler, the choices and the metrics stay lm-eval's, so the requests are lm-eval's
to the byte (tests/test_eval_tasks.py compares them with lm-eval's task reading the same rows as a hub dataset),
and the tasks report under lm-eval's names (mmlu_anatomy, medmcqa, medqa_4options): tables compare with the
leaderboard's. A local file that is not the release's format is a ValueError naming the file and the line.

    tasks = local_mmlu_tasks('../shared/data/mmlu-medical') + [local_medmcqa_task('medmcqa/'), local_medqa_task(...)]
    simple_evaluate(model=HFLM(...), tasks=tasks)       # build the tasks before loading a model: they check the files

Python's csv module reads the CSVs: pandas would turn a cell "None" or "NA" into NaN and "0.50" into 0.5.
"""
import csv
import difflib
import json
import logging
from contextlib import contextmanager
from pathlib import Path

MMLU_MEDICAL = ('anatomy', 'clinical_knowledge', 'college_biology', 'college_medicine', 'medical_genetics',
                'professional_medicine')
LETTERS = ('A', 'B', 'C', 'D')
MMLU_COLUMNS = 'question, A, B, C, D, answer letter'
MEDMCQA_OPTIONS = ('opa', 'opb', 'opc', 'opd')
MEDMCQA_FILE = 'dev.json'  # the release's validation split: the one lm-eval evaluates (its test has no answers)
MEDQA_FILE = 'phrases_no_exclude_test.jsonl'
MEDQA_RELEASE_PATH = Path('data_clean') / 'questions' / 'US' / '4_options' / MEDQA_FILE

# ---------------------------------------------------------------- lm-eval's config with a local dataset


def lm_eval_task_yaml(relative):
    """A task YAML that lm-eval ships (path under lm_eval/tasks), found without indexing all 14,000 of them."""
    import lm_eval.tasks
    return Path(lm_eval.tasks.__file__).parent / relative


def local_task(yaml_path, load, dataset_kwargs, num_fewshot=None, unset=()):
    """lm-eval's task of `yaml_path` (its includes and !function entries resolved as lm-eval does) whose dataset is
    load(**dataset_kwargs). `unset`: config keys naming splits the local files do not have. num_fewshot: None = as
    simple_evaluate's num_fewshot says (0 if it says nothing); k > 0 = k unless simple_evaluate's says another; 0 =
    always zero-shot (lm-eval then ignores simple_evaluate's, with a warning)."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml
    config = load_yaml(yaml_path, resolve_func=True)
    for key in ('tag', 'group', 'dataset_path', 'dataset_name', *unset):  # tag/group: as lm-eval's own factory does
        config.pop(key, None)
    config['custom_dataset'] = load
    config['dataset_kwargs'] = dataset_kwargs  # shown in the results' configs: where the rows came from
    config['metadata'] = {**config.get('metadata', {}), 'config_source': str(yaml_path)}
    if num_fewshot is not None:
        config['num_fewshot'] = num_fewshot
    with quiet_custom_dataset_note():
        return ConfigurableTask(config=config)


@contextmanager
def quiet_custom_dataset_note():
    """lm-eval warns, for every task with a custom_dataset, that its kwargs can come from --metadata: ours come from
    the caller, and the note would print once per subject."""
    logger = logging.getLogger('lm_eval.api.task')
    note = logging.Filter()
    note.filter = lambda record: 'Custom kwargs can be passed' not in record.getMessage()
    logger.addFilter(note)
    try:
        yield
    finally:
        logger.removeFilter(note)


def dataset_dict(splits, features):
    """{split: rows} as the datasets.DatasetDict lm-eval reads, columns in the hub dataset's order."""
    import datasets
    return datasets.DatasetDict(
        {name: datasets.Dataset.from_list(rows, features=features)
         for name, rows in splits.items()})


# ---------------------------------------------------------------- MMLU (original CSVs)


def mmlu_file(mmlu_dir, subject, split):
    """<mmlu_dir>/<split>/<subject>_<split>.csv, the layout of the original release (data.tar of hendrycks/test)."""
    path = Path(mmlu_dir) / split / f'{subject}_{split}.csv'
    if not path.is_file():
        raise ValueError(f'{path}: not found; put the original MMLU CSVs (hendrycks/test, data/) in {mmlu_dir}: '
                         f'dev/{subject}_dev.csv and test/{subject}_test.csv for each subject '
                         '(../shared/data/mmlu-medical has the six medical subjects)')
    return path


def read_mmlu_csv(path, subject):
    """The rows of one MMLU CSV in cais/mmlu's columns (question, subject, choices, answer 0-3). ValueError naming
    the file and the line for a row without 6 columns or with an answer other than A, B, C, D."""
    rows = []
    try:
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.reader(f)
            line = 1  # where the next row starts: a quoted cell may span lines
            for row in reader:
                check_mmlu_row(row, path, line)
                rows.append(dict(question=row[0], subject=subject, choices=row[1:5], answer=LETTERS.index(row[5])))
                line = reader.line_num + 1
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})')
    except csv.Error as e:
        raise ValueError(f'{path}, line {line}: not CSV ({e})')
    if not rows:
        raise ValueError(f'{path}: no questions in it')
    return rows


def check_mmlu_row(row, path, line):
    if len(row) != 6:
        raise ValueError(f'{path}, line {line}: {len(row)} columns; expected 6 ({MMLU_COLUMNS})')
    if row[5] not in LETTERS:
        raise ValueError(f'{path}, line {line}: answer {row[5]!r}; expected one of {", ".join(LETTERS)}')


def mmlu_features():
    import datasets
    text = datasets.Value('string')
    return datasets.Features(
        dict(question=text, subject=text, choices=datasets.Sequence(text),
             answer=datasets.ClassLabel(names=list(LETTERS))))


def load_mmlu(mmlu_dir, subject, **_):
    """custom_dataset of a local MMLU task: the test split and the dev split (lm-eval's few-shot examples) as the hub
    has them. The val files are not read: lm-eval's MMLU tasks do not use that split. `_`: lm-eval's metadata."""
    files = {'test': mmlu_file(mmlu_dir, subject, 'test'), 'dev': mmlu_file(mmlu_dir, subject, 'dev')}
    return dataset_dict({split: read_mmlu_csv(path, subject) for split, path in files.items()}, mmlu_features())


def check_mmlu_subject(subject):
    """ValueError, with the close names, for a subject lm-eval has no MMLU task for."""
    if not lm_eval_task_yaml(f'mmlu/default/mmlu_{subject}.yaml').is_file():
        known = [p.stem.removeprefix('mmlu_') for p in lm_eval_task_yaml('mmlu/default').glob('mmlu_*.yaml')]
        close = difflib.get_close_matches(subject, known, n=3)
        raise ValueError(f'MMLU subject {subject!r}: lm-eval has no task mmlu_{subject}' +
                         (f" (close: {', '.join(close)})" if close else ''))


def local_mmlu_tasks(mmlu_dir, subjects=MMLU_MEDICAL, num_fewshot=0):
    """lm-eval's mmlu_<subject> tasks (reported under those names) on the CSVs of `mmlu_dir`; `num_fewshot` > 0: the
    first k dev questions as examples, as lm-eval's own. The files are read and checked here, before any model is."""
    tasks = []
    for subject in subjects:
        check_mmlu_subject(subject)
        where = dict(mmlu_dir=str(mmlu_dir), subject=subject)
        tasks.append(
            local_task(lm_eval_task_yaml(f'mmlu/default/mmlu_{subject}.yaml'), load_mmlu, where, num_fewshot or None))
    return tasks


def find_mmlu_dir(given=None, repo=Path(__file__).resolve().parent.parent):
    """The MMLU CSV folder: `given`, else data/mmlu-medical or ../shared/data/mmlu-medical beside the checkout,
    whichever has test/anatomy_test.csv (None if neither: the caller says what to put where)."""
    if given:
        return Path(given)
    for folder in (repo / 'data' / 'mmlu-medical', repo.parent / 'shared' / 'data' / 'mmlu-medical'):
        if (folder / 'test' / 'anatomy_test.csv').is_file():
            return folder
    return None


# ---------------------------------------------------------------- MedMCQA and MedQA (the releases' JSON lines)


def json_lines(path):
    """(line number, object) of a JSON-lines file; ValueError naming the file and line of one that is not an object."""
    try:
        with open(path, encoding='utf-8') as f:
            for number, text in enumerate(f, 1):
                if text.strip():
                    yield number, json_object(text, path, number)
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})')


def json_object(text, path, number):
    try:
        item = json.loads(text)
    except ValueError as e:
        raise ValueError(f'{path}, line {number}: not JSON ({e})')
    if not isinstance(item, dict):
        raise ValueError(f'{path}, line {number}: not a JSON object')
    return item


def require_strings(item, keys, path, number):
    for key in keys:
        if not isinstance(item.get(key), str):
            raise ValueError(f'{path}, line {number}: no {key!r} text')


def release_file(given, name, inside=(), where=''):
    """`given` if it is a file, else the file `name` in the folder `given` (or at one of the paths `inside` it)."""
    path = Path(given)
    if path.is_file():
        return path
    for candidate in (path / name, *(path / p for p in inside)):
        if candidate.is_file():
            return candidate
    raise ValueError(f'{path / name}: not found; put {name} ({where}) there, or pass the file itself')


def read_medmcqa(path):
    """MedMCQA's release rows (JSON lines: id, question, opa..opd, cop 1-4, ...) in the hub's columns, cop 0-3 as the
    hub's loading script made it (int(cop) - 1)."""
    rows = []
    for number, item in json_lines(path):
        require_strings(item, ('question', *MEDMCQA_OPTIONS), path, number)
        cop = item.get('cop')
        if isinstance(cop, bool) or cop not in (1, 2, 3, 4):
            raise ValueError(f'{path}, line {number}: cop {cop!r}; expected 1, 2, 3 or 4 (the correct option; the '
                             "release's test.json has none: use dev.json)")
        row = dict(id=str(item.get('id', '')), question=item['question'])
        row.update({k: item[k] for k in MEDMCQA_OPTIONS}, cop=cop - 1)
        rows.append(row)
    if not rows:
        raise ValueError(f'{path}: no questions in it')
    return rows


def load_medmcqa(medmcqa_file, **_):
    import datasets
    text = datasets.Value('string')
    features = datasets.Features(
        dict(id=text, question=text, **dict.fromkeys(MEDMCQA_OPTIONS, text), cop=datasets.Value('int64')))
    return dataset_dict({'validation': read_medmcqa(medmcqa_file)}, features)


def local_medmcqa_task(path):
    """lm-eval's medmcqa (zero-shot: its few-shot examples come from the 183k-question train split) on the release's
    dev.json, the hub's validation split that lm-eval evaluates (4,183 questions). `path`: the file or its folder."""
    found = release_file(path, MEDMCQA_FILE, where="MedMCQA's release, github.com/medmcqa/medmcqa: data.zip")
    return local_task(lm_eval_task_yaml('medmcqa/medmcqa.yaml'), load_medmcqa, {'medmcqa_file': str(found)},
                      num_fewshot=0, unset=('training_split', ))


def read_medqa(path):
    """MedQA's release rows (JSON lines: question, options {A..D}, answer_idx) in the columns lm-eval's medqa_4options
    reads from GBaker/MedQA-USMLE-4-options-hf: sent1 (the question), ending0..3 (options A..D), label 0-3."""
    rows = []
    for number, item in json_lines(path):
        require_strings(item, ('question', ), path, number)
        options = item.get('options')
        if not isinstance(options, dict) or sorted(options) != list(LETTERS) or \
                not all(isinstance(v, str) for v in options.values()):
            raise ValueError(
                f'{path}, line {number}: options {sorted(options) if isinstance(options, dict) else options!r}; '
                'expected the texts of A, B, C, D (the US/4_options file)')
        if item.get('answer_idx') not in LETTERS:
            raise ValueError(
                f"{path}, line {number}: answer_idx {item.get('answer_idx')!r}; expected one of A, B, C, D")
        endings = {f'ending{i}': options[letter] for i, letter in enumerate(LETTERS)}
        rows.append(dict(sent1=item['question'], **endings, label=LETTERS.index(item['answer_idx'])))
    if not rows:
        raise ValueError(f'{path}: no questions in it')
    return rows


def load_medqa(medqa_file, **_):
    import datasets
    text = datasets.Value('string')
    endings = dict.fromkeys((f'ending{i}' for i in range(4)), text)
    features = datasets.Features(dict(sent1=text, **endings, label=datasets.Value('int64')))
    return dataset_dict({'test': read_medqa(medqa_file)}, features)


def local_medqa_task(path):
    """lm-eval's medqa_4options (zero-shot: its examples come from the train split) on the release's US test file,
    1,273 questions. `path`: the file, its folder, or the release's root (data_clean/questions/US/4_options/ in it)."""
    found = release_file(path, MEDQA_FILE, inside=(MEDQA_RELEASE_PATH, ),
                         where=f'MedQA, github.com/jind11/MedQA: {MEDQA_RELEASE_PATH}')
    return local_task(lm_eval_task_yaml('medqa/medqa.yaml'), load_medqa, {'medqa_file': str(found)}, num_fewshot=0,
                      unset=('training_split', 'validation_split'))
