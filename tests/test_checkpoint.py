"""Checkpoints are read as data and damage is one line: sharded folders (FSDP) as much as ckpt.pt files."""
import os
import pickle
import shutil
import subprocess
import sys

import pytest

from checkpoint import CheckpointError, load_checkpoint, read_checkpoint_file, save_checkpoint
from conftest import REPO, SHARED, need
from test_train import records, run_train

pytestmark = pytest.mark.usefixtures('one_thread')


class Payload:
    """A pickle that runs a shell command when it is loaded (what a hostile file would hold)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def commands(*arg_lists):
    """Several of the project's commands at once, as a user runs them (most of their time is importing torch)."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    procs = [
        subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE) for args in arg_lists
    ]
    return [(p.wait(timeout=300), p.stderr.read()) for p in procs]


@pytest.fixture(scope='module')
def sharded_run(tiny_data, tmp_path_factory):
    """A run of 3 steps with --parallel=fsdp in one process: out/ckpt.dcp."""
    out = tmp_path_factory.mktemp('sharded') / 'out'
    run_train(tiny_data, out, '--parallel=fsdp', '--max_iters=3', '--eval_interval=0', '--save_best=False')
    return out


def copy_run(run, to):
    shutil.copytree(run, to)
    return to / 'ckpt.dcp'


def rewrite_shards(folder, change):
    """Write the folder's shards again after change(model state, optimizer state), keeping its train_state.pt: what
    a hostile or broken writer could leave (save_sharded itself refuses non-finite weights)."""
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from checkpoint import model_from_checkpoint
    from consolidate import consolidated
    ckpt = consolidated(str(folder))
    model = model_from_checkpoint(ckpt)
    c = ckpt['config']
    optimizers = model.configure_optimizers(c['weight_decay'], c['learning_rate'], (c['beta1'], c['beta2']), 'cpu')
    model_state, optimizer_state = get_state_dict(model, optimizers)
    change(model_state, optimizer_state)
    for name in os.listdir(folder):
        if name != 'train_state.pt':
            os.remove(folder / name)
    dcp.save({'model': model_state, 'optimizer': optimizer_state}, checkpoint_id=str(folder), no_dist=True)


@pytest.mark.slow
def test_a_sharded_checkpoint_never_runs_code_in_any_command(sharded_run, tiny_data, tmp_path, capsys):
    """A .metadata holding a posix.system payload (dcp unpickles it with plain pickle) and a shard whose optimizer
    values hold one (dcp reads them with torch.load(weights_only=False)): every command refuses, nothing runs."""
    marker = tmp_path / 'ran'
    metadata = copy_run(sharded_run, tmp_path / 'metadata')
    (metadata / '.metadata').write_bytes(pickle.dumps(Payload(marker)))
    values = copy_run(sharded_run, tmp_path / 'values')

    def hostile_lr(model_state, optimizer_state):
        optimizer_state['param_groups'][0]['lr'] = Payload(marker)

    rewrite_shards(values, hostile_lr)

    pubmedqa = need(SHARED / 'data' / 'pubmedqa')
    for folder, message in ((metadata, 'refers to posix.system, which is not checkpoint metadata'),
                            (values, 'hold objects other than tensors and plain data')):
        results = commands(['sample.py', f'--out_dir={folder.parent}', '--max_new_tokens=2'],
                           ['consolidate.py', f'--ckpt={folder}', f'--out={tmp_path / "c.pt"}'],
                           ['export_hf.py', f'--ckpt={folder}', f'--out={tmp_path / "hf"}'],
                           ['pubmedqa.py', f'--ckpt={folder}', f'--pubmedqa={pubmedqa}'])
        for code, err in results:
            assert code == 1 and err.count('\n') == 1 and message in err, err
        with pytest.raises(SystemExit) as e:
            run_train(tiny_data, folder.parent, '--init_from=resume', '--max_iters=4')
        err = capsys.readouterr().err
        assert e.value.code == 1 and message in err, err
        assert not marker.exists()
    assert not (tmp_path / 'c.pt').exists() and not (tmp_path / 'hf').exists()


