import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import train
from checkpoint import load_checkpoint, model_from_checkpoint
from conftest import FIXTURES, REPO, SHARED, fill_disk, make_dataset, need
from dataloader import load_meta

TINY = [
    '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4', '--gradient_accumulation_steps=2',
    '--eval_iters=2', '--log_interval=1', '--compile=False', '--warmup_iters=2', '--learning_rate=1e-2',
    '--min_lr=1e-3', '--peak_flops=1e12'
]

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny models


def run_train(data, out, *args):
    """train.py in this process, as `python train.py ...` would run it."""
    train.main(train.options([f'--data_dir={data}', f'--out_dir={out}', *TINY, *args]))


def records(out, kind=None):
    with open(out / 'metrics.jsonl') as f:
        return [r for r in map(json.loads, f) if kind in (None, r['kind'])]


@pytest.mark.parametrize(
    'args, message',
    [  # (a typo in a key: test_configurator.py)
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
    assert sorted(p.name for p in out.glob('*.pt')) == [
        'best.pt', 'ckpt.pt', 'ckpt_000000001024.pt', 'ckpt_000000002048.pt', 'ckpt_000000003072.pt'
    ]
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
    assert records(tmp_path / 'resumed', 'eval')[-1]['val_loss'] == records(tmp_path / 'straight',
                                                                            'eval')[-1]['val_loss']


@pytest.mark.slow
@pytest.mark.parametrize('optimizer, accumulation', [('adamw', 2), ('adamw', 1)])  # Muon: tests/test_cluster.py
def test_torchrun_two_processes_follow_one_process(optimizer, accumulation, tiny_data, tmp_path):
    """gradient_accumulation_steps counts micro-batches over all ranks: 2 x 1 and 1 x 2 see the same windows; with one
    micro-batch a step (the CPU config's), each of 2 processes trains half of it."""
    args = [
        f'--data_dir={tiny_data}', *TINY, '--max_iters=6', '--eval_interval=3', f'--optimizer={optimizer}',
        f'--gradient_accumulation_steps={accumulation}'
    ]
    train.main(train.options([*args, f'--out_dir={tmp_path / "one"}']))
    r = subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py', *args,
        f'--out_dir={tmp_path / "two"}'
    ], cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1'}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-8000:]
    if accumulation == 1:
        assert 'each of the 2 processes trains 2 windows a step, in 1 micro-batch(es) of 2' in r.stdout
    one, two = records(tmp_path / 'one'), records(tmp_path / 'two')
    assert [(r['kind'], r['iter']) for r in two] == [(r['kind'], r['iter']) for r in one]
    for a, b in zip(one, two):
        key = 'loss' if a['kind'] == 'train' else 'val_loss'
        assert b[key] == pytest.approx(a[key], rel=1e-5)
    assert a['val_bpb'] == pytest.approx(b['val_bpb'], rel=1e-5)


@pytest.mark.slow
def test_a_split_no_process_count_can_share_names_the_ones_that_can(tiny_data, tmp_path):
    r = subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=3', 'train.py',
        f'--data_dir={tiny_data}', f'--out_dir={tmp_path / "out"}', *TINY
    ], cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1'}, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert ('3 processes cannot share a step of batch_size x gradient_accumulation_steps = 4 x 2 = 8 windows equally: '
            'run 2 or 4 processes, or set gradient_accumulation_steps to 3') in r.stderr


def workers_of(agent_pid):
    """{rank: pid} of the processes torchrun (the agent, in process agent_pid) started."""
    found = {}
    for entry in os.listdir('/proc'):
        try:
            if entry.isdigit() and int(open(f'/proc/{entry}/stat').read().rsplit(')', 1)[1].split()[1]) == agent_pid:
                env = dict(v.split('=', 1) for v in open(f'/proc/{entry}/environ').read().split('\0') if '=' in v)
                if 'RANK' in env:
                    found[int(env['RANK'])] = int(entry)
        except OSError:
            pass
    return found


