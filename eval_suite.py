"""
The evaluation suite (issue 31): a checkpoint or a Hugging Face folder on a set of tasks, each accuracy with its
standard error and 95% interval; with --compare, a second model on the same questions and, per task, the paired
difference with its bootstrap interval and a verdict, then "better on k, tied on m, worse on n tasks".

    python eval_suite.py --ckpt=out/ckpt.pt                                  # pubmedqa + the six MMLU medical subsets
    python eval_suite.py --hf=hf/tuned --compare=hf/base --tasks=multimedqa,general_bpb --general_text=data/text
    python eval_suite.py --hf=hf/ --tasks=hellaswag,arc_easy,piqa --out_json=eval.json   # lm-eval's hub data: online

Tasks (--tasks, comma-separated):
  pubmedqa        our local task as pubmedqa.py runs it (evals/pubmedqa: lm-eval's prompt and scoring, PQA-L's 500)
  mmlu_<subject>  lm-eval's MMLU task; from the original CSVs when --mmlu_dir (or data/mmlu-medical, ../shared) has
                  them (evals/local_tasks.py), else from the hub. mmlu_medical: the six medical subjects
  medmcqa, medqa_4options   lm-eval's tasks on their releases' files (--medmcqa=, --medqa=), else from the hub
  multimedqa      lm-eval's group, run as its nine tasks with our pubmedqa (lm-eval's loads bigbio/pubmed_qa by a
                  loading script, which datasets >= 4 no longer runs)
  general_bpb     bits per byte on the val.bin of a prepared folder (--general_text=; lower is better)
  any other lm-eval task or group by name (hellaswag, arc_easy, piqa, ...): hub data, online (or in the Hugging Face
                  cache with HF_DATASETS_OFFLINE=1)
Everything is checked before a model loads: task names (an unknown one lists the close ones), local files, hub
data, the models' folders. Zero-shot unless --num_fewshot; accuracy (acc), acc_norm for general tasks that report it
(as the Open LLM Leaderboard). A prompt longer than the model's context is counted and said per task (lm-eval keeps
its end). On CPU the suite says how long it will take first (a timed batch times the tokens lm-eval will run).

Statistics: eval_stats.py (lm-eval's standard error, the normal 95% interval, the paired bootstrap over questions).
general_bpb is a ratio of sums over windows (bits / bytes): its standard error is the delta method's over windows
(each window's contribution linearised), and a comparison bootstraps those contributions on the same windows.
Output: the markdown table on stdout (--out_md= writes it, by default beside --out_json=), JSON with one record per
task and model (and per task, the comparison). For train.py and the model card: plan_suite and check_text_tokens
when a run starts, evaluate_checkpoint at its end, pubmedqa_result (pubmedqa.py's figures), markdown_table,
card_rows, check_report (a --out_json file read back).
"""
import difflib
import json
import logging
import math
import os
import random
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from tqdm import tqdm

from checkpoint import load_checkpoint, model_from_checkpoint, tokenizer_of
from common import (CheckpointError, DeviceError, DiskFullError, atomic_write, fail, first_line, precision,
                    resolve_device, writable_folder)
from configurator import Option, at_least, configure
from dataloader import DataError, eval_starts, load_meta, open_tokens, read_windows, window_starts
from eval_stats import Z95, accuracy_record, compare_task, stderr_of_mean, summary_line, task_label
from hf import ExportError, check_weight_files, export, from_hf_model, load_hf_model, shapes_of, target_architecture
from loss_eval import bits_per_byte, window_sums
from model import GPTConfig
from tokenizer import TokenizerError, fingerprint, model_tokenizer, same_tokens

# lm_eval and transformers are imported where they are used: --help and a bad option answer without them
REPO = Path(__file__).resolve().parent
sys.path[:0] = [str(REPO / 'evals'), str(REPO / 'evals' / 'pubmedqa')]
from local_tasks import (MMLU_MEDICAL, find_mmlu_dir, lm_eval_task_yaml, local_medmcqa_task, local_medqa_task,
                         local_mmlu_tasks, quiet_custom_dataset_note)
from pubmedqa_data import LABELS, find_pubmedqa, official_test_split

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'ckpt': '',                   # the checkpoint to evaluate (exported to a temporary folder for lm-eval)
    'hf': '',                     # or a Hugging Face model folder (wins over ckpt)
    'tasks': 'pubmedqa,mmlu_medical',  # comma-separated: pubmedqa, mmlu_medical, mmlu_<subject>, medmcqa,
                                  # medqa_4options, multimedqa, general_bpb, or any lm-eval task (its hub data: online)
    'compare': '',                # a second model (checkpoint file or Hugging Face folder) on the same questions:
                                  # per task the paired difference, its interval and a verdict
    'limit': Option(0, at_least(0)),  # N questions a task (pubmedqa: spread over its label-sorted split; others: the
                                  # first N), N windows for general_bpb; 0 = all
    'num_fewshot': Option(0, at_least(0)),  # examples before each question (the leaderboard's: 0); tasks without
                                  # examples of their own (pubmedqa, local medmcqa and medqa) stay zero-shot
    'batch_size': Option(16, at_least(1)),  # requests (or general_bpb windows) per forward pass
    'device': 'auto',             # 'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1'
    'pubmedqa': '',               # folder of ori_pqal.json + test_ground_truth.json; '' = $PUBMEDQA_DIR, data/pubmedqa,
                                  # ../shared
    'mmlu_dir': '',               # the original MMLU CSVs (dev/, test/); '' = data/mmlu-medical or ../shared's if there
    'medmcqa': '',                # MedMCQA's dev.json (or its folder): medmcqa from it instead of the hub
    'medqa': '',                  # MedQA's US 4-option test file (or the release's root): medqa_4options from it
    'general_text': '',           # a prepared data folder (val.bin, meta.pkl) of general text, for general_bpb
    'out_json': '',               # write every record (and each question's score) here
    'out_md': '',                 # write the markdown table here ('' = beside out_json, .md, if out_json is given)
}
# yapf: enable

