"""Data mixtures (--data_mix): each step's windows drawn from several prepared folders in proportion to their
weights, deterministically; the position in each source is checkpoint state (a resume continues bitwise, on any
number of processes); every source evaluated; the mixtures no run can use refused in one line."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import train
from checkpoint import load_checkpoint
from conftest import REPO, make_dataset
from dataloader import TrainLoader, load_meta, mix_sources, write_meta
from test_train import TINY, records

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny models


@pytest.fixture(scope='module')
def two_sources(tmp_path_factory, tiny_data):
    """A second folder of the same tokenizer (other documents) and one of another tokenizer."""
    folder = tmp_path_factory.mktemp('mix')
    general = make_dataset(folder / 'general', spec=load_meta(tiny_data)['tokenizer'], seed=3, n_docs=120)
    return tiny_data, general, make_dataset(folder / 'other', vocab_size=300, seed=4)


def short_val_folder(path, spec):
    """A prepared folder whose val.bin holds 20 tokens: shorter than one window of 32."""
    folder = make_dataset(path, spec=spec, n_docs=40)
    val = np.fromfile(folder / 'val.bin', dtype=load_meta(folder)['dtype'])[:20]
    val.tofile(folder / 'val.bin')
    old = pickle.load(open(folder / 'meta.pkl', 'rb'))  # the token files changed: meta.pkl again, as prepare.py would
    write_meta(str(folder), spec,
               **{k: old[k]
                  for k in ('train_tokens', 'train_docs', 'train_bytes', 'val_docs', 'val_bytes')}, val_tokens=20)
    return folder


def run_mix(out, mix, *args):
    train.main(train.options([f'--data_mix={mix}', f'--out_dir={out}', *TINY, *args]))


def test_a_mixture_draws_each_source_in_proportion_exactly_and_deals_it_alike_on_any_number_of_ranks():
    chosen, credit = mix_sources([3, 1], [0, 0], 80)
    assert np.bincount(chosen).tolist() == [60, 20]  # 3:1 over any 4 windows, so exactly over 80
    assert all(abs(np.count_nonzero(chosen[:n] == 1) - n / 4) < 1 for n in range(1, 81))  # within a window at any point
    again, _ = mix_sources([3, 1], credit, 8)  # from the credit a checkpoint keeps: the same sequence goes on
    assert again.tolist() == mix_sources([3, 1], [0, 0], 88)[0][80:].tolist()
    big, small = np.arange(10_000, dtype=np.uint16), np.arange(50_000, 50_300, dtype=np.uint16)  # small repeats
    one = TrainLoader([big, small], 10, 4, 2, seed=1, weights=[3, 1])
    two = [TrainLoader([big, small], 10, 4, 2, seed=1, rank=r, world=2, weights=[3, 1]) for r in (0, 1)]
    for step in range(20):
        whole = [x for x, _ in one.read_step()]
        split = [[x for x, _ in loader.read_step()] for loader in two]
        assert [b.tolist() for b in whole] == [b.tolist() for b in (split[0][0], split[1][0])]
        for loader in (one, *two):
            loader.advance()
    assert one.drawn == [120, 40] and one.windows_seen == 160 and one.epochs()[1] == pytest.approx(
        40 / 29)  # 29 windows
    from_small = [x for x in np.concatenate([b for b, _ in one.read_step()]).tolist() if x[0] >= 50_000]
    assert len(from_small) == 2  # 8 windows a step, a quarter of them from the small source
    resumed = TrainLoader([big, small], 10, 4, 2, seed=1, rank=1, world=2, weights=[3, 1])
    resumed.load_state_dict(one.state_dict())  # one process's position, continued by rank 1 of 2
    assert resumed.read_step()[0][0].tolist() == one.read_step()[1][0].tolist()


def test_a_mixture_trains_evaluates_every_source_and_resumes_bitwise(two_sources, tmp_path, capsys):
    pubmed, general, _ = two_sources
    mix = f'{pubmed}:0.75,{general}:0.25'
    args = ['--eval_interval=4', '--max_iters=8', '--lr_decay_iters=8', '--dropout=0.1']
    run_mix(tmp_path / 'straight', mix, *args)
    printed = capsys.readouterr().out
    assert f"epochs: {pubmed.name} " in printed and f', {general.name} ' in printed
    evals = records(tmp_path / 'straight', 'eval')
    for r in evals:  # the followed (first) source as the main figures, every source under its folder's name
        assert r['val_loss'] == r[f'val_loss/{pubmed.name}'] and r[f'val_bpb/{general.name}'] > 0
    assert evals[-1][f'val_bpb/{general.name}'] < evals[0][f'val_bpb/{general.name}']
    ckpt = load_checkpoint(tmp_path / 'straight' / 'ckpt.pt')
    assert sum(ckpt['loader']['drawn']) == 8 * 8 and ckpt['loader']['drawn'] == [48, 16]
    assert [m['name'] for m in ckpt['data']['mix']] == [pubmed.name, general.name]
    assert ckpt['first_eval']['iter'] == 0 and set(ckpt['last_eval']['sources']) == {pubmed.name, general.name}

    run_mix(tmp_path / 'resumed', mix, *args[:-2], '--max_iters=4', '--lr_decay_iters=8', '--dropout=0.1')
    run_mix(tmp_path / 'resumed', mix, *args, '--init_from=resume')
    straight, resumed = records(tmp_path / 'straight', 'train'), records(tmp_path / 'resumed', 'train')
    assert [r['loss'] for r in resumed] == [r['loss'] for r in straight]
    assert records(
        tmp_path / 'resumed',
        'eval')[-1] == {**evals[-1], 'train_seconds': records(tmp_path / 'resumed', 'eval')[-1]['train_seconds']}
    assert load_checkpoint(tmp_path / 'resumed' / 'ckpt.pt')['first_eval'] == ckpt['first_eval']


def test_a_source_of_weight_0_is_evaluated_and_never_trained_on_and_best_follows_the_source_named(
        two_sources, tmp_path):
    pubmed, general, _ = two_sources
    run_mix(tmp_path / 'out', f'{pubmed}:1,{general}:0', '--max_iters=3', '--eval_interval=0',
            f'--best_source={general.name}')
    evals = records(tmp_path / 'out', 'eval')
    assert evals[-1]['val_loss'] == evals[-1][f'val_loss/{general.name}'] != evals[-1][f'val_loss/{pubmed.name}']
    assert 'drawn' not in load_checkpoint(tmp_path / 'out' / 'ckpt.pt')['loader']  # one source trained: as alone
    assert all(f'epochs/{general.name}' not in r for r in records(tmp_path / 'out', 'train'))


@pytest.mark.slow
def test_a_mixture_on_two_processes_resumes_on_one(two_sources, tmp_path):
    pubmed, general, _ = two_sources
    mix = f'--data_mix={pubmed}:0.75,{general}:0.25'
    args = [mix, *TINY, '--eval_interval=0', '--lr_decay_iters=6', '--gradient_accumulation_steps=2']
    train.main(train.options([*args, '--max_iters=6', f'--out_dir={tmp_path / "one"}']))
    r = subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py', *args,
        '--max_iters=3', f'--out_dir={tmp_path / "two"}'
    ], cwd=REPO, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-4000:]
    train.main(train.options([*args, '--max_iters=6', f'--out_dir={tmp_path / "two"}', '--init_from=resume']))
    one, two = records(tmp_path / 'one', 'train'), records(tmp_path / 'two', 'train')
    assert [r['iter'] for r in two] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(one, two):
        assert b['loss'] == pytest.approx(a['loss'], rel=1e-5)
    assert load_checkpoint(tmp_path / 'two' / 'ckpt.pt')['loader']['drawn'] == \
        load_checkpoint(tmp_path / 'one' / 'ckpt.pt')['loader']['drawn']


def test_mixtures_no_run_can_use_are_one_line_and_write_nothing(two_sources, tmp_path, capsys):
    pubmed, general, other = two_sources
    (tmp_path / 'empty').mkdir()
    tiny = short_val_folder(tmp_path / 'tiny', load_meta(pubmed)['tokenizer'])
    cases = {
        f'{pubmed}:0.9,{tmp_path / "nowhere"}:0.1': (2, 'nowhere: no such folder'),
        f'{pubmed}:0.9,{tmp_path / "empty"}:0.1': (2, 'empty: not a prepared data folder (no meta.pkl)'),
        f'{pubmed}:0.9,{pubmed}:0.1': (2, f'{pubmed} is given twice'),
        f'{pubmed}:-0.1,{general}:1': (2, 'has a negative weight (-0.1)'),
        f'{pubmed}:lots,{general}:1': (2, "is not FOLDER:WEIGHT"),
        f'{pubmed},{general}:1': (2, "is not FOLDER:WEIGHT"),
        f'{pubmed}:nan,{general}:1': (2, "is not FOLDER:WEIGHT"),
        f'{pubmed}:0,{general}:0': (2, 'every weight is 0: nothing to train on'),
        f'{pubmed}:0.9,{other}:0.1': (1, "a mixture's sources read one tokenizer"),
        f'{pubmed}:0.9,{tiny}:0.1': (1, 'train.bin and val.bin need more than block_size=32 tokens each'),
    }
    for mix, (code, message) in cases.items():
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            run_mix(tmp_path / 'out', mix, '--max_iters=1')
        err = capsys.readouterr().err
        assert e.value.code == code and err.count('error:') == 1 and message in err, (mix, err)
        assert not (tmp_path / 'out').exists()
    with pytest.raises(SystemExit) as e:
        run_mix(tmp_path / 'out', f'{pubmed}:1', '--max_iters=1', '--best_source=general')
    assert e.value.code == 2 and "best_source='general': not a source of the run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a config's mixture never silently wins over --data_dir
        run_mix(tmp_path / 'out', f'{pubmed}:1', '--max_iters=1', f'--data_dir={general}')
    assert e.value.code == 2 and f'--data_dir={general} is not read when data_mix names' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
    run_mix(tmp_path / 'run', f'{pubmed}:0.75,{general}:0.25', '--max_iters=2', '--eval_interval=0')
    with pytest.raises(SystemExit) as e:  # another mix on resume: another data stream
        run_mix(tmp_path / 'run', f'{pubmed}:0.5,{general}:0.5', '--max_iters=4', '--init_from=resume')
    err = capsys.readouterr().err
    assert e.value.code == 2 and '--data_mix=' in err and '--allow_config_change=True' in err


@pytest.mark.slow
def test_the_card_of_a_mixture_says_its_sources_and_what_each_gained_or_lost(two_sources, tmp_path):
    pubmed, general, _ = two_sources
    run_mix(tmp_path / 'out', f'{pubmed}:0.75,{general}:0.25', '--max_iters=4', '--eval_interval=0')
    r = subprocess.run(
        [sys.executable, 'export_hf.py', f"--ckpt={tmp_path / 'out' / 'ckpt.pt'}", f"--out={tmp_path / 'hf'}"],
        cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    card = (tmp_path / 'hf' / 'README.md').read_text()
    first, last = records(tmp_path / 'out', 'eval')
    assert f'| data mix | {pubmed.name} (75% of the windows, ' in card
    assert f'; {general.name} (25% of the windows' in card
    changes = '; '.join(f"{name} {first[f'val_bpb/{name}']:.4f} -> {last[f'val_bpb/{name}']:.4f}"
                        for name in (pubmed.name, general.name))
    assert f'Held-out bits per byte from step 0 (the model the run started from) to step 4: {changes}.' in card
