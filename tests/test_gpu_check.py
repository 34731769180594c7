"""bench/gpu_check.py --quick: every part of the GPU check runs on CPU with tiny shapes, so the script cannot rot
between the GPU slots it is written for."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # end to end: real processes, whole chains

PARTS = ['recipe', 'modes', 'fsdp', 'continue', 'decode', 'loss']


def test_the_gpu_check_runs_every_part_on_cpu_in_quick_mode(tiny_data):
    r = subprocess.run([sys.executable, 'bench/gpu_check.py', '--quick', f'--data_dir={tiny_data}'], cwd=REPO,
                       text=True, capture_output=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    figures = {}
    for line in r.stdout.splitlines():
        if line.startswith('{"name": '):  # (the Trainer prints a dict of its own)
            figure = json.loads(line)
            figures[figure['name']] = figure
    assert figures['summary']['value'] == 'ok' and figures['summary']['passed'] == PARTS
    assert figures['recipe_val_loss']['value'] < figures['recipe_val_loss']['start']  # the loss fell
    for name in ('recipe_tokens_per_s', 'modes_compiled_bfloat16_steps_per_s', 'continue_tokens_per_s',
                 'decode_batch8_tokens_per_s', 'loss_chunked_ms'):
        assert figures[name]['value'] > 0, name
    mfu = figures['recipe_mfu']['value']  # None where the CPU ran faster than the peak it measured while busy
    assert mfu is None or 0 < mfu <= 1
    assert figures['continue_tokens_per_s']['peer'] == "transformers' Trainer"  # accelerate is installed here
    # CPU
    assert figures['fsdp_ac_peak_memory_gb']['plan_gb'] > 0 and figures['fsdp_ac_peak_memory_gb']['value'] is None


def test_the_gpu_check_refuses_what_it_cannot_run():
    r = subprocess.run([sys.executable, 'bench/gpu_check.py', '--quick', '--parts=recipe,warp'], cwd=REPO, text=True,
                       capture_output=True, timeout=120)
    assert r.returncode == 2 and 'unknown warp' in r.stderr
    r = subprocess.run([sys.executable, 'bench/gpu_check.py', '--quick', '--data_dir=/nonexistent'], cwd=REPO,
                       text=True, capture_output=True, timeout=120)
    assert r.returncode == 2 and 'needs a prepared data folder' in r.stderr
