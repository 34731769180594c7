"""The SLURM and PBS launch scripts, run with a fake scheduler environment and stub launchers."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, make_dataset
from hf_folders import llama_folder
from test_train import TINY, records, run_train
from tokenizer import spec_from_hf_folder

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_thread')]

# srun as one task per node would: the command after srun's own options, once per node (SLURM_NODEID), here
SRUN = '''#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$RECORD"
while [[ "$1" == --* ]]; do shift; done
for node in $(seq 0 $((SLURM_JOB_NUM_NODES - 1))); do SLURM_NODEID=$node "$@" & done
wait
'''
SCONTROL = '''#!/usr/bin/env bash
if [ "$1 $2" = "show hostnames" ]; then echo 127.0.0.1; echo 127.0.0.1
else printf '%s\\n' "$*" >> "$RECORD.scontrol"; fi
'''
RECORDER = '''#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$RECORD"
'''


def stubs(folder, **scripts):
    folder.mkdir()
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_slurm_script_continues_an_open_model_on_two_nodes_requeues_and_resumes(tmp_path):
    """Two 'nodes' (torchrun agents on this machine, one process each) meet by c10d rendezvous and continue pretraining
    a (random, tiny) Llama folder with FSDP and Muon as one process does, within 1e-5: rank 0 alone reads the weights
    and sends each rank its shards; Muon gathers each sharded matrix. USR1 near the time limit requeues the job; the
    next start resumes from the sharded checkpoint."""
    words = 'patients treated with the drug showed reduced tumour growth in mice while control groups did not'.split()
    folder = llama_folder(tmp_path / 'llama', [' '.join(words[i:] + words[:i]) for i in range(len(words))],
                          vocab_size=400)
    data = make_dataset(tmp_path / 'data', spec=spec_from_hf_folder(folder))
    out, record = tmp_path / 'out', tmp_path / 'srun.txt'
    config = tmp_path / 'tiny.py'
    config.write_text('\n'.join(f'{a[2:].split("=")[0]} = {a.split("=")[1]!r}' for a in TINY).replace("'", '') + '\n')
    port = free_port()
    env = {
        **os.environ, 'OMP_NUM_THREADS': '1', 'PATH': stubs(tmp_path / 'bin', srun=SRUN, scontrol=SCONTROL),
        'RECORD': str(record), 'SLURM_JOB_ID': '4242', 'SLURM_JOB_NUM_NODES': '2', 'SLURM_JOB_NODELIST': 'gpu[07-08]',
        'SLURM_SUBMIT_DIR': str(REPO), 'GPUS_PER_NODE': '1', 'PORT': str(port), 'PYTHON': sys.executable,
        'CONFIG': str(config), 'OUT_DIR': str(out),
        'ARGS': f'--data_dir={data} --init_from={folder} --parallel=fsdp --optimizer=muon --learning_rate=1e-3 '
        '--eval_interval=0 --lr_decay_iters=6 --max_iters=4'
    }
    job = subprocess.Popen(['bash', str(REPO / 'scripts' / 'slurm.sh')], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    while not record.exists() and job.poll() is None:
        time.sleep(0.1)
    job.send_signal(signal.SIGUSR1)  # SLURM's --signal=B:USR1@300
    stdout, stderr = job.communicate(timeout=600)
    assert job.returncode == 0, stderr[-6000:]
    assert 'time limit near: requeueing job 4242' in stdout and (tmp_path /
                                                                 'srun.txt.scontrol').read_text() == 'requeue 4242\n'
    assert record.read_text() == (
        f'--kill-on-bad-exit=1 {sys.executable} -m torch.distributed.run --nnodes=2 --nproc_per_node=1 --rdzv_id=4242 '
        f'--rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:{port} train.py {config} {env["ARGS"]} --out_dir={out}\n')
    env['ARGS'] = env['ARGS'].replace('--max_iters=4', '--max_iters=6')
    r = subprocess.run(['bash', str(REPO / 'scripts' / 'slurm.sh')], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-6000:]
    assert record.read_text().splitlines()[-1].endswith(f'--out_dir={out} --init_from=resume')
    run_train(data, tmp_path / 'one', f'--init_from={folder}', '--optimizer=muon', '--learning_rate=1e-3',
              '--eval_interval=0', '--lr_decay_iters=6', '--max_iters=6')
    two_nodes, one = records(out, 'train'), records(tmp_path / 'one', 'train')
    assert [r['iter'] for r in two_nodes] == [1, 2, 3, 4, 5, 6]
    assert [r['loss'] for r in two_nodes] == pytest.approx([r['loss'] for r in one], rel=1e-5)


def test_pbs_script_starts_one_torchrun_per_node_and_resumes(tmp_path):
    record, nodefile = tmp_path / 'launch.txt', tmp_path / 'nodes'
    nodefile.write_text('x3001\nx3001\nx3002\nx3002\nx3003\n')  # PBS lists a node once per requested cpu/slot
    env = {
        **os.environ, 'PATH': stubs(tmp_path / 'bin',
                                    mpiexec=RECORDER), 'RECORD': str(record), 'PBS_NODEFILE': str(nodefile),
        'PBS_JOBID': '1234.pbs01', 'PBS_O_WORKDIR': str(REPO), 'OUT_DIR': str(tmp_path / 'out'), 'PYTHON': 'python'
    }
    for _ in range(2):
        subprocess.run(['bash', str(REPO / 'scripts' / 'pbs.sh')], cwd=tmp_path, env=env, check=True, timeout=60)
        (tmp_path / 'out' / 'ckpt.dcp').mkdir(parents=True, exist_ok=True)  # what the first run leaves
    first, second = record.read_text().splitlines()
    assert first == ('-n 3 --ppn 1 python -m torch.distributed.run --nnodes=3 --nproc_per_node=8 --rdzv_id=1234 '
                     f'--rdzv_backend=c10d --rdzv_endpoint=x3001:29500 train.py config/finetune_1b_fsdp.py '
                     f'--out_dir={tmp_path / "out"}')
    assert second == first + ' --init_from=resume'


def test_the_scripts_outside_a_job_say_so_and_launch_nothing(tmp_path):
    record = tmp_path / 'launch.txt'
    (tmp_path / 'empty').write_text('')
    path = stubs(tmp_path / 'bin', mpiexec=RECORDER, srun=RECORDER, scontrol=RECORDER)
    base = {k: v for k, v in os.environ.items() if not k.startswith(('PBS_', 'SLURM_'))}
    for script, extra, message in (('pbs.sh', {'PBS_NODEFILE': str(tmp_path / 'empty')},
                                    'names no nodes: submit this script with qsub'),
                                   ('pbs.sh', {}, '$PBS_NODEFILE (unset) names no nodes'), ('slurm.sh', {},
                                                                                            'no SLURM job here')):
        r = subprocess.run(['bash', str(REPO / 'scripts' / script)], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60, env={**base, **extra, 'PATH': path, 'RECORD': str(record)})
        assert r.returncode == 2 and r.stderr.startswith('error: ') and r.stderr.count(
            '\n') == 1 and message in r.stderr, r.stderr
    assert not record.exists()


ARGV_RECORDER = '''#!/usr/bin/env bash
printf '%s\\0' "$@" >> "$RECORD"
'''


@pytest.mark.parametrize('script', ['slurm.sh', 'pbs.sh'])
def test_the_scripts_split_args_on_spaces_and_never_glob_or_run_a_value_or_path_as_shell_code(tmp_path, script):
    """ARGS is train.py's options split on spaces, and nothing more: a '*', '[a]', '$(...)' or backticks in it, and
    any character in CONFIG, OUT_DIR and PYTHON, reach train.py as they are (the job's folder holds a file a glob
    finds)."""
    (tmp_path / '--wandb_project=a.txt').write_text('')  # what a glob of --wandb_project=[a].txt finds
    hostile = "x y $(touch PWNED) `touch PWNED` it's $HOME ${HOME} * [a].txt"
    args = '--wandb_run_name=* --wandb_project=[a].txt --data_dir=$(touch${IFS}PWNED) --init_from=`touch PWNED`'
    record, nodefile = tmp_path / 'launch.txt', tmp_path / 'nodes'
    nodefile.write_text('x3001\n')
    env = {
        **os.environ, 'PATH': stubs(tmp_path / 'bin', srun=ARGV_RECORDER, mpiexec=ARGV_RECORDER,
                                    scontrol=SCONTROL), 'RECORD': str(record), 'SLURM_JOB_ID': '4242',
        'SLURM_JOB_NUM_NODES': '1', 'SLURM_JOB_NODELIST': 'gpu07', 'SLURM_SUBMIT_DIR': str(tmp_path),
        'PBS_NODEFILE': str(nodefile), 'PBS_JOBID': '1234.pbs01', 'PBS_O_WORKDIR': str(tmp_path), 'GPUS_PER_NODE': '1',
        'PYTHON': f'py {hostile}', 'CONFIG': f'c {hostile}.py', 'OUT_DIR': f'o {hostile}', 'ARGS': args
    }
    r = subprocess.run(['bash', str(REPO / 'scripts' / script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    argv = record.read_text().split('\0')[:-1]
    python = argv.index(env['PYTHON'])
    assert argv[python:python + 3] == [env['PYTHON'], '-m', 'torch.distributed.run']
    assert argv[argv.index('train.py'):] == ['train.py', env['CONFIG'], *args.split(' '), f"--out_dir={env['OUT_DIR']}"]
    assert not list(tmp_path.rglob('PWNED')) and not (REPO / 'PWNED').exists()
