"""
Hyperparameter sweeps of train.py: a grid of option values, one run per grid point in a folder of its own,
run one after another here or as a SLURM job array; then one table (and plot) of their results.

    python sweep.py config/train_pubmed_cpu.py --sweep=learning_rate=1e-3,3e-3 --sweep=n_embd=64,128 --max_seconds=60
    python sweep.py config/train_pubmed.py --grid=points.jsonl --launcher=slurm --submit=True
    python sweep.py --collect=sweeps/train_pubmed_cpu          # results.csv, results.md and val_bpb.png there

--sweep=KEY=V1,V2,... may be given once per key (the grid is their product; a value with a comma goes in --grid);
--grid is a file of JSON lines, one option set per line (combined with --sweep's grid, if both). Every other
argument (a config file, --key=value) goes to train.py for every point. Each point is checked with train.py's own
option checks before anything is written or launched. Values are data: they reach train.py as its arguments and
are never read by a shell. A point's folder is its options (readable, then a hash of them: two points never share
one), and its run is the point's only for the exact train.py arguments (and config files' content) it started
with, recorded there. A finished point is skipped, one cut short resumes from its checkpoint (--init_from=resume),
so a killed sweep continues where it stopped, here or per SLURM array task (scripts/slurm.sh's conventions:
requeue before the time limit, resume on the next start). A second sweep into the same --sweep_dir adds its points
to it; one with other train.py arguments, or a point's folder holding a run of other arguments, is refused unless
--overwrite=True.
"""
import csv
import hashlib
import io
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

from common import atomic_write, writable_folder
from common import fail
from configurator import Option, at_least, configure, one_of

REPO = os.path.dirname(os.path.abspath(__file__))
# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'sweep_dir': '',          # where each point's run goes ('' = sweeps/<config file's name>)
    'launcher': Option('local', one_of('local', 'slurm')),  # 'local' (one run after another, here) or 'slurm' (a job
                                                            # array)
    'submit': False,          # slurm: also submit the script with sbatch (else it is written, and the command printed)
    'gpus_per_task': Option(1, at_least(1)),  # slurm: GPUs (torchrun processes) of each array task
    'grid': '',               # a file of JSON lines, one option set per line ({"learning_rate": 3e-3, "n_layer": 6})
    'collect': '',            # a sweep's folder: print its table, write results.csv, results.md and val_bpb.png
    'overwrite': False,       # this sweep replaces sweep_dir's sweep.json, and its points' runs of other train.py
                              # arguments (else a sweep of the same arguments adds its points, one of others is refused)
    'task': -1,               # (what sweep.sbatch runs) run point TASK of --sweep_dir's sweep.json here, with torchrun
}
# yapf: enable
SPEC = 'sweep.json'  # in the sweep's folder: train.py's arguments, the points and their folders
STARTED = 'sweep_args.json'  # in a point's folder once its run started: the arguments it started with
DONE = 'sweep_done.json'  # in a point's folder once its run exited 0: the same, and its time
NAME_BYTES = 100  # the readable part of a point's folder name, at most (a filesystem allows 255)
NUMBERS = ('iter', 'tokens', 'train_seconds', 'loss', 'val_loss', 'val_bpb', 'accuracy', 'macro_f1')  # in metrics.jsonl
# what --collect reads from a record of that kind
NEEDED = {'eval': ('train_seconds', 'val_loss', 'val_bpb'), 'eval_task': ('value', )}


def split_argv(argv):
    """(the --sweep values, sweep.py's own options, train.py's arguments)."""
    sweeps, own, rest = [], [], []
    for arg in argv:
        key = arg[2:].split('=', 1)[0] if arg.startswith('--') else None
        if key == 'sweep':
            sweeps.append(arg.split('=', 1)[1] if '=' in arg else '')
        elif key in OPTIONS or arg in ('-h', '--help'):
            own.append(arg)
        else:
            rest.append(arg)
    return sweeps, own, rest