GROUPS = {  # the suite's own group names, expanded in place
    'mmlu_medical': [f'mmlu_{s}' for s in MMLU_MEDICAL],
    'multimedqa': ['pubmedqa', 'medmcqa', 'medqa_4options'] +  # lm-eval's multimedqa.yaml, in its order
    [
        f'mmlu_{s}' for s in ('anatomy', 'clinical_knowledge', 'college_medicine', 'medical_genetics',
                              'professional_medicine', 'college_biology')
    ]
}
OURS = ('pubmedqa', 'general_bpb', *GROUPS)
BPB_WINDOW = 1024  # tokens a general_bpb window holds at most: CPU-affordable; less where a model reads less
SEED = 1234  # lm-eval's seed for numpy, torch and few-shot examples (simple_evaluate's): the prompts counted are run
HUB_HINT = {
    'medmcqa': "MedMCQA's release dev.json (github.com/medmcqa/medmcqa) with --medmcqa=FILE",
    'medqa_4options': ("MedQA's data_clean/questions/US/4_options/phrases_no_exclude_test.jsonl "
                       '(github.com/jind11/MedQA) with --medqa=FILE')
}
MMLU_HUB_ROWS = {'professional_medicine': 272}  # where the hub's cais/mmlu has fewer questions than the CSV release


class SuiteError(ValueError):
    """One line saying what is wrong and what to do; code: the exit status (2: the command line, 1: a file or a
    model)."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


@dataclass
class Settings:
    """What the suite runs, as the command's options say (train.py builds one from its own)."""
    tasks: str = 'pubmedqa,mmlu_medical'
    pubmedqa_dir: str = ''
    mmlu_dir: str = ''
    medmcqa: str = ''
    medqa: str = ''
    general_text: str = ''
    limit: int = 0
    num_fewshot: int = 0
    batch_size: int = 16
    # resolved (resolve_device); comments of fields named as options sit above them: --help reads those beside one
    device: str = 'cpu'


@dataclass
class SuiteTask:
    """One row of the table: a built lm-eval task (or, for general_bpb, none) and how it is scored."""
    name: str  # the suite's name of it (pubmedqa, mmlu_anatomy, general_bpb, hellaswag)
    task: object = None  # lm-eval's Task, built (its data read and checked)
    metric: str = 'acc'  # the per-question score compared: acc, acc_norm; bpb for general_bpb
    shots: int = 0
    # lm-eval's limit (first N); pubmedqa's is in its task (spread), general_bpb's in windows
    limit: int = None
    source: str = ''  # where the questions come from: a local path or a hub dataset


@dataclass
class Suite:
    settings: Settings
    tasks: list
    notes: list = field(default_factory=list)  # said once, under the table
    text: dict = None  # general_bpb's data: {'folder', 'meta'}
    bpb_window: int = 0  # general_bpb's window when several models must share it (0: each model's own, <= 1024)


@dataclass
class Model:
    label: str  # as the command line named it: the table's column and the records' 'model'
    folder: str = ''  # a Hugging Face folder
    checkpoint: dict = None  # or a loaded checkpoint (exported to a temporary folder for lm-eval)


def say(text):
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- tasks: names, local files, hub data


def task_names(text):
    """The names of --tasks, the suite's groups expanded, each once, in order."""
    names = []
    for given in (n.strip() for n in text.split(',')):
        for name in GROUPS.get(given, [given] if given else []):
            if name not in names:
                names.append('pubmedqa' if name == 'pubmedqa_local' else name)
    if not names:
        raise SuiteError('--tasks: no task named (e.g. --tasks=pubmedqa,mmlu_medical)', 2)
    return names


def mmlu_subject(name):
    """'anatomy' for mmlu_anatomy when lm-eval has that MMLU task, else None (mmlu_stem, a group, is not one)."""
    subject = name.removeprefix('mmlu_')
    return subject if name.startswith('mmlu_') and lm_eval_task_yaml(f'mmlu/default/{name}.yaml').is_file() else None


def local_source(name, settings):
    """Where a task's rows come from on this machine: a path, or None (lm-eval's hub data)."""
    if name == 'medmcqa':
        return settings.medmcqa or None
    if name == 'medqa_4options':
        return settings.medqa or None
    subject = mmlu_subject(name)
    folder = find_mmlu_dir(settings.mmlu_dir or None)
    if subject and folder and (settings.mmlu_dir or (folder / 'test' / f'{subject}_test.csv').is_file()):
        return str(folder)  # a --mmlu_dir given is the one read: one without the subject's files is an error
    return None


@lru_cache(maxsize=1)
def task_index():
    """lm-eval's TaskManager over all its tasks (~10 s to index 14,000 YAML files: built only for a name not ours)."""
    from lm_eval.tasks import TaskManager
    return TaskManager()


def check_known(names):
    """SuiteError (one line, the close names) for a name lm-eval does not know either."""
    if not names:
        return
    known = set(task_index().all_tasks)
    for name in names:
        if name not in known:
            raise SuiteError(f'--tasks: no task {name!r}' + close_names(name, [*known, *OURS]), 2)


