"""
The model card of an export: README.md beside the weights, what the Hugging Face hub shows first.

Everything in it comes from what the checkpoint records (train.py writes the run's origin and data facts,
made here by run_origin and data_facts, its latest evaluation and options; checkpoint.RECORD_KEYS) and, for
PubMedQA and the evaluation suite, from the run's metrics.jsonl or an eval_suite.py (pubmedqa.py) --out_json file.
What is not recorded (a checkpoint from before, an option a run did not have) is "unknown", never a guess. A card is
published: it names models by hub id or folder name and data by folder name, never by a local path. The YAML header
uses the hub's model-card fields (huggingface_hub's ModelCardData), so the hub renders the evaluation table
(model-index).
"""
import json
import os
import re

import torch

from eval_stats import task_label
from model import GPT, GPTConfig
from tokenizer import fingerprint

UNKNOWN = 'unknown'
PUBMEDQA_FIGURES = ('questions', 'accuracy', 'macro_f1', 'majority_accuracy', 'majority_macro_f1')
SUITE_FIGURES = ('n', 'value', 'ci_low', 'ci_high')
LANGUAGES = {
    'eng': 'en', 'fre': 'fr', 'ger': 'de', 'spa': 'es', 'ita': 'it', 'jpn': 'ja', 'chi': 'zh', 'rus': 'ru', 'por': 'pt',
    'dut': 'nl', 'pol': 'pl', 'kor': 'ko'
}  # PubMed's Language codes (ISO 639-2) -> the hub's