def grid_points(sweeps, grid_file):
    """[{option: value as text}] of the grid: the product of every --sweep's values, times the lines of --grid. Each
    point once, each key an option name (a key with '=' would set another option than it says)."""
    axes, keys = [], []
    for sweep in sweeps:
        key, _, values = sweep.partition('=')
        values = [v.strip() for v in values.split(',') if v.strip()]
        if not key or not values:
            fail(f"--sweep={sweep}: expected KEY=V1,V2,... (e.g. --sweep=learning_rate=1e-3,3e-3)", 2)
        if key in keys:
            fail(f'--sweep={key}=... is given twice: give all its values in one --sweep={key}=V1,V2,...', 2)
        keys.append(key)
        axes.append([(key, v) for v in values])
    points = [dict(p) for p in itertools.product(*axes)] if axes else [{}]
    if grid_file:
        points = [{**p, **s} for p in points for s in read_grid(grid_file)]
    if points == [{}]:
        fail('nothing to sweep: give --sweep=KEY=V1,V2,... or --grid=FILE', 2)
    seen = set()
    for point in points:
        bad = next((k for k in point if not re.fullmatch(r'\w+', k, re.ASCII)), None)
        if bad is not None:
            fail(f'grid point {name_of(point)}: {bad!r} is not an option name', 2)
        for key, why in (('out_dir', "is the point's folder in --sweep_dir"),
                         ('overwrite', "is the sweep's (sweep.py --overwrite)")):
            if key in point:
                fail(f'grid point {name_of(point)}: {key} {why}: not a grid option', 2)
        if any('\0' in v for v in point.values()):
            fail(f'grid point {name_of(point)}: a value holds a NUL character, which no command line can carry', 2)
        exact = json.dumps(sorted(point.items()))
        if exact in seen:
            fail(f'grid point {name_of(point)} is in the grid twice (a --grid line setting a --sweep key?)', 2)
        seen.add(exact)
    return points


def read_grid(path):
    """The option sets of a --grid file: one JSON object per line, each value one train.py takes on its command line
    (a string, a number or a boolean; as text, the way it is passed). Anything else: one line naming the line."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().split('\n')
    except (OSError, UnicodeDecodeError) as e:
        fail(f'--grid={path}: cannot read it ({getattr(e, "strerror", None) or e})', 2)
    sets = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            options = json.loads(line)
        except ValueError as e:
            fail(f'--grid={path}, line {n}: not JSON ({e})', 2)
        if not isinstance(options, dict) or not options:
            fail(
                f'--grid={path}, line {n}: expected an object of options, e.g. {{"learning_rate": 3e-3, "n_layer": 6}}',
                2)
        for key, value in options.items():
            if value is None or not isinstance(value, (str, int, float)):
                fail(f'--grid={path}, line {n}: {key}={json.dumps(value)}: expected a string, a number or a boolean', 2)
        sets.append({k: v if isinstance(v, str) else str(v) for k, v in options.items()})
    if not sets:
        fail(f'--grid={path}: no option sets in it (one JSON object per line)', 2)
    return sets


def name_of(point):
    """A point's folder name: its options, readable (learning_rate=0.003_n_embd=128: other characters as '-', at most
    NAME_BYTES), then a hash of its exact options, so that two points never share a folder, whatever their values, their
    length or the filesystem's case rules: learning_rate=0.003_n_embd=128-4f1c0a9e."""
    readable = re.sub(r'[^\w.=+-]', '-', '_'.join(f'{k}={v}' for k, v in point.items()), flags=re.ASCII)[:NAME_BYTES]
    return f"{readable}-{hashlib.sha256(json.dumps(sorted(point.items())).encode()).hexdigest()[:8]}"


def legacy_name_of(point):
    """The folder name sweep.py gave a point before names had a hash (sweeps whose sweep.json has no 'folders')."""
    return re.sub(r'[^\w.=+-]', '-', '_'.join(f'{k}={v}' for k, v in point.items()))


def point_args(point, rest):
    """train.py's arguments of a point, but its out_dir (the folder is the point's own)."""
    return [*rest, *(f'--{k}={v}' for k, v in point.items())]


