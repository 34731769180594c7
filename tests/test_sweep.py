"""sweep.py: a grid of train.py runs, checked before anything runs, run here one after another (a killed sweep
resumes) or as a SLURM job array, and one table of the results. Its values and paths are data, never shell code; a
point's folder is its options, its run the point's only for the arguments it started with; nothing is replaced
without --overwrite=True."""
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

import sweep as sweep_py
from conftest import REPO
from test_cluster import RECORDER, stubs
from test_train import records

PYTHON = sys.executable
TINY = [
    '--n_layer=2', '--n_head=2', '--block_size=32', '--batch_size=4', '--gradient_accumulation_steps=2',
    '--eval_iters=2', '--compile=False', '--max_iters=4', '--eval_interval=2', '--log_interval=1'
]
GRID = ['--sweep=learning_rate=1e-3,3e-2', '--sweep=n_embd=16,32']
NAMES = [sweep_py.name_of({'learning_rate': lr, 'n_embd': n}) for lr in ('1e-3', '3e-2') for n in ('16', '32')]
HOSTILE = "a b $(touch PWNED) `touch PWNED` it's $HOME ${HOME} *;&"  # in paths and values: each must arrive as it is


def sweep(*args, **popen):
    return subprocess.Popen([sys.executable, 'sweep.py', *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, 'OMP_NUM_THREADS': '1'}, **popen)


def python_stub(path, record):
    """A $PYTHON for sweep.sbatch: sweep.py runs in the real Python (told to start torchrun with this stub); torchrun's
    command line is recorded instead, as one JSON list [its folder, its arguments...]; it exits $EXIT (default 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'''#!/usr/bin/env bash
if [ "${{1:-}}" != -m ]; then PYTHON="$0" exec {shlex.quote(PYTHON)} "$@"; fi
{shlex.quote(PYTHON)} -c 'import json, os, sys; print(json.dumps([os.getcwd(), *sys.argv[1:]]))' "$@" \\
    >> {shlex.quote(str(record))}
exit "${{EXIT:-0}}"
''')
    path.chmod(0o755)
    return path


def launched(record):
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def run_task(script, task, **env):
    """One array task of a written sweep.sbatch, as SLURM starts it."""
    return subprocess.run(['bash', str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, 'SLURM_ARRAY_TASK_ID': str(task), 'SLURM_ARRAY_JOB_ID': '77', **env})


def run_sweep(capsys, *args):
    """sweep.py in this process (train.py's modules imported once): (its exit code, stdout, stderr)."""
    try:
        sweep_py.main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
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
    assert [(r['learning_rate'], r['n_embd'], r['status']) for r in rows] == [('1e-3', '16', 'done'),
                                                                              ('1e-3', '32', 'done'),
                                                                              ('3e-2', '16', 'done'),
                                                                              ('3e-2', '32', 'done')]
    for name, row in zip(NAMES, rows):
        evals = records(out / name, 'eval')
        assert float(row['val_loss']) == evals[-1]['val_loss'] and float(row['val_bpb']) == evals[-1]['val_bpb']
        assert float(row['best_val_loss']) == min(r['val_loss'] for r in evals) and row['tokens'] == '1024'
    assert '| learning_rate | n_embd | status | val_loss |' in stdout and (
        out / 'results.md').read_text().startswith('| learning_rate')
    assert (out / 'val_bpb.png').stat().st_size > 1000

    other = sweep(*[a.replace('--max_iters=4', '--max_iters=6')
                    for a in args])  # finished with other arguments: not done
    _, stderr = other.communicate(timeout=120)
    assert other.returncode == 2 and stderr.count(
        '\n') == 1 and '--max_iters=4 there, --max_iters=6 here' in stderr, stderr
    assert [r['iter'] for r in records(out / NAMES[0], 'train')] == [1, 2, 3, 4]


@pytest.mark.slow
def test_every_grid_point_is_checked_before_anything_runs(tiny_data, tmp_path):
    bad = sweep(f'--data_dir={tiny_data}', *TINY, '--sweep=learning_rate=1e-3,-1', f'--sweep_dir={tmp_path / "s"}')
    _, stderr = bad.communicate(timeout=120)
    assert bad.returncode == 2 and stderr.count('\n') == 1
    point = sweep_py.name_of({'learning_rate': '-1'})
    assert f"error: grid point {point}: --learning_rate=-1.0: must be 0 or more" in stderr
    assert not (tmp_path / 's').exists()


@pytest.mark.slow
def test_a_slurm_array_of_the_grid_runs_one_point_per_task_and_resumes(tiny_data, tmp_path):
    (tmp_path / 'points.jsonl').write_text('{"learning_rate": 0.001}\n{"learning_rate": 0.003, "n_layer": 1}\n')
    record, launches = tmp_path / 'sbatch.txt', tmp_path / 'launch.txt'
    env_path = stubs(tmp_path / 'bin', sbatch=RECORDER)
    out = tmp_path / 'sweep'
    r = subprocess.run([
        sys.executable, 'sweep.py', f'--data_dir={tiny_data}', *TINY, '--sweep=n_embd=16,32',
        f'--grid={tmp_path / "points.jsonl"}', '--launcher=slurm', '--submit=True', f'--sweep_dir={out}',
        '--gpus_per_task=2'
    ], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'PATH': env_path, 'RECORD': str(record)})
    assert r.returncode == 0, r.stderr
    script = (out / 'sweep.sbatch').read_text()
    assert '#SBATCH --array=0-3' in script and '#SBATCH --gpus-per-node=2' in script and '#SBATCH --requeue' in script
    assert record.read_text() == f'--output={out}/slurm-%A_%a.out {out / "sweep.sbatch"}\n'  # submitted with sbatch
    point = out / sweep_py.name_of({'n_embd': '32', 'learning_rate': '0.003', 'n_layer': '1'})
    stub = python_stub(tmp_path / 'py' / 'python', launches)
    for code in (143, 0):  # the task's first start, stopped by a requeue (its checkpoint written), then its next start
        assert run_task(out / 'sweep.sbatch', 3, PYTHON=str(stub), EXIT=str(code)).returncode == code
        (point / 'ckpt.pt').write_bytes(b'')
    first, second = launched(launches)
    assert first == [
        str(REPO), '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', f'{REPO}/train.py',
        f'--data_dir={tiny_data}', *TINY, '--n_embd=32', '--learning_rate=0.003', '--n_layer=1', f'--out_dir={point}'
    ]
    assert second == first + ['--init_from=resume']
    finished = run_task(out / 'sweep.sbatch', 3, PYTHON=str(stub))  # a start after it finished (a requeue too late)
    assert 'done before, skipped' in finished.stdout and len(launched(launches)) == 2