def close_names(name, known):
    """' (close: a, b, c)': difflib's close matches, then the names holding it ('medqa': medqa_4options), at most 8."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    close += sorted((k for k in known if name.lower() in k.lower() and k not in close), key=len)
    return f" (close: {', '.join(close[:8])})" if close else ' (none close; lm_eval --tasks list shows them all)'


def offline_by_choice():
    """The variable set that keeps Hugging Face libraries off the network, or None."""
    for variable in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE'):
        if os.environ.get(variable, '').strip().lower() in ('1', 'true', 'yes', 'on'):
            return variable
    return None


def hub_reachable(timeout=5.0):
    """Whether the Hugging Face hub answers a connection (datasets would otherwise retry for ~25 s, then fail)."""
    endpoint = urlparse(os.environ.get('HF_ENDPOINT') or 'https://huggingface.co')
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def local_hint(name):
    """What to put where so that a hub task runs offline."""
    subject = mmlu_subject(name)
    if subject:
        return (f'or the original CSVs test/{subject}_test.csv and dev/{subject}_dev.csv in --mmlu_dir=DIR '
                '(../shared/data/mmlu-medical has the six medical subjects)')
    return f'or {HUB_HINT[name]}' if name in HUB_HINT else 'no local form: run it online'


def hub_error(names, why):
    return SuiteError(f"lm-eval's hub data cannot be had here ({why}): " + '; '.join(f'{n} ({local_hint(n)})'
                                                                                     for n in names))


def load_hub_task(name):
    """lm-eval's own task (or a group's tasks) by name, its data from the hub or the cache: {task name: Task}."""
    try:
        with quiet_custom_dataset_note():
            return task_index().load([name])['tasks']
    except ConnectionError as e:
        raise hub_error([name], f'no network: {first_line(e)}')
    except Exception as e:  # a dataset that no longer loads (scripts: datasets >= 4), a gated one, ...
        raise SuiteError(f'{name}: its data did not load from the hub ({type(e).__name__}: {first_line(e)})')


def hub_tasks(names):
    """{name: its SuiteTasks} of lm-eval's hub tasks (a group gives its tasks). Hub data is for machines with network:
    offline (a variable says so, or the hub does not answer) the suite stops at once, saying what local files would do
    instead, where datasets would retry for ~25 s and fail in a page of messages."""
    variable = offline_by_choice()
    if variable:
        raise hub_error(names, f'{variable} is set')
    if not hub_reachable():
        raise hub_error(names, 'no network: huggingface.co does not answer')
    return {
        name: [
            SuiteTask(n, task, source=f'hub: {task.config.dataset_path}') for n, task in load_hub_task(name).items()
        ]
        for name in names
    }


def pubmedqa_task(pubmedqa_dir='', limit=0):
    """Our pubmedqa_local (evals/pubmedqa), as pubmedqa.py runs it: the folder and the question count reach the task
    through its TaskManager's metadata (lm-eval hands `metadata=` only to one it makes itself). SuiteError for data
    that is not there (code 2) or not PubMedQA's (1)."""
    from lm_eval.tasks import TaskManager
    try:
        folder = find_pubmedqa(pubmedqa_dir or None)
        official_test_split(folder)  # read and checked here, before any model is
    except FileNotFoundError as e:
        raise SuiteError(str(e), 2)
    except ValueError as e:
        raise SuiteError(str(e))
    manager = TaskManager(include_defaults=False, include_path=str(REPO / 'evals' / 'pubmedqa'),
                          metadata={'pubmedqa_dir': str(folder), 'questions': limit})
    with quiet_custom_dataset_note():
        task = manager.load(['pubmedqa_local'])['tasks']['pubmedqa_local']
    return SuiteTask('pubmedqa', task, source=f'local: {folder}')


def local_task(name, where, settings, notes):
    """The SuiteTask of an MMLU subject, medmcqa or medqa_4options read from local files (checked here)."""
    try:
        if name == 'medmcqa':
            task = local_medmcqa_task(where)
        elif name == 'medqa_4options':
            task = local_medqa_task(where)
        else:
            task = local_mmlu_tasks(where, [mmlu_subject(name)], settings.num_fewshot)[0]
    except ValueError as e:
        raise SuiteError(str(e))
    hub_rows, rows = MMLU_HUB_ROWS.get(name.removeprefix('mmlu_')), len(task.eval_docs)
    if hub_rows and rows != hub_rows:
        notes.append(f"{name}: the CSV release has {rows} questions, the hub's cais/mmlu {hub_rows} (lm-eval's and the "
                     'leaderboards\' figures): compare with published figures knowing it')
    return SuiteTask(name, task, source=f'local: {where}')


def general_text(folder):
    """general_bpb's data: a prepared folder's meta.pkl, its token files checked. SuiteError otherwise."""
    if not folder:
        raise SuiteError(
            'general_bpb needs --general_text=FOLDER: a prepared data folder of general text (val.bin, '
            'meta.pkl), e.g. what data/text/prepare.py writes', 2)
    try:
        return {'folder': folder, 'meta': load_meta(folder)}
    except DataError as e:
        raise SuiteError(f'--general_text={folder}: {e}')


def scored_by(task_obj, name):
    """The per-question score the suite compares: acc for the medical tasks (the Open Medical-LLM Leaderboard's),
    acc_norm where a general task reports it (the Open LLM Leaderboard's), else acc. SuiteError for a task that is
    not multiple-choice or reports neither."""
    kind, metrics = task_obj.get_config('output_type'), task_obj.higher_is_better()
    if kind not in ('multiple_choice', 'loglikelihood') or not {'acc', 'acc_norm'} & set(metrics):
        raise SuiteError(
            f'{name}: a {kind} task reporting {", ".join(metrics) or "nothing"}; the suite compares '
            'accuracies (acc, acc_norm) of multiple-choice tasks', 2)
    medical = name in ('pubmedqa', 'medmcqa', 'medqa_4options') or name.startswith('mmlu_')
    return 'acc_norm' if 'acc_norm' in metrics and not medical else 'acc'


def with_shots(item, settings, notes):
    """item scored, its shots and limit set: tasks without examples of their own stay zero-shot (said once)."""
    item.metric, item.limit = scored_by(item.task, item.name), settings.limit or None
    zero_only = item.name == 'pubmedqa' or item.task.get_config('num_fewshot') == 0
    item.shots = 0 if zero_only else settings.num_fewshot
    if zero_only and settings.num_fewshot:
        notes.append(f'{item.name}: zero-shot (its data has no examples of its own to show): --num_fewshot='
                     f'{settings.num_fewshot} applies to the other tasks')
    if item.name == 'pubmedqa':
        item.limit = None  # spread over the split by its task (pubmedqa_task's limit)
    return item