def identity(args):
    """What makes a run the one these arguments ask for: the arguments, and the content (sha256) of the config files
    among them (a config file edited since is another run)."""

    def digest(path):
        try:
            with open(path, 'rb') as f:
                return hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return None

    return {'args': list(args), 'config_files': {a: digest(a) for a in args if not a.startswith('--')}}


def same_run(record, me):
    return isinstance(record,
                      dict) and record.get('args') == me['args'] and record.get('config_files') == me['config_files']


def differences(there, me):
    """What makes two runs differ, for a message: '--max_iters=6 there, --max_iters=30 here'."""
    shown = lambda args: ' '.join(shlex.quote(a) for a in args).replace('\n', '\\n') or 'nothing'
    gone = [a for a in there.get('args', []) if a not in me['args']]
    added = [a for a in me['args'] if a not in there.get('args', [])]
    text = [f'{shown(gone)} there, {shown(added)} here'] if gone or added else []
    if not text and there.get('args') != me['args']:
        text.append('the same arguments in another order')
    text += [
        f'{path} changed since' for path, digest in me['config_files'].items()
        if (there.get('config_files') or {}).get(path, digest) != digest
    ]
    return '; '.join(text) or 'recorded otherwise'


def read_record(folder, name):
    """A point's record (STARTED, DONE) as a dict, or None (absent or unreadable: no run of known arguments)."""
    try:
        with open(os.path.join(folder, name), encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_json(path, value):
    with atomic_write(path, 'w') as f:
        json.dump(value, f, indent=1)


def other_run(out_dir, me):
    """Why out_dir holds a run that is not this point's (of other arguments, or of unknown ones), or None."""
    if not os.path.isdir(out_dir) or not set(os.listdir(out_dir)) - {'train.log'}:
        return None
    started = read_record(out_dir, STARTED)
    if same_run(started, me):
        return None
    why = (f'other train.py arguments ({differences(started, me)})'
           if started else 'train.py arguments it does not record')
    return f'{out_dir} holds a run of {why}: use another --sweep_dir, or --overwrite=True to replace it'


def check_points(points, sweep_dir, rest):
    """train.py's own option checks on every point, before anything runs: one line naming the point that fails."""
    import train
    for point in points:
        err = io.StringIO()
        try:
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                opts = train.options([*point_args(point, rest), f'--out_dir={os.path.join(sweep_dir, name_of(point))}'])
        except SystemExit:
            fail(f"grid point {name_of(point)}: {err.getvalue().strip().removeprefix('error: ')}".replace('\n', '\\n'),
                 2)
        if opts.init_from == 'resume':
            fail(
                f'grid point {name_of(point)}: init_from=resume: a sweep resumes its own runs; give the model to start '
                'from', 2)


def check_sweep_dir(sweep_dir):
    if os.path.exists(sweep_dir) and not os.path.isdir(sweep_dir):
        fail(f'--sweep_dir={sweep_dir}: is a file', 2)
    if not writable_folder(sweep_dir):
        fail(f'--sweep_dir={sweep_dir}: cannot create or write to it', 2)


def sweep_points(sweep_dir, rest, points, overwrite):
    """The points of the sweep.json to write: those already in sweep_dir's (a sweep of the same train.py arguments) and
    then this sweep's new ones; this sweep's alone where there is none, or with --overwrite=True. A sweep of other
    arguments there is refused: its points would vanish from --collect, or be shown with results they do not have."""
    if overwrite or not os.path.exists(os.path.join(sweep_dir, SPEC)):
        return points
    spec = read_spec(sweep_dir)
    if 'folders' not in spec:
        fail(
            f'{os.path.join(sweep_dir, SPEC)}: a sweep of an older sweep.py (its folders are named otherwise): use '
            'another --sweep_dir, or --overwrite=True to replace it', 2)
    there, me = {'args': spec['train_args'], 'config_files': spec.get('config_files', {})}, identity(rest)
    if not same_run(there, me):
        fail(
            f'{sweep_dir} holds a sweep of other train.py arguments ({differences(there, me)}): use another '
            '--sweep_dir, '
            'or --overwrite=True to replace it', 2)
    return spec['points'] + [p for p in points if p not in spec['points']]


def read_spec(sweep_dir):
    """sweep_dir's sweep.json, checked: what is wrong with it is one line naming it (exit 1)."""
    path = os.path.join(sweep_dir, SPEC)
    try:
        with open(path, encoding='utf-8') as f:
            spec = json.load(f)
    except OSError as e:
        fail(f'{sweep_dir}: not a sweep folder ({path}: {e.strerror})', 2)
    except ValueError as e:
        fail(f"{path}{f', line {e.lineno}' if hasattr(e, 'lineno') else ''}: not JSON ({getattr(e, 'msg', e)})")
    problem = spec_problem(spec)
    if problem:
        fail(f'{path}: {problem}')
    return spec


def spec_problem(spec):
    """What is wrong with a sweep.json's content, or None."""
    texts = lambda values: all(isinstance(v, str) for v in values)
    if not isinstance(spec, dict):
        return 'not a JSON object'
    if not isinstance(spec.get('train_args'), list) or not texts(spec['train_args']):
        return 'train_args: expected a list of texts'
    if not isinstance(spec.get('points'), list) or not all(
            isinstance(p, dict) and p and texts(p.values()) for p in spec['points']):
        return 'points: expected a list of objects of option values (texts)'
    if 'folders' in spec and spec['folders'] != [name_of(p) for p in spec['points']]:
        return "folders: not its points' folders (edited by hand?)"
    if not isinstance(spec.get('config_files', {}), dict):
        return 'config_files: expected an object'
    return None


def run_point(label, point, sweep_dir, rest, command, overwrite):
    """One point's run in its folder, its output in train.log there: skipped if it finished with these arguments,
    resumed from its checkpoint if it started with them, else started (over a run of other arguments only with
    --overwrite=True).
    STARTED is written before it starts, DONE once it exits 0. Returns its exit code."""
    name, out_dir = name_of(point), os.path.join(sweep_dir, name_of(point))
    me = identity(point_args(point, rest))
    if same_run(read_record(out_dir, DONE), me):
        print(f'{label} {name}: done before, skipped')
        return 0
    own = same_run(read_record(out_dir, STARTED), me)
    if own and any(os.path.exists(os.path.join(out_dir, f'ckpt.{ext}')) for ext in ('pt', 'dcp')):
        extra = ['--init_from=resume']
    else:
        refused = other_run(out_dir, me)
        if refused and not overwrite:
            fail(refused)
        extra = ['--overwrite=True'] if os.path.isdir(out_dir) and os.listdir(out_dir) else []  # what a run there left
    log = os.path.join(out_dir, 'train.log')
    print(f"{label} {name}: {'resuming' if extra == ['--init_from=resume'] else 'running'} (log: {log})", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, DONE)):
        os.remove(os.path.join(out_dir, DONE))  # the finished run of other arguments this one replaces
    write_json(os.path.join(out_dir, STARTED), {**me, 'point': point})
    t0 = time.time()
    with open(log, 'a') as f:
        code = subprocess.run([*command, *point_args(point, rest), f'--out_dir={out_dir}', *extra], stdout=f,
                              stderr=subprocess.STDOUT).returncode
    if code:
        with open(log, errors='replace') as f:
            print(f'{label} {name}: failed (exit {code}); the last lines of its log:\n' + ''.join(f.readlines()[-3:]),
                  file=sys.stderr)
        return code
    write_json(os.path.join(out_dir, DONE), {**me, 'point': point, 'seconds': round(time.time() - t0, 1)})
    return 0