def alive(pid):
    try:
        return open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def start_long_torchrun(data, out):
    """A 2-process run that trains until stopped; returns once both ranks have taken a few steps."""
    proc = subprocess.Popen([
        sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
        f'--data_dir={data}', f'--out_dir={out}', *TINY, '--max_iters=1000000', '--eval_interval=0', '--dist_timeout=5',
        '--save_latest=False', '--save_best=False'
    ], cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1'}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / 'metrics.jsonl').exists() and len(records(out, 'train')) >= 3):
        time.sleep(0.1)
    workers = workers_of(proc.pid)
    assert sorted(workers) == [0, 1], proc.stderr.read() if proc.poll() is not None else workers
    return proc, workers


@pytest.mark.slow
def test_a_stalled_rank_is_named_after_dist_timeout(tiny_data, tmp_path):
    proc, workers = start_long_torchrun(tiny_data, tmp_path / 'out')
    os.kill(workers[1], signal.SIGSTOP)  # rank 1 stalls (a hung GPU, a stuck filesystem)
    try:
        deadline = time.time() + 60
        while alive(workers[0]) and time.time() < deadline:
            time.sleep(0.2)
        assert not alive(workers[0])
    finally:
        os.kill(workers[1], signal.SIGCONT)
        proc.kill() if proc.poll() is None and time.time() > deadline else None
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert ('error: rank 0: waited 5 s (--dist_timeout) for the other processes; stalled or dead: rank 1 (its last '
            'step: iter') in err


@pytest.mark.slow
def test_workers_exit_when_torchrun_is_killed(tiny_data, tmp_path):
    proc, workers = start_long_torchrun(tiny_data, tmp_path / 'out')
    os.kill(proc.pid, signal.SIGKILL)  # the agent dies; its workers must not train on as orphans
    proc.communicate()
    deadline = time.time() + 30
    while any(alive(pid) for pid in workers.values()) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers.values())


def test_eval_only_prints_the_evaluation_and_leaves_the_runs_files_as_they_are(tiny_data, tmp_path, capsys):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_iters=4', '--eval_interval=2', '--save_best=False')
    with open(out / 'metrics.jsonl', 'a') as f:  # the run goes on writing past its checkpoint (iter 4)
        f.write(json.dumps({'kind': 'train', 'iter': 5, 'loss': 1.0}) + '\n')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    run_train(tiny_data, out, '--init_from=resume', '--eval_only=True')
    printed = capsys.readouterr().out.splitlines()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert json.loads(printed[-1])['kind'] == 'eval' and json.loads(printed[-1])['iter'] == 4
    with pytest.raises(SystemExit) as e:  # a random model's evaluation is nobody's figure
        run_train(tiny_data, tmp_path / 'new', '--eval_only=True')
    assert e.value.code == 2 and 'eval_only=True evaluates an existing model' in capsys.readouterr().err
    assert not (tmp_path / 'new').exists()