def test_no_value_or_path_of_a_sweep_is_ever_run_as_shell_code_and_each_task_gets_exactly_its_arguments(
        tmp_path, monkeypatch, capsys):
    """Grid values with newlines, quotes, $(...), backticks and $HOME; the sweep's folder, the repository, the Python
    and the folder the sweep starts in (not the repository: relative paths are relative to it) all named likewise."""
    import train  # noqa: F401  (imported before sys.executable is the stub)
    repo, cwd = tmp_path / f'repo {HOSTILE}', tmp_path / f'cwd {HOSTILE}'
    repo.symlink_to(REPO)
    cwd.mkdir()
    (cwd / f'c {HOSTILE}.py').write_text('n_layer = 2\nn_head = 2\n')
    (cwd / 'grid.jsonl').write_text(
        json.dumps({'wandb_run_name': 'n1\n$(touch PWNED)\n'}) + '\n' +
        json.dumps({'wandb_run_name': f'q\'"{HOSTILE}\\', 'learning_rate': 3e-3}) + '\n')
    record, sbatch_record = tmp_path / 'launch.txt', tmp_path / 'sbatch.txt'
    stub = python_stub(tmp_path / f'python {HOSTILE}' / 'python', record)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sweep_py, 'REPO', str(repo))
    monkeypatch.setattr(sys, 'executable', str(stub))
    monkeypatch.setenv('PATH', stubs(tmp_path / 'bin',
                                     sbatch='#!/usr/bin/env bash\nprintf \'%s\\0\' "$@" > "$RECORD"\n'))
    monkeypatch.setenv('RECORD', str(sbatch_record))
    train_args = [f'c {HOSTILE}.py', f'--data_dir=data {HOSTILE}', '--max_iters=6']
    code, out, err = run_sweep(capsys, *train_args, '--sweep=wandb_project=p,$(touch PWNED)', '--grid=grid.jsonl',
                               f'--sweep_dir=sweeps/s\n{HOSTILE}', '--launcher=slurm', '--submit=True')
    monkeypatch.undo()
    assert code == 0, err
    folder = cwd / 'sweeps' / f's\n{HOSTILE}'
    points = json.loads((folder / 'sweep.json').read_text())['points']
    assert len(points) == 4 and '#SBATCH --array=0-3' in (folder / 'sweep.sbatch').read_text()
    for task, point in enumerate(points):  # the python the script names by default: the one sweep.py ran in (the stub)
        run_task(folder / 'sweep.sbatch', task, PYTHON='')
    assert not [p for p in (tmp_path, REPO, cwd) for p in p.rglob('PWNED')] and not (REPO / 'PWNED').exists()
    expected = [[
        str(cwd), '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1', f'{repo}/train.py', *train_args,
        *(f'--{k}={v}' for k, v in p.items()), f'--out_dir={folder / sweep_py.name_of(p)}'
    ] for p in points]
    assert launched(record) == expected
    assert [p['wandb_run_name'] for p in points[:2]] == ['n1\n$(touch PWNED)\n', f'q\'"{HOSTILE}\\']
    assert sbatch_record.read_text().split('\0')[:-1] == [
        f'--output={folder}/slurm-%A_%a.out', f'{folder}/sweep.sbatch'
    ]


