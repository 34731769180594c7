"""sweep.py: a grid of train.py runs, checked before anything runs, run here one after another (a killed sweep
resumes) or as a SLURM job array, and one table of the results."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from test_cluster import RECORDER, stubs
from test_train import records

pytestmark = pytest.mark.slow  # real train.py runs
TINY = ['--n_layer=2', '--n_head=2', '--block_size=32', '--batch_size=4', '--gradient_accumulation_steps=2', '--eval_iters=2',
        '--compile=False', '--max_iters=4', '--eval_interval=2', '--log_interval=1']
GRID = ['--sweep=learning_rate=1e-3,3e-2', '--sweep=n_embd=16,32']
NAMES = ['learning_rate=1e-3_n_embd=16', 'learning_rate=1e-3_n_embd=32', 'learning_rate=3e-2_n_embd=16',
         'learning_rate=3e-2_n_embd=32']


def sweep(*args, **popen):
    return subprocess.Popen([sys.executable, 'sweep.py', *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, 'OMP_NUM_THREADS': '1'}, **popen)


def test_a_local_grid_runs_each_point_resumes_when_killed_and_collects_one_table(tiny_data, tmp_path):
    out = tmp_path / 'sweep'
    args = [f'--data_dir={tiny_data}', *TINY, *GRID, f'--sweep_dir={out}']
    killed = sweep(*args, start_new_session=True)  # killed while its second point trains, after its first checkpoint
    metrics = out / NAMES[1] / 'metrics.jsonl'
    while killed.poll() is None and not (metrics.exists() and any(r['iter'] >= 3 for r in records(metrics.parent))):
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert (out / NAMES[0] / 'sweep_done.json').exists() and not (out / NAMES[1] / 'sweep_done.json').exists()

    again = sweep(*args)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    assert f'[1/4] {NAMES[0]}: done before, skipped' in stdout and f'[2/4] {NAMES[1]}: resuming' in stdout
    assert f'[3/4] {NAMES[2]}: running' in stdout
    for name in NAMES:  # each iteration once, the resumed one included
        assert [r['iter'] for r in records(out / name, 'train')] == [1, 2, 3, 4], name
    assert 'eval iter 4' in (out / NAMES[3] / 'train.log').read_text()  # each run's output is in its folder

    collected = sweep(f'--collect={out}')
    stdout, _ = collected.communicate(timeout=120)
    rows = list(csv.DictReader(open(out / 'results.csv')))
    assert [(r['learning_rate'], r['n_embd'], r['status']) for r in rows] == [
        ('1e-3', '16', 'done'), ('1e-3', '32', 'done'), ('3e-2', '16', 'done'), ('3e-2', '32', 'done')]
    for name, row in zip(NAMES, rows):
        evals = records(out / name, 'eval')
        assert float(row['val_loss']) == evals[-1]['val_loss'] and float(row['val_bpb']) == evals[-1]['val_bpb']
        assert float(row['best_val_loss']) == min(r['val_loss'] for r in evals) and row['tokens'] == '1024'
    assert '| learning_rate | n_embd | status | val_loss |' in stdout and (out / 'results.md').read_text().startswith('| learning_rate')
    assert (out / 'val_bpb.png').stat().st_size > 1000


def test_every_grid_point_is_checked_before_anything_runs(tiny_data, tmp_path):
    bad = sweep(f'--data_dir={tiny_data}', *TINY, '--sweep=learning_rate=1e-3,-1', f'--sweep_dir={tmp_path / "s"}')
    _, stderr = bad.communicate(timeout=120)
    assert bad.returncode == 2 and stderr.count('\n') == 1
    assert 'error: grid point learning_rate=-1: learning_rate=-1.0: must be 0 or more' in stderr
    assert not (tmp_path / 's').exists()


def test_a_slurm_array_of_the_grid_runs_one_point_per_task_and_resumes(tiny_data, tmp_path):
    (tmp_path / 'points.jsonl').write_text('{"learning_rate": 0.001}\n{"learning_rate": 0.003, "n_layer": 1}\n')
    record = tmp_path / 'launch.txt'
    env_path = stubs(tmp_path / 'bin', sbatch=RECORDER, python=RECORDER)
    out = tmp_path / 'sweep'
    r = subprocess.run([sys.executable, 'sweep.py', f'--data_dir={tiny_data}', *TINY, '--sweep=n_embd=16,32',
                        f'--grid={tmp_path / "points.jsonl"}', '--launcher=slurm', '--submit=True', f'--sweep_dir={out}',
                        '--gpus_per_task=2'], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'PATH': env_path, 'RECORD': str(record)})
    assert r.returncode == 0, r.stderr
    script = (out / 'sweep.sbatch').read_text()
    assert '#SBATCH --array=0-3' in script and '#SBATCH --gpus-per-node=2' in script and '#SBATCH --requeue' in script
    assert record.read_text() == f'{out / "sweep.sbatch"}\n'  # submitted with sbatch
    point = out / 'n_embd=32_learning_rate=0.003_n_layer=1'
    env = {**os.environ, 'PATH': env_path, 'RECORD': str(record), 'PYTHON': 'python', 'SLURM_ARRAY_TASK_ID': '3',
           'SLURM_ARRAY_JOB_ID': '77'}
    for _ in range(2):  # the task's first start, then its start after a requeue (a checkpoint is there)
        subprocess.run(['bash', str(out / 'sweep.sbatch')], env=env, check=True, timeout=60)
        point.mkdir(exist_ok=True)
        (point / 'ckpt.pt').write_bytes(b'')
    first, second = record.read_text().splitlines()[1:]
    assert first == (f'-m torch.distributed.run --standalone --nproc_per_node=2 train.py --data_dir={tiny_data} '
                     f"{' '.join(TINY)} --n_embd=32 --learning_rate=0.003 --n_layer=1 --out_dir={point}")
    assert second == first + ' --init_from=resume'


def test_collect_takes_a_runs_time_and_tokens_from_its_training_records_beside_pubmedqa(tmp_path, capsys):
    """A run that ends with --eval_pubmedqa: its last record is PubMedQA's (no time); the row still has the run's time."""
    import json

    import sweep as sweep_py
    (tmp_path / 'lr=1').mkdir()
    (tmp_path / 'sweep.json').write_text(json.dumps({'train_args': [], 'points': [{'lr': '1'}]}))
    lines = [{'kind': 'eval', 'iter': 4, 'tokens': 512, 'train_seconds': 9.5, 'val_loss': 2.0, 'val_bpb': 0.5},
             {'kind': 'pubmedqa', 'iter': 4, 'tokens': 512, 'accuracy': 0.5, 'macro_f1': 0.25}]
    (tmp_path / 'lr=1' / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
    sweep_py.collect(str(tmp_path))
    [row] = csv.DictReader(open(tmp_path / 'results.csv'))
    assert (row['tokens'], row['train_seconds'], row['pubmedqa_accuracy'], row['status']) == ('512', '9.5', '0.5', 'partial')