def run_local(points, sweep_dir, rest, overwrite):
    """One run after another; finished ones skipped, cut-short ones resumed. Exit 1 if any failed (named)."""
    failed = []
    for i, point in enumerate(points, 1):
        if run_point(f'[{i}/{len(points)}]', point, sweep_dir, rest,
                     [sys.executable, os.path.join(REPO, 'train.py')], overwrite):
            failed.append(name_of(point))
    if failed:
        fail(f"{len(failed)} of {len(points)} runs failed: {', '.join(failed)} (run the sweep again to retry them)")
    print(f'sweep done: python sweep.py --collect={shlex.quote(sweep_dir)}')


def run_task(own):
    """One array task of sweep.sbatch: point --task of the sweep.json in --sweep_dir, run as a local sweep runs it, with
    torchrun ($PYTHON's, else this Python's) on --gpus_per_task processes."""
    if not own['sweep_dir']:
        fail('--task needs --sweep_dir (sweep.sbatch gives both)', 2)
    spec = read_spec(own['sweep_dir'])
    points = spec['points']
    if own['task'] >= len(points):
        fail(f"--task={own['task']}: {os.path.join(own['sweep_dir'], SPEC)} has {len(points)} points", 2)
    command = [
        os.environ.get('PYTHON') or sys.executable, '-m', 'torch.distributed.run', '--standalone',
        f"--nproc_per_node={own['gpus_per_task']}",
        os.path.join(REPO, 'train.py')
    ]
    code = run_point(f"task {own['task']}", points[own['task']], own['sweep_dir'], spec['train_args'], command,
                     own['overwrite'])
    sys.exit(code)