def test_points_that_differ_only_in_characters_a_folder_name_cannot_hold_get_folders_of_their_own(tmp_path, capsys):
    """data/dd/x and data/dd-x (both '-' in a name), values that differ only in case (one folder on macOS), and a value
    longer than a folder name may be: each point its own folder, and no name over 255 bytes."""
    out = tmp_path / 's'
    code, _, err = run_sweep(capsys, '--sweep=data_dir=data/dd/x,data/dd-x,data/DD-x,' + 'd' * 300 + ',data/ü',
                             f'--sweep_dir={out}', '--launcher=slurm')
    assert code == 0, err
    names = [sweep_py.name_of(p) for p in json.loads((out / 'sweep.json').read_text())['points']]
    assert len({name.lower() for name in names}) == 5 and names[0].startswith('data_dir=data-dd-x-')
    for name in names:
        assert len(name.encode()) <= 255
        (out / name).mkdir()


def test_a_second_sweep_into_a_folder_adds_its_points_and_one_of_other_arguments_is_refused_unless_overwrite(
        tmp_path, capsys):
    out = tmp_path / 's'
    common = ['--max_iters=6', f'--sweep_dir={out}', '--launcher=slurm']
    assert run_sweep(capsys, *common, '--sweep=learning_rate=1e-3,3e-3')[0] == 0
    code, stdout, err = run_sweep(capsys, *common, '--sweep=learning_rate=3e-3,1e-2')
    assert code == 0, err
    spec = json.loads((out / 'sweep.json').read_text())
    assert [p['learning_rate'] for p in spec['points']] == ['1e-3', '3e-3',
                                                            '1e-2']  # the earlier points stay in the sweep
    assert '#SBATCH --array=1-2' in (out / 'sweep.sbatch').read_text() and '(2 array tasks)' in stdout
    sweep_py.collect(str(out))
    assert [r['learning_rate'] for r in csv.DictReader(open(out / 'results.csv'))] == ['1e-3', '3e-3', '1e-2']

    before = (out / 'sweep.json').read_text()
    code, _, err = run_sweep(capsys, *common, '--max_iters=30', '--sweep=learning_rate=1e-1')
    assert code == 2 and err.count('\n') == 1 and f'error: {out} holds a sweep of other train.py arguments' in err
    assert '--overwrite=True' in err and (out / 'sweep.json').read_text() == before
    assert run_sweep(capsys, *common, '--max_iters=30', '--sweep=learning_rate=1e-1', '--overwrite=True')[0] == 0
    assert [p['learning_rate'] for p in json.loads((out / 'sweep.json').read_text())['points']] == ['1e-1']