def plan_suite(settings):
    """Every task of settings.tasks built and checked, before any model loads: names (SuiteError listing the close
    ones), local files (SuiteError naming the file and line), hub data (downloaded; offline, SuiteError saying which
    files to put where), general_bpb's folder."""
    names, notes, text = task_names(settings.tasks), [], None
    if 'multimedqa' in [n.strip() for n in settings.tasks.split(',')]:
        notes.append("multimedqa: its pubmedqa is ours (evals/pubmedqa: lm-eval's prompt and scoring on PQA-L's test "
                     "files): lm-eval's loads bigbio/pubmed_qa by a loading script, which datasets >= 4 no longer runs")
    sources = {n: local_source(n, settings) for n in names}
    hub = [n for n in names if n not in OURS and not sources[n]]
    check_known([n for n in hub if not mmlu_subject(n) and n not in HUB_HINT])
    loaded = hub_tasks(hub) if hub else {}
    tasks = []
    for name in names:
        if name == 'general_bpb':
            text = general_text(settings.general_text)
            tasks.append(SuiteTask(name, metric='bpb', limit=settings.limit, source=f'local: {settings.general_text}'))
        elif name == 'pubmedqa':
            tasks.append(pubmedqa_task(settings.pubmedqa_dir, settings.limit))
        elif sources[name]:
            tasks.append(local_task(name, sources[name], settings, notes))
        else:  # a group's tasks come in its place (each once)
            tasks += [t for t in loaded[name] if t.name not in {s.name for s in tasks}]
    tasks = [with_shots(t, settings, notes) if t.task is not None else t for t in tasks]
    return Suite(settings, tasks, list(dict.fromkeys(notes)), text)


# ---------------------------------------------------------------- models


def open_model(path, option):
    """The Model a --ckpt, --hf or --compare path names, checked without loading it onto a device: --hf's, and a
    --compare folder with a config.json, are Hugging Face folders; --ckpt's and other --compare paths checkpoints (a
    file, or a sharded checkpoint's folder). SuiteError (one line) for one that will not load."""
    if not os.path.exists(path):
        raise SuiteError(f'--{option}={path}: not found', 2)
    if option == 'hf' or option == 'compare' and os.path.isfile(os.path.join(path, 'config.json')):
        return Model(path, folder=checked_folder(path, option))
    try:
        checkpoint = load_checkpoint(path)
        tokenizer_of(checkpoint, path)
        target_architecture(GPTConfig(**checkpoint['model_args']))  # ExportError: no standard architecture
    except (CheckpointError, ExportError, KeyError, TypeError, ValueError) as e:
        folder = ' neither a Hugging Face folder (no config.json) nor a checkpoint:' if os.path.isdir(path) else ''
        raise SuiteError(f'--{option}={path}:{folder} cannot evaluate it ({first_line(e)})')
    return Model(path, checkpoint=checkpoint)


def checked_folder(folder, option):
    """SuiteError unless the folder has a config this project reads, weight files and a tokenizer transformers
    loads (the weights' shapes are checked when they load: hf.load_hf_model)."""
    from transformers import AutoTokenizer
    problem = None
    if not os.path.isfile(os.path.join(folder, 'config.json')):
        problem = 'not a Hugging Face model folder (no config.json)'
    elif not any(any(Path(folder).glob(p)) for p in ('*.safetensors', '*.bin')):
        problem = 'no weights (model.safetensors or pytorch_model.bin) in it'
    if problem:
        raise SuiteError(f'--{option}={folder}: {problem}', 2)
    try:
        shapes_of(folder)
        check_weight_files(folder)
        AutoTokenizer.from_pretrained(folder)
    except CheckpointError as e:
        raise SuiteError(f'--{option}={folder}: {first_line(e)}')
    except Exception as e:  # transformers' own errors for a tokenizer it cannot read
        raise SuiteError(f'--{option}={folder}: its tokenizer does not load ({type(e).__name__}: {first_line(e)})')
    return folder


def context_of(model):
    """The tokens a model reads at once."""
    if model.checkpoint is not None:
        return model.checkpoint['model_args']['block_size']
    return shapes_of(model.folder).block_size


def tokens_of(model):
    """The tokenizer spec a model reads (for general_bpb: it must be the data's)."""
    if model.checkpoint is not None:
        return tokenizer_of(model.checkpoint, model.label)
    try:
        return model_tokenizer(model.folder)
    except TokenizerError as e:
        raise SuiteError(f'general_bpb: the tokenizer of {model.label} does not convert ({e})')


def check_general_text(suite, models):
    """general_bpb's folder against the models (check_text_tokens), before any loads."""
    if suite.text is not None:
        check_text_tokens(suite, [(m.label, tokens_of(m), context_of(m)) for m in models])


def check_text_tokens(suite, readers):
    """general_bpb's folder against its readers, [(label, tokenizer spec, context)]: each must read the folder's
    tokens (bits per byte of one prepared val.bin: the suite compares models, but this task needs their tokens to be
    the data's), and val.bin must hold more than a window. Sets the window they share (at most 1,024 tokens). train.py
    calls it when a run starts, with its data's tokenizer and its block_size."""
    if suite.text is None:
        return
    data, meta = suite.text['folder'], suite.text['meta']
    for label, spec, _ in readers:
        if not same_tokens(spec, meta['tokenizer']):
            raise SuiteError(
                f"general_bpb: {label} reads the tokens of {fingerprint(spec)}, but {data} is tokenized with "
                f"{fingerprint(meta['tokenizer'])}: prepare the text with that model's tokenizer (or leave general_bpb "
                'out)')
    suite.bpb_window = min(BPB_WINDOW, *(context for _, _, context in readers))
    tokens = len(open_tokens(data, 'val', meta))
    if tokens <= suite.bpb_window:
        raise SuiteError(f'general_bpb: {data}/val.bin has {tokens} tokens, not more than one window of '
                         f'{suite.bpb_window}')


