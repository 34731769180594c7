"""
Hyperparameter sweeps of train.py: a grid of option values, one run per grid point in a folder of its own,
run one after another here or as a SLURM job array; then one table (and plot) of their results.

    python sweep.py config/train_pubmed_cpu.py --sweep=learning_rate=1e-3,3e-3 --sweep=n_embd=64,128 --max_seconds=60
    python sweep.py config/train_pubmed.py --grid=points.jsonl --launcher=slurm --submit=True
    python sweep.py --collect=sweeps/train_pubmed_cpu          # results.csv, results.md and val_bpb.png there

--sweep=KEY=V1,V2,... may be given for several keys (the grid is their product); --grid is a file of JSON
lines, one option set per line (combined with --sweep's grid, if both). Every other argument (a config file,
--key=value) goes to train.py for every point. Each point is checked with train.py's own option checks before
anything is launched. Locally a point whose run finished is skipped and one that was cut short resumes from its
checkpoint (--init_from=resume), so a killed sweep continues where it stopped; the SLURM array does the same
per task (scripts/slurm.sh's conventions: requeue before the time limit, resume on the next start).
"""
import csv
import io
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

from configurator import configure, fail

REPO = os.path.dirname(os.path.abspath(__file__))
OWN = {
    'sweep_dir': '',          # where each point's run goes ('' = sweeps/<config file's name>)
    'launcher': 'local',      # 'local' (one run after another, here) or 'slurm' (a job array script)
    'submit': False,          # slurm: also submit the script with sbatch (else it is written, and the command printed)
    'gpus_per_task': 1,       # slurm: GPUs (torchrun processes) of each array task
    'grid': '',               # a file of JSON lines, one option set per line ({"learning_rate": 3e-3, "n_layer": 6})
    'collect': '',            # a sweep's folder: print its table, write results.csv, results.md and val_bpb.png
}
DONE = 'sweep_done.json'      # in a point's folder once its run exited 0


def split_argv(argv):
    """(the --sweep values, sweep.py's own options, train.py's arguments)."""
    sweeps, own, rest = [], [], []
    for arg in argv:
        key = arg[2:].split('=', 1)[0] if arg.startswith('--') else None
        if key == 'sweep':
            sweeps.append(arg.split('=', 1)[1] if '=' in arg else '')
        elif key in OWN or arg in ('-h', '--help'):
            own.append(arg)
        else:
            rest.append(arg)
    return sweeps, own, rest


def grid_points(sweeps, grid_file):
    """[{option: value as text}] of the grid: the product of every --sweep's values, times the lines of --grid."""
    axes = []
    for sweep in sweeps:
        key, _, values = sweep.partition('=')
        values = [v.strip() for v in values.split(',') if v.strip()]
        if not key or not values:
            fail(f"--sweep={sweep}: expected KEY=V1,V2,... (e.g. --sweep=learning_rate=1e-3,3e-3)", 2)
        axes.append([(key, v) for v in values])
    points = [dict(p) for p in itertools.product(*axes)] if axes else [{}]
    if grid_file:
        try:
            with open(grid_file, encoding='utf-8') as f:
                sets = [json.loads(line) for line in f if line.strip()]
            assert sets and all(isinstance(s, dict) for s in sets), 'one JSON object per line'
        except (OSError, ValueError, AssertionError) as e:
            fail(f'--grid={grid_file}: not a file of option sets ({type(e).__name__}: {e})', 2)
        points = [{**p, **{k: str(v) for k, v in s.items()}} for p in points for s in sets]
    if points == [{}]:
        fail('nothing to sweep: give --sweep=KEY=V1,V2,... or --grid=FILE', 2)
    return points


def name_of(point):
    """A folder name that says the point's options: learning_rate=0.003_n_embd=128."""
    return re.sub(r'[^\w.=+-]', '-', '_'.join(f'{k}={v}' for k, v in point.items()))


def train_args(point, out_dir, rest):
    return [*rest, *(f'--{k}={v}' for k, v in point.items()), f'--out_dir={out_dir}']