def test_a_point_is_done_only_for_the_exact_arguments_and_config_it_ran_with(tmp_path, monkeypatch, capsys):
    """A point that finished, asked for again with other train.py arguments (or an edited config file): refused,
    naming what differs; with --overwrite=True it runs again from scratch, and its old results are never shown as
    its."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'c.py').write_text('n_layer = 2\n')
    record, out = tmp_path / 'launch.txt', tmp_path / 's'
    stub = python_stub(tmp_path / 'py' / 'python', record)
    args = ['c.py', '--sweep=learning_rate=1e-3', f'--sweep_dir={out}', '--launcher=slurm']
    assert run_sweep(capsys, *args, '--max_iters=6')[0] == 0
    assert run_task(out / 'sweep.sbatch', 0, PYTHON=str(stub)).returncode == 0  # it runs and exits 0: done
    folder = out / sweep_py.name_of({'learning_rate': '1e-3'})
    folder.mkdir(exist_ok=True)
    (folder / 'metrics.jsonl').write_text(
        json.dumps({'kind': 'eval', 'iter': 6, 'tokens': 9, 'train_seconds': 1.0, 'val_loss': 2.5, 'val_bpb': 0.75}) +
        '\n')
    assert 'done before, skipped' in run_task(out / 'sweep.sbatch', 0, PYTHON=str(stub)).stdout and len(
        launched(record)) == 1

    for max_iters, message in (('30', '--max_iters=6 there, --max_iters=30 here'), ('6', 'c.py changed since')):
        if max_iters == '6':
            (tmp_path / 'c.py').write_text('n_layer = 3\n')
        code, _, err = run_sweep(capsys, *args, f'--max_iters={max_iters}')
        assert code == 2 and err.count('\n') == 1 and message in err and '--overwrite=True' in err, err
    code, _, err = run_sweep(capsys, *args, '--max_iters=30', '--overwrite=True')
    assert code == 0, err
    sweep_py.collect(str(out))  # not yet run with --max_iters=30: the old run's numbers are not the point's
    [row] = csv.DictReader(open(out / 'results.csv'))
    assert (row['status'], row['val_loss']) == ('not run', '')
    assert run_task(out / 'sweep.sbatch', 0, PYTHON=str(stub)).returncode == 0
    assert launched(record)[-1][-4:] == [
        '--max_iters=30', '--learning_rate=1e-3', f'--out_dir={folder}', '--overwrite=True'
    ]


SLURM = ['--launcher=slurm', '--sweep_dir=s']  # (a sweep that slipped through writes a script, and runs nothing)


@pytest.mark.parametrize(
    'args, message',
    [
        (['--sweep=learning_rate=1e-3', *SLURM, '--gpus_per_task=0'], '--gpus_per_task=0: must be at least 1'),
        (['--sweep=learning_rate=1e-3', '--sweep_dir=s', '--submit=True'], '--submit is for --launcher=slurm'),
        (['--sweep=learning_rate=1e-3', *SLURM, '--submit=True'], '--submit=True: sbatch is not on PATH'),
        (['--sweep=learning_rate=1e-3', '--sweep=learning_rate=3e-3', *SLURM
          ], '--sweep=learning_rate=... is given twice'),
        (['--sweep=learning_rate=1e-3,1e-3', *SLURM], 'is in the grid twice'),
        (['--sweep=wandb_run_name=x=1', *SLURM], None),  # a value may hold '=' (no error)
        (['--grid=grid.jsonl', *SLURM
          ], 'grid.jsonl, line 2: n_layer={"a": 1}: expected a string, a number or a boolean'),
        (['--grid=null.jsonl', *SLURM], 'null.jsonl, line 1: wandb_run_name=null: expected a string'),
        (['--grid=key.jsonl', *SLURM], "'n_layer=3 --x' is not an option name"),
        (['--grid=out.jsonl', *SLURM], "out_dir is the point's folder in --sweep_dir"),
        (['--sweep=learning_rate=1e-3', '--out_dir=elsewhere', *SLURM
          ], "--out_dir: each point's run goes to its folder"),
        (['--sweep=learning_rate=1e-3', '--launcher=slurm', '--sweep_dir=file'], '--sweep_dir=file: is a file'),
        (['--sweep=learning_rate=1e-3', '--task=0', '--sweep_dir=s'], '--task=0: what sweep.sbatch runs'),
        (['--collect=s', '--launcher=slurm'], 'it takes no other options'),
    ])
def test_a_sweep_no_run_can_use_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('PATH', '/nonexistent')  # no sbatch
    (tmp_path / 'grid.jsonl').write_text('{"n_layer": 2}\n{"n_layer": {"a": 1}}\n')
    (tmp_path / 'null.jsonl').write_text('{"wandb_run_name": null}\n')
    (tmp_path / 'key.jsonl').write_text('{"n_layer=3 --x": 1}\n')
    (tmp_path / 'out.jsonl').write_text('{"out_dir": "/tmp"}\n')
    (tmp_path / 'file').write_text('')
    code, _, err = run_sweep(capsys, *args)
    if message is None:
        assert code == 0, err
        return
    assert code == 2 and err.count('\n') == 1 and err.startswith('error: ') and message in err, err
    assert not (tmp_path / 's').exists()


def made_point(sweep_dir, point, lines, train_args=()):
    """A sweep.json of one point and its run's folder, as sweep.py leaves them, with these metrics.jsonl lines."""
    sweep_dir.mkdir(exist_ok=True)
    args = [*train_args, *(f'--{k}={v}' for k, v in point.items())]
    (sweep_dir / 'sweep.json').write_text(
        json.dumps({
            'train_args': list(train_args), 'config_files': {}, 'points': [point], 'folders': [sweep_py.name_of(point)]
        }))
    folder = sweep_dir / sweep_py.name_of(point)
    folder.mkdir()
    (folder / 'sweep_args.json').write_text(json.dumps({'args': args, 'config_files': {}}))
    (folder / 'metrics.jsonl').write_text(''.join(lines))
    return folder


