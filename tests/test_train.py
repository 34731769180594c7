import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from checkpoint import load_checkpoint, model_from_checkpoint
from conftest import FIXTURES, REPO, make_dataset
from dataloader import TrainLoader, load_meta, read_windows, window_ids, window_starts
from loss_eval import bits_per_byte, loss_sums

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4', '--gradient_accumulation_steps=2',
        '--eval_iters=2', '--log_interval=1', '--compile=False', '--warmup_iters=2', '--learning_rate=1e-2',
        '--min_lr=1e-3', '--peak_flops=1e12']


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny models


def run_train(data, out, *args):
    """train.py in this process, as `python train.py ...` would run it."""
    train.main(train.options([f'--data_dir={data}', f'--out_dir={out}', *TINY, *args]))


def records(out, kind=None):
    with open(out / 'metrics.jsonl') as f:
        return [r for r in map(json.loads, f) if kind in (None, r['kind'])]


@pytest.mark.parametrize('args, message', [
    (['--lerning_rate=1'], "unknown key 'lerning_rate' (did you mean 'learning_rate'?)"),
    (['--optimizer=sgd'], "optimizer='sgd': expected one of adamw, muon"),
    (['--n_embd=30', '--n_head=4'], 'n_embd=30 must be a multiple of n_head=4'),
])
def test_bad_config_exits_2_before_writing(args, message, tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_train(tiny_data, tmp_path / 'out', *args)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_missing_data_names_the_file_and_the_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_train(tmp_path / 'nodata', tmp_path / 'out')
    err = capsys.readouterr().err
    assert e.value.code == 1 and f"{tmp_path / 'nodata' / 'train.bin'} not found" in err
    assert f"python data/pubmed/prepare.py --out_dir={tmp_path / 'nodata'}" in err
    assert not (tmp_path / 'out').exists()


def test_training_writes_metrics_and_checkpoints_and_val_loss_falls(tiny_data, tmp_path):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_iters=12', '--eval_interval=6', '--ckpt_every_tokens=1024')
    evals, logs = records(out, 'eval'), records(out, 'train')
    assert [r['iter'] for r in evals] == [0, 6, 12] and [r['iter'] for r in logs] == list(range(1, 13))
    assert evals[-1]['val_loss'] < evals[0]['val_loss'] - 1.0
    assert evals[0]['val_loss'] == pytest.approx(math.log(320), abs=0.1)  # init: uniform over the vocabulary
    for r in evals:
        assert r['val_ppl'] == pytest.approx(math.exp(r['val_loss']))
        assert {'tokens', 'train_seconds', 'val_bpb'} <= r.keys()
    for r in logs:
        assert r['tokens'] == r['iter'] * 4 * 2 * 32 and r['mfu'] > 0 and r['tokens_per_s'] > 0
        assert {'loss', 'lr', 'ms_per_iter', 'train_seconds'} <= r.keys()
    # 256 tokens per step: snapshots at 1024, 2048, 3072
    assert sorted(p.name for p in out.glob('*.pt')) == ['best.pt', 'ckpt.pt', 'ckpt_000000001024.pt',
                                                      'ckpt_000000002048.pt', 'ckpt_000000003072.pt']
    ckpt = load_checkpoint(out / 'ckpt.pt')
    meta = load_meta(tiny_data)
    assert ckpt['iter_num'] == 12 and ckpt['tokens_seen'] == 12 * 256 and ckpt['best_val_loss'] == evals[-1]['val_loss']
    assert ckpt['tokenizer'] == meta['tokenizer'] and ckpt['token_bytes'] == meta['token_bytes']
    assert ckpt['loader']['windows_seen'] == 12 * 8 and ckpt['config']['learning_rate'] == 1e-2
    model = model_from_checkpoint(ckpt)
    assert model.config.n_layer == 2 and model.config.vocab_size == 320
    assert load_checkpoint(out / 'ckpt_000000002048.pt')['iter_num'] == 8


@pytest.mark.parametrize('optimizer', ['adamw', 'muon'])
def test_resume_continues_bitwise_exactly(optimizer, tiny_data, tmp_path):
    args = [f'--optimizer={optimizer}', '--dropout=0.1', '--eval_interval=0', '--max_iters=8', '--lr_decay_iters=8']
    run_train(tiny_data, tmp_path / 'straight', *args)
    run_train(tiny_data, tmp_path / 'resumed', *args[:-2], '--max_iters=4', '--lr_decay_iters=8')
    run_train(tiny_data, tmp_path / 'resumed', *args, '--init_from=resume')
    straight, resumed = records(tmp_path / 'straight', 'train'), records(tmp_path / 'resumed', 'train')
    assert [r['loss'] for r in resumed] == [r['loss'] for r in straight]
    assert [r['lr'] for r in resumed] == [r['lr'] for r in straight]
    assert records(tmp_path / 'resumed', 'eval')[-1]['val_loss'] == records(tmp_path / 'straight', 'eval')[-1]['val_loss']


@pytest.mark.parametrize('optimizer', ['adamw', 'muon'])
def test_torchrun_two_processes_follow_one_process(optimizer, tiny_data, tmp_path):
    """gradient_accumulation_steps counts micro-batches over all ranks: 2 x 1 and 1 x 2 see the same windows."""
    args = [f'--data_dir={tiny_data}', *TINY, '--max_iters=6', '--eval_interval=3', f'--optimizer={optimizer}']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    subprocess.run([sys.executable, 'train.py', *args, f'--out_dir={tmp_path / "one"}'], cwd=REPO, env=env,
                   check=True, capture_output=True)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
                        *args, f'--out_dir={tmp_path / "two"}'], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-8000:]
    one, two = records(tmp_path / 'one'), records(tmp_path / 'two')
    assert [(r['kind'], r['iter']) for r in two] == [(r['kind'], r['iter']) for r in one]
    for a, b in zip(one, two):
        key = 'loss' if a['kind'] == 'train' else 'val_loss'
        assert b[key] == pytest.approx(a[key], rel=1e-5)
    assert a['val_bpb'] == pytest.approx(b['val_bpb'], rel=1e-5)