def check_points(points, sweep_dir, rest):
    """train.py's own option checks on every point, before anything runs: one line naming the point that fails."""
    import train
    for point in points:
        err = io.StringIO()
        try:
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                opts = train.options(train_args(point, os.path.join(sweep_dir, name_of(point)), rest))
        except SystemExit:
            fail(f"grid point {name_of(point)}: {err.getvalue().strip().removeprefix('error: ')}", 2)
        if opts.init_from == 'resume':
            fail(f'grid point {name_of(point)}: init_from=resume: a sweep resumes its own runs; give the model to start from', 2)


def resume_args(out_dir):
    """How a point's run continues: from its checkpoint; from scratch over what a run killed before one left; or new."""
    if any(os.path.exists(os.path.join(out_dir, f'ckpt.{ext}')) for ext in ('pt', 'dcp')):
        return ['--init_from=resume']
    return ['--overwrite=True'] if os.path.isdir(out_dir) and os.listdir(out_dir) else []


def run_local(points, sweep_dir, rest):
    """One run after another; finished ones skipped, cut-short ones resumed. Exit 1 if any failed (named)."""
    failed = []
    for i, point in enumerate(points, 1):
        name, out_dir = name_of(point), os.path.join(sweep_dir, name_of(point))
        if os.path.exists(os.path.join(out_dir, DONE)):
            print(f'[{i}/{len(points)}] {name}: done before, skipped')
            continue
        extra = resume_args(out_dir)
        print(f"[{i}/{len(points)}] {name}: {'resuming' if '--init_from=resume' in extra else 'running'} "
              f"(log: {os.path.join(out_dir, 'train.log')})", flush=True)
        os.makedirs(out_dir, exist_ok=True)
        t0 = time.time()
        with open(os.path.join(out_dir, 'train.log'), 'a') as log:
            code = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), *train_args(point, out_dir, rest), *extra],
                                  stdout=log, stderr=subprocess.STDOUT).returncode
        if code:
            print(f'[{i}/{len(points)}] {name}: failed (exit {code}); the last lines of its log:\n'
                  + ''.join(open(os.path.join(out_dir, 'train.log')).readlines()[-3:]), file=sys.stderr)
            failed.append(name)
            continue
        with open(os.path.join(out_dir, DONE), 'w') as f:
            json.dump({'point': point, 'seconds': round(time.time() - t0, 1)}, f)
    if failed:
        fail(f"{len(failed)} of {len(points)} runs failed: {', '.join(failed)} (run the sweep again to retry them)")
    print(f'sweep done: python sweep.py --collect={sweep_dir}')


SBATCH = '''#!/usr/bin/env bash
# A job array of the sweep in {sweep_dir}: task i runs line i+1 of grid.txt (its out_dir, then train.py's arguments).
# As scripts/slurm.sh: requeued 5 minutes before the time limit, and each start resumes from the task's checkpoint.
#SBATCH --job-name=sweep
#SBATCH --array=0-{last}
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus}
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --output={sweep_dir}/slurm-%A_%a.out
set -euo pipefail
cd {repo}
PYTHON=${{PYTHON:-.venv/bin/python}}
eval "set -- $(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {grid})"
OUT_DIR=$1
shift
RESUME=""
if [ -e "$OUT_DIR/ckpt.pt" ] || [ -e "$OUT_DIR/ckpt.dcp" ]; then RESUME="--init_from=resume"
elif [ -d "$OUT_DIR" ] && [ -n "$(ls -A "$OUT_DIR")" ]; then RESUME="--overwrite=True"; fi
trap 'echo "time limit near: requeueing"; scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"' USR1
# shellcheck disable=SC2086  # RESUME is one option or none
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node={gpus} train.py "$@" --out_dir="$OUT_DIR" $RESUME &
TRAINING=$!
wait $TRAINING || wait $TRAINING  # the trap interrupts the first wait
'''


def write_slurm(points, sweep_dir, rest, gpus, submit):
    """grid.txt and sweep.sbatch in the sweep's folder; submitted with sbatch only if asked."""
    grid = os.path.join(sweep_dir, 'grid.txt')
    with open(grid, 'w') as f:
        for point in points:
            out_dir = os.path.join(sweep_dir, name_of(point))
            f.write(shlex.join([out_dir, *train_args(point, out_dir, rest)[:-1]]) + '\n')
    script = os.path.join(sweep_dir, 'sweep.sbatch')
    with open(script, 'w') as f:
        f.write(SBATCH.format(sweep_dir=sweep_dir, last=len(points) - 1, gpus=gpus, repo=REPO, grid=grid))
    if not submit:
        print(f'wrote {script} ({len(points)} array tasks); submit it with: sbatch {script}')
        return
    r = subprocess.run(['sbatch', script], capture_output=True, text=True)
    if r.returncode:
        fail(f'sbatch {script} failed: {r.stderr.strip() or r.stdout.strip()}')
    print(r.stdout.strip())