GPT2_HUB_IDS = {name: f'openai-community/{name}' for name in ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')}
HUB_ID = re.compile(r'[A-Za-z0-9][\w.-]*/[\w.-]+')  # ORG/NAME, as the hub spells a model

# ------------------------------------------------------------------------------------------------
# the run record: what train.py stores in its checkpoints for the card


def run_origin(init_from, resumed_origin=None):
    """What the weights started from: {'from': 'scratch'}, or an open model's {'from': its local path, 'name', 'hub_id'}
    (the card shows the hub id, else the name; the path stays in the checkpoint). A resumed run carries its
    checkpoint's (None where an older checkpoint did not record it)."""
    if init_from == 'resume':
        return resumed_origin
    if init_from == 'scratch':
        return {'from': 'scratch'}
    if init_from in GPT2_HUB_IDS:
        return {'from': init_from, 'name': init_from, 'hub_id': GPT2_HUB_IDS[init_from]}
    path = os.path.abspath(init_from)
    return {'from': path, 'name': os.path.basename(path), 'hub_id': hub_id_of(path)}


def hub_id_of(folder):
    """The hub id of a model folder, or None: a folder of the Hugging Face cache (.../models--ORG--NAME/snapshots/HASH)
    says it, else an `_name_or_path` of ORG/NAME in its config.json (older transformers saved the name it loaded)."""
    cached = [p for p in folder.split(os.sep) if p.startswith('models--') and p.count('--') >= 2]
    if cached:
        return '/'.join(cached[-1].split('--')[1:3])
    try:
        with open(os.path.join(folder, 'config.json'), encoding='utf-8') as f:
            name = json.load(f).get('_name_or_path')
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and HUB_ID.fullmatch(name) and not os.path.exists(name) else None


def run_record(init_from, resumed, sources, processes, computed):
    """The RECORD_KEYS train.py writes into its checkpoints: what the weights started from, the data's facts (the
    first source's; a mixture's every source's too, with its weight), how many processes trained and what they
    `computed` in ('bfloat16 on cuda'); a resumed run keeps its first and latest evaluations."""
    data = data_facts(sources[0].meta, sources[0].folder)
    if len(sources) > 1:
        data['mix'] = [{'name': s.name, 'weight': s.weight, **data_facts(s.meta, s.folder)} for s in sources]
    kept = {k: resumed[k] for k in ('first_eval', 'last_eval') if k in resumed}
    return {
        'origin': run_origin(init_from, resumed.get('origin')), 'data': data, 'processes': processes,
        'precision': computed, **kept
    }


def data_facts(meta, data_dir):
    """The data folder's facts (meta.pkl; None for what an older data folder did not record): what the card says of
    the data, and the token files' hashes, by which a resume knows it trains on the same data."""
    keys = ('records', 'excluded_pmids', 'split', 'languages', 'subset', 'train_tokens', 'val_tokens', 'train_docs',
            'val_docs', 'token_files', 'source', 'licenses', 'sections')
    return {
        'data_dir': os.path.abspath(data_dir), 'files': len(meta.get('files') or []), **{k: meta.get(k)
                                                                                         for k in keys}
    }


# ------------------------------------------------------------------------------------------------
# PubMedQA's and the suite's figures: from pubmedqa.py or eval_suite.py --out_json, or the records train.py
# --eval_tasks wrote


def check_pubmedqa_figures(figures):
    """ValueError unless `figures` holds PubMedQA's figures as pubmedqa.py writes them: a question count and rates."""
    if not isinstance(figures, dict):
        raise ValueError(f'a JSON {type(figures).__name__}, not an object')
    missing = [k for k in PUBMEDQA_FIGURES if k not in figures]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    bad = [
        f'{k}={figures[k]!r}' for k in PUBMEDQA_FIGURES if isinstance(figures[k], bool) or
        not isinstance(figures[k], (int, float)) or not (figures[k] >= 1 if k == 'questions' else 0 <= figures[k] <= 1)
    ]
    if bad:
        raise ValueError(f"{', '.join(bad)}: expected a number of questions and rates between 0 and 1")
    return figures


def records_at(path, kind, iter_num, check):
    """The records of `kind` train.py wrote for this iteration in metrics.jsonl, each through check(record). A line
    that does not read is skipped (a kill can cut the last one short); a record check refuses is a ValueError naming
    its line."""
    if not os.path.isfile(path):
        return []
    found = []
    with open(path, encoding='utf-8', errors='replace') as f:
        for number, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get('kind') == kind and rec.get('iter') == iter_num:
                try:
                    found.append(check(rec))
                except ValueError as e:
                    raise ValueError(f"{path}, line {number}: not what train.py writes as a '{kind}' record ({e})")
    return found


def pubmedqa_of(path, iter_num):
    """The PubMedQA figures train.py --eval_tasks=pubmedqa recorded for this iteration in metrics.jsonl (the last),
    or None."""
    return (records_at(path, 'pubmedqa', iter_num, check_pubmedqa_figures) or [None])[-1]


def check_suite_row(row):
    """ValueError unless `row` holds a suite figure: a task, its metric, a question count, the value and interval."""
    if not isinstance(row.get('task'), str) or not isinstance(row.get('metric'), str):
        raise ValueError('no task or metric')
    bad = [
        k for k in SUITE_FIGURES if isinstance(row.get(k), bool) or
        not isinstance(row.get(k), (int, float)) and not (k.startswith('ci_') and row.get(k, 0) is None)
    ]
    if bad:
        raise ValueError(f"{', '.join(bad)}: expected numbers")
    return row


def suite_of(path, iter_num):
    """The suite's rows train.py --eval_tasks recorded for this iteration in metrics.jsonl (each task's last), as
    eval_suite.card_rows makes them from a report (no base): {'rows', 'base': None}, or None."""
    rows = {r['task']: r for r in records_at(path, 'eval_task', iter_num, check_suite_row)}
    return {'rows': list(rows.values()), 'base': None} if rows else None


def hub_header(name, origin, data, last, pubmedqa, suite):
    """The YAML header: the hub's model-card fields, with the evaluation results as its model-index."""
    from huggingface_hub import EvalResult, ModelCardData
    continued = origin and origin.get('from') != 'scratch'
    results = []
    if last:
        results += [
            EvalResult(task_type='text-generation', dataset_type='pubmed',
                       dataset_name='PubMed abstracts (held-out split)', metric_type=kind, metric_name=label,
                       metric_value=round(last[key], 4))
            for kind, label, key in (('loss', 'val loss', 'val_loss'), ('bits_per_byte', 'val bits per byte',
                                                                        'val_bpb'))
        ]
    for source, figures in ((last or {}).get('sources') or {}).items():  # a mixture's other sources
        results += [
            EvalResult(task_type='text-generation', dataset_type=source, dataset_name=f'{source} (held-out split)',
                       metric_type='bits_per_byte', metric_name='val bits per byte',
                       metric_value=round(figures['val_bpb'], 4))
        ]
    if pubmedqa:
        results += [
            EvalResult(task_type='question-answering', task_name='PubMedQA zero-shot', dataset_type='pubmed_qa',
                       dataset_name=f"PubMedQA (PQA-L test, {pubmedqa['questions']} questions)",
                       dataset_config='pqa_labeled', dataset_split='test', metric_type=kind, metric_name=label,
                       metric_value=round(pubmedqa[key], 4))
            for kind, label, key in (('accuracy', 'accuracy', 'accuracy'), ('f1', 'macro-F1', 'macro_f1'))
        ]
    for row in (suite or {}).get('rows') or []:
        if row['task'] == 'pubmedqa' and pubmedqa:  # (above, with its macro-F1)
            continue
        bpb = row['metric'] == 'bpb'
        results.append(
            EvalResult(task_type='text-generation' if bpb else 'multiple-choice', dataset_type=row['task'],
                       dataset_name=row['task'], metric_type='bits_per_byte' if bpb else row['metric'],
                       metric_name='bits per byte' if bpb else row['metric'], metric_value=round(row['value'], 4)))
    languages = [
        LANGUAGES.get(code.strip().lower(), code.strip()) for code in (data.get('languages') or '').split(',')
        if code.strip() and code.strip().lower() != 'all'
    ]
    tags = ['pubmed', 'biomedical', 'pubmed-gpt'
            ] + ([] if not origin else ['continued-pretraining' if continued else 'from-scratch'])
    return ModelCardData(license=UNKNOWN, base_model=origin.get('hub_id') if continued else None, datasets=['pubmed'],
                         language=languages or None, library_name='transformers', pipeline_tag='text-generation',
                         tags=tags, model_name=name, eval_results=results or None)


def mix_fact(data):
    """A mixture's sources and their shares of the training windows (weight 0: evaluated only)."""
    mix = data.get('mix') or []
    total = sum(m['weight'] for m in mix) or 1
    return '; '.join(f"{m['name']} ({m['weight'] / total:.0%} of the windows, {number(m.get('train_tokens'))} train "
                     'tokens)' if m['weight'] else f"{m['name']} (evaluated only)" for m in mix)


def model_and_data_rows(checkpoint, architecture, start):
    """(what, fact) of the model, the data it read and its training."""
    c, run, data = GPTConfig(**checkpoint['model_args']), checkpoint.get('config') or {}, checkpoint.get('data') or {}
    with torch.device('meta'):  # the shapes alone: counted as train.py counts them when it starts (a tied head once)
        size = f'{GPT(c).num_params() / 1e6:.2f}M'
    window = run.get('block_size') or c.block_size
    model = [('architecture', f'{architecture} ({size} parameters: {c.n_layer} layers, {c.n_head} heads '
              f'({c.n_kv_head} key/value), width {c.n_embd}, {c.pos} positions)'),
             ('context',
              f'{c.block_size:,} tokens' + (f' (trained on windows of {window:,})' if window < c.block_size else '')),
             ('weights', start), ('tokenizer', fingerprint(checkpoint.get('tokenizer')))]
    return model + data_rows(data) + training_rows(checkpoint, run, data, window)


def what_it_read(data):
    """The card's first line's words for the data: PubMed abstracts, PMC full text, other text, or a mixture."""
    kind = lambda d: ('PubMed Central full text'
                      if 'articles' in (d.get('records') or {}) else 'PubMed titles and abstracts'
                      if 'records' in (d.get('records') or {}) or not d.get('records') else 'text')
    if data.get('mix'):
        return ' and '.join(dict.fromkeys(kind(m) for m in data['mix'] if m['weight'])) + ' (a mixture)'
    return kind(data)


def data_rows(data):
    """What the data folder recorded of its documents: PubMed records, PMC articles or other text, what was dropped
    by which rule, the split and, for a mixture, its sources (the first's facts shown)."""
    records, excluded, split = data.get('records') or {}, data.get('excluded_pmids') or {}, data.get('split') or {}
    kept = f"{number(data.get('train_docs'))} train and {number(data.get('val_docs'))} val documents kept"
    if 'articles' in records:  # data/pmc/prepare.py's
        rows = [('PMC articles', f"{number(records['articles'])} read in {number(data.get('files'))} input(s); {kept}"),
                ('dropped', dropped_fact(records, PMC_DROPS)),
                ('licenses', ', '.join(f'{n:,} {name}' for name, n in (data.get('licenses') or {}).items()) or UNKNOWN),
                ('text', sections_fact(data.get('sections')))]
    elif 'records' in records or not records:  # data/pubmed/prepare.py's (or an older folder's: unknown)
        rows = [('PubMed records', f"{number(records.get('records'))} seen in {number(data.get('files'))} file(s); "
                 f'{kept}' if records else UNKNOWN),
                ('dropped', dropped_fact(records, PUBMED_DROPS) if records else UNKNOWN)]
    else:  # data/text/prepare.py's
        rows = [('documents', f"{data.get('source') or 'text'}: {kept}"),
                ('dropped', ', '.join(f'{n:,} {why.replace("_", " ")}' for why, n in records.items()) or 'none')]
    if records and 'records' not in records and 'articles' not in records:
        excluded = {}  # no PMIDs in other text: no benchmark to keep out by PMID
    rows += [('subset', subset_fact(data.get('subset'), records)),
             ('decontamination', f"{number(excluded.get('excluded'))} records of the {number(excluded.get('listed'))} "
              f"PMIDs listed in `{folder_name(excluded['source'])}` left out of both splits" if excluded.get('source')
              else 'no PMIDs excluded' if excluded else 'none (no PMIDs in this text)' if records else UNKNOWN),
             ('train/val split', f"by {split['rule']}: {split['val_fraction']:g} of "
              f"{'PMIDs' if split['rule'] == 'a hash of the PMID' else 'them'} in val" if split else UNKNOWN),
             ('languages', data.get('languages') or UNKNOWN)]
    return ([('data mix', mix_fact(data))] if data.get('mix') else []) + rows


PUBMED_DROPS = (('no_abstract', 'without an abstract'), ('language', 'in other languages'), ('book', 'books'),
                ('no_pmid', 'without a valid PMID'), ('replaced', 'older versions of a PMID'),
                ('deleted', 'deleted by NCBI'), ('excluded', 'excluded'))
PMC_DROPS = (('replaced', 'older versions'), ('retracted',
                                              'retracted'), ('no_body', 'without body text'), ('license', 'by license'),
             ('language', 'in other languages'), ('no_id', 'without PMID, PMCID or DOI'), ('excluded', 'excluded'))


def dropped_fact(records, rules):
    return ', '.join(f'{number(records.get(k))} {what}' for k, what in rules)


def sections_fact(sections):
    """The kinds of text a PMC folder's documents hold, each with its characters (tables: only if asked for)."""
    if not sections:
        return UNKNOWN
    chars = sections.get('chars') or {}
    kinds = ', '.join(f"{kind} ({number(chars.get(kind))} characters)" for kind in sections.get('in_text') or [])
    return kinds + ('' if 'table' in (sections.get('in_text') or []) else '; tables not in the text')


def training_rows(checkpoint, run, data, window):
    """(what, fact) of the run: tokens, optimizer, schedule, batch, steps, precision, processes."""
    tokens_seen = checkpoint.get('tokens_seen')
    epochs = f' ({tokens_seen / data["train_tokens"]:.2f} epochs)' if tokens_seen and data.get('train_tokens') else ''
    batch = run.get('batch_size') and run.get('gradient_accumulation_steps') and \
        run['batch_size'] * run['gradient_accumulation_steps']
    return [
        ('tokens trained on', f'{number(tokens_seen)}{epochs} of {number(data.get("train_tokens"))} in train.bin'),
        ('optimizer', f"{run['optimizer']} (peak lr {run['learning_rate']:g}, weight decay {run['weight_decay']:g}" +
         (f", Muon lr {run['muon_lr']:g}" if run['optimizer'] == 'muon' else '') + ')' if run else UNKNOWN),
        ('schedule',
         f"{run['schedule']}: {run['warmup_iters']} warmup steps, down to {run['min_lr']:g}" if run else UNKNOWN),
        ('batch', f'{batch} windows of {window} tokens ({batch * window:,} tokens) a step' if batch else UNKNOWN),
        ('steps', number(checkpoint.get('iter_num'))),
        ('precision', checkpoint.get('precision') or UNKNOWN),
        ('processes', number(checkpoint.get('processes')) + (f" ({run['parallel']})" if 'parallel' in run else '')),
    ]


SUBSET_RULES = (('not_in_keep_pmids', 'not in --keep_pmids'), ('year', 'by year'), ('journal', 'by journal'),
                ('mesh', 'by MeSH heading'), ('publication_type', 'by publication type'),
                ('article_type', 'by article type'))  # the preparers', in their order


def subset_fact(subset, records):
    """The subset options prepare.py applied and what each rule dropped; a list of PMIDs is named by its file's name."""
    if subset is None:
        return UNKNOWN
    if not subset:
        return 'none (every record of the files, but for the rules above)'
    listed = subset.get(
        'keep_pmids_listed')  # a list of PMIDs: its file's name and how many it lists (meta has its hash)
    options = ' '.join(
        f"--{k}={folder_name(v) + (f' ({listed:,} PMIDs)' if listed is not None else '') if k == 'keep_pmids' else v}"
        for k, v in subset.items() if k not in ('keep_pmids_listed', 'keep_pmids_blake2b'))
    dropped = [(records.get(rule), what) for rule, what in SUBSET_RULES if records.get(rule) is not None]
    each = ', '.join(f'{number(n)} {what}' for n, what in dropped)
    return f"{options}: {number(sum(n for n, _ in dropped))} records dropped ({each})"


def folder_name(path):
    """A file's or folder's own name, without the local path above it (a card is published)."""
    return os.path.basename(os.path.normpath(str(path)))


def before_and_after(first, last):
    """A line of each source's held-out bits per byte at the run's first evaluation (the model it started from) and
    at its latest: what training gained on PubMed, and what it cost on general text ('' where not recorded)."""
    if not first or not last or first['iter'] == last['iter']:
        return ''
    pairs = [(name, first['sources'][name]['val_bpb'], figures['val_bpb'])
             for name, figures in last['sources'].items() if name in (first.get('sources') or {})] \
        if last.get('sources') else [('val', first['val_bpb'], last['val_bpb'])]
    changes = '; '.join(f'{name} {number(a)} -> {number(b)}' for name, a, b in pairs)
    return (f"\nHeld-out bits per byte from step {first['iter']:,} (the model the run started from) to step "
            f"{last['iter']:,}: {changes}.\n")


def number(value, digits=4):
    return UNKNOWN if value is None else f'{value:,.{digits}f}' if isinstance(value, float) else f'{value:,}'


def suite_table(suite):
    """The evaluation suite's section: one row per task, its value and 95% interval, and where a base was evaluated
    on the same questions (eval_suite.py --compare) the base's, the paired difference, its interval and the
    verdict."""
    if not suite:
        return ''
    interval = lambda low, high: '' if low is None else f' [{low:.3f}, {high:.3f}]'
    compared = suite['base'] is not None
    head = '| task | n | this model (95% interval) |' + (
        f" {suite['base']} | difference (95% paired interval) | verdict |" if compared else '')
    lines = []
    for r in suite['rows']:
        line = f"| {task_label(r)} | {r['n']:,} | {r['value']:.4f}{interval(r['ci_low'], r['ci_high'])} |"
        if compared:
            line += (f" {r['base_value']:.4f}{interval(r['base_ci_low'], r['base_ci_high'])} | "
                     f"{r['difference']:+.4f}{interval(r['diff_low'], r['diff_high'])} | {r['verdict']} |"
                     if 'base_value' in r else ' | | |')
        lines.append(line)
    return ('\n### Evaluation suite\n\neval_suite.py: accuracy with lm-evaluation-harness\'s standard error, bits per '
            'byte with the delta method\'s; the difference is paired over the same questions (bootstrap).\n\n' +
            '\n'.join([head, '|' + '---|' * head.count('|', 1)] + lines) + '\n')


def card(checkpoint, name, architecture, pubmedqa=None, suite=None):
    """The README.md text of an export of `checkpoint` named `name` as `architecture` (a model_type); `suite`:
    {'rows': eval_suite.card_rows, 'base': the compared model's name or None}."""
    origin, last = checkpoint.get('origin'), checkpoint.get('last_eval')
    continued = origin and origin.get('from') != 'scratch'
    start = (UNKNOWN if not origin else 'trained from scratch'
             if not continued else f"continued from {origin.get('hub_id') or origin.get('name')}")
    intro = start if origin else 'trained from weights the checkpoint does not record'
    header = hub_header(name, origin, checkpoint.get('data') or {}, last, pubmedqa, suite)
    rows = model_and_data_rows(checkpoint, architecture, start)
    evaluation = [('val loss', number(last and last['val_loss']), ''),
                  ('val bits per byte', number(last and last['val_bpb']), '')]
    if pubmedqa:
        evaluation += [('PubMedQA accuracy', number(pubmedqa['accuracy']), number(pubmedqa['majority_accuracy'])),
                       ('PubMedQA macro-F1', number(pubmedqa['macro_f1']), number(pubmedqa['majority_macro_f1']))]
    else:
        evaluation += [('PubMedQA',
                        'not evaluated (train.py --eval_tasks=pubmedqa, or eval_suite.py --out_json= and export_hf.py '
                        '--suite_json=)', '')]
    table = lambda head, lines: '\n'.join([head, '|' + '---|' * head.count('|', 1)] + lines)
    trained = before_and_after(checkpoint.get('first_eval'), last)
    read = what_it_read(checkpoint.get('data') or {})
    return f"""---
{header.to_yaml()}
---

# {name}

A language model of {read} ({architecture} architecture), {intro} with pubmed-gpt. Every figure below is what the
checkpoint and its data folder recorded.

## Model and data

{table('| | |', [f'| {k} | {v} |' for k, v in rows])}

## Evaluation

{f"The held-out figures are of step {last['iter']:,}. " if last else ''}The majority class answers every PubMedQA
question with the test set's commonest label.

{table('| | this model | majority class |', [f'| {k} | {v} | {b} |' for k, v, b in evaluation])}
{trained}{suite_table(suite)}
## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}")
```
"""