SBATCH = '''#!/usr/bin/env bash
# A job array of a sweep (sweep.py --launcher=slurm wrote it): task i runs point i of the sweep's sweep.json, which
# sweep.py --task reads as data (no value is ever read by a shell). It skips a point that finished, resumes one cut
# short from its checkpoint, and writes the run's output to train.log in the point's folder. As scripts/slurm.sh:
# requeued 5 minutes before the time limit; the next start resumes.
#SBATCH --job-name=sweep
#SBATCH --array={array}
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus}
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
set -euo pipefail
cd {cwd}  # where sweep.py ran: train.py's relative paths are relative to it
PYTHON=${{PYTHON:-{python}}}
trap 'echo "time limit near: requeueing"; scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"' USR1
"$PYTHON" {sweep} --task="$SLURM_ARRAY_TASK_ID" --sweep_dir={sweep_dir} --gpus_per_task={gpus}{overwrite} &
TRAINING=$!
wait $TRAINING || wait $TRAINING  # the trap interrupts the first wait
'''


def array_spec(indices):
    """SLURM's --array list of task indices: 0-3,7,9-10."""
    runs = []
    for i in indices:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ','.join(str(a) if a == b else f'{a}-{b}' for a, b in runs)


def write_slurm(indices, sweep_dir, gpus, submit, overwrite):
    """sweep.sbatch in the sweep's folder, every path in it quoted for the shell, and no value: an array task finds its
    point in sweep.json. Submitted with sbatch (its output files in the sweep's folder) only if asked."""
    folder = os.path.abspath(sweep_dir)
    script = os.path.join(folder, 'sweep.sbatch')
    with atomic_write(script, 'w') as f:
        f.write(
            SBATCH.format(array=array_spec(indices), gpus=gpus, cwd=shlex.quote(os.getcwd()),
                          python=shlex.quote(sys.executable), sweep=shlex.quote(os.path.join(REPO, 'sweep.py')),
                          sweep_dir=shlex.quote(folder), overwrite=' --overwrite=True' if overwrite else ''))
    command = ['sbatch', f"--output={folder.replace('%', '%%')}/slurm-%A_%a.out", script]  # '%%': a '%' of the path
    if not submit:
        print(f'wrote {script} ({len(indices)} array tasks); submit it with: {shlex.join(command)}')
        return
    try:
        r = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        fail(f'sbatch: {e.strerror}; {script} is written: submit it with: {shlex.join(command)}')
    if r.returncode:
        fail(f"sbatch failed: {(r.stderr.strip() or r.stdout.strip()).replace(chr(10), ' ')}; {script} is written: "
             f'submit it with: {shlex.join(command)}')
    print(r.stdout.strip())


