"""Real pretrained weights: the shared SmolLM2-135M-Instruct (a Llama: 30 layers, 9 heads, 3 key/value heads, a
49,152-token byte-level BPE with digit splitting), imported, tokenized, continued on real PubMed abstracts,
exported and sampled. Skipped without ../shared."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import PUBMED_CORPUS, abstracts, fuzzed, need, run_ok, run_prepare
from dataloader import eval_starts, load_meta, read_windows

pytestmark = pytest.mark.slow  # a 135M model: seconds per step on CPU
transformers = pytest.importorskip('transformers')


def test_the_import_and_the_tokenizer_give_transformers_ids_and_logits_on_real_abstracts(smollm2, one_thread):
    import hf
    from tokenizer import encoding_from_spec, spec_from_hf_folder
    tok = transformers.AutoTokenizer.from_pretrained(smollm2)
    enc = encoding_from_spec(spec_from_hf_folder(smollm2))
    texts = abstracts(300)
    for text in texts + fuzzed(300):
        assert enc.encode_ordinary(text) == tok(text, add_special_tokens=False)['input_ids'], text

    theirs = transformers.AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    ours = hf.from_pretrained(str(smollm2)).eval()
    assert ours.config.block_size == 8192 and ours.config.n_kv_head == 3 and ours.num_params() > 1.3e8
    x = torch.tensor([enc.encode_ordinary(t)[:96] for t in texts[:3] if len(enc.encode_ordinary(t)) >= 96][:2])
    with torch.no_grad():
        expected = theirs(x).logits
        got = ours(x, all_logits=True)
    assert (got - expected).abs().max().item() < 2e-4
    # a pretrained model, not random weights: ~4.4 nats a token on the openings of abstracts (uniform: 10.8)
    loss = torch.nn.functional.cross_entropy(expected[:, :-1].flatten(0, 1), x[:, 1:].flatten()).item()
    assert loss < 6.0


def test_the_real_model_continues_on_pubmed_exports_and_writes_likely_text(smollm2, tmp_path, one_thread):
    """prepare.py with its tokenizer -> a few recipe steps lower the val loss -> export_hf.py gives transformers the
    same logits -> sample.py's text is likely under the exported model (its own judgement: fluent, not a string)."""
    from checkpoint import load_checkpoint, model_from_checkpoint
    corpus = tmp_path / 'corpus'
    corpus.mkdir()
    os.symlink(need(PUBMED_CORPUS) / 'pubmedcorpus-0001.xml.gz', corpus / 'pubmedcorpus-0001.xml.gz')
    data = tmp_path / 'data'
    r = run_prepare(f'--input={corpus}', f'--out_dir={data}', f'--tokenizer={smollm2}', '--val_fraction=0.02')
    assert r.returncode == 0, r.stderr

    out = tmp_path / 'out'
    run_ok('train.py', 'config/finetune_pubmed.py', f'--init_from={smollm2}', '--data_mix=', f'--data_dir={data}',
           f'--out_dir={out}', '--block_size=64', '--batch_size=4', '--gradient_accumulation_steps=1', '--max_iters=6',
           '--eval_interval=0', '--eval_iters=4', '--learning_rate=1e-4', '--min_lr=1e-5', '--warmup_iters=1',
           '--save_best=False', '--compile=False', '--device=cpu', timeout=900)
    evals = [r for r in map(json.loads, (out / 'metrics.jsonl').open()) if r['kind'] == 'eval']
    assert [r['iter']
            for r in evals] == [0, 6] and evals[-1]['val_loss'] < evals[0]['val_loss'] - 0.05  # 3.71 -> 3.52 here
    assert evals[0]['val_bpb'] < 1.5  # it starts as the pretrained model it is

    run_ok('export_hf.py', f'--ckpt={out / "ckpt.pt"}', f'--out={tmp_path / "hf"}', timeout=900)
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf', dtype=torch.float32).eval()
    ours = model_from_checkpoint(load_checkpoint(out / 'ckpt.pt')).eval()
    meta = load_meta(data)
    val = np.fromfile(data / 'val.bin', dtype=meta['dtype'])
    x, _ = read_windows(val, eval_starts(val, 64, 4), 64)
    with torch.no_grad():
        assert (exported(torch.from_numpy(x)).logits - ours(torch.from_numpy(x), all_logits=True)).abs().max() < 2e-4

    prompt = 'Metformin is a first-line treatment for'
    text = run_ok('sample.py', f'--ckpt={out / "ckpt.pt"}', f'--prompt={prompt}', '--max_new_tokens=32',
                  '--temperature=0.7', '--top_k=50', '--seed=1', timeout=900).stdout.strip()
    assert text.startswith(prompt) and len(text) > len(prompt) + 40
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf')
    start, ids = len(tok(prompt)['input_ids']), torch.tensor([tok(text)['input_ids']])
    order = torch.randperm(ids.size(1) - start, generator=torch.Generator().manual_seed(0))
    shuffled = torch.cat([ids[:, :start], ids[:, start:][:, order]], 1)  # the same tokens, scrambled

    def nats_per_token(ids):  # of the continuation, given the prompt
        with torch.no_grad():
            logits = exported(ids).logits[0, start - 1:-1]
        return torch.nn.functional.cross_entropy(logits, ids[0, start:]).item()

    fluent, scrambled = nats_per_token(ids), nats_per_token(shuffled)
    assert fluent < 2.5 and scrambled > fluent + 2, (text, fluent, scrambled)