@pytest.mark.slow
def test_sigterm_before_training_starts_stops_at_once(tiny_data, tmp_path):
    """Waiting at torchrun's rendezvous for a process that never comes (or building a model, or planning): a
    scheduler's SIGTERM ends the process then and there; only a training loop checkpoints first."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = {
        **os.environ, 'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '2', 'MASTER_ADDR': '127.0.0.1',
        'MASTER_PORT': str(port), 'OMP_NUM_THREADS': '1'
    }
    proc = subprocess.Popen(
        [sys.executable, 'train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path / "out"}', *TINY], cwd=REPO,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(5)  # rank 1 never comes: rank 0 waits up to dist_timeout (600 s)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM and not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_next_step_and_the_run_resumes(tiny_data, tmp_path):
    """What a scheduler's preemption or requeue sends (and torchrun passes on): the run ends as at a budget."""
    out = tmp_path / 'out'
    proc = subprocess.Popen([
        sys.executable, 'train.py', f'--data_dir={tiny_data}', f'--out_dir={out}', *TINY, '--max_iters=1000000',
        '--eval_interval=0', '--save_best=False'
    ], cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1'}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not ((out / 'metrics.jsonl').exists() and len(records(out, 'train')) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    last = records(out)[-1]
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert (f"stopped by SIGTERM at iter {last['iter']}: {out / 'ckpt.pt'} written; continue with "
            '--init_from=resume') in stdout
    assert last['kind'] == 'eval' and load_checkpoint(out / 'ckpt.pt')['iter_num'] == last['iter'] >= 3
    run_train(tiny_data, out, '--init_from=resume', f"--max_iters={last['iter'] + 2}")
    assert [r['iter'] for r in records(out, 'train')] == list(range(1, last['iter'] + 3))


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
    run_train(tiny_data, out, '--max_seconds=1.0', '--eval_interval_seconds=0.3', '--eval_interval=0',
              '--max_iters=100000', '--always_save_checkpoint=False', '--save_best=False')
    evals, logs = records(out, 'eval'), records(out, 'train')
    assert len(evals) >= 3 and evals[-1]['iter'] == logs[-1]['iter']  # at the start, every >= 0.3 s, at the end
    assert all(b['train_seconds'] - a['train_seconds'] >= 0.3 for a, b in zip(evals[:-2], evals[1:-1]))
    # stops at the first step over budget (records round to ms, so the step before may show 1.0)
    assert logs[-2]['train_seconds'] <= 1.0 <= logs[-1]['train_seconds'] and logs[-2]['iter'] + 1 == logs[-1]['iter']
    assert not list(out.glob('*.pt'))


def test_max_tokens_and_eval_only(tiny_data, tmp_path, capsys):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_tokens=1000', '--eval_interval=0')  # 256 tokens per step: 4 steps
    assert records(out, 'train')[-1]['tokens'] == 1024
    capsys.readouterr()
    run_train(tiny_data, out, '--eval_only=True', '--init_from=resume')
    evaluated, evals = json.loads(capsys.readouterr().out.splitlines()[-1]), records(out, 'eval')
    assert len(evals) == 2 and evaluated['val_loss'] == evals[1]['val_loss'] and evaluated['iter'] == 4
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


def test_aligned_windows_train_and_resume_exactly(tiny_data, tmp_path):
    args = ['--align_windows=True', '--lr_decay_iters=6']
    run_train(tiny_data, tmp_path / 'a', *args, '--max_iters=6')
    run_train(tiny_data, tmp_path / 'b', *args, '--max_iters=3')
    run_train(tiny_data, tmp_path / 'b', *args, '--max_iters=6', '--init_from=resume')
    run_train(tiny_data, tmp_path / 'c', '--lr_decay_iters=6', '--max_iters=6')
    losses = {run: [r['loss'] for r in records(tmp_path / run, 'train')] for run in 'abc'}
    assert losses['a'] == losses['b'] and len(losses['a']) == 6
    assert losses['c'] != losses['a']  # other windows than the fixed grid


@pytest.mark.slow
def test_wandb_offline_writes_its_run_files(tiny_data, tmp_path):
    out = tmp_path / 'out'
    env = {**os.environ, 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true', 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([
        sys.executable, 'train.py', f'--data_dir={tiny_data}', f'--out_dir={out}', *TINY, '--max_iters=2',
        '--wandb_log=True', '--wandb_run_name=t'
    ], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-8000:]
    runs = list((out / 'wandb').glob('offline-run-*'))
    assert len(runs) == 1 and list(runs[0].glob('*.wandb'))


OLD = [
    '--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=4', '--gradient_accumulation_steps=1',
    '--eval_iters=2', '--pos=rotary', '--norm=rmsnorm', '--mlp=swiglu', '--bias=False', '--eval_interval=30',
    '--lr_decay_iters=40'
]

# figures recorded on another machine: float sums differ with the CPU and its BLAS kernels (an AMD EPYC gave
# 3.9592813216149807 for 3.959281325340271, rel 1e-9); a wrong layout or a lost optimizer state moves them by > 1e-3
ANOTHER_CPU = 1e-6


def test_a_checkpoint_of_the_layout_before_evaluates_and_resumes_as_it_did(tmp_path, capsys):
    """tests/fixtures/ckpt_v1_before_layout.pt was written by train.py before the one-job-per-file layout, on
    make_dataset(vocab_size=300); its val loss and the losses of 4 more steps were recorded with that code."""
    data = make_dataset(tmp_path / 'data', vocab_size=300)
    out = tmp_path / 'out'
    out.mkdir()
    shutil.copy(FIXTURES / 'ckpt_v1_before_layout.pt', out / 'ckpt.pt')
    run_train(data, out, *OLD, '--init_from=resume', '--eval_only=True')
    evaluated = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert evaluated['val_loss'] == pytest.approx(3.959281325340271, rel=ANOTHER_CPU)
    run_train(data, out, *OLD, '--init_from=resume', '--max_iters=34', '--save_best=False')
    assert [r['loss'] for r in records(out, 'train')
            ] == pytest.approx([4.0298004150390625, 3.9604058265686035, 4.072561740875244, 4.026118755340576],
                               rel=ANOTHER_CPU)
    assert records(out, 'eval')[-1]['val_loss'] == pytest.approx(3.9052813686430454, rel=ANOTHER_CPU)