def tokenizer_note(models):
    """[a note] when two models read different tokenizers: allowed (prompts are text, each model reads them its own
    way), and said."""
    try:
        specs = [tokens_of(m) for m in models]
    except (SuiteError, CheckpointError, ValueError, KeyError, OSError):  # one this project does not convert: lm-eval
        # reads it all the same
        return []
    if len(specs) < 2 or same_tokens(*specs):
        return []
    return [
        f'{models[0].label} and {models[1].label} read different tokenizers: the suite compares the models on the '
        'same questions (text), each reading them with its own'
    ]


@contextmanager
def hf_folder_of(model):
    """A Hugging Face folder of the model for lm-eval: its own, or a checkpoint exported to a temporary one."""
    if model.folder:
        yield model.folder
        return
    with tempfile.TemporaryDirectory() as folder:
        export(model.checkpoint, folder)
        yield folder


LM_EVAL_NOISE = ('is not of type `str`', 'already-initialized model', 'Combined length of context')


def quiet_lm_eval_model(record):
    """lm-eval's warnings that a model given loaded may ignore loading options (it is loaded as we mean it to be), and
    one per request cut to the context: the suite counts those itself and says so once per task."""
    return not any(text in record.getMessage() for text in LM_EVAL_NOISE)


def language_model(hf_model, folder, batch_size):
    """lm-eval's model of a loaded transformers model and its folder's tokenizer: it runs where the model is."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer
    logger = logging.getLogger('lm_eval.models.huggingface')
    if quiet_lm_eval_model not in logger.filters:
        logger.addFilter(quiet_lm_eval_model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # transformers warns once that a text has more tokens than the model reads: the suite counts those prompts
    tokenizer.deprecation_warnings['sequence-length-is-longer-than-the-specified-maximum'] = True
    return HFLM(pretrained=hf_model, tokenizer=tokenizer, batch_size=batch_size)


# ---------------------------------------------------------------- requests: cut prompts, cost


def encoded(lm, context, continuation):
    """(context tokens, continuation tokens) as lm-eval's loglikelihood encodes a request (api/model.py)."""
    if context:
        return lm._encode_pair(context, continuation)
    tokens = lm.tok_encode(continuation, add_special_tokens=False)
    return ([lm.prefix_token_id], tokens) if lm.prefix_token_id != tokens[0] else (tokens[:1], tokens[1:])


def build_requests(item):
    """The task's requests as simple_evaluate will build them (its shots, the few-shot seed, the limit)."""
    item.task.set_config('num_fewshot', item.shots)
    item.task.set_fewshot_seed(seed=SEED)
    item.task.build_all_requests(limit=item.limit, rank=0, world_size=1)
    return item.task.instances


def measure_requests(lm, item):
    """{'questions', 'cut': questions with a request longer than the context (lm-eval keeps its end), 'passes': the
    input length of each forward pass lm-eval will run (requests sharing a context and one-token answers share
    one: its logits cache)}."""
    docs, cut, passes = set(), set(), {}
    for request in build_requests(item):
        context, continuation = encoded(lm, *request.args)
        docs.add(request.doc_id)
        if len(context) + len(continuation) > lm.max_length + 1:
            cut.add(request.doc_id)
        passes[hash(tuple(context + continuation[:-1]))] = min(len(context) + len(continuation) - 1, lm.max_length)
    return {'questions': len(docs), 'cut': len(cut), 'passes': list(passes.values())}


def padded_tokens(lengths, batch_size):
    """Tokens lm-eval computes for these passes: longest first, in batches padded to their first."""
    ordered = sorted(lengths, reverse=True)
    return sum(len(ordered[i:i + batch_size]) * ordered[i] for i in range(0, len(ordered), batch_size))


