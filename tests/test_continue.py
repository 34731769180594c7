"""Continued pretraining of an open model, as the README's workflow runs it: a local Hugging Face folder
(a random-init Llama standing in for a download) -> prepare.py with its tokenizer -> train.py
config/finetune_pubmed.py -> export_hf.py -> transformers reproduces the val loss."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import PUBMED_CORPUS, REPO, abstracts, need, run_ok, run_prepare
from dataloader import eval_starts, load_meta, read_windows
from hf_folders import llama_folder

pytestmark = pytest.mark.slow  # end to end: real processes, whole chains

transformers = pytest.importorskip('transformers')


def test_a_llama_folder_continues_pretraining_on_pubmed_and_exports_back(tmp_path):
    corpus = tmp_path / 'corpus'
    corpus.mkdir()
    os.symlink(need(PUBMED_CORPUS) / 'pubmedcorpus-0001.xml.gz', corpus / 'pubmedcorpus-0001.xml.gz')
    folder = llama_folder(tmp_path / 'llama', abstracts(300))
    tok = transformers.AutoTokenizer.from_pretrained(folder)

    data = tmp_path / 'data'
    r = run_prepare(f'--input={corpus}', f'--out_dir={data}', f'--tokenizer={folder}', '--val_fraction=0.05')
    assert r.returncode == 0, r.stderr
    meta = load_meta(data)
    assert meta['tokenizer']['eot'] == '<|end_of_text|>' and meta['eot_token'] == tok.eos_token_id
    ids = np.fromfile(data / 'val.bin', dtype=meta['dtype'])
    first = ids[:list(ids).index(meta['eot_token'])].tolist()
    assert tok.decode(first) and tok(tok.decode(first), add_special_tokens=False)['input_ids'] == first
    # the same tokens from the tokenizer of an existing data folder, and of a checkpoint (below)
    assert run_prepare(f'--input={corpus}', f'--out_dir={tmp_path / "again"}', f'--tokenizer={data}',
                       '--val_fraction=0.05').returncode == 0
    assert (tmp_path / 'again' / 'train.bin').read_bytes() == (data / 'train.bin').read_bytes()

    out = tmp_path / 'out'
    run_ok('train.py', 'config/finetune_pubmed.py', f'--init_from={folder}', '--data_mix=', f'--data_dir={data}',
           f'--out_dir={out}', '--block_size=64', '--batch_size=8', '--gradient_accumulation_steps=1', '--max_iters=60',
           '--eval_interval=30', '--eval_iters=4', '--learning_rate=3e-3', '--min_lr=3e-4', '--warmup_iters=5',
           '--compile=False', '--device=cpu')
    evals = [r for r in map(json.loads, (out / 'metrics.jsonl').open()) if r['kind'] == 'eval']
    assert [r['iter'] for r in evals] == [0, 30, 60] and evals[-1]['val_bpb'] < evals[0]['val_bpb'] - 0.3
    assert run_prepare(f'--input={corpus}', f'--out_dir={tmp_path / "from-ckpt"}', f'--tokenizer={out / "ckpt.pt"}',
                       '--val_fraction=0.05').returncode == 0
    assert (tmp_path / 'from-ckpt' / 'val.bin').read_bytes() == (data / 'val.bin').read_bytes()

    sample = run_ok('sample.py', f'--ckpt={out / "ckpt.pt"}', '--prompt=Metformin', '--max_new_tokens=8', '--seed=1')
    assert sample.stdout.startswith('Metformin')  # the model's own tokenizer, its <|end_of_text|> ends a sample
    run_ok('export_hf.py', f'--ckpt={out / "ckpt.pt"}', f'--out={tmp_path / "hf"}')
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf').eval()
    assert type(hf).__name__ == 'LlamaForCausalLM' and hf.config.num_key_value_heads == 2
    x, y = read_windows(np.fromfile(data / 'val.bin', dtype=meta['dtype']),
                        eval_starts(np.fromfile(data / 'val.bin', dtype=meta['dtype']), 64, 4 * 8), 64)
    with torch.no_grad():
        logits = hf(torch.from_numpy(x)).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten()).item()
    assert loss == pytest.approx(evals[-1]['val_loss'], abs=1e-4)


def test_short_training_windows_keep_the_context_of_the_model_continued(tmp_path, capsys):
    """A Llama of 128 positions continued on windows of 32: it still reads 128 (checkpoint, export, sample.py,
    lm-eval's truncation), and says so once."""
    import train
    from checkpoint import load_checkpoint, model_from_checkpoint
    from conftest import TINY_TEXT, make_dataset
    from tokenizer import encoding_from_spec, spec_from_hf_folder
    folder = llama_folder(tmp_path / 'llama', [TINY_TEXT], vocab_size=400, max_position_embeddings=128)
    config = json.loads((folder / 'config.json').read_text())  # as older transformers saved a model it had downloaded
    (folder / 'config.json').write_text(json.dumps({**config, '_name_or_path': 'HuggingFaceTB/SmolLM2-135M'}))
    spec = spec_from_hf_folder(folder)
    data, out = make_dataset(tmp_path / 'data', spec=spec), tmp_path / 'out'
    train.main(
        train.options([
            f'--init_from={folder}', f'--data_dir={data}', f'--out_dir={out}', '--block_size=32', '--batch_size=4',
            '--gradient_accumulation_steps=1', '--max_iters=3', '--eval_iters=1', '--compile=False',
            '--learning_rate=1e-3', '--warmup_iters=0', '--device=cpu'
        ]))
    assert 'note: training on windows of 32 tokens of a context of 128' in capsys.readouterr().out
    ckpt = load_checkpoint(out / 'ckpt.pt')
    assert ckpt['model_args']['block_size'] == 128 and ckpt['config']['block_size'] == 32
    assert [r['iter'] for r in map(json.loads, (out / 'metrics.jsonl').open()) if r['kind'] == 'train'] == [1, 2, 3]

    exported = run_ok('export_hf.py', f'--ckpt={out / "ckpt.pt"}', f'--out={tmp_path / "hf"}')
    assert 'note: trained on windows of 32 tokens of a context of 128 (max_position_embeddings)' in exported.stdout
    assert json.loads((tmp_path / 'hf' / 'config.json').read_text())['max_position_embeddings'] == 128
    card = (tmp_path / 'hf' / 'README.md').read_text()  # the model card says so too
    assert '| context | 128 tokens (trained on windows of 32) |' in card
    assert '| weights | continued from HuggingFaceTB/SmolLM2-135M |' in card
    assert 'base_model: HuggingFaceTB/SmolLM2-135M' in card
    assert str(tmp_path) not in card and os.path.expanduser('~') not in card  # a published card names no local folder
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf').eval()
    ids = torch.tensor([encoding_from_spec(spec).encode_ordinary(TINY_TEXT)[:100]])
    with torch.no_grad():
        ours = model_from_checkpoint(ckpt).eval()(ids, all_logits=True)
        theirs = hf(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)

    sample = run_ok('sample.py', f'--ckpt={out / "ckpt.pt"}', '--prompt=Metformin lowers blood glucose',
                    '--max_new_tokens=80', '--temperature=0', '--stop_at_eot=False')
    assert 'past the context' not in sample.stderr  # 80 tokens and the prompt fit in 128: no window slides
    assert len(encoding_from_spec(spec).encode_ordinary(sample.stdout.rstrip('\n'))) > 80
    from lm_eval.models.huggingface import HFLM
    assert HFLM(pretrained=str(tmp_path / 'hf'), device='cpu').max_length == 128  # lm-eval keeps prompts up to 128


def test_the_continue_bench_refuses_an_unknown_peer_before_preparing_anything(tmp_path):
    r = subprocess.run([sys.executable, 'bench/bench_continue.py', '--peers=compiled,fastest', f'--work={tmp_path}'],
                       cwd=REPO, text=True, capture_output=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --peers: 'fastest' is not one of eager, compiled, compiled_kept_memory"
    assert list(tmp_path.iterdir()) == []
