"""sample.py as users run it: a real subprocess on a real checkpoint."""
import datetime
import os
import subprocess
import sys

import pytest
import torch

from checkpoint import make_checkpoint, save_checkpoint
from conftest import REPO, write_tiny_checkpoint
from model import GPT, GPTConfig
from tokenizer import EOT, encoding_from_spec, token_byte_lengths, vocab_size_of

SEPARATOR = '\n' + '-' * 40 + '\n'
pytestmark = pytest.mark.usefixtures('one_thread')


def run(*args):
    return run_all([args])[0]


def run_all(arg_lists):
    """Several sample.py processes at once (most of their time is importing torch)."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}  # a tiny model: threads would only fight each other
    procs = [
        subprocess.Popen([sys.executable, 'sample.py', *args], cwd=REPO, text=True, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE) for args in arg_lists
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.fixture(scope='module')
def trained(tmp_path_factory, spec):
    """A rotary model (block_size 32) in the default place, out/ckpt.pt, of a working directory."""
    path = tmp_path_factory.mktemp('sample') / 'ckpt.pt'
    model = write_tiny_checkpoint(path, spec, pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False)
    return path, model


def greedy_text(model, spec, ids, n):
    return encoding_from_spec(spec).decode(model.generate(torch.tensor([ids]), n, temperature=0)[0].tolist())


def test_greedy_output_is_the_models_past_block_size_and_says_so(trained, spec):
    path, model = trained
    r = run(f'--out_dir={path.parent}', '--prompt=Metformin lowers', '--temperature=0', '--max_new_tokens=70')
    assert r.returncode == 0, r.stderr
    ids = encoding_from_spec(spec).encode_ordinary('Metformin lowers')
    assert r.stdout == greedy_text(model, spec, ids, 70) + '\n'
    assert 'past the context of 32 tokens' in r.stderr


def test_long_prompt_from_a_file_keeps_its_last_block_size_tokens(trained, spec, tmp_path):
    path, model = trained
    text = 'The protein kinase phosphorylates the receptor in vitro. ' * 8
    (tmp_path / 'p.txt').write_text(text)
    r = run(f'--ckpt={path}', f'--prompt=FILE:{tmp_path / "p.txt"}', '--temperature=0', '--max_new_tokens=10')
    assert r.returncode == 0, r.stderr
    ids = encoding_from_spec(spec).encode_ordinary(text)[-32:]
    assert r.stdout == greedy_text(model, spec, ids, 10) + '\n'
    assert f'the prompt is {len(encoding_from_spec(spec).encode_ordinary(text))} tokens' in r.stderr


def test_empty_prompt_starts_from_endoftext(trained, spec):
    path, model = trained
    r = run(f'--ckpt={path}', '--temperature=0', '--max_new_tokens=12', '--device=cpu', '--dtype=float32')
    eot = encoding_from_spec(spec).eot_token
    assert r.returncode == 0 and r.stdout == greedy_text(model, spec, [eot], 12)[len(EOT):] + '\n'


@pytest.mark.slow
def test_same_seed_same_samples_batched_and_a_new_seed_differs(trained):
    path, _ = trained
    args = (f'--ckpt={path}', '--prompt=Aspirin', '--num_samples=3', '--max_new_tokens=40', '--temperature=1.5')
    a, b, c = run_all([(*args, '--seed=7'), (*args, '--seed=7'), (*args, '--seed=8')])
    assert a.returncode == 0 and a.stdout == b.stdout != c.stdout
    samples = a.stdout.split(SEPARATOR)
    assert len(samples) == 3 and all(s.startswith('Aspirin') for s in samples) and len(set(samples)) == 3


def test_first_sample_streams_while_generating(trained):
    path, _ = trained
    proc = subprocess.Popen([
        sys.executable, 'sample.py', f'--ckpt={path}', '--prompt=Aspirin', '--max_new_tokens=20000',
        '--stop_at_eot=False'
    ], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = os.read(proc.stdout.fileno(), 100)
        assert first.startswith(b'Aspirin') and proc.poll() is None  # text arrived, generation goes on
    finally:
        proc.kill()
        proc.communicate()


def test_a_sample_ends_at_endoftext_unless_told_otherwise(tmp_path, spec):
    """A model that always predicts <|endoftext|>: its final norm outputs ones, its head maps ones to eot."""
    args = dict(block_size=16, vocab_size=vocab_size_of(spec), n_layer=1, n_head=2, n_embd=16, tie_embeddings=False)
    model = GPT(GPTConfig(**args))
    eot = encoding_from_spec(spec).eot_token
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[eot] = 1.0
    save_checkpoint(make_checkpoint(model, spec, token_byte_lengths(spec)), tmp_path / 'eot.pt')
    base = (f'--ckpt={tmp_path / "eot.pt"}', '--prompt=Aspirin', '--num_samples=2', '--max_new_tokens=3')
    stop, go_on = run_all([base, (*base, '--stop_at_eot=False')])
    assert stop.stdout == 'Aspirin' + SEPARATOR + 'Aspirin\n'
    assert go_on.stdout == 'Aspirin' + EOT * 3 + SEPARATOR + 'Aspirin' + EOT * 3 + '\n'


@pytest.mark.slow
def test_bad_checkpoints_are_one_clear_line_and_non_zero(tmp_path, trained):
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(trained[0].read_bytes()[:5000])
    old = tmp_path / 'old.pt'
    torch.save({**torch.load(trained[0], weights_only=True), 'version': 0}, old)
    alien = tmp_path / 'alien.pt'
    ckpt = torch.load(trained[0], weights_only=True)
    save_checkpoint({**ckpt, 'model_args': {**ckpt['model_args'], 'n_layer': 3}}, alien)
    foreign = tmp_path / 'foreign.pt'
    torch.save({'model': {}, 'made': datetime.date(2024, 1, 1)}, foreign)  # an object torch's data loader refuses
    empty = tmp_path / 'empty.pt'
    empty.write_bytes(b'')
    cases = {
        tmp_path / 'missing.pt': 'no such checkpoint', corrupt: 'not a readable checkpoint', old: 'format version 0',
        alien: 'does not fit this model.py', empty: 'not a readable checkpoint',
        foreign: 'not a checkpoint of this project: it holds objects other than tensors and plain data'
    }
    for r, message in zip(run_all([(f'--ckpt={path}', '--prompt=Aspirin') for path in cases]), cases.values()):
        assert r.returncode == 1 and r.stdout == '' and 'weights_only' not in r.stderr
        assert r.stderr.count('\n') == 1 and r.stderr.startswith('error: ') and message in r.stderr, r.stderr


@pytest.mark.slow
def test_bad_options_exit_2(trained):
    cases = {
        '--top_p=0': '--top_p', '--prompt=FILE:/nonexistent.txt': 'prompt file', '--device=banana': 'not a device',
        '--temperature=1e-40': 'must be 0 (greedy) or at least 1e-4',
        '--device=mps': 'MPS (Apple GPUs) is not available', '--device=cuda:1': 'CUDA is not available here'
    }
    for r, message in zip(run_all([(f'--ckpt={trained[0]}', arg) for arg in cases]), cases.values()):
        assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1, r.stderr


def test_a_literal_endoftext_in_a_prompt_is_text_as_in_train_bin(trained, spec):
    path, model = trained
    prompt = 'Aspirin <|endoftext|> reduces'
    r = run(f'--ckpt={path}', f'--prompt={prompt}', '--temperature=0', '--max_new_tokens=8')
    ids = encoding_from_spec(spec).encode_ordinary(prompt)
    assert encoding_from_spec(spec).eot_token not in ids
    assert r.returncode == 0 and r.stdout == greedy_text(model, spec, ids, 8) + '\n'
