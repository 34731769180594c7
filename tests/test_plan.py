"""The memory plan (plan.py, train.py --plan=True): bytes per GPU from shapes and formulas, at once for any size."""
import subprocess
import sys

import pytest

import plan
import train
from conftest import REPO
from model import GPT, GPTConfig
from test_train import run_train


def test_plan_counts_bytes_per_gpu_and_writes_nothing(tiny_data, tmp_path, capsys):
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=64)
    P = sum(p.numel() for p in GPT(config).parameters())
    plans = plan.estimate(config, micro_batch=4, world=8, bf16=False)
    assert plans['ddp', False]['state'] == 16 * P and plans['fsdp', False]['state'] == 16 * P / 8
    t, h = 4 * 32, 32  # fp32: per token and layer 2h (residual) + 5h + 2h (k, v) + 2 x 4h (gelu MLP) floats
    assert plans['ddp', False]['activations'] == 2 * t * 4 * (2 * h + 5 * h + 2 * h + 2 * 4 * h)
    assert plans['ddp', True]['activations'] == 2 * t * 4 * h + t * 4 * (2 * h + 5 * h + 2 * h + 2 * 4 * h)
    run_train(tiny_data, tmp_path / 'out', '--plan=True', '--plan_gpus=8', '--plan_gpu_gb=0.001')
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        'memory plan: 0.0367M parameters, 1 x 32 tokens per micro-batch, 8 GPU(s) of 0.001 GB, bf16')
    assert [line.split()[0] for line in lines[1:]] == ['ddp', 'ddp', 'fsdp', 'fsdp'] and lines[-1].endswith(' fits')
    assert not (tmp_path / 'out').exists()
    assert plan.table() in (REPO / 'docs' / 'scale.md').read_text()  # the docs' table is what plan.py prints


@pytest.mark.slow
def test_plan_py_takes_its_options_and_refuses_others():
    procs = [
        subprocess.Popen([sys.executable, 'plan.py', *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE) for args in (['--foo=1'], ['--gpus=0'], ['--gpus=4', '--gpu_gb=141'])
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    runs = [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outputs)]
    assert runs[0].returncode == 2 and "unknown key 'foo'" in runs[0].stderr and not runs[0].stdout
    assert runs[1].returncode == 2 and '--gpus=0: must be positive' in runs[1].stderr
    assert runs[2].returncode == 0 and runs[2].stdout.strip() == plan.table(world=4, gpu_gb=141.0)


def test_the_1b_fsdp_config_plans_for_a_llama_3_2_1b_folder(tmp_path, capsys):
    from transformers import LlamaConfig
    LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072, tie_word_embeddings=True,
                rope_theta=500000.0,
                head_dim=64).save_pretrained(tmp_path / 'llama')  # its config.json: the plan reads no weights
    train.main(
        train.options([
            'config/finetune_1b_fsdp.py', f'--init_from={tmp_path / "llama"}', '--plan=True',
            f'--out_dir={tmp_path / "out"}'
        ]))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        'memory plan: 1.24B parameters, 8 x 2048 tokens per micro-batch, 8 GPU(s) of 80 GB, bf16')
    assert lines[3].split()[0] == 'fsdp' and lines[3].endswith(' fits') and not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_plan_answers_at_once_for_any_size(tiny_data, tmp_path):
    """From shapes and formulas: 30,000 layers (or a config.json of 10^6) plan as fast as 12."""
    from transformers import LlamaConfig
    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=10**6, num_attention_heads=4,
                vocab_size=1000).save_pretrained(tmp_path / 'deep')
    outputs = []
    for args in (['--n_layer=30000'], [f'--init_from={tmp_path / "deep"}', '--block_size=64']):
        r = subprocess.run([
            sys.executable, 'train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path / "out"}', *args, '--plan=True'
        ], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and not (tmp_path / 'out').exists(), r.stderr
        outputs.append(r.stdout)
    block = 12 * 768 * 768 + 13 * 768  # GPT-2 small's block: attention and MLP matrices and biases, two layer norms
    assert outputs[0].startswith(f'memory plan: {(320 * 768 + 1024 * 768 + 2 * 768 + 30000 * block) / 1e9:.3g}B')
    block = 4 * 64 * 64 + 3 * 64 * 128 + 2 * 64  # q, k, v, o; gate, up, down; two RMSNorms
    assert outputs[1].startswith(f'memory plan: {(1000 * 64 + 64 + 10 ** 6 * block) / 1e9:.3g}B')
