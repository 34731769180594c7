"""
The model card of an export: README.md beside the weights, what the Hugging Face hub shows first.

Everything in it comes from what the checkpoint records (train.py writes the run's origin, data facts,
latest evaluation and options into it; checkpoint.RECORD_KEYS) and, for PubMedQA, from the run's
metrics.jsonl or an pubmedqa.py --out_json file. What is not recorded (a checkpoint from before, an
option a run did not have) is "unknown", never a guess. The YAML header uses the hub's model-card
fields (huggingface_hub's ModelCardData), so the hub renders the evaluation table (model-index).
"""
import json
import os

from model import GPTConfig
from tokenizer import fingerprint, vocab_size_of

UNKNOWN = 'unknown'
PUBMEDQA_FIGURES = ('questions', 'accuracy', 'macro_f1', 'majority_accuracy', 'majority_macro_f1')
LANGUAGES = {'eng': 'en', 'fre': 'fr', 'ger': 'de', 'spa': 'es', 'ita': 'it', 'jpn': 'ja', 'chi': 'zh', 'rus': 'ru',
             'por': 'pt', 'dut': 'nl', 'pol': 'pl', 'kor': 'ko'}  # PubMed's Language codes (ISO 639-2) -> the hub's


def pubmedqa_of(path, iter_num):
    """The PubMedQA figures train.py --eval_pubmedqa recorded for this iteration in metrics.jsonl, or None."""
    if not os.path.isfile(path):
        return None
    found = None
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get('kind') == 'pubmedqa' and rec.get('iter') == iter_num:
                found = rec
    return found


def hub_header(name, origin, data, last, pubmedqa):
    """The YAML header: the hub's model-card fields, with the evaluation results as its model-index."""
    from huggingface_hub import EvalResult, ModelCardData
    continued = origin and origin.get('from') != 'scratch'
    results = []
    if last:
        results += [EvalResult(task_type='text-generation', dataset_type='pubmed', dataset_name='PubMed abstracts (held-out split)',
                               metric_type=kind, metric_name=label, metric_value=round(last[key], 4))
                    for kind, label, key in (('loss', 'val loss', 'val_loss'), ('bits_per_byte', 'val bits per byte', 'val_bpb'))]
    if pubmedqa:
        results += [EvalResult(task_type='question-answering', task_name='PubMedQA zero-shot', dataset_type='pubmed_qa',
                               dataset_name=f"PubMedQA (PQA-L test, {pubmedqa['questions']} questions)",
                               dataset_config='pqa_labeled', dataset_split='test', metric_type=kind, metric_name=label,
                               metric_value=round(pubmedqa[key], 4))
                    for kind, label, key in (('accuracy', 'accuracy', 'accuracy'), ('f1', 'macro-F1', 'macro_f1'))]
    languages = [LANGUAGES.get(code.strip().lower(), code.strip()) for code in (data.get('languages') or '').split(',')
                 if code.strip() and code.strip().lower() != 'all']
    tags = ['pubmed', 'biomedical', 'pubmed-gpt'] + ([] if not origin else ['continued-pretraining' if continued else 'from-scratch'])
    return ModelCardData(license=UNKNOWN, base_model=origin.get('hub_id') if continued else None, datasets=['pubmed'],
                         language=languages or None, library_name='transformers', pipeline_tag='text-generation', tags=tags,
                         model_name=name, eval_results=results or None)