def read_metrics(path):
    """A run's metrics.jsonl, checked: a last line cut short (a run killed while writing it, or still writing) is left
    out; any other line that is not a record train.py writes is one line naming the file and the line (exit 1)."""
    try:
        with open(path, 'rb') as f:
            lines = f.read().decode('utf-8', errors='replace').split('\n')
    except OSError as e:
        fail(f'{path}: cannot read it ({e.strerror})')
    cut = lines.pop()  # after the last newline: nothing, or a line cut short
    records = []
    for n, line in enumerate(lines, 1):
        record, problem = parse_record(line)
        if problem:
            fail(f'{path}, line {n}: {problem}')
        records.append(record)
    record, problem = parse_record(cut)
    return records + ([record] if cut and not problem else [])


def parse_record(line):
    """(a metrics.jsonl record, None), or (None, what is wrong with the line)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None, 'a blank line' if not line.strip() else f'not a JSON record: {line[:60]!r}'
    if not isinstance(record, dict) or not isinstance(record.get('kind'), str):
        return None, 'a record without its kind'
    if record['kind'] == 'eval_task' and not all(isinstance(record.get(k), str) for k in ('task', 'metric')):
        return None, 'an eval_task record without its task and metric'
    needed = NEEDED.get(record['kind'], ())
    for key in [k for k in dict.fromkeys(needed + NUMBERS) if k in record or k in needed]:
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            shown = json.dumps(value) if key in record else '(missing)'
            return None, f"{record['kind']} record: {key}={shown}: expected a number"
    return record, None


def collect(sweep_dir):
    """The table of a sweep's runs (one row each: its options, final and best val loss, bpb, tokens, training time,
    PubMedQA and the other tasks of --eval_tasks where recorded), printed and written as results.csv and
    results.md, and every run's val bpb in one plot.
    A point's folder counts only if its run started with the point's arguments (a run of other ones is not its)."""
    spec = read_spec(sweep_dir)
    keys = sorted({k for p in spec['points'] for k in p})
    rows, curves = [], {}
    for point in spec['points']:
        legacy = 'folders' not in spec  # a sweep of an older sweep.py: no records of arguments
        name = legacy_name_of(point) if legacy else name_of(point)
        folder, args = os.path.join(sweep_dir, name), point_args(point, spec['train_args'])
        own = legacy or (read_record(folder, STARTED) or {}).get('args') == args
        done = own and (os.path.exists(os.path.join(folder, DONE)) if legacy else
                        (read_record(folder, DONE) or {}).get('args') == args)
        path = os.path.join(folder, 'metrics.jsonl')
        records = read_metrics(path) if own and os.path.exists(path) else []
        evals = [r for r in records if r['kind'] == 'eval']
        last = next((r for r in reversed(records) if r['kind'] in ('train', 'eval')),
                    {})  # a PubMedQA record has no time
        pubmedqa = next((r for r in reversed(records) if r['kind'] == 'pubmedqa'), {})
        rows.append({
            **{k: point.get(k, '')
               for k in keys},
            'status': 'done' if done else 'partial' if records else 'not run',
            'val_loss': evals[-1]['val_loss'] if evals else None,
            'val_bpb': evals[-1]['val_bpb'] if evals else None,
            'best_val_loss': min(r['val_loss'] for r in evals) if evals else None,
            'tokens': last.get('tokens'),
            'train_seconds': last.get('train_seconds'),
            'pubmedqa_accuracy': pubmedqa.get('accuracy'),
            'pubmedqa_macro_f1': pubmedqa.get('macro_f1'),
            **{k: v
               for k, v in (evals[-1] if evals else {}).items() if k.startswith('val_bpb/')},  # a mixture's sources
            **{
                f"{r['task']} ({r['metric']})": r['value']  # train.py --eval_tasks (PubMedQA has its columns above)
                for r in records if r['kind'] == 'eval_task' and r['task'] != 'pubmedqa'
            }
        })
        curves[name] = [(r['train_seconds'], r['val_bpb']) for r in evals]
    columns = list(dict.fromkeys(c for r in rows for c in r)) if rows else keys
    rows = [{c: r.get(c) for c in columns} for r in rows]
    cell = lambda v: '' if v is None else f'{v:.4f}' if isinstance(v, float) else str(v).replace('|', '\\|').replace(
        '\n', '\\n')
    table = '\n'.join([f"| {' | '.join(columns)} |", '|' + '---|' * len(columns)] +
                      [f"| {' | '.join(cell(r[c]) for c in columns)} |" for r in rows])
    try:
        with open(os.path.join(sweep_dir, 'results.csv'), 'w', newline='') as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        with open(os.path.join(sweep_dir, 'results.md'), 'w') as f:
            f.write(table + '\n')
    except OSError as e:
        fail(f'{e.filename}: cannot write it ({e.strerror})')
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
    if any(curves.values()):
        ax.legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f'wrote {path}')


def check_own(own, given, sweeps, rest):
    """sweep.py's own options, before anything is read or written: one line, exit 2."""
    if own['collect'] and (sweeps or rest or given - {'collect'}):
        fail(f"--collect={own['collect']} reads a sweep's results: it takes no other options", 2)
    if 'task' in given and (own['task'] < 0 or sweeps or rest or
                            given - {'task', 'sweep_dir', 'gpus_per_task', 'overwrite'}):
        fail(
            f"--task={own['task']}: what sweep.sbatch runs: a point's index in --sweep_dir's sweep.json, and no other "
            "options", 2)
    if own['collect'] or 'task' in given:
        return
    if own['launcher'] == 'local' and (own['submit'] or own['gpus_per_task'] != 1):
        fail(
            f"--{'submit' if own['submit'] else 'gpus_per_task'} is for --launcher=slurm (a local sweep runs one "
            "process at a time)", 2)
    if own['submit'] and not shutil.which('sbatch'):
        fail(
            '--submit=True: sbatch is not on PATH (not a SLURM login node?); without --submit the script is written '
            'only', 2)
    if any(a.startswith('--out_dir=') for a in rest):
        fail("--out_dir: each point's run goes to its folder in --sweep_dir", 2)