def test_renamed_options_keep_working_with_a_note(tiny_data, tmp_path, capsys):
    (tmp_path / 'data').symlink_to(tiny_data)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # --dataset=X reads data/X
    try:
        config = train.options(['--dataset=data', '--always_save_checkpoint=False', '--decay_lr=False'])
    finally:
        os.chdir(cwd)
    assert (config.data_dir, config.save_latest, config.schedule) == ('data/data', False, 'constant')
    err = capsys.readouterr().err
    assert 'note: always_save_checkpoint is deprecated: use save_latest (here save_latest=False)' in err
    assert "note: decay_lr is deprecated: use schedule (here schedule='constant')" in err
    assert train.options(['--decay_lr=True', '--schedule=wsd']).schedule == 'wsd'
    cfg = tmp_path / 'old.py'
    cfg.write_text("dataset = 'openwebtext'\nalways_save_checkpoint = False\n")  # a nanoGPT-style config file
    config = train.options([str(cfg)])
    assert config.data_dir == os.path.join('data', 'openwebtext') and config.save_latest is False
    run_train(tiny_data, tmp_path / 'out', '--max_iters=2', '--always_save_checkpoint=False')
    assert sorted(p.name for p in (tmp_path / 'out').glob('*.pt')) == ['best.pt']


# ------------------------------------------------------------------------------------------------
# hardening: nothing lost, nothing silently wrong, one line for every mistake


