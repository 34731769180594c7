"""FSDP2 (--parallel=fsdp), activation checkpointing, sharded checkpoints and the memory plan."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from checkpoint import load_checkpoint
from sharded_checkpoint import save_sharded
from conftest import REPO
from model import GPT, GPTConfig
from test_train import TINY, records, run_train

pytestmark = pytest.mark.usefixtures('one_thread')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def python(*args):
    r = subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-6000:]
    return r


def torchrun(*args):
    return python('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py', *args)


def losses(out):
    return [r['loss'] if r['kind'] == 'train' else r['val_loss'] for r in records(out)]


@pytest.mark.slow
def test_fsdp_follows_ddp_resumes_exactly_on_2_and_on_1_process_and_consolidates(tiny_data, tmp_path):
    """2 FSDP processes (with activation checkpointing) train as 1 DDP process does, within 1e-5: the same windows,
    but FSDP reduce-scatters each micro-step's gradients across the processes, so sums run in another order (and on
    a GPU in bf16 they would not be bitwise in any case). Its sharded snapshot at iter 4 resumes on 2 processes
    bitwise, on 1 (nothing sharded) within 1e-5, and consolidates into a ckpt.pt sample.py reads (the folder itself
    reads as the same weights)."""
    args = ['--eval_interval=4', '--lr_decay_iters=8', '--save_best=False', '--max_iters=8']
    run_train(tiny_data, tmp_path / 'ddp', *args)
    torchrun(f'--data_dir={tiny_data}', *TINY, *args, '--parallel=fsdp', '--activation_checkpointing=True',
             '--ckpt_every_tokens=1024', f'--out_dir={tmp_path / "fsdp"}')  # 256 tokens a step: a snapshot every 4
    reference, straight = losses(tmp_path / 'ddp'), losses(tmp_path / 'fsdp')
    assert len(straight) == 8 + 3 and straight == pytest.approx(reference, rel=1e-5)
    snapshot = tmp_path / 'fsdp' / 'ckpt_000000001024.dcp'
    assert sorted(os.listdir(snapshot)) == ['.metadata', '__0_0.distcp', '__1_0.distcp', 'train_state.pt']
    for name in ('two', 'one'):  # the run as it was at iter 4 (resuming trims metrics.jsonl to it)
        shutil.copytree(snapshot, tmp_path / name / 'ckpt.dcp')
        shutil.copy(tmp_path / 'fsdp' / 'metrics.jsonl', tmp_path / name)
    torchrun('--init_from=resume', f'--out_dir={tmp_path / "two"}')
    assert losses(tmp_path / 'two') == straight
    run_train(tiny_data, tmp_path / 'one', '--init_from=resume')
    assert losses(tmp_path / 'one')[:6] == straight[:6] and losses(tmp_path / 'one') == pytest.approx(
        straight, rel=1e-5)

    r = python('consolidate.py', f'--ckpt={tmp_path / "two" / "ckpt.dcp"}', f'--out={tmp_path / "ckpt.pt"}')
    assert 'optimizer state and the run at iter 8' in r.stdout
    ckpt = load_checkpoint(tmp_path / 'ckpt.pt')
    assert ckpt['iter_num'] == 8 and ckpt['config']['parallel'] == 'fsdp' and len(ckpt['optimizer']) == 1
    folder = load_checkpoint(str(tmp_path / 'two' / 'ckpt.dcp'))  # what sample.py, export_hf.py, pubmedqa.py read of it
    assert all(torch.equal(folder['model'][k], v) for k, v in ckpt['model'].items())
    assert python('sample.py', f"--ckpt={tmp_path / 'ckpt.pt'}", '--max_new_tokens=12',
                  '--num_samples=1').stdout.strip()


@pytest.mark.parametrize('mlp', ['gelu', 'swiglu'])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(mlp):
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(n_layer=3, n_head=2, n_embd=32, block_size=16, vocab_size=64, dropout=0.2, mlp=mlp, pos='rotary'))
    x, y = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    results = []
    for checkpointing in (False, True):
        model.activation_checkpointing = checkpointing
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks, drawn again in the recomputation
        loss = model(x, y)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_off, grads_off), (loss_on, grads_on) = results
    assert loss_on == loss_off
    assert all(torch.equal(grads_on[n], grads_off[n]) for n in grads_off)


def test_sharded_checkpoints_in_one_process_resume_and_survive_a_kill_mid_save(tiny_data, tmp_path, monkeypatch,
                                                                               capsys):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--parallel=fsdp', '--max_iters=3', '--eval_interval=0', '--save_best=False')
    assert sorted(os.listdir(out)) == ['ckpt.dcp', 'metrics.jsonl']
    with pytest.raises(SystemExit) as e:  # another format than the run's
        run_train(tiny_data, out, '--init_from=resume', '--parallel=ddp')
    assert e.value.code == 1 and f"{out / 'ckpt.pt'}: no such checkpoint" in capsys.readouterr().err

    def save_then_die(*a, **k):
        raise KeyboardInterrupt('killed mid-save')

    monkeypatch.setattr('sharded_checkpoint.write_train_state',
                        save_then_die)  # the shards are written, train_state.pt is not
    with pytest.raises(KeyboardInterrupt):
        run_train(tiny_data, out, '--max_iters=6', '--eval_interval=0', '--init_from=resume')
    assert load_checkpoint(str(out / 'ckpt.dcp'))['iter_num'] == 3 and (out / 'ckpt.dcp.tmp').is_dir()
    monkeypatch.undo()
    run_train(tiny_data, out, '--max_iters=6', '--eval_interval=0', '--init_from=resume')
    assert load_checkpoint(str(out / 'ckpt.dcp'))['iter_num'] == 6 and sorted(
        os.listdir(out)) == ['ckpt.dcp', 'metrics.jsonl']
    assert [r['iter'] for r in records(out, 'train')] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(SystemExit) as e:  # a new run never replaces a sharded one unless told
        run_train(tiny_data, out, '--parallel=fsdp', '--max_iters=1')
    assert e.value.code == 2 and 'holds a previous run (ckpt.dcp, metrics.jsonl)' in capsys.readouterr().err
    run_train(tiny_data, out, '--max_iters=1', '--overwrite=True')
    assert sorted(os.listdir(out)) == ['best.pt', 'ckpt.pt', 'metrics.jsonl']


def test_a_sharded_checkpoint_of_a_blown_up_model_is_not_written(tmp_path):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float('nan')
    with pytest.raises(Exception, match='not finite'):
        save_sharded(str(tmp_path / 'ckpt.dcp'), model, model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu'), {})
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize('arg, message', [
    ('--dtype=float16', 'dtype=float16 with parallel=fsdp: use bfloat16'),
    ('--parallel=zero', "parallel='zero': expected one of ddp, fsdp"),
])
def test_options_fsdp_cannot_use_are_one_line(arg, message, tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_train(tiny_data, tmp_path / 'out', '--parallel=fsdp', arg)
    assert e.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / 'out').exists()