def main(argv=None):
    sweeps, own_args, rest = split_argv(sys.argv[1:] if argv is None else argv)
    given = set()
    own = configure(OPTIONS, own_args, given=given)
    check_own(own, given, sweeps, rest)
    if own['collect']:
        return collect(own['collect'])
    if 'task' in given:
        return run_task(own)
    points = grid_points(sweeps, own['grid'])
    config = next((a for a in rest if not a.startswith('--')), 'sweep')
    sweep_dir = own['sweep_dir'] or os.path.join('sweeps', os.path.splitext(os.path.basename(config))[0])
    check_sweep_dir(sweep_dir)
    check_points(points, sweep_dir, rest)
    everything = sweep_points(sweep_dir, rest, points, own['overwrite'])
    refused = [other_run(os.path.join(sweep_dir, name_of(p)), identity(point_args(p, rest))) for p in points]
    if any(refused) and not own['overwrite']:
        fail(next(r for r in refused if r), 2)
    try:
        os.makedirs(sweep_dir, exist_ok=True)
        write_json(
            os.path.join(sweep_dir, SPEC), {
                'train_args': rest, 'config_files': identity(rest)['config_files'], 'points': everything,
                'folders': [name_of(p) for p in everything]
            })
        if own['launcher'] == 'slurm':
            tasks = sorted(everything.index(p) for p in points)  # this sweep's points, where sweep.json has them
            return write_slurm(tasks, sweep_dir, own['gpus_per_task'], own['submit'], own['overwrite'])
        run_local(points, sweep_dir, rest, own['overwrite'])
    except OSError as e:
        fail(f'{e.filename or sweep_dir}: {e.strerror}')


if __name__ == '__main__':
    main()
