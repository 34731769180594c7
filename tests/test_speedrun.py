import json
import subprocess
import sys

import pytest

from conftest import REPO, make_dataset

import speedrun

pytestmark = pytest.mark.slow  # end to end: real processes, whole chains

TINY = """n_layer = 1
n_head = 2
n_embd = 16
block_size = 16
batch_size = 4
gradient_accumulation_steps = 1
learning_rate = 1e-2
warmup_iters = 2
compile = False
device = 'cpu'
peak_flops = 1e12
"""


def test_time_to_reach_interpolates_between_eval_points():
    points = [(0.0, 3.0), (10.0, 2.0), (20.0, 1.5), (30.0, 1.4)]
    assert speedrun.time_to_reach(points, 1.75) == 15.0
    assert speedrun.time_to_reach(points, 2.0) == 10.0
    assert speedrun.time_to_reach(points, 3.5) == 0.0
    assert speedrun.time_to_reach(points, 1.3) is None


@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('speedrun')
    make_dataset(root / 'data' / 'gpt2', vocab_size=400)  # stands in for the GPT-2 tokens
    make_dataset(root / 'data' / 'bpe300', vocab_size=300)
    (root / 'base.py').write_text(TINY)
    (root /
     'cand.py').write_text(TINY +
                           "pos = 'rotary'\nnorm = 'rmsnorm'\nmlp = 'relu2'\noptimizer = 'muon'\nschedule = 'wsd'\n")
    return root


def run_bench(root, *args):
    cmd = [
        sys.executable,
        str(REPO / 'bench' / 'speedrun.py'), f'--baseline={root / "base.py"}', f'--candidate={root / "cand.py"}',
        f'--data_root={root / "data"}', f'--out_root={root / "out"}', '--vocab_size=300', '--budget_s=1.5',
        '--eval_every_s=0.5', '--baseline_eval_every_s=0.5', *args
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_bench_trains_both_prints_curves_time_to_target_and_plot(tiny_setup):
    figures, err = run_bench(tiny_setup)
    by_name = {}
    for f in figures:
        by_name.setdefault(f['name'], []).append(f)
    base_curve, cand_curve = by_name['baseline_val_bpb'], by_name['candidate_val_bpb']
    assert base_curve[0]['train_seconds'] == 0 and base_curve[-1]['train_seconds'] >= 1.5
    assert cand_curve[-1]['train_seconds'] >= 1.5 and len(cand_curve) >= 3
    target = by_name['baseline_final_val_bpb'][0]['value']
    assert target == base_curve[-1]['value']
    reach = by_name['candidate_seconds_to_baseline_bpb'][0]
    assert reach['target_bpb'] == target
    points = [(f['train_seconds'], f['value']) for f in cand_curve]
    expected = speedrun.time_to_reach(points, target)
    if expected is None:
        assert reach['value'] is None and 'not reached' in reach['note']
    else:
        assert reach['value'] == pytest.approx(expected, abs=0.06)
        # the ratio is of the unrounded times; value and baseline are printed to 0.1 s (at 0.5 s that is 10%)
        v, b = reach['value'], reach['baseline']
        assert (v - 0.05) / (b + 0.05) - 1e-3 <= reach['ratio'] <= (v + 0.05) / (b - 0.05) + 1e-3
    assert (tiny_setup / 'out' / 'speedrun.png').stat().st_size > 1000
    # the candidate trained on the BPE data, the baseline on the 'gpt2' folder
    assert '--data_dir=' + str(tiny_setup / 'data' / 'bpe300') in (tiny_setup / 'out' / 'candidate' /
                                                                   'run.json').read_text()

    # --reuse keeps finished runs made by the same command: nothing is trained again
    before = (tiny_setup / 'out' / 'baseline' / 'metrics.jsonl').read_text()
    again, err = run_bench(tiny_setup, '--reuse=True', '--plot=')
    assert 'baseline: reusing' in err and 'candidate: reusing' in err
    assert (tiny_setup / 'out' / 'baseline' / 'metrics.jsonl').read_text() == before
    assert [f for f in again if f['name'] == 'baseline_final_val_bpb'] == by_name['baseline_final_val_bpb']


def test_ablate_runs_only_the_named_levers(tiny_setup):
    figures, err = run_bench(tiny_setup, '--reuse=True', '--plot=', '--ablate=True', '--levers=doc_aligned')
    ablations = [f for f in figures if f['name'].startswith('ablate[')]
    assert [f['name'] for f in ablations] == ['ablate[fixed_windows->doc_aligned]_final_val_bpb']
    assert ablations[0]['change'] == '--align_windows=True' and ablations[0]['budget_s'] == 1.5
    assert '--align_windows=True' in (tiny_setup / 'out' / 'ablate[fixed_windows->doc_aligned]' /
                                      'run.json').read_text()


def test_unknown_lever_is_a_usage_error(tiny_setup):
    done = subprocess.run([
        sys.executable,
        str(REPO / 'bench' / 'speedrun.py'), '--ablate=True', '--levers=muon,warp_drive',
        f'--data_root={tiny_setup / "data"}'
    ], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert 'no lever named like warp_drive' in done.stderr and 'eager->compile' in done.stderr


def test_missing_data_without_input_is_a_clear_error(tmp_path):
    done = subprocess.run([
        sys.executable,
        str(REPO / 'bench' / 'speedrun.py'), f'--data_root={tmp_path}', f'--input={tmp_path / "nowhere"}',
        f'--out_root={tmp_path / "out"}'
    ], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f'{tmp_path / "gpt2"} is not prepared and --input={tmp_path / "nowhere"} does not exist' in done.stderr