def test_crash_during_save_leaves_previous_checkpoint(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_iters=3', '--eval_interval=0', '--save_best=False')
    before = (out / 'ckpt.pt').read_bytes()
    real_save = torch.save

    def save_half_then_die(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt('killed mid-save')

    monkeypatch.setattr(torch, 'save', save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_train(tiny_data, out, '--max_iters=6', '--eval_interval=0', '--save_best=False', '--init_from=resume')
    assert (out / 'ckpt.pt').read_bytes() == before and load_checkpoint(out / 'ckpt.pt')['iter_num'] == 3


def test_nan_loss_stops_with_a_message_and_keeps_checkpoint(tiny_data, tmp_path, capsys):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_iters=2', '--eval_interval=0')
    before = (out / 'ckpt.pt').read_bytes(), (out / 'best.pt').read_bytes()
    with pytest.raises(SystemExit) as e:
        run_train(tiny_data, out, '--max_iters=20', '--eval_interval=0', '--init_from=resume', '--learning_rate=1e30',
                  '--grad_clip=0', '--warmup_iters=0')
    assert e.value.code == 1 and 'loss is nan' in capsys.readouterr().err
    assert ((out / 'ckpt.pt').read_bytes(), (out / 'best.pt').read_bytes()) == before


def test_time_budget_counts_training_only_and_ends_with_an_eval(tiny_data, tmp_path):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_seconds=1.0', '--eval_interval_seconds=0.3', '--eval_interval=0', '--max_iters=100000',
              '--always_save_checkpoint=False', '--save_best=False')
    evals, logs = records(out, 'eval'), records(out, 'train')
    assert len(evals) >= 3 and evals[-1]['iter'] == logs[-1]['iter']  # at the start, every >= 0.3 s, at the end
    assert all(b['train_seconds'] - a['train_seconds'] >= 0.3 for a, b in zip(evals[:-2], evals[1:-1]))
    # stops at the first step over budget (records round to ms, so the step before may show 1.0)
    assert logs[-2]['train_seconds'] <= 1.0 <= logs[-1]['train_seconds'] and logs[-2]['iter'] + 1 == logs[-1]['iter']
    assert not list(out.glob('*.pt'))


def test_max_tokens_and_eval_only(tiny_data, tmp_path):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_tokens=1000', '--eval_interval=0')  # 256 tokens per step: 4 steps
    assert records(out, 'train')[-1]['tokens'] == 1024
    run_train(tiny_data, out, '--eval_only=True', '--init_from=resume')
    evals = records(out, 'eval')
    assert len(evals) == 3 and evals[2]['val_loss'] == evals[1]['val_loss'] and evals[2]['iter'] == 4
    assert len(records(out, 'train')) == 4


def test_zero_learning_rate_and_zero_max_iters_are_valid_runs(tiny_data, tmp_path):
    run_train(tiny_data, tmp_path / 'a', '--learning_rate=0', '--max_iters=3', '--eval_interval=0')
    lrs = [r['lr'] for r in records(tmp_path / 'a', 'train')]
    assert lrs == [0.0, 0.0, 0.0]
    run_train(tiny_data, tmp_path / 'b', '--max_iters=0')  # evaluation only, no step
    assert [r['iter'] for r in records(tmp_path / 'b')] == [0]


def test_lr_schedules():
    cosine = [train.lr_multiplier(it, it / 10, 2, 'cosine', 0.1, 0.2) for it in range(11)]
    assert cosine[:2] == [1 / 3, 2 / 3] and cosine[2] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(0.2 * math.pi)))
    assert cosine[10] == pytest.approx(0.1) and all(a >= b for a, b in zip(cosine[2:], cosine[3:]))
    wsd = [train.lr_multiplier(it, it / 10, 2, 'wsd', 0.1, 0.2) for it in range(11)]
    assert wsd[2:9] == [1.0] * 7 and wsd[9] == pytest.approx(0.55) and wsd[10] == pytest.approx(0.1)
    assert [train.lr_multiplier(it, it / 10, 2, 'constant', 0.1, 0.2) for it in range(11)] == cosine[:2] + [1.0] * 9