EVAL = json.dumps({'kind': 'eval', 'iter': 4, 'tokens': 512, 'train_seconds': 9.5, 'val_loss': 2.0, 'val_bpb': 0.5
                   }) + '\n'


def test_collect_takes_a_runs_time_and_tokens_from_its_training_records_beside_pubmedqa(tmp_path):
    """A run that ends with --eval_pubmedqa: its last record is PubMedQA's (no time); the row still has the run's
    time."""
    pubmedqa = json.dumps({'kind': 'pubmedqa', 'iter': 4, 'tokens': 512, 'accuracy': 0.5, 'macro_f1': 0.25}) + '\n'
    made_point(tmp_path, {'lr': '1'}, [EVAL, pubmedqa])
    sweep_py.collect(str(tmp_path))
    [row] = csv.DictReader(open(tmp_path / 'results.csv'))
    assert (row['tokens'], row['train_seconds'], row['pubmedqa_accuracy'], row['status']) == ('512', '9.5', '0.5',
                                                                                              'partial')


def test_collect_has_a_column_per_task_of_train_py_eval_tasks(tmp_path):
    """train.py --eval_tasks=pubmedqa,mmlu_medical,general_bpb: one column per task (its last figure), PubMedQA's
    in its own columns."""
    task = lambda name, metric, value: json.dumps(
        {'kind': 'eval_task', 'iter': 4, 'task': name, 'metric': metric, 'value': value}) + '\n'
    pubmedqa = json.dumps({'kind': 'pubmedqa', 'iter': 4, 'tokens': 512, 'accuracy': 0.5, 'macro_f1': 0.25}) + '\n'
    made_point(tmp_path, {'lr': '1'}, [
        EVAL,
        task('general_bpb', 'bpb', 2.0),
        task('general_bpb', 'bpb', 1.5),
        task('mmlu_medical', 'acc', 0.25),
        task('pubmedqa', 'acc', 0.5), pubmedqa
    ])
    sweep_py.collect(str(tmp_path))
    [row] = csv.DictReader(open(tmp_path / 'results.csv'))
    assert (row['general_bpb (bpb)'], row['mmlu_medical (acc)'], row['pubmedqa_accuracy']) == ('1.5', '0.25', '0.5')
    assert 'pubmedqa (acc)' not in row


def test_collect_reads_a_sweep_of_an_older_sweep_py_whose_folders_have_no_hash(tmp_path):
    (tmp_path / 'lr=1').mkdir()
    (tmp_path / 'sweep.json').write_text(json.dumps({'train_args': [], 'points': [{'lr': '1'}]}))
    (tmp_path / 'lr=1' / 'metrics.jsonl').write_text(EVAL)
    (tmp_path / 'lr=1' / 'sweep_done.json').write_text('{}')
    sweep_py.collect(str(tmp_path))
    [row] = csv.DictReader(open(tmp_path / 'results.csv'))
    assert (row['val_loss'], row['status']) == ('2.0', 'done')