def collect(sweep_dir):
    """The table of a sweep's runs (one row each: its options, final and best val loss, bpb, tokens, training time,
    PubMedQA where recorded), printed and written as results.csv and results.md, and every run's val bpb in one plot."""
    try:
        spec = json.load(open(os.path.join(sweep_dir, 'sweep.json')))
    except (OSError, ValueError) as e:
        fail(f'--collect={sweep_dir}: not a sweep folder (its sweep.json: {type(e).__name__})', 2)
    keys = sorted({k for p in spec['points'] for k in p})
    rows, curves = [], {}
    for point in spec['points']:
        name = name_of(point)
        path = os.path.join(sweep_dir, name, 'metrics.jsonl')
        records = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
        evals = [r for r in records if r['kind'] == 'eval']
        last = next((r for r in reversed(records) if r['kind'] in ('train', 'eval')), {})  # a PubMedQA record has no time
        pubmedqa = next((r for r in reversed(records) if r['kind'] == 'pubmedqa'), {})
        done = os.path.exists(os.path.join(sweep_dir, name, DONE))
        rows.append({**{k: point.get(k, '') for k in keys},
                     'status': 'done' if done else 'partial' if records else 'not run',
                     'val_loss': evals[-1]['val_loss'] if evals else None, 'val_bpb': evals[-1]['val_bpb'] if evals else None,
                     'best_val_loss': min(r['val_loss'] for r in evals) if evals else None,
                     'tokens': last.get('tokens'), 'train_seconds': last.get('train_seconds'),
                     'pubmedqa_accuracy': pubmedqa.get('accuracy'), 'pubmedqa_macro_f1': pubmedqa.get('macro_f1')})
        curves[name] = [(r['train_seconds'], r['val_bpb']) for r in evals]
    columns = list(rows[0]) if rows else keys
    with open(os.path.join(sweep_dir, 'results.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    cell = lambda v: '' if v is None else f'{v:.4f}' if isinstance(v, float) else str(v)
    table = '\n'.join([f"| {' | '.join(columns)} |", '|' + '---|' * len(columns)]
                      + [f"| {' | '.join(cell(r[c]) for c in columns)} |" for r in rows])
    with open(os.path.join(sweep_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    print(table)
    plot(curves, os.path.join(sweep_dir, 'val_bpb.png'))


def plot(curves, path):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print(f'note: no plot ({path}): matplotlib is not installed (pip install matplotlib)', file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, points in curves.items():
        if points:
            ax.plot(*zip(*points), marker='.', label=name)
    ax.set(xlabel='training seconds', ylabel='val bits per byte', title='sweep')
    ax.legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f'wrote {path}')


def main(argv=None):
    sweeps, own_args, rest = split_argv(sys.argv[1:] if argv is None else argv)
    own = configure(OWN, own_args)
    if own['collect']:
        return collect(own['collect'])
    if own['launcher'] not in ('local', 'slurm'):
        fail(f"--launcher={own['launcher']}: expected local or slurm", 2)
    points = grid_points(sweeps, own['grid'])
    config = next((a for a in rest if not a.startswith('--')), 'sweep')
    sweep_dir = own['sweep_dir'] or os.path.join('sweeps', os.path.splitext(os.path.basename(config))[0])
    check_points(points, sweep_dir, rest)
    os.makedirs(sweep_dir, exist_ok=True)
    with open(os.path.join(sweep_dir, 'sweep.json'), 'w') as f:
        json.dump({'train_args': rest, 'points': points}, f, indent=1)
    if own['launcher'] == 'slurm':
        return write_slurm(points, sweep_dir, rest, own['gpus_per_task'], own['submit'])
    run_local(points, sweep_dir, rest)


if __name__ == '__main__':
    main()