def seconds_per_token(model, length, tokens=1024):
    """A forward pass of the model (transformers' or ours) on about `tokens` tokens in rows of `length`, timed after a
    small one to warm up, per token: a second or two of the CPU's time."""
    ids = torch.zeros((max(1, tokens // length), length), dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        model(ids[:1, :8])
        start = time.perf_counter()
        model(ids)
    return (time.perf_counter() - start) / ids.numel()


def per_token_timer(model, max_length):
    """per_token(length): seconds a token at about that length (timed once per power of two: attention's cost grows
    with the length, a batch's overhead shrinks)."""
    timed = {}

    def per_token(length):
        bucket = min(max_length, 2**math.ceil(math.log2(max(length, 16))))
        if bucket not in timed:
            timed[bucket] = seconds_per_token(model, bucket)
        return timed[bucket]

    return per_token


def minutes(seconds):
    return f'{seconds / 60:.1f} min' if seconds >= 90 else f'{seconds:.0f} s'


def say_estimate(label, seconds):
    """One line: how long the model's tasks will take on this CPU, task by task."""
    parts = ', '.join(f'{name} {minutes(s)}' for name, s in seconds.items())
    say(f'estimate: {label} takes about {minutes(sum(seconds.values()))} on this CPU ({parts}: the tokens to run times '
        'the time a token took in a timed forward pass)')


def say_cut(label, item, measured, max_length):
    if measured['cut']:
        say(f"note: {label}: {item.name}: {measured['cut']} of {measured['questions']} prompts are longer than the "
            f"model's {max_length} tokens; lm-eval keeps the last {max_length} tokens of each (their beginning is cut)")


# ---------------------------------------------------------------- running


@lru_cache(maxsize=1)
def no_task_index():
    """An empty TaskManager: its load() makes built tasks the task_dict lm-eval's evaluate reads (lm-eval's full one
    would index 14,000 files first)."""
    from lm_eval.tasks import TaskManager
    return TaskManager(include_defaults=False)


def run_lm_task(lm, item):
    """lm-eval's evaluate on one built task, seeded as simple_evaluate seeds it (which would also describe the
    environment, 0.6 s of subprocesses a call, and look for a git hash): (its results, its per-question samples)."""
    from lm_eval.evaluator import evaluate
    random.seed(0)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    item.task.set_config('num_fewshot', item.shots)
    item.task.set_fewshot_seed(seed=SEED)
    out = evaluate(lm=lm, task_dict=no_task_index().load([item.task]), limit=item.limit, log_samples=True)
    name = item.task.task_name
    return out['results'][name], out['samples'][name]


def macro_f1(golds, preds, labels=len(LABELS)):
    """The mean over the labels of each one's F1 (0 for a label neither true nor predicted, as sklearn)."""
    scores = []
    for label in range(labels):
        tp = sum(g == p == label for g, p in zip(golds, preds))
        predicted, actual = preds.count(label), golds.count(label)
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return sum(scores) / len(scores)


def pubmedqa_figures(samples):
    """PubMedQA's other official figure and its baseline, from lm-eval's samples: macro-F1, and the majority class
    (the commonest label of the questions asked) with its accuracy and macro-F1."""
    golds = [LABELS.index(s['doc']['final_decision']) for s in samples]
    preds = [max(range(len(LABELS)), key=lambda k: s['filtered_resps'][k][0]) for s in samples]
    majority = max(range(len(LABELS)), key=golds.count)
    return {
        'questions': len(samples), 'macro_f1': macro_f1(golds, preds), 'majority_label': LABELS[majority],
        'majority_accuracy': golds.count(majority) / len(golds),
        'majority_macro_f1': macro_f1(golds, [majority] * len(golds))
    }


def task_result(item, label, samples, extra):
    """(the JSON record of a task and model, the samples eval_stats compares)."""
    record = accuracy_record(item.name, label, samples, item.metric)
    record.update(lm_eval_task=item.task.task_name, num_fewshot=item.shots, source=item.source, higher_is_better=True,
                  **extra)
    if item.name == 'pubmedqa':
        record.update(pubmedqa_figures(samples))
    kept = [{k: s[k] for k in ('doc_id', item.metric, 'doc_hash', 'prompt_hash', 'target_hash')} for s in samples]
    record.update(doc_ids=[s['doc_id'] for s in kept], scores=[float(s[item.metric]) for s in kept])
    return record, kept


def run_task(lm, item, label, measured):
    """One task on one model: its record and samples, with a line when it starts and one when it is done."""
    say(f"{label}: {item.name} ({measured['questions']} questions, {item.shots}-shot)")
    start = time.time()
    _, samples = run_lm_task(lm, item)
    record, kept = task_result(item, label, samples,
                               {'seconds': round(time.time() - start, 2), 'truncated': measured['cut']})
    say(f"{label}: {item.name}: {item.metric} {record['value']:.4f} +- {record['stderr'] or 0:.4f} "
        f"({record['n']} questions, {minutes(record['seconds'])})")
    return record, kept


def bpb_model(model, hf_model, device):
    """Our GPT of the model: the checkpoint's own, or a Hugging Face model's weights in it (hf.from_hf_model)."""
    gpt = model_from_checkpoint(model.checkpoint) if model.checkpoint is not None else from_hf_model(hf_model)
    return gpt.to(device)


def bpb_windows(suite, window):
    """(val.bin's tokens, the starts of the windows general_bpb reads: every window, or --limit spread evenly)."""
    tokens = open_tokens(suite.text['folder'], 'val', suite.text['meta'])
    every = len(window_starts(tokens, window))
    return tokens, eval_starts(tokens, window, suite.settings.limit or every)


def bpb_batches(tokens, starts, window, batch_size, device):
    """The windows as (x, y) on the device, as many a batch as batch_size prompts of 256 tokens hold (16 windows of
    1,024 tokens at once would spend a CPU's time on attention matrices of 16 x heads x 1024^2)."""
    rows = max(1, batch_size * 256 // window)
    for i in tqdm(range(0, len(starts), rows), desc='general_bpb windows', unit='batch'):
        x, y = read_windows(tokens, starts[i:i + rows], window)
        yield torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


def bpb_record(label, sums, starts, extra):
    """general_bpb's record and samples from each window's loss_sums: bits per byte over all windows (train.py's
    val_bpb), its delta-method standard error over windows and the normal 95% interval. Each window's score is its
    linearised contribution, bpb + (bits_i - bpb * bytes_i) / mean bytes: their mean is bpb, their standard error the
    ratio's, and the differences of two models' scores on the same windows pair them (eval_stats' bootstrap)."""
    bits, nbytes = (sums[:, 2] / math.log(2)).tolist(), sums[:, 3].tolist()
    bpb = bits_per_byte(float(sums[:, 2].sum()), float(sums[:, 3].sum()))
    mean_bytes = sum(nbytes) / len(nbytes)
    scores = [bpb + (b - bpb * n) / mean_bytes for b, n in zip(bits, nbytes)]
    stderr = stderr_of_mean(scores)
    low, high = (None, None) if stderr is None else (max(0.0, bpb - Z95 * stderr), bpb + Z95 * stderr)
    record = {
        'task': 'general_bpb', 'model': label, 'metric': 'bpb', 'n': len(scores), 'value': bpb, 'bpb': bpb,
        'stderr': stderr, 'ci_low': low, 'ci_high': high, 'higher_is_better': False,
        'interval': 'delta method over windows', 'bytes': int(sum(nbytes)), **extra
    }
    samples = [{'doc_id': i, 'bpb': s, 'doc_hash': str(int(start))} for i, (s, start) in enumerate(zip(scores, starts))]
    record.update(doc_ids=list(range(len(scores))), scores=scores)
    return record, samples


def run_bpb(gpt, suite, label, window):
    """general_bpb on one model (our GPT): the record and per-window samples."""
    meta, device = suite.text['meta'], torch.device(suite.settings.device)
    tokens, starts = bpb_windows(suite, window)
    say(f'{label}: general_bpb ({len(starts)} windows of {window} tokens of {suite.text["folder"]}/val.bin)')
    start = time.time()
    padding = [0] * (gpt.config.vocab_size - len(meta['token_bytes']))
    token_bytes = torch.tensor(meta['token_bytes'] + padding, device=device)
    sums = window_sums(gpt, bpb_batches(tokens, starts, window, suite.settings.batch_size, device), token_bytes,
                       precision(device)[1])
    record, samples = bpb_record(
        label, sums, starts, {
            'seconds': round(time.time() - start, 2), 'window': window, 'tokens': len(starts) * window,
            'source': f"local: {suite.text['folder']}"
        })
    say(f"{label}: general_bpb: {record['bpb']:.4f} +- {record['stderr'] or 0:.4f} bits per byte "
        f"({len(starts)} windows, {minutes(record['seconds'])})")
    return record, samples


def prepare_lm_tasks(lm, hf_model, suite, label):
    """Each lm-eval task's requests measured with the model's tokenizer before any runs: the prompts it cuts, said per
    task; on a CPU, how long it all takes."""
    lm_tasks = [t for t in suite.tasks if t.task is not None]
    measured = {t.name: measure_requests(lm, t) for t in lm_tasks}
    for item in lm_tasks:
        say_cut(label, item, measured[item.name], lm.max_length)
    if str(lm.device).startswith('cpu'):
        say_estimate(label, estimated_seconds(measured, hf_model, suite, lm.max_length))
    return measured


def estimated_seconds(measured, model, suite, max_length):
    """{task: seconds}: the tokens each task runs (lm-eval's padded batches; general_bpb's windows) times the time a
    token takes at its typical length."""
    per_token, seconds = per_token_timer(model, max_length), {}
    for name, m in measured.items():
        typical = sorted(m['passes'])[len(m['passes']) // 2] if m['passes'] else 1
        seconds[name] = padded_tokens(m['passes'], suite.settings.batch_size) * per_token(typical)
    if suite.text is not None:
        window = suite.bpb_window or min(BPB_WINDOW, max_length)
        seconds['general_bpb'] = len(bpb_windows(suite, window)[1]) * window * per_token(window)
    return seconds


def evaluate_model(model, suite):
    """Every task of the suite on one model: [(record, samples)] in the suite's order. The model loads (and, for a
    checkpoint, exports to a temporary folder) once; lm-eval runs it batched where settings.device says."""
    if model.checkpoint is not None and all(t.task is None for t in suite.tasks):  # general_bpb alone: no export
        gpt = bpb_model(model, None, suite.settings.device)
        if suite.settings.device == 'cpu':
            say_estimate(model.label, estimated_seconds({}, gpt, suite, context_of(model)))
        return [run_bpb(gpt, suite, model.label, bpb_window(suite, model))]
    results = []
    with hf_folder_of(model) as folder:
        try:
            hf_model = load_hf_model(folder).to(suite.settings.device)
        except CheckpointError as e:
            raise SuiteError(f'{model.label}: {e}')
        lm = language_model(hf_model, folder, suite.settings.batch_size)
        measured = prepare_lm_tasks(lm, hf_model, suite, model.label)
        for item in suite.tasks:
            if item.task is None:
                gpt = bpb_model(model, hf_model, suite.settings.device)
                results.append(run_bpb(gpt, suite, model.label, bpb_window(suite, model)))
            else:
                results.append(run_task(lm, item, model.label, measured[item.name]))
    return results


def bpb_window(suite, model):
    """general_bpb's window: the one the models share (check_text_tokens), else the model's context up to 1,024."""
    return suite.bpb_window or min(BPB_WINDOW, context_of(model))


def evaluate_checkpoint(checkpoint, suite, label='this model'):
    """For train.py: the suite (plan_suite's, checked when the run starts) on a checkpoint in memory: the report
    (make_report's) of the one model, its records lean (without each question's scores)."""
    model = Model(label, checkpoint=checkpoint)
    check_general_text(suite, [model])
    report = make_report([model], [evaluate_model(model, suite)], [], suite)
    return {**report, 'records': [lean(r) for r in report['records']]}


def lean(record):
    """A record without its per-question lists (for metrics.jsonl)."""
    return {k: v for k, v in record.items() if k not in ('doc_ids', 'scores')}


# ---------------------------------------------------------------- comparing, reporting


def compare_runs(results, base_results, names):
    """Per task, the paired comparison of the two models' samples (eval_stats.compare_task)."""
    comparisons = []
    for (record, samples), (_, base_samples) in zip(results, base_results):
        comparisons.append(
            compare_task(record['task'], samples, base_samples, names, record['metric'], record['higher_is_better']))
    return comparisons


def make_report(models, runs, comparisons, suite):
    """The JSON of a suite run: the models, the settings, one record per task and model, the comparisons and their
    summary line, the notes."""
    return {
        'models': [m.label for m in models], 'settings': vars(suite.settings),
        'records': [record for results in runs for record, _ in results], 'comparisons': comparisons,
        'summary': summary_line(comparisons) if comparisons else None, 'notes': report_notes(runs, suite)
    }


def report_notes(runs, suite):
    """The suite's notes, then each task and model's prompts cut."""
    notes = list(suite.notes)
    for results in runs:
        for record, _ in results:
            if record.get('truncated'):
                notes.append(f"{record['model']}: {record['task']}: {record['truncated']} of {record['n']} prompts "
                             'longer than the model reads (lm-eval kept their end)')
    return notes


PUBMEDQA_KEYS = ('questions', 'accuracy', 'macro_f1', 'majority_label', 'majority_accuracy', 'majority_macro_f1')


def pubmedqa_result(report, model=None):
    """pubmedqa.py's figures (PUBMEDQA_KEYS) from a report's pubmedqa record (of `model`, else the first model's), or
    None: what metrics.jsonl's 'pubmedqa' record and the model card read."""
    model = model or report['models'][0]
    for r in report['records']:
        if r['task'] == 'pubmedqa' and r['model'] == model:
            return {k: r[k] for k in PUBMEDQA_KEYS}
    return None


def check_report(report):
    """ValueError (what is wrong, one line) unless `report` is a suite report (eval_suite.py --out_json): its models,
    records with a task, model, metric, n, value and interval each, comparisons with a verdict."""
    if not isinstance(report, dict) or not isinstance(report.get('models'), list) or not report['models']:
        raise ValueError('not a report eval_suite.py wrote (no models)')
    for r in report.get('records') or [None]:
        if not isinstance(r, dict) or r.get('model') not in report['models'] or \
                not all(k in r for k in ('task', 'metric', 'n', 'value', 'ci_low', 'ci_high')):
            raise ValueError(f'a record that is not one of eval_suite.py: {str(r)[:80]}')
    for c in report.get('comparisons') or []:
        if not isinstance(c, dict) or c.get('verdict') not in ('better', 'tied', 'worse'):
            raise ValueError(f'a comparison that is not one of eval_suite.py: {str(c)[:80]}')
    return report


def card_rows(report):
    """The rows a model card shows, one per task: {task, metric, higher_is_better, n, value, ci_low, ci_high} of the
    first model, with base_value, base_ci_low, base_ci_high, difference, diff_low, diff_high and verdict where the
    report compares it with a base."""
    model = report['models'][0]
    compared = {c['task']: c for c in report.get('comparisons') or []}
    base = {r['task']: r for r in report['records'] if len(report['models']) > 1 and r['model'] == report['models'][1]}
    rows = []
    for r in (r for r in report['records'] if r['model'] == model):
        row = {k: r.get(k) for k in ('task', 'metric', 'higher_is_better', 'n', 'value', 'ci_low', 'ci_high')}
        if r['task'] in compared:
            c, b = compared[r['task']], base[r['task']]
            row.update(base_value=b['value'], base_ci_low=b['ci_low'], base_ci_high=b['ci_high'],
                       difference=c['difference'], diff_low=c['ci_low'], diff_high=c['ci_high'], verdict=c['verdict'])
        rows.append(row)
    return rows


def figure(value, digits=4):
    return '' if value is None else f'{value:.{digits}f}'


def interval(record):
    return '' if record['ci_low'] is None else f"[{figure(record['ci_low'], 3)}, {figure(record['ci_high'], 3)}]"


def markdown_table(report):
    """The suite's table in markdown (one model: each task's figure, interval and time; two: both figures, the paired
    difference, its interval and the verdict, then the summary line), and the notes under it."""
    if report['comparisons']:
        lines = compare_table(report)
    else:
        lines = ['| task | n | value | 95% interval | seconds |', '|---|---|---|---|---|']
        lines += [
            f"| {task_label(r)} | {r['n']} | {figure(r['value'])} | {interval(r)} | {r.get('seconds', 0):.0f} |"
            for r in report['records']
        ]
    lines += [''] + [f'- {note}' for note in report['notes']]
    return '\n'.join(lines).rstrip() + '\n'


def compare_table(report):
    model, base = report['models']
    own = {(r['model'], r['task']): r for r in report['records']}
    lines = [
        f'model: {model}; base: {base}', '', '| task | n | model | base | difference (95% paired interval) | verdict |',
        '|---|---|---|---|---|---|'
    ]
    for c in report['comparisons']:
        a, b = own[(model, c['task'])], own[(base, c['task'])]
        lines.append(f"| {task_label(a)} | {c['n']} | {figure(a['value'])} {interval(a)} | {figure(b['value'])} "
                     f"{interval(b)} | {c['difference']:+.4f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | "
                     f"{c['verdict']} |")
    return lines + ['', report['summary']]


# ---------------------------------------------------------------- the command


def output_paths(c):
    """(out_json, out_md) with their folders checked; out_md defaults to out_json's name with .md."""
    out_json, out_md = c['out_json'], c['out_md'] or (str(Path(c['out_json']).with_suffix('.md'))
                                                      if c['out_json'] else '')
    for option, path in (('out_json', out_json), ('out_md', out_md)):
        if path and not writable_folder(os.path.dirname(os.path.abspath(path)), create=False):
            raise SuiteError(f'--{option}={path}: its folder does not exist or is not writable', 2)
    return out_json, out_md


def settings_of(c):
    try:
        device = str(resolve_device(c['device']))
    except DeviceError as e:
        raise SuiteError(str(e), 2)
    return Settings(tasks=c['tasks'], pubmedqa_dir=c['pubmedqa'], mmlu_dir=c['mmlu_dir'], medmcqa=c['medmcqa'],
                    medqa=c['medqa'], general_text=c['general_text'], limit=c['limit'], num_fewshot=c['num_fewshot'],
                    batch_size=c['batch_size'], device=device)


def write_outputs(report, out_json, out_md):
    if out_json:
        with atomic_write(out_json, 'w') as f:
            json.dump(report, f, indent=1)
    if out_md:
        with atomic_write(out_md, 'w') as f:
            f.write(markdown_table(report))


def run_suite(c):
    """The command: plan and check everything, evaluate the model (and --compare's), compare, report. The report."""
    out_json, out_md = output_paths(c)
    if not c['hf'] and not c['ckpt']:
        raise SuiteError('give the model: --ckpt=FILE (a checkpoint) or --hf=FOLDER (a Hugging Face folder)', 2)
    suite = plan_suite(settings_of(c))
    models = [open_model(c['hf'], 'hf') if c['hf'] else open_model(c['ckpt'], 'ckpt')]
    if c['compare']:
        models.append(open_model(c['compare'], 'compare'))
    check_general_text(suite, models)
    suite.notes += tokenizer_note(models)
    for note in suite.notes:
        say(f'note: {note}')
    runs = [evaluate_model(model, suite) for model in models]
    names = tuple(m.label for m in models)
    comparisons = compare_runs(*runs, names) if len(runs) == 2 else []
    report = make_report(models, runs, comparisons, suite)
    print(markdown_table(report), end='')
    write_outputs(report, out_json, out_md)
    return report


def main(argv=None):
    c = configure(OPTIONS, argv)
    try:
        return run_suite(c)
    except SuiteError as e:
        fail(str(e), e.code)
    except DiskFullError as e:
        fail(str(e))


if __name__ == '__main__':
    main()