def test_collect_leaves_out_a_last_line_cut_short_by_a_kill(tmp_path):
    made_point(tmp_path, {'lr': '1'}, [EVAL, EVAL.replace('2.0', '1.5')[:30]])
    sweep_py.collect(str(tmp_path))
    [row] = csv.DictReader(open(tmp_path / 'results.csv'))
    assert (row['val_loss'], row['status']) == ('2.0', 'partial')


def test_collect_shows_each_source_of_a_mixture_in_its_own_column(tmp_path):
    mixed = EVAL.replace('"val_bpb": ', '"val_bpb/pubmed": 1.25, "val_bpb/general": 1.75, "val_bpb": ')
    made_point(tmp_path, {'lr': '1'}, [EVAL, mixed])
    sweep_py.collect(str(tmp_path))
    [row] = csv.DictReader(open(tmp_path / 'results.csv'))
    assert (row['val_bpb/pubmed'], row['val_bpb/general']) == ('1.25', '1.75')
    assert '| val_bpb/pubmed | val_bpb/general |' in (tmp_path / 'results.md').read_text()


@pytest.mark.parametrize('lines, where, message', [
    ([EVAL, '\n', EVAL], 'metrics.jsonl, line 2', 'a blank line'),
    (['{"kind": "ev\n', EVAL], 'metrics.jsonl, line 1', 'not a JSON record'),
    ([EVAL, '{"iter": 5}\n'], 'metrics.jsonl, line 2', 'a record without its kind'),
    ([EVAL, '[1, 2]\n'], 'metrics.jsonl, line 2', 'a record without its kind'),
    (['{"kind": "train", "iter": 1, "loss": "2.5"}\n', EVAL
      ], 'metrics.jsonl, line 1', 'train record: loss="2.5": expected a number'),
    ([EVAL.replace('"val_loss": 2.0, ', '')
      ], 'metrics.jsonl, line 1', 'eval record: val_loss=(missing): expected a number'),
    ([EVAL, '{"kind": "eval", "val_loss": 1, "val_bpb": 1, "train_seconds": true}\n', EVAL
      ], 'metrics.jsonl, line 2', 'eval record: train_seconds=true: expected a number'),
    ([EVAL, '{"kind": "eval_task", "metric": "acc", "value": 0.5}\n'
      ], 'metrics.jsonl, line 2', 'an eval_task record without its task and metric'),
    ([EVAL, '{"kind": "eval_task", "task": "x", "metric": "acc", "value": null}\n'
      ], 'metrics.jsonl, line 2', 'eval_task record: value=null: expected a number'),
])
def test_collect_names_the_file_and_line_of_a_metrics_line_that_is_no_record(tmp_path, capsys, lines, where, message):
    folder = made_point(tmp_path, {'lr': '1'}, lines)
    with pytest.raises(SystemExit) as e:
        sweep_py.collect(str(tmp_path))
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count('\n') == 1 and err.startswith(
        f'error: {folder}/{where}') and message in err, err


@pytest.mark.parametrize('text, message', [
    ('{"points": [', 'sweep.json, line 1: not JSON'),
    ('[]', 'sweep.json: not a JSON object'),
    ('{"train_args": [], "points": "lr=1"}', 'points: expected a list of objects'),
    ('{"train_args": [], "points": [1]}', 'points: expected a list of objects'),
    ('{"train_args": [], "points": [{"lr": 1}]}', 'points: expected a list of objects of option values (texts)'),
    ('{"points": [{"lr": "1"}]}', 'train_args: expected a list of texts'),
    ('{"train_args": [], "points": [{"lr": "1"}], "folders": ["../x"]}', "folders: not its points' folders"),
])
def test_collect_names_what_is_wrong_with_a_sweep_json(tmp_path, capsys, text, message):
    (tmp_path / 'sweep.json').write_text(text)
    with pytest.raises(SystemExit) as e:
        sweep_py.collect(str(tmp_path))
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count('\n') == 1 and err.startswith(f'error: {tmp_path}/') and message in err, err