def test_a_new_run_never_replaces_a_previous_one_unless_told(tiny_data, tmp_path, capsys):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_iters=2', '--ckpt_every_tokens=256')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for args in (['--max_iters=0'], ['--max_iters=5'], ['--learning_rate=1e-5']):
        with pytest.raises(SystemExit) as e:
            run_train(tiny_data, out, *args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count('\n') == 1
        previous = 'best.pt, ckpt.pt, ckpt_000000000256.pt, ckpt_000000000512.pt, metrics.jsonl'
        assert f'{out} holds a previous run ({previous})' in err
        assert '--init_from=resume' in err and '--overwrite=True' in err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    run_train(tiny_data, out, '--max_iters=1', '--overwrite=True')
    assert sorted(p.name for p in out.iterdir()) == ['best.pt', 'ckpt.pt', 'metrics.jsonl']
    assert [r['iter'] for r in records(out)] == [0, 1, 1]


KILLED_AT_SAVE = """
import os, signal, sys
import checkpoint, train
real_save, saves = checkpoint.save_checkpoint, []
def save_then_maybe_die(ckpt, path):
    saves.append(path)
    if len(saves) == int(os.environ['KILL_AT_SAVE']):
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9: no cleanup of any kind runs
    real_save(ckpt, path)
checkpoint.save_checkpoint = save_then_maybe_die
train.main(train.options(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_kill_between_best_and_ckpt_leaves_them_agreeing_and_metrics_hold_each_iteration_once(tiny_data, tmp_path):
    out = tmp_path / 'out'
    args = [f'--data_dir={tiny_data}', f'--out_dir={out}', *TINY, '--max_iters=4', '--eval_interval=2']
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'KILL_AT_SAVE': '4'}  # iter 4: between its two checkpoint files
    killed = subprocess.run([sys.executable, '-c', KILLED_AT_SAVE, *args], cwd=REPO, env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    run_train(tiny_data, out, '--max_iters=4', '--eval_interval=2', '--init_from=resume')
    best, latest = load_checkpoint(out / 'best.pt'), load_checkpoint(out / 'ckpt.pt')
    final = records(out, 'eval')[-1]['val_loss']
    assert best['iter_num'] == latest['iter_num'] == 4 and best['best_val_loss'] == latest['best_val_loss'] == final
    assert [(r['kind'], r['iter']) for r in records(out)] == [('eval', 0), ('train', 1), ('train', 2), ('eval', 2),
                                                              ('train', 3), ('train', 4), ('eval', 4)]


def test_no_checkpoint_of_a_blown_up_model_is_written_and_sample_refuses_one(tiny_data, tmp_path, capsys):
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as e:  # the first step's loss is finite; the weights after it are not
        run_train(tiny_data, out, '--learning_rate=1e39', '--grad_clip=0', '--warmup_iters=0', '--max_iters=5',
                  '--eval_interval=0', '--ckpt_every_tokens=256')
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert 'the weights are not finite (inf or nan) after iter 1: stopping without writing it' in err
    assert not list(out.glob('*.pt'))
    run_train(tiny_data, out, '--max_iters=1', '--overwrite=True')
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    ckpt['model']['lm_head.weight'][0, 0] = float('nan')
    torch.save(ckpt, out / 'nan.pt')
    r = subprocess.run([sys.executable, 'sample.py', f'--ckpt={out / "nan.pt"}'], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'weights are not finite' in r.stderr


def test_resume_takes_the_runs_own_options_and_refuses_changes_that_break_it(tiny_data, tmp_path, capsys):
    run_train(tiny_data, tmp_path / 'straight', '--max_iters=8', '--lr_decay_iters=8', '--eval_interval=0')
    run_train(tiny_data, tmp_path / 'resumed', '--max_iters=4', '--lr_decay_iters=8', '--eval_interval=0')
    capsys.readouterr()
    # the command line a user types to resume: none of the run's options repeated
    train.main(
        train.options([f'--out_dir={tmp_path / "resumed"}', '--init_from=resume', '--max_iters=8', '--n_layer=3']))
    out = capsys.readouterr().out
    assert 'note: resuming with max_iters=8 (the run had 4)' in out
    assert "note: ignoring --n_layer=3: resuming keeps the checkpoint's model (n_layer=2)" in out
    assert [r['loss'] for r in records(tmp_path / 'resumed', 'train')
            ] == [r['loss'] for r in records(tmp_path / 'straight', 'train')]
    for arg, was in (('--batch_size=8', 'batch_size=4'), ('--seed=1', 'seed=1337'),
                     ('--align_windows=True', 'align_windows=False'), ('--gradient_accumulation_steps=4',
                                                                       'gradient_accumulation_steps=2')):
        with pytest.raises(SystemExit) as e:
            train.options([f'--out_dir={tmp_path / "resumed"}', '--init_from=resume', arg])
        err = capsys.readouterr().err
        assert e.value.code == 2 and was in err and '--allow_config_change=True' in err and err.count('\n') == 1
    config = train.options(
        [f'--out_dir={tmp_path / "resumed"}', '--init_from=resume', '--batch_size=8', '--allow_config_change=True'])
    assert config.batch_size == 8 and 'resuming with batch_size=8 (the run had 4)' in capsys.readouterr().out


def test_resume_on_data_of_another_tokenizer_is_refused(tiny_data, tmp_path, capsys):
    other = make_dataset(tmp_path / 'other', vocab_size=300)
    run_train(tiny_data, tmp_path / 'out', '--max_iters=2')
    with pytest.raises(SystemExit) as e:
        run_train(other, tmp_path / 'out', '--max_iters=4', '--init_from=resume')
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count('\n') == 1
    assert f'{other} is tokenized with another tokenizer (bpe, 300 tokens, #' in err and 'than the run in' in err


def test_resume_on_data_prepared_again_is_refused_unless_allowed(tmp_path, capsys):
    data = make_dataset(tmp_path / 'data')
    spec = load_meta(data)['tokenizer']
    run_train(data, tmp_path / 'out', '--max_iters=2')
    make_dataset(data, spec=spec, seed=1)  # the same folder prepared again: the same tokenizer, other documents
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_train(data, tmp_path / 'out', '--max_iters=4', '--init_from=resume')
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1, err
    ckpt = tmp_path / 'out' / 'ckpt.pt'
    assert f'train.bin and val.bin in {data}: not the token files the run in {ckpt} trained on' in err
    assert '--allow_config_change=True' in err and load_checkpoint(tmp_path / 'out' / 'ckpt.pt')['iter_num'] == 2
    run_train(data, tmp_path / 'out', '--max_iters=4', '--init_from=resume', '--allow_config_change=True')
    printed = capsys.readouterr().out
    assert 'continuing on them (allow_config_change); val losses before and after are not comparable' in printed
    assert load_checkpoint(tmp_path / 'out' / 'ckpt.pt')['data']['token_files'] == load_meta(data)['token_files']
    run_train(data, tmp_path / 'out', '--max_iters=5', '--init_from=resume')  # the data it now trains on: no word
    assert 'not the ones' not in capsys.readouterr().out


def test_mfu_is_never_above_100_percent(tiny_data, tmp_path, capsys):
    """A peak the run's own rate exceeds was measured on a busy machine (or given too low): MFU is unknown then."""
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_iters=3', '--eval_interval=0', '--peak_flops=1.0')
    printed = capsys.readouterr().out
    assert [r['mfu'] for r in records(out, 'train')] == [None, None, None]
    assert printed.count('MFU is unknown for this run') == 1 and printed.count(
        'mfu unknown') == 3 and '%, peak memory' not in printed


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_checkpoint_before(tiny_data, tmp_path, tmpfs):
    out = tmpfs(tmp_path / 'disk', size='4m') / 'out'
    run_train(tiny_data, out, '--max_iters=2', '--eval_interval=0', '--save_best=False')
    before = (out / 'ckpt.pt').read_bytes()
    fill_disk(out.parent, leave=16384)  # room for the log's lines, not for a checkpoint
    r = subprocess.run([
        sys.executable, 'train.py', f'--data_dir={tiny_data}', f'--out_dir={out}', *TINY, '--max_iters=4',
        '--eval_interval=0', '--save_best=False', '--init_from=resume'
    ], cwd=REPO, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.startswith(f'error: {out / "ckpt.pt"}: the disk is full (') and ' needed, ' in r.stderr
    assert r.stderr.rstrip().endswith('free): make room there, or write elsewhere; nothing was replaced (at iter 4)')
    assert (out / 'ckpt.pt').read_bytes() == before and sorted(p.name
                                                               for p in out.iterdir()) == ['ckpt.pt', 'metrics.jsonl']


def test_the_next_save_or_resume_removes_what_a_kill_during_a_save_left(tiny_data, tmp_path):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_iters=2', '--eval_interval=0')
    gone = subprocess.Popen(['true'])
    gone.wait()  # a process id no process has now: the writer killed mid-save
    alive = subprocess.Popen(['sleep', '60'])  # a writer still at work
    try:
        for name in (f'ckpt.pt.{gone.pid}.tmp', f'best.pt.{gone.pid}.tmp', f'ckpt_000000001024.pt.{gone.pid}.tmp',
                     f'ckpt.pt.{alive.pid}.tmp'):
            (out / name).write_bytes(b'x' * 1000)
        run_train(tiny_data, out, '--max_iters=3', '--eval_interval=0', '--init_from=resume', '--save_latest=False')
        assert sorted(p.name
                      for p in out.iterdir()) == ['best.pt', 'ckpt.pt', f'ckpt.pt.{alive.pid}.tmp', 'metrics.jsonl']
        (out / f'best.pt.{gone.pid}.tmp').write_bytes(b'x')
        from common import atomic_write
        with atomic_write(out / 'best.pt') as f:  # a save removes its own name's
            f.write((out / 'ckpt.pt').read_bytes())
        assert not (out / f'best.pt.{gone.pid}.tmp').exists() and (out / f'ckpt.pt.{alive.pid}.tmp').exists()
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize('arg, message', [
    ('--grad_clip=-1', 'grad_clip=-1.0: must be 0 or more'),
    ('--weight_decay=-0.1', 'weight_decay=-0.1: must be 0 or more'),
    ('--learning_rate=-1e-3', 'learning_rate=-0.001: must be 0 or more'),
    ('--beta2=1.0', 'beta2=1.0: must be in [0, 1)'),
    ('--dropout=1.0', 'dropout=1.0: must be in [0, 1)'),
    ('--n_head=0', 'n_head=0: must be at least 1'),
    ('--pos=rotary', 'pos=rotary needs an even head size, and n_embd / n_head = 30 / 10 = 3 is odd'),
    ('--seed=-1', 'seed=-1: must be 0 or more'),
    ('--device=cuda', 'CUDA is not available here'),
    ('--device=mps', 'MPS (Apple GPUs) is not available here'),
    ('--dist_timeout=0', 'dist_timeout=0.0: must be positive'),
])
def test_every_option_no_run_can_use_is_one_line_and_exit_2(arg, message, tiny_data, tmp_path, capsys):
    extra = ['--n_embd=30', '--n_head=10'] if arg == '--pos=rotary' else []
    with pytest.raises(SystemExit) as e:
        run_train(tiny_data, tmp_path / 'out', *extra, arg)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count('\n') == 1, err
    assert not (tmp_path / 'out').exists()


def test_checkpoints_and_paths_that_cannot_be_used_are_one_line(tiny_data, tmp_path, capsys):
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_iters=1')
    good = torch.load(out / 'ckpt.pt', weights_only=True)
    cases = {
        'empty': (b'', 'not a readable checkpoint'),
        'no optimizer': ({k: v
                          for k, v in good.items()
                          if k != 'optimizer'}, 'not a checkpoint to resume from (no optimizer)'),
        'bad rng': ({**good, 'rng': [{'torch': torch.zeros(3)}]}, 'its random state (rng) is not one torch wrote'),
        'other shape': ({**good, 'model_args': {**good['model_args'], 'n_embd': 64}}, 'does not fit this model.py')
    }
    for name, (content, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        if isinstance(content, bytes):
            (folder / 'ckpt.pt').write_bytes(content)
        else:
            torch.save(content, folder / 'ckpt.pt')
        with pytest.raises(SystemExit) as e:
            run_train(tiny_data, folder, '--init_from=resume')
        err = capsys.readouterr().err
        assert e.value.code == 1 and message in err and err.count('\n') == 1 and 'weights_only' not in err, (name, err)
    (tmp_path / 'a_file').write_text('x')
    (tmp_path / 'not_hf').mkdir()
    for args, message in ((['--out_dir=' + str(tmp_path / 'a_file')], 'is a file'),
                          (['--init_from=' + str(tmp_path / 'not_hf')],
                           'not a Hugging Face model folder (it has no config.json)')):
        with pytest.raises(SystemExit) as e:
            train.options([f'--data_dir={tiny_data}', *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count('\n') == 1, err


@pytest.mark.slow
def test_eval_pubmedqa_at_the_end_goes_to_metrics(tiny_data, tmp_path, capsys):
    pytest.importorskip('lm_eval')
    pubmedqa = need(SHARED / 'data' / 'pubmedqa')
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_iters=2', '--eval_pubmedqa=True', f'--pubmedqa_dir={pubmedqa}', '--eval_limit=4')
    last = records(out)[-1]
    assert last['kind'] == 'pubmedqa' and last['iter'] == 2 and last['questions'] == 4
    assert 0 <= last['accuracy'] <= 1 and last['majority_label'] in ('yes', 'no', 'maybe')
    assert '| pubmedqa (acc) | 4 |' in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # no PubMedQA data: said before training, not after
        run_train(tiny_data, tmp_path / 'other', '--eval_pubmedqa=True', f'--pubmedqa_dir={tmp_path}')
    assert e.value.code == 2 and 'PubMedQA not found' in capsys.readouterr().err and not (tmp_path / 'other').exists()


def test_eval_tasks_at_the_end_go_to_metrics_and_are_checked_before_training(tiny_data, tmp_path, capsys):
    """--eval_tasks=general_bpb: the suite's figure with its interval, one eval_task record per task; a task the
    suite does not know, or general text of another tokenizer, stops the run before it trains (exit 2)."""
    out = tmp_path / 'out'
    run_train(tiny_data, out, '--max_iters=2', '--eval_tasks=general_bpb', f'--general_text={tiny_data}')
    last = records(out)[-1]
    assert last['kind'] == 'eval_task' and last['iter'] == 2 and last['task'] == 'general_bpb'
    assert last['metric'] == 'bpb' and last['ci_low'] < last['value'] < last['ci_high'] and last['n'] > 1
    assert '| general_bpb (bits per byte, lower is better) |' in capsys.readouterr().out
    for args, message in ((['--eval_tasks=pubmedqa,no_such'], "eval_tasks=pubmedqa,no_such: no task 'no_such'"),
                          (['--eval_tasks=general_bpb'], 'general_bpb needs --general_text')):
        with pytest.raises(SystemExit) as e:
            run_train(tiny_data, tmp_path / 'other', *args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and not (tmp_path / 'other' / 'metrics.jsonl').exists(), err


def test_fast_dev_run_checks_the_whole_chain_and_leaves_out_dir_alone(tiny_data, tmp_path, capsys):
    """Two steps, the evaluations, a checkpoint written and resumed, a sample and an export, in a temporary folder;
    one line at the end. For an open model's folder too; a config that cannot run is one line, as always."""
    import tempfile

    from hf_folders import llama_folder
    from tokenizer import spec_from_hf_folder
    folder = os.path.join(tempfile.gettempdir(), f'pubmed-gpt-fast-dev-run-{os.getpid()}')
    run_train(tiny_data, tmp_path / 'out', '--fast_dev_run=True', '--max_iters=100000', '--eval_interval=5')
    out = capsys.readouterr().out
    assert ('fast_dev_run: the config is good to launch (2 steps and 2 evaluations; ckpt.pt written and resumed; '
            'sampled') in out
    assert 'exported as gpt2' in out and f"{tmp_path / 'out'} was not touched" in out
    assert 'iter 3: loss' in out and not (tmp_path / 'out').exists() and not os.path.exists(folder)

    llama = llama_folder(tmp_path / 'llama', ['Metformin lowers blood glucose in patients. '] * 40, vocab_size=300)
    data = make_dataset(tmp_path / 'llama-data', spec=spec_from_hf_folder(llama))
    train.main(
        train.options([
            f'--init_from={llama}', f'--data_dir={data}', f'--out_dir={tmp_path / "continued"}', '--block_size=32',
            '--batch_size=2', '--gradient_accumulation_steps=1', '--compile=False', '--device=cpu', '--eval_iters=1',
            '--fast_dev_run=True'
        ]))
    assert 'good to launch' in capsys.readouterr().out and not (tmp_path / 'continued').exists()

    with pytest.raises(SystemExit) as e:
        run_train(tmp_path / 'no-data', tmp_path / 'out', '--fast_dev_run=True')
    assert e.value.code == 1 and 'train.bin not found' in capsys.readouterr().err and not os.path.exists(folder)
    with pytest.raises(SystemExit) as e:
        run_train(tiny_data, tmp_path / 'out', '--fast_dev_run=True', '--init_from=resume')
    assert e.value.code == 2 and 'not with init_from=resume' in capsys.readouterr().err


@pytest.mark.slow
def test_fast_dev_run_under_torchrun_with_fsdp(tiny_data, tmp_path):
    r = subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
        f'--data_dir={tiny_data}', f'--out_dir={tmp_path / "out"}', *TINY, '--parallel=fsdp', '--fast_dev_run=True'
    ], cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'good to launch (2 steps and 2 evaluations; ckpt.dcp written and resumed' in r.stdout
    assert not (tmp_path / 'out').exists()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason="glibc's mallopt")
def test_cpu_training_keeps_the_memory_a_step_frees_for_the_next():
    """Without keep_freed_memory glibc unmaps a freed 256 MB buffer at once (the next step faults it in again, page by
    page); with it the memory stays with the process. train.py calls it on CPU."""
    probe = ('import sys, torch; from common import keep_freed_memory\n'
             'kept = sys.argv[1] == "kept" and keep_freed_memory()\n'
             'page = __import__("os").sysconf("SC_PAGE_SIZE")\n'
             'rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page / 2**20\n'
             'x = torch.ones(64 * 2**20); before = rss(); del x\n'
             'print(kept, round(before - rss()))')
    freed = {}
    for mode in ('plain', 'kept'):
        done = subprocess.run([sys.executable, '-c', probe, mode], cwd=REPO, capture_output=True, text=True, check=True)
        kept, freed[mode] = done.stdout.split()
        assert kept == str(mode == 'kept')
    assert int(freed['plain']) >= 250 and int(freed['kept']) <= 5, freed
    assert 'keep_freed_memory()' in (REPO / 'train.py').read_text()