@pytest.mark.slow
def test_damaged_sharded_checkpoints_are_one_line(sharded_run, tiny_data, tmp_path, capsys):
    shard = '__0_0.distcp'
    cases = {
        'cut short': (lambda f: os.truncate(f / shard, 3000), f'the shard {shard} is cut short (3,000 bytes of'),
        'shard gone': (lambda f: os.remove(f / shard), f'the shard {shard} is missing'),
        'garbage metadata': (lambda f: (f / '.metadata').write_bytes(b'\x80\x04garbage'), '.metadata: not readable'),
        'escaping shard': (lambda f: (f / '.metadata').write_bytes(
            (f / '.metadata').read_bytes().replace(shard.encode(), b'../../x.dist')),
                           "names a shard '../../x.dist' that is not a file of the folder"),
        'other shape': (lambda f: save_checkpoint(widened(f / 'train_state.pt'), f / 'train_state.pt'),
                        'its shards do not fit this model and optimizer'),
        'not finite': (
            lambda f: rewrite_shards(f, lambda m, o: m['transformer.h.0.attn.c_attn.weight'].fill_(float('nan'))),
            'the weights are not finite'), 'no train_state': (lambda f: os.remove(f / 'train_state.pt'),
                                                              'not a sharded checkpoint of this project')
    }
    for name, (damage, message) in cases.items():
        folder = copy_run(sharded_run, tmp_path / name.replace(' ', '_'))
        damage(folder)
        with pytest.raises(CheckpointError, match=message.replace('(', r'\(').replace('.', r'\.')):
            load_checkpoint(str(folder))  # what sample.py, export_hf.py, pubmedqa.py and consolidate.py read
        with pytest.raises(SystemExit) as e:
            run_train(tiny_data, folder.parent, '--init_from=resume', '--max_iters=4')
        err = capsys.readouterr().err
        assert e.value.code == 1 and message in err and err.count('\n') == 1, (name, err)
        assert [r['iter'] for r in records(folder.parent, 'train')] == [1, 2, 3], name  # nothing trained or trimmed
    results = commands(
        ['consolidate.py', f'--ckpt={tmp_path / "cut_short" / "ckpt.dcp"}', f'--out={tmp_path / "c.pt"}'],
        ['sample.py', f'--out_dir={tmp_path / "other_shape"}'],
        ['export_hf.py', f'--ckpt={tmp_path / "not_finite" / "ckpt.dcp"}', f'--out={tmp_path / "hf"}'])
    for (code, err), message in zip(results, ('is cut short', 'do not fit this model', 'not finite')):
        assert code == 1 and err.count('\n') == 1 and message in err, err


def widened(path):
    state = read_checkpoint_file(path)
    return {**state, 'model_args': {**state['model_args'], 'n_embd': 64}}


def test_a_stale_old_folder_beside_a_sharded_checkpoint_does_not_stop_later_saves(sharded_run, tiny_data, tmp_path):
    """A kill during save_sharded's last step leaves NAME.dcp.old beside a whole NAME.dcp: the next save replaces it."""
    folder = copy_run(sharded_run, tmp_path / 'run')
    shutil.copytree(folder, tmp_path / 'run' / 'ckpt.dcp.old')
    run_train(tiny_data, tmp_path / 'run', '--init_from=resume', '--max_iters=5')
    assert load_checkpoint(str(folder))['iter_num'] == 5 and sorted(os.listdir(
        tmp_path / 'run')) == ['ckpt.dcp', 'metrics.jsonl']


def test_a_file_that_is_not_a_checkpoint_is_called_so(tmp_path):
    text = tmp_path / 'notes.pt'
    text.write_text('some notes, not a checkpoint\n')
    with pytest.raises(CheckpointError, match='not a readable checkpoint \\(not a file torch.save wrote\\)'):
        load_checkpoint(str(text))


@pytest.mark.slow
def test_consolidate_refuses_a_folder_as_its_output(sharded_run):
    code, err = commands([
        'consolidate.py', f'--ckpt={sharded_run / "ckpt.dcp"}', f'--out={sharded_run / "ckpt.dcp"}', '--overwrite=True'
    ])[0]
    assert code == 2 and err.count('\n') == 1 and 'is a folder; name the file to write' in err
    assert load_checkpoint(str(sharded_run / 'ckpt.dcp'))['iter_num'] == 3


@pytest.mark.slow
def test_prepare_takes_the_tokenizer_of_a_sharded_checkpoint(sharded_run, tiny_data, tmp_path):
    from conftest import FIXTURES, run_prepare
    from dataloader import load_meta
    r = run_prepare(f'--input={FIXTURES}', f'--out_dir={tmp_path / "data"}', f'--tokenizer={sharded_run / "ckpt.dcp"}',
                    '--exclude_pmids=', '--val_fraction=0.5', '--allow_bad_files=True')
    assert r.returncode == 0, r.stderr
    assert load_meta(tmp_path / 'data')['tokenizer'] == load_meta(tiny_data)['tokenizer']
