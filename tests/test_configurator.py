import os
import subprocess
import sys

import pytest

from configurator import configure
from conftest import REPO

DEFAULTS = {'learning_rate': 6e-4, 'batch_size': 12, 'compile': True, 'out_dir': 'out', 'init': None}


def test_int_for_float_none_default_equals_in_value_and_bools():
    c = configure(DEFAULTS, ['--learning_rate=1', '--init=3', '--out_dir=a=b', '--compile=false'])
    assert c['learning_rate'] == 1.0 and isinstance(c['learning_rate'], float)
    assert c['init'] == 3 and c['out_dir'] == 'a=b' and c['compile'] is False
    for raw, want in [('True', True), ('true', True), ('1', True), ('False', False), ('0', False)]:
        assert configure(DEFAULTS, [f'--compile={raw}'])['compile'] is want
    assert configure(DEFAULTS, ['--init=some/path'])['init'] == 'some/path'


def test_config_file_then_overrides_left_to_right(tmp_path):
    cfg = tmp_path / 'c.py'
    cfg.write_text('batch_size = 64\nlearning_rate = batch_size * 1e-5\n')
    c = configure(DEFAULTS, [str(cfg), '--batch_size=8'])
    assert c['batch_size'] == 8 and c['learning_rate'] == pytest.approx(64e-5)


def run_cli(args, tmp_path):
    script = tmp_path / 's.py'
    script.write_text(f'from configurator import configure\nconfigure({DEFAULTS!r})\nopen("written", "w").write("x")\n')
    return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(REPO)})


@pytest.mark.parametrize('args, message', [
    (['--lerning_rate=1'], "unknown key 'lerning_rate' (did you mean 'learning_rate'?)"),
    (['--batch_size=1.5'], '--batch_size=1.5: expected int'),
    (['--compile=maybe'], '--compile=maybe: expected a boolean'),
    (['--batch_size'], '--batch_size needs a value'),
    (['missing.py'], "cannot read config file 'missing.py'"),
])
def test_mistakes_exit_2_with_one_line_and_write_nothing(args, message, tmp_path):
    r = run_cli(args, tmp_path)
    assert r.returncode == 2
    assert r.stderr.count('\n') == 1 and message in r.stderr
    assert not (tmp_path / 'written').exists()


def test_unknown_key_in_config_file_is_named(tmp_path):
    (tmp_path / 'bad.py').write_text('batch_sise = 3\n')
    r = run_cli(['bad.py'], tmp_path)
    assert r.returncode == 2
    assert "unknown key 'batch_sise' in config file 'bad.py' (did you mean 'batch_size'?)" in r.stderr


COMMANDS = [
    'train.py', 'sample.py', 'export_hf.py', 'pubmedqa.py', 'eval_suite.py', 'consolidate.py', 'data/pubmed/prepare.py',
    'data/text/prepare.py', 'data/pmc/prepare.py', 'plan.py', 'sweep.py', 'bench/gpu_check.py', 'bench/bench_train.py',
    'bench/bench_sample.py', 'bench/bench_fsdp.py', 'bench/bench_prepare.py', 'bench/bench_continue.py',
    'bench/bench_mix.py', 'bench/bench_pmc.py', 'bench/speedrun.py'
]


@pytest.mark.slow
def test_help_of_every_command_prints_each_option_with_its_comment():
    """The option reference lives in one place: the comment beside each option (GPTConfig's fields for train.py)."""
    import re

    from configurator import option_comments
    procs = [
        subprocess.Popen([sys.executable, cmd, '--help'], cwd=REPO, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE) for cmd in COMMANDS
    ]
    for cmd, proc in zip(COMMANDS, procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        lines = [line for line in out.splitlines() if line.startswith('  --')]
        shared = {
            'train.py': 'model.py', 'data/pubmed/prepare.py': 'data/build.py', 'data/text/prepare.py': 'data/build.py',
            'data/pmc/prepare.py': 'data/build.py'
        }  # options declared once beside what they change
        comments = {**option_comments(REPO / cmd), **(option_comments(REPO / shared[cmd]) if cmd in shared else {})}
        keys = [re.match(r'  --(\w+)=', line).group(1) for line in lines]
        assert keys and all(k in comments for k in keys), (cmd, [k for k in keys if k not in comments])
        assert all(line.rstrip().endswith(comments[k]) for k, line in zip(keys, lines)), cmd
    assert len(keys) >= 3
