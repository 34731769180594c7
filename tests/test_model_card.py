"""The export's model card (README.md): the facts the checkpoint and its data folder recorded, a YAML header the
Hugging Face hub parses, "unknown" where nothing was recorded."""
import gzip
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from checkpoint import make_checkpoint
from conftest import FIXTURES, PUBMED_CORPUS, REPO, SHARED, need, run_prepare
from test_train import records, run_train

pytest.importorskip('huggingface_hub')
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_thread')]


def export(ckpt, out, *args):
    r = subprocess.run([sys.executable, 'export_hf.py', f'--ckpt={ckpt}', f'--out={out}', *args], cwd=REPO, text=True,
                       capture_output=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    return r


def test_the_card_says_what_the_run_recorded_and_the_hub_parses_it(tmp_path, capsys):
    from huggingface_hub import ModelCard
    corpus = tmp_path / 'corpus'
    corpus.mkdir()
    os.symlink(need(PUBMED_CORPUS) / 'pubmedcorpus-0001.xml.gz', corpus / 'pubmedcorpus-0001.xml.gz')
    pubmedqa = need(SHARED / 'data' / 'pubmedqa')
    pmids = re.findall(r'<PMID[^>]*>(\d+)</PMID>', gzip.open(corpus / 'pubmedcorpus-0001.xml.gz', 'rt').read())
    (tmp_path / 'half.txt').write_text('\n'.join(pmids[::2]))  # a subset: every other record
    data, out = tmp_path / 'data', tmp_path / 'out'
    r = run_prepare(f'--input={corpus}', f'--out_dir={data}', '--vocab_size=300', '--val_fraction=0.05',
                    f'--exclude_pmids={pubmedqa}', f'--keep_pmids={tmp_path / "half.txt"}')
    assert r.returncode == 0, r.stderr
    run_train(data, out, '--max_iters=4', '--eval_interval=2', '--eval_tasks=pubmedqa,general_bpb',
              f'--pubmedqa_dir={pubmedqa}', f'--general_text={data}', '--eval_limit=4')
    printed = re.search(r'^([\d.]+M) parameters', capsys.readouterr().out, re.M).group(1)
    r = export(out / 'ckpt.pt', tmp_path / 'hf')
    assert r.returncode == 0, r.stderr
    text = (tmp_path / 'hf' / 'README.md').read_text()
    meta = json.loads((data / 'meta.json').read_text())
    last_eval, pubmedqa_rec = records(out, 'eval')[-1], records(out, 'pubmedqa')[-1]
    bpb_rec = [r for r in records(out, 'eval_task') if r['task'] == 'general_bpb'][-1]

    card = ModelCard.load(tmp_path / 'hf' / 'README.md')  # the hub's own parser
    results = {(e.dataset_type, e.metric_type): e.metric_value for e in card.data.eval_results}
    assert results == {('pubmed', 'loss'): round(last_eval['val_loss'],
                                                 4), ('pubmed', 'bits_per_byte'): round(last_eval['val_bpb'], 4),
                       ('pubmed_qa', 'accuracy'): round(pubmedqa_rec['accuracy'],
                                                        4), ('pubmed_qa', 'f1'): round(pubmedqa_rec['macro_f1'], 4),
                       ('general_bpb', 'bits_per_byte'): round(bpb_rec['value'], 4)}
    assert card.data.pipeline_tag == 'text-generation' and card.data.language == ['en'] and card.data.base_model is None
    assert 'from-scratch' in card.data.tags and card.data.model_name == 'hf'
    rec = meta['records']
    for fact in (
            "| weights | trained from scratch |", f'| architecture | gpt2 ({printed} parameters: 2 layers',
            f"| subset | --keep_pmids=half.txt ({len(set(pmids[::2])):,} PMIDs): {rec['not_in_keep_pmids']:,} records "
            f"dropped ({rec['not_in_keep_pmids']:,} "
            'not in --keep_pmids) |',
            f"{rec['records']:,} seen in 1 file(s); {meta['train_docs']:,} train and {meta['val_docs']:,} val "
            "documents kept", f"{rec['no_abstract']:,} without an abstract",
            f"{rec['excluded']:,} records of the 1,000 PMIDs listed in "
            "`pubmedqa` left out of both splits", '| train/val split | by a hash of the PMID: 0.05 of PMIDs in val |',
            f"| tokens trained on | {4 * 8 * 32:,} ({4 * 8 * 32 / meta['train_tokens']:.2f} epochs) of "
            f"{meta['train_tokens']:,} in train.bin |", '| batch | 8 windows of 32 tokens (256 tokens) a step |',
            '| steps | 4 |', '| precision | float32 on cpu |', '| processes | 1 (ddp) |', '| languages | eng |',
            f"| PubMedQA accuracy | {pubmedqa_rec['accuracy']:.4f} | {pubmedqa_rec['majority_accuracy']:.4f} |",
            f"| val loss | {last_eval['val_loss']:.4f} |", "tokenizer = AutoTokenizer.from_pretrained(\"hf\")",
            '### Evaluation suite', f"| pubmedqa (acc) | 4 | {pubmedqa_rec['accuracy']:.4f} [",
            f"| general_bpb (bits per byte, lower is better) | 4 | {bpb_rec['value']:.4f} [{bpb_rec['ci_low']:.3f}, "
            f"{bpb_rec['ci_high']:.3f}] |"):
        assert fact in text, fact
    assert 'unknown' not in text.split('---', 2)[2]
    assert 0 < rec['not_in_keep_pmids'] < rec['records'] and str(tmp_path) not in text and str(SHARED) not in text

    # an eval_suite.py --out_json report with a --compare base: its figures, the base's, the paired difference
    report = tmp_path / 'suite.json'
    r = subprocess.run([
        sys.executable, 'eval_suite.py', f"--ckpt={out / 'ckpt.pt'}", f"--compare={out / 'ckpt.pt'}",
        '--tasks=general_bpb', f'--general_text={data}', '--limit=4', f'--out_json={report}'
    ], cwd=REPO, text=True, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = export(out / 'ckpt.pt', tmp_path / 'hf-suite', f'--suite_json={report}')
    assert r.returncode == 0, r.stderr
    text = (tmp_path / 'hf-suite' / 'README.md').read_text()
    assert '| task | n | this model (95% interval) | ckpt.pt | difference (95% paired interval) | verdict |' in text
    assert re.search(
        r'\| general_bpb \(bits per byte, lower is better\) \| 4 \| [\d.]+ \[[\d.]+, [\d.]+\] \| '
        r'[\d.]+ \[[\d.]+, [\d.]+\] \| \+0\.0000 \[\+?0\.000, \+?0\.000\] \| tied \|', text), text
    assert 'pubmedqa (acc)' not in text and str(tmp_path) not in text  # the file given wins over metrics.jsonl
    (tmp_path / 'other.json').write_text(json.dumps({'models': ['a'], 'records': [{'task': 'x'}]}))
    for bad in (tmp_path / 'other.json', tmp_path / 'none.json'):
        r = export(out / 'ckpt.pt', tmp_path / 'hf-bad', f'--suite_json={bad}')
        assert r.returncode == 2 and r.stderr.count('\n') == 1 and f'--suite_json={bad}: not a file eval_suite.py' \
            in r.stderr and not (tmp_path / 'hf-bad').exists(), r.stderr

    # a PubMedQA or suite record that is not one (edited by hand, another tool's): one line naming it, nothing written
    lines = (out / 'metrics.jsonl').read_text().splitlines()
    for kind, bad in (('pubmedqa', {'accuracy': 'high'}), ('eval_task', {'value': 'low'})):
        broken = [json.dumps({**json.loads(line), **bad}) if f'"kind": "{kind}"' in line else line for line in lines]
        (out / 'metrics.jsonl').write_text('\n'.join(broken) + '\n')
        r = export(out / 'ckpt.pt', tmp_path / 'hf-broken')
        said = f"not what train.py writes as a '{kind}' record"
        assert r.returncode == 1 and r.stderr.count('\n') == 1 and said in r.stderr, r.stderr
        line = min(i for i, text in enumerate(lines, 1) if f'"kind": "{kind}"' in text)  # the first
        assert f"metrics.jsonl, line {line}" in r.stderr and not (tmp_path / 'hf-broken').exists()


def test_an_older_checkpoint_exports_with_unknown_facts_and_a_given_pubmedqa_file(tmp_path):
    from huggingface_hub import ModelCard
    figures = {
        'questions': 500, 'accuracy': 0.5, 'macro_f1': 0.3, 'majority_accuracy': 0.552, 'majority_macro_f1': 0.237,
        'majority_label': 'yes', 'items': []
    }
    (tmp_path / 'pubmedqa.json').write_text(json.dumps(figures))  # as pubmedqa.py --out_json writes it
    (tmp_path / 'broken.json').write_text('{"accuracy": 0.5}')
    shutil.copy(FIXTURES / 'ckpt_v1_before_layout.pt', tmp_path / 'ckpt.pt')  # before checkpoints recorded facts
    r = export(tmp_path / 'ckpt.pt', tmp_path / 'hf', f'--pubmedqa_json={tmp_path / "pubmedqa.json"}')
    assert r.returncode == 0, r.stderr
    card = ModelCard.load(tmp_path / 'hf' / 'README.md')
    assert {e.metric_type: e.metric_value for e in card.data.eval_results} == {'accuracy': 0.5, 'f1': 0.3}
    assert card.data.tags == ['pubmed', 'biomedical', 'pubmed-gpt']  # neither from scratch nor continued: not recorded
    text = card.text
    for fact in ('| weights | unknown |', '| PubMed records | unknown |', '| decontamination | unknown |',
                 '| val loss | unknown |', '| PubMedQA accuracy | 0.5000 | 0.5520 |', '| processes | unknown |'):
        assert fact in text, fact
    r = export(tmp_path / 'ckpt.pt', tmp_path / 'hf2', f'--pubmedqa_json={tmp_path / "broken.json"}')
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'not a file pubmedqa.py --out_json wrote' in r.stderr
    assert not (tmp_path / 'hf2').exists()


def test_the_card_of_pmc_full_text_or_other_text_says_what_the_folder_recorded(spec):
    """A PMC folder's card counts articles, licenses and the kinds of text; a general-text folder's its documents and
    what was dropped (no PMIDs to keep out); neither is called PubMed abstracts."""
    from conftest import tiny_model
    from model_card import card
    from tokenizer import token_byte_lengths
    model, _ = tiny_model(spec, steps=1)
    pmc = {
        'records': {
            'articles': 22, 'replaced': 2, 'retracted': 1, 'no_body': 1, 'license': 1, 'language': 0, 'excluded': 3,
            'no_id': 0
        }, 'files': 2, 'train_docs': 12, 'val_docs': 3, 'licenses': {'CC BY': 14, 'CC0': 1}, 'sections': {
            'in_text': ['title', 'abstract', 'body', 'caption'],
            'chars': {'title': 900, 'abstract': 12000, 'body': 300000, 'caption': 8000, 'table': 5000}
        },
        'split': {'rule': 'a hash of the PMID, else of PMC + the PMCID, else of doi: + the DOI', 'val_fraction': 0.2},
        'excluded_pmids': {'source': '/home/me/data/pubmedqa', 'listed': 1000,
                           'excluded': 3}, 'subset': {}, 'languages': 'eng'
    }
    text = {
        'records': {'duplicates': 116, 'no_text_field': 2}, 'files': 2, 'train_docs': 7734, 'val_docs': 851,
        'source': 'local files (1 .raw, 1 .txt)', 'split': {'rule': 'a hash of the text', 'val_fraction': 0.1},
        'excluded_pmids': {'source': '', 'listed': 0, 'excluded': 0}, 'subset': {}, 'languages': None
    }
    checkpoint = make_checkpoint(model, spec, token_byte_lengths(spec), data=pmc, origin={'from': 'scratch'})
    written = card(checkpoint, 'm', 'gpt2')
    for fact in (
            'A language model of PubMed Central full text (gpt2 architecture)',
            '| PMC articles | 22 read in 2 input(s); 12 train and 3 val documents kept |',
            '| dropped | 2 older versions, 1 retracted, 1 without body text, 1 by license, 0 in other languages, 0 '
            'without PMID, PMCID or DOI, 3 excluded |', '| licenses | 14 CC BY, 1 CC0 |',
            '| text | title (900 characters), abstract (12,000 characters), body (300,000 characters), caption '
            '(8,000 characters); tables not in the text |',
            '3 records of the 1,000 PMIDs listed in `pubmedqa` left out of both splits'):
        assert fact in written, fact
    written = card(make_checkpoint(model, spec, token_byte_lengths(spec), data=text), 'm', 'gpt2')
    for fact in ('A language model of text (gpt2 architecture)',
                 '| documents | local files (1 .raw, 1 .txt): 7,734 train and 851 val documents kept |',
                 '| dropped | 116 duplicates, 2 no text field |', '| decontamination | none (no PMIDs in this text) |',
                 '| train/val split | by a hash of the text: 0.1 of them in val |'):
        assert fact in written, fact
    assert 'PubMed' not in written.split('---', 2)[2].split('## Evaluation')[0]


@pytest.mark.parametrize('row, message', [
    ({'metric': 'acc', 'n': 4, 'value': 0.5, 'ci_low': 0.1, 'ci_high': 0.9}, 'no task or metric'),
    ({'task': 'x', 'metric': 'acc', 'n': 4, 'value': True, 'ci_low': 0.1, 'ci_high': 0.9}, 'value: expected numbers'),
    ({'task': 'x', 'metric': 'acc', 'n': 4, 'value': 0.5, 'ci_high': 0.9}, 'ci_low: expected numbers'),
])
def test_a_suite_row_that_is_not_one_is_named(row, message):
    from model_card import check_suite_row
    assert check_suite_row({'task': 'x', 'metric': 'acc', 'n': 1, 'value': 0.5, 'ci_low': None, 'ci_high': None})
    with pytest.raises(ValueError, match=message):
        check_suite_row(row)