def model_and_data_rows(checkpoint, architecture, start):
    """(what, fact) of the model, the data it read and its training."""
    c, run, data = GPTConfig(**checkpoint['model_args']), checkpoint.get('config') or {}, checkpoint.get('data') or {}
    n_vocab = vocab_size_of(checkpoint['tokenizer'])  # the export drops the rows train.py pads the vocabulary with
    params = sum(t.numel() for t in checkpoint['model'].values()) - (c.vocab_size - n_vocab) * c.n_embd * (1 + (not c.tie_embeddings))
    size = f'{params / 1e6:.1f}M' if params >= 1e6 else f'{params:,}'
    window = run.get('block_size') or c.block_size
    records, excluded, split = data.get('records') or {}, data.get('excluded_pmids') or {}, data.get('split') or {}
    drops = ', '.join(f'{number(records.get(k))} {what}' for k, what in (
        ('no_abstract', 'without an abstract'), ('language', 'in other languages'), ('book', 'books'),
        ('no_pmid', 'without a valid PMID'), ('replaced', 'older versions of a PMID'), ('deleted', 'deleted by NCBI'),
        ('excluded', 'excluded'))) if records else UNKNOWN
    tokens_seen = checkpoint.get('tokens_seen')
    epochs = f' ({tokens_seen / data["train_tokens"]:.2f} epochs)' if tokens_seen and data.get('train_tokens') else ''
    batch = run.get('batch_size') and run.get('gradient_accumulation_steps') and \
        run['batch_size'] * run['gradient_accumulation_steps']
    return [
        ('architecture', f'{architecture} ({size} parameters: {c.n_layer} layers, {c.n_head} heads '
                         f'({c.n_kv_head} key/value), width {c.n_embd}, {c.pos} positions)'),
        ('context', f'{c.block_size:,} tokens' + (f' (trained on windows of {window:,})' if window < c.block_size else '')),
        ('weights', start),
        ('tokenizer', fingerprint(checkpoint.get('tokenizer'))),
        ('PubMed records', f"{number(records.get('records'))} seen in {number(data.get('files'))} file(s); "
                           f"{number(data.get('train_docs'))} train and {number(data.get('val_docs'))} val documents kept"
         if records else UNKNOWN),
        ('dropped', drops),
        ('decontamination', f"{number(excluded.get('excluded'))} records of the {number(excluded.get('listed'))} PMIDs "
                            f"listed in `{excluded['source']}` left out of both splits" if excluded.get('source') else
         'no PMIDs excluded' if excluded else UNKNOWN),
        ('train/val split', f"by {split['rule']}: {split['val_fraction']:g} of PMIDs in val" if split else UNKNOWN),
        ('languages', data.get('languages') or UNKNOWN),
        ('tokens trained on', f'{number(tokens_seen)}{epochs} of {number(data.get("train_tokens"))} in train.bin'),
        ('optimizer', f"{run['optimizer']} (peak lr {run['learning_rate']:g}, weight decay {run['weight_decay']:g}"
                      + (f", Muon lr {run['muon_lr']:g}" if run['optimizer'] == 'muon' else '') + ')' if run else UNKNOWN),
        ('schedule', f"{run['schedule']}: {run['warmup_iters']} warmup steps, down to {run['min_lr']:g}" if run else UNKNOWN),
        ('batch', f'{batch} windows of {window} tokens ({batch * window:,} tokens) a step' if batch else UNKNOWN),
        ('steps', number(checkpoint.get('iter_num'))),
        ('precision', checkpoint.get('precision') or UNKNOWN),
        ('processes', number(checkpoint.get('processes')) + (f" ({run['parallel']})" if 'parallel' in run else '')),
    ]


def number(value, digits=4):
    return UNKNOWN if value is None else f'{value:,.{digits}f}' if isinstance(value, float) else f'{value:,}'


def card(checkpoint, name, architecture, pubmedqa=None):
    """The README.md text of an export of `checkpoint` named `name` as `architecture` (a model_type)."""
    origin, last = checkpoint.get('origin'), checkpoint.get('last_eval')
    continued = origin and origin.get('from') != 'scratch'
    start = (UNKNOWN if not origin else 'trained from scratch' if not continued else
             f"continued from {origin.get('hub_id') or origin.get('name')} (`{origin['from']}`)")
    intro = start if origin else 'trained from weights the checkpoint does not record'
    header = hub_header(name, origin, checkpoint.get('data') or {}, last, pubmedqa)
    rows = model_and_data_rows(checkpoint, architecture, start)
    evaluation = [('val loss', number(last and last['val_loss']), ''), ('val bits per byte', number(last and last['val_bpb']), '')]
    if pubmedqa:
        evaluation += [('PubMedQA accuracy', number(pubmedqa['accuracy']), number(pubmedqa['majority_accuracy'])),
                       ('PubMedQA macro-F1', number(pubmedqa['macro_f1']), number(pubmedqa['majority_macro_f1']))]
    else:
        evaluation += [('PubMedQA', 'not evaluated (train.py --eval_pubmedqa=True, or pubmedqa.py --out_json= and export_hf.py '
                        '--pubmedqa_json=)', '')]
    table = lambda head, lines: '\n'.join([head, '|' + '---|' * head.count('|', 1)] + lines)
    return f"""---
{header.to_yaml()}
---

# {name}

A language model of PubMed titles and abstracts ({architecture} architecture), {intro} with pubmed-gpt. Every
figure below is what the checkpoint and its data folder recorded.

## Model and data

{table('| | |', [f'| {k} | {v} |' for k, v in rows])}

## Evaluation

{f"The held-out figures are of step {last['iter']:,}. " if last else ''}The majority class answers every PubMedQA question
with the test set's commonest label.

{table('| | this model | majority class |', [f'| {k} | {v} | {b} |' for k, v, b in evaluation])}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}")
```
"""