def test_windows_are_a_permutation_per_epoch():
    ids = window_ids(0, 30, 10, seed=7)
    for epoch in range(3):
        assert sorted(ids[10 * epoch: 10 * epoch + 10]) == list(range(10))
    assert list(ids[:10]) != list(ids[10:20])
    assert list(window_ids(13, 9, 10, seed=7)) == list(ids[13:22])  # any slice of the same stream


def test_window_starts_fixed_and_aligned_to_documents():
    E = 9  # <|endoftext|>: documents of 5, 2 and 7 tokens, then one of 3
    tokens = np.array([1, 2, 3, 4, E, 5, E, 1, 2, 3, 4, 5, 6, E, 7, 8, E], dtype=np.uint16)
    assert list(window_starts(tokens, 3)) == [0, 3, 6, 9, 12]  # (17 - 1) // 3 windows, every 3 tokens
    # each document: its preceding <|endoftext|> (the stream's start for the first), then every 3 tokens
    # inside it; a window needs 4 tokens, so none starts after offset 13
    assert list(window_starts(tokens, 3, eot=E)) == [0, 3, 4, 6, 9, 12, 13]
    x, y = read_windows(tokens, window_starts(tokens, 3, eot=E)[[1, 3]], 3)
    assert x.tolist() == [[4, E, 5], [E, 1, 2]] and y.tolist() == [[E, 5, E], [1, 2, 3]]
    assert len(window_starts(tokens[:4], 3, eot=E)) == 0  # no document end: nothing to align to


def test_aligned_windows_train_and_resume_exactly(tiny_data, tmp_path):
    args = ['--align_windows=True', '--lr_decay_iters=6']
    run_train(tiny_data, tmp_path / 'a', *args, '--max_iters=6')
    run_train(tiny_data, tmp_path / 'b', *args, '--max_iters=3')
    run_train(tiny_data, tmp_path / 'b', *args, '--max_iters=6', '--init_from=resume')
    run_train(tiny_data, tmp_path / 'c', '--lr_decay_iters=6', '--max_iters=6')
    losses = {run: [r['loss'] for r in records(tmp_path / run, 'train')] for run in 'abc'}
    assert losses['a'] == losses['b'] and len(losses['a']) == 6
    assert losses['c'] != losses['a']  # other windows than the fixed grid


def test_bits_per_byte_hand_computed():
    token_bytes = torch.tensor([1, 2, 3, 0])  # token 3 is <|endoftext|>: no bytes
    nats = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    targets = torch.tensor([[0, 3], [2, 1]])
    total, count, on_text, text_bytes = loss_sums(nats, targets, token_bytes).tolist()
    assert (total, count, on_text, text_bytes) == (10.0, 4.0, 1.0 + 3.0 + 4.0, 1 + 3 + 2)
    assert bits_per_byte(on_text, text_bytes) == pytest.approx(8.0 / (math.log(2) * 6))


def test_wandb_offline_writes_its_run_files(tiny_data, tmp_path):
    out = tmp_path / 'out'
    env = {**os.environ, 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true', 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, 'train.py', f'--data_dir={tiny_data}', f'--out_dir={out}', *TINY, '--max_iters=2',
                        '--wandb_log=True', '--wandb_run_name=t'], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-8000:]
    runs = list((out / 'wandb').glob('offline-run-*'))
    assert len(runs) == 1 and list(runs[0].glob('*.wandb'))


def test_loader_deals_each_steps_windows_the_same_for_any_split_of_ranks_and_micro_steps():
    tokens = np.arange(1000, dtype=np.uint16)
    one = TrainLoader(tokens, block=8, batch_size=3, micro_steps=4, seed=5)
    ranks = [TrainLoader(tokens, block=8, batch_size=3, micro_steps=4, seed=5, rank=r, world=2) for r in (0, 1)]
    for _ in range(30):  # past one epoch (124 windows, 12 a step)
        whole = [x for x, _ in one.step_batches()]
        split = [[x for x, _ in loader.step_batches()] for loader in ranks]
        # micro-batch m of rank r is the stream's (m * world + r)-th: rank 0 gets 0 and 2, rank 1 gets 1 and 3
        assert [b.tolist() for b in whole] == [b.tolist() for b in (split[0][0], split[1][0], split[0][1], split[1][1])]
    assert one.state_dict() == {'windows_seen': 360, 'seed': 5, 'block_size': 8, 'align_windows': False}
    resumed = TrainLoader(tokens, block=8, batch_size=3, micro_steps=4, seed=5)
    resumed.load_state_dict(one.state_dict())
    assert [x.tolist() for x, _ in resumed.step_batches()] == [x.tolist() for x, _ in one.step_batches()]


OLD = ['--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=4', '--gradient_accumulation_steps=1',
       '--eval_iters=2', '--pos=rotary', '--norm=rmsnorm', '--mlp=swiglu', '--bias=False', '--eval_interval=30',
       '--lr_decay_iters=40']


def test_a_checkpoint_of_the_layout_before_evaluates_and_resumes_as_it_did(tmp_path):
    """tests/fixtures/ckpt_v1_before_layout.pt was written by train.py before the one-job-per-file layout, on
    make_dataset(vocab_size=300); its val loss and the losses of 4 more steps were recorded with that code."""
    data = make_dataset(tmp_path / 'data', vocab_size=300)
    out = tmp_path / 'out'
    out.mkdir()
    shutil.copy(FIXTURES / 'ckpt_v1_before_layout.pt', out / 'ckpt.pt')
    run_train(data, out, *OLD, '--init_from=resume', '--eval_only=True')
    assert records(out, 'eval')[-1]['val_loss'] == 3.959281325340271
    run_train(data, out, *OLD, '--init_from=resume', '--max_iters=34', '--save_best=False')
    assert [r['loss'] for r in records(out, 'train')] == [4.0298004150390625, 3.9604058265686035, 4.072561740875244,
                                                           4.026118755340576]
    assert records(out, 'eval')[-1]['val_loss'] == 3.9052813686430454


def test_renamed_options_keep_working_with_a_note(tiny_data, tmp_path, capsys):
    (tmp_path / 'data').symlink_to(tiny_data)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # --dataset=X reads data/X
    try:
        config = train.options(['--dataset=data', '--always_save_checkpoint=False', '--decay_lr=False'])
    finally:
        os.chdir(cwd)
    assert (config['data_dir'], config['save_latest'], config['schedule']) == ('data/data', False, 'constant')
    err = capsys.readouterr().err
    assert 'note: always_save_checkpoint is deprecated: use save_latest (here save_latest=False)' in err
    assert "note: decay_lr is deprecated: use schedule (here schedule='constant')" in err
    assert train.options(['--decay_lr=True', '--schedule=wsd'])['schedule'] == 'wsd'
    cfg = tmp_path / 'old.py'
    cfg.write_text("dataset = 'openwebtext'\nalways_save_checkpoint = False\n")  # a nanoGPT-style config file
    config = train.options([str(cfg)])
    assert config['data_dir'] == os.path.join('data', 'openwebtext') and config['save_latest'] is False
    run_train(tiny_data, tmp_path / 'out', '--max_iters=2', '--always_save_checkpoint=False')
    assert sorted(p.name for p in (tmp_path / 'out').glob('*.pt')) == ['best.pt']
