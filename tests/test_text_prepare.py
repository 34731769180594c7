"""data/text/prepare.py: every format on real text (../shared/data/general-text), read as an independent reading
expects; the guarantees of data/pubmed/prepare.py (byte-identical on a re-run, after kill -9, with any --workers);
bad input; a dataset streamed up to a token budget; the tokenizer of a PubMed folder."""
import gzip
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, SHARED, error_lines, fill_disk, need, run_prepare
from data.build import read_header
from dataloader import META_KEYS, load_meta
from test_prepare import documents, fixture_input, outputs

GENERAL = SHARED / 'data' / 'general-text'
TEXT_PREPARE = str(REPO / 'data' / 'text' / 'prepare.py')
ARTICLE = r'\n(?= = [^=])'  # WikiText's article titles (' = Title = '; sections are ' = = Section = = ')

# a real kill -9 of prepare.py right after the Nth file is renamed into place in a folder (or after a file by
# name), from its main process or a worker: the workers die with it (build.worker_init)
KILLED_AFTER = """
import os, runpy, signal, sys
rename, main, renamed = os.replace, os.getpid(), [0]
where, count = os.environ['KILL_AFTER'].split(':')
def rename_then_die(src, dst):
    rename(src, dst)
    if where in (os.path.basename(os.path.dirname(dst)), os.path.basename(dst)):
        renamed[0] += 1
        if renamed[0] == int(count):
            os.kill(main, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = rename_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def run_text(*args, env=None, kill_after=None):
    """data/text/prepare.py in its own process, as a user runs it (killed with kill -9 after `kill_after`)."""
    env = {**os.environ, **(env or {}), **({'KILL_AFTER': kill_after} if kill_after else {})}
    wrapper = [sys.executable, '-c', KILLED_AFTER] if kill_after else [sys.executable]
    return subprocess.run([*wrapper, TEXT_PREPARE, *map(str, args)], capture_output=True, text=True, timeout=120,
                          env=env)


def prepare_here(*args):
    """data/text/prepare.py's main in this process (datasets loads once per test session, not once per run)."""
    from data.text.prepare import main
    return main([str(a) for a in args])


def in_val(text, fraction):
    """The documented split rule, written out independently of prepare.py: blake2b-128 of the text's UTF-8."""
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], 'little') < fraction * 2**64


def first_copies(texts):
    return list(dict.fromkeys(texts))


@pytest.fixture(scope='module')
def general():
    """The shared general text as documents: WikiText's articles, Shakespeare's speeches (line ends read as '\\n')."""
    wiki = need(GENERAL / 'wikitext-2-test-part1.raw').read_text(encoding='utf-8')
    speeches = (GENERAL / 'tinyshakespeare.txt').read_text(encoding='utf-8').split('\n\n')
    return {'articles': re.split(ARTICLE, wiki), 'speeches': speeches}


def write_parquet(path, texts, row_group_size=200, field='text'):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({'id': list(range(len(texts))), field: texts}), path, row_group_size=row_group_size)


BAD_LINES = [
    '[1, 2]', '{"id": 3, "title": "no text"}', 'not json {', '{"text": null}', '{"text": " \\n "}',
    '{"text": "half a pair \\ud800"}', ''
]  # not an object, no field, not JSON, not a string, empty, invalid


def mixed_input(tmp_path, general):
    """Every format in one folder, from the shared text: JSON Lines (with a bad line of each kind, a blank line and a
    repeated article), gzipped JSON Lines, Parquet in row groups, plain text one document per file (and a file of
    another format, ignored). Returns (folder, the documents expected in input order, first copies only)."""
    articles, speeches = general['articles'], general['speeches'][:1500]
    folder = tmp_path / 'mixed'
    (folder / 'txt').mkdir(parents=True)
    lines = [json.dumps({'text': a, 'id': i}) for i, a in enumerate(articles[:10])]
    (folder / 'a.jsonl').write_text('\n'.join(lines[:5] + BAD_LINES + lines[5:] + [lines[0]]) + '\n')
    gz = '\n'.join(json.dumps({'text': a}) for a in articles[10:20]) + '\n'
    (folder / 'b.jsonl.gz').write_bytes(gzip.compress(gz.encode(), mtime=0))
    write_parquet(folder / 'c.parquet', speeches)
    for i, article in enumerate(articles[20:]):
        (folder / 'txt' / f'article{i}.txt').write_text(article)  # article10.txt after article9.txt
    (folder / 'notes.md').write_text('not read')
    return folder, first_copies(articles[:20] + speeches + articles[20:])


def shared_text_files(tmp_path):
    """The shared plain-text files themselves, to be cut into articles and speeches."""
    folder = tmp_path / 'shared'
    folder.mkdir()
    for name in ('tinyshakespeare.txt', 'wikitext-2-test-part1.raw'):
        os.symlink(need(GENERAL / name), folder / name)
    return folder


def separated_input(tmp_path):
    """The first 400,000 bytes of Shakespeare in two files, the second gzipped, each to be cut at blank lines."""
    folder, text = tmp_path / 'separated', need(GENERAL / 'tinyshakespeare.txt').read_bytes()[:400_000]
    folder.mkdir()
    (folder / 'part1.txt').write_bytes(text[:200_000])
    (folder / 'part2.txt.gz').write_bytes(gzip.compress(text[200_000:], mtime=0))
    return folder


@pytest.fixture(scope='module')
def mixed(tmp_path_factory, general):
    """The mixed folder prepared once (BPE of 300 tokens, 2 workers): (its args, the run, the documents expected)."""
    tmp = tmp_path_factory.mktemp('mixed')
    folder, expected = mixed_input(tmp, general)
    args = [f'--input={folder}', '--vocab_size=300', '--val_fraction=0.1']
    return args, run_text(*args, f'--out_dir={tmp / "out"}', '--workers=2'), tmp / 'out', expected


# ------------------------------------------------------------------------------------------------
# every format, read as expected


def test_every_format_gives_the_documents_an_independent_reading_expects(mixed):
    args, r, out, expected = mixed
    assert r.returncode == 0, r.stderr
    assert documents(out, 'train') == [d for d in expected if not in_val(d, 0.1)]
    assert documents(out, 'val') == [d for d in expected if in_val(d, 0.1)]
    meta = load_meta(out)
    assert sorted(meta) == sorted(META_KEYS)  # the data contract: the keys of data/pubmed/prepare.py's folders
    assert [f['name']
            for f in meta['files']] == ['a.jsonl', 'b.jsonl.gz', 'c.parquet'] + [f'article{i}.txt' for i in range(11)]
    assert meta['source'] == 'local files (1 .jsonl, 1 .jsonl.gz, 1 .parquet, 11 .txt)'
    assert meta['split'] == {'rule': 'a hash of the text', 'val_fraction': 0.1}
    reasons = {r: 1 for r in ('not_json', 'not_an_object', 'no_text_field', 'not_a_string', 'invalid_unicode', 'empty')}
    read = 17 + 10 + 1500 + 11  # a.jsonl's lines but the blank one, b's, c's rows, the .txt files
    # duplicates: the repeated article, the speeches said twice
    assert meta['records'] == {'records': read, **reasons, 'duplicates': read - 6 - len(expected)}
    assert meta['train_docs'] + meta['val_docs'] == len(expected)
    assert f'records: {read:,} seen, {len(expected):,} kept; dropped: 1 not JSON' in r.stdout
    assert ('note: a.jsonl: 6 of 17 lines left out (1 not JSON, 1 not an object, 1 without the text field, 1 not a '
            'string, 1 invalid Unicode, 1 empty); the first: line 6, not an object') in r.stderr


def test_plain_text_is_cut_at_a_literal_separator_or_a_pattern_as_re_split_cuts_it(tmp_path, monkeypatch, general):
    """Read a block at a time (here 1,000 characters, to cross many blocks), cut where re.split cuts the whole text;
    --separator's escapes are read, so '\\n\\n' is a blank line."""
    from data.text import formats
    from data.text.prepare import unescape
    monkeypatch.setattr(formats, 'BLOCK', 1000)
    monkeypatch.setattr(formats, 'LOOKAHEAD', 100)
    assert unescape(r'\n\n') == '\n\n' and unescape(r'a\tb\\n\r') == 'a\tb\\n\r'
    for name, pattern in (('tinyshakespeare.txt', re.escape(unescape(r'\n\n'))), ('tinyshakespeare.txt', r'\n\s*\n'),
                          ('wikitext-2-test-part1.raw', ARTICLE), ('wikitext-2-test-part1.raw', r' @-@ ')):
        path = need(GENERAL / name)
        pieces = [text for _, text, _ in formats.text_documents(path, pattern)]
        assert pieces == re.split(pattern, path.read_text(encoding='utf-8')), (name, pattern)
    assert len(list(formats.text_documents(GENERAL / 'wikitext-2-test-part1.raw', ARTICLE))) == 31
    out = tmp_path / 'out'
    r = run_text(f'--input={shared_text_files(tmp_path)}', f'--out_dir={out}', f'--separator_regex={ARTICLE}|\\n\\n',
                 '--vocab_size=300', '--val_fraction=0.1')
    assert r.returncode == 0, r.stderr
    expected = first_copies(general['speeches'] + general['articles'])
    assert documents(out, 'train') + documents(out, 'val') == [d for d in expected if not in_val(d, 0.1)
                                                               ] + [d for d in expected if in_val(d, 0.1)]


# ------------------------------------------------------------------------------------------------
# determinism, resumability


@pytest.mark.parametrize('kind', ['mixed', 'separated'])
def test_a_rerun_a_kill_9_and_one_or_two_workers_give_byte_identical_folders(tmp_path, mixed, kind):
    """Two workers, killed (kill -9) after a file's record cache (written by a worker), after a file's tokens, then
    after val.bin (train.bin in its temp file, meta.pkl to come), then run to the end; again (all cached); one
    worker in a new folder (these two runs in this process: no kill to survive)."""
    if kind == 'mixed':
        args, _, reference, _ = mixed
    else:
        args = [f'--input={separated_input(tmp_path)}', r'--separator=\n\n', '--vocab_size=300', '--val_fraction=0.1']
        reference = tmp_path / 'reference'
        assert run_text(*args, f'--out_dir={reference}', '--workers=2').returncode == 0
    expected, out = outputs(reference), tmp_path / 'out'
    for kill_after in ('parsed:1', 'tokens:1', 'val.bin:1'):
        killed = run_text(*args, f'--out_dir={out}', '--workers=2', kill_after=kill_after)
        assert killed.returncode == -signal.SIGKILL, (kill_after, killed.stderr)
        for name in ('train.bin', 'val.bin', 'meta.pkl'):  # never half-written under the final name
            assert not (out / name).exists() or (out / name).read_bytes() == expected[name]
    r = run_text(*args, f'--out_dir={out}', '--workers=2')
    assert r.returncode == 0 and 'removed 1 temp file(s) left by a killed run' in r.stderr, r.stderr
    assert outputs(out) == expected
    for folder in (out, tmp_path / 'one'):
        assert prepare_here(*args, f'--out_dir={folder}', '--workers=1') == 0
        assert outputs(folder) == expected


# ------------------------------------------------------------------------------------------------
# bad input


def test_a_parquet_file_without_the_text_column_is_one_line_naming_its_columns(tmp_path, general):
    folder, out = tmp_path / 'in', tmp_path / 'out'
    folder.mkdir()
    write_parquet(folder / 'good.parquet', general['articles'][:5])
    write_parquet(folder / 'other.parquet', general['articles'][5:], field='content')
    r = run_text(f'--input={folder}', f'--out_dir={out}')
    assert r.returncode == 2 and error_lines(r.stderr) == [
        f"error: {folder / 'other.parquet'}: no column 'text' (its columns: id, content); set --text_field"
    ] and not out.exists()
    r = run_text(f'--input={folder}', f'--out_dir={out}', '--text_field=id')
    assert r.returncode == 2 and f"{folder / 'good.parquet'}: column 'id' holds int64, not text" in r.stderr


def test_an_unreadable_file_is_left_out_and_reported_exit_1_unless_allowed(tmp_path, general):
    folder, out = tmp_path / 'in', tmp_path / 'out'
    folder.mkdir()
    lines = '\n'.join(json.dumps({'text': a}) for a in general['articles']).encode()
    (folder / 'good.jsonl.gz').write_bytes(gzip.compress(lines, mtime=0))
    (folder / 'truncated.jsonl.gz').write_bytes(gzip.compress(lines, mtime=0)[:20_000])
    (folder / 'latin1.txt').write_bytes('caf\xe9'.encode('latin-1'))
    args = [f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.2']
    r = run_text(*args)
    assert r.returncode == 1 and 'allow_bad_files' in r.stderr, r.stderr
    assert f"error: {folder / 'truncated.jsonl.gz'}: corrupt or unreadable, left out: truncated gzip" in r.stderr
    assert f"error: {folder / 'latin1.txt'}: corrupt or unreadable, left out: not UTF-8 text" in r.stderr
    meta = load_meta(out)
    assert [f['name'] for f in meta['files']] == ['good.jsonl.gz']
    assert [b['name'] for b in meta['bad_files']] == ['latin1.txt', 'truncated.jsonl.gz']
    assert 'files: 3 given, 1 prepared, 2 bad' in r.stdout and meta['train_docs'] + meta['val_docs'] == 31
    assert prepare_here(*args, '--allow_bad_files=True', '--workers=1') == 0


def test_lines_without_the_text_field_name_the_fields_they_have(tmp_path, general):
    folder, out = tmp_path / 'in', tmp_path / 'out'
    folder.mkdir()
    (folder / 'docs.jsonl').write_text(''.join(json.dumps({'content': a, 'id': 1}) + '\n' for a in general['articles']))
    r = run_text(f'--input={folder}', f'--out_dir={out}')
    assert r.returncode == 1 and error_lines(r.stderr) == [
        'error: no documents to keep: 31 records read, none a document: 31 without the text field (is '
        '--text_field=text the right field?); nothing written'
    ]
    assert 'note: docs.jsonl: 31 of 31 lines left out (31 without the text field); the first: line 1, without the ' \
        'text field (its fields: content, id)' in r.stderr
    assert prepare_here(f'--input={folder}', f'--out_dir={out}', '--text_field=content', '--vocab_size=300',
                        '--val_fraction=0.2', '--workers=1') == 0


@pytest.mark.parametrize('args, message', [
    ([], 'give --input=FILES_OR_FOLDER or --hf_dataset=NAME'),
    (['--input=IN', '--hf_dataset=x/y'], '--input and --hf_dataset: give one of them'),
    (['--input=IN', '--max_tokens=1000'], '--max_tokens does not apply to --input'),
    (['--hf_dataset=x/y', '--max_tokens=10', '--separator=x'], '--separator does not apply to --hf_dataset'),
    (['--hf_dataset=x/y'], '--hf_dataset=x/y: give a budget, e.g. --max_tokens=100_000_000'),
    (['--input=IN', '--separator=a', '--separator_regex=b'], '--separator and --separator_regex: give one of them'),
    (['--input=IN', r'--separator=\d'], r'\d is no escape here'),
    (['--input=IN', r'--separator=\r\n'], 'holds \\r, but plain-text files are read with their line ends as \\n'),
    (['--input=IN', '--separator_regex=('], 'not a regular expression'),
    (['--input=IN', r'--separator_regex=\s*'], 'matches the empty text'),
    (['--input=IN/a.jsonl', r'--separator=\n\n'], 'cuts plain-text files, and --input=IN/a.jsonl has none'),
    (['--input=IN/notes.md'], '--input=IN/notes.md: not a .jsonl, .jsonl.gz, .parquet, .txt, .txt.gz, .raw file'),
    (['--input=IN/none*'], 'no .jsonl, .jsonl.gz, .parquet, .txt, .txt.gz, .raw files there'),
    (['--input=IN', '--text_field='], '--text_field=\'\': is empty'),
    (['--input=IN', '--max_files=-1'], '--max_files=-1: must be 0 or more'),
    (['--input=IN', '--tokenizer=nowhere'], 'expected bpe, gpt2, or the path of'),
])
def test_an_option_no_run_can_use_exits_2_before_any_work(tmp_path, capsys, args, message):
    """Checked as the command checks them (its parse_options, here in this process: one run of the command below)."""
    from data.text.prepare import parse_options
    folder, out = tmp_path / 'in', tmp_path / 'out'
    folder.mkdir()
    (folder / 'a.jsonl').write_text('{"text": "a"}\n')
    (folder / 'b.txt').write_text('b')
    (folder / 'notes.md').write_text('c')
    with pytest.raises(SystemExit) as exit:
        parse_options([a.replace('IN', str(folder)) for a in args] + ([f'--out_dir={out}'] if args else []))
    err = capsys.readouterr().err
    assert exit.value.code == 2 and message.replace('IN', str(folder)) in err, err
    assert len(error_lines(err)) == 1 and not out.exists()


def test_the_command_exits_2_on_an_option_error_with_one_line(tmp_path):
    (tmp_path / 'a.txt').write_text('a')
    r = run_text(f'--input={tmp_path}', f'--out_dir={tmp_path / "out"}', '--separator_regex=(')
    assert r.returncode == 2 and len(error_lines(r.stderr)) == 1 and 'not a regular expression' in r.stderr
    assert not (tmp_path / 'out').exists()


def test_an_hf_dataset_name_without_network_says_so_at_once(tmp_path):
    for env, says in (({'HF_HUB_OFFLINE': '1'}, 'HF_HUB_OFFLINE is set'), ({'HF_DATASETS_OFFLINE': '1'},
                                                                           'HF_DATASETS_OFFLINE is set'),
                      ({'HF_ENDPOINT': 'http://hub.invalid'}, 'cannot reach the Hugging Face hub')):
        start = time.time()
        r = run_text('--hf_dataset=HuggingFaceFW/fineweb-edu', '--max_tokens=1000000', f'--out_dir={tmp_path / "out"}',
                     env={'HF_HUB_OFFLINE': '', 'HF_DATASETS_OFFLINE': '', **env})
        assert r.returncode == 1 and len(error_lines(r.stderr)) == 1 and says in r.stderr, r.stderr
        assert 'streaming needs the network' in r.stderr or 'needs the network' in r.stderr
        assert time.time() - start < 20 and not (tmp_path / 'out').exists()


# ------------------------------------------------------------------------------------------------
# a dataset streamed up to a budget (datasets' streaming=True, from a local dataset folder: the same code path as a
# hub dataset's once the hub has named the commit)


def stream_expected(texts, spec, budget):
    """The documents a budget keeps, counted independently: in stream order, each its tokens + 1, up to and with the
    one that reaches the budget."""
    from tokenizer import encoding_from_spec
    enc, spent = encoding_from_spec(spec), 0
    for n, text in enumerate(texts, 1):
        spent += len(enc.encode_ordinary(text)) + 1
        if spent >= budget:
            return texts[:n]
    return texts


def test_a_streamed_dataset_stops_at_its_budget_and_resumes_after_kill_9_without_rereading(
        tmp_path, monkeypatch, capsys, mixed, general):
    """Parts of 100 documents from a folder of three Parquet shards: a run killed after its third part goes on from
    there (its stream resumed, not read again) to the folder of an uninterrupted run; a smaller budget in the same
    folder gives what a fresh run gives."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    folder = tmp_path / 'dataset'
    folder.mkdir()
    speeches = general['speeches'][:1800]
    for shard in range(3):
        write_parquet(folder / f'train-{shard:05d}-of-00003.parquet', speeches[shard * 600:(shard + 1) * 600])
    tokenizer = mixed[2]  # the BPE of the mixed folder, read from its meta.pkl
    spec = load_meta(tokenizer)['tokenizer']
    args = [
        f'--hf_dataset={folder}', f'--tokenizer={tokenizer}', '--part_docs=100', '--val_fraction=0.1', '--workers=1'
    ]
    reference, out = tmp_path / 'reference', tmp_path / 'out'
    assert prepare_here(*args, '--max_tokens=60000', f'--out_dir={reference}') == 0
    streamed = stream_expected(speeches, spec, 60000)
    kept = first_copies(streamed)
    assert documents(reference, 'train') + documents(reference, 'val') == [d for d in kept if not in_val(d, 0.1)
                                                                           ] + [d for d in kept if in_val(d, 0.1)]
    meta = load_meta(reference)
    assert meta['source'] == f'hf:{folder}/train' and meta['files'] == []
    assert meta['records']['records'] == len(streamed) and meta['records']['duplicates'] == len(streamed) - len(kept)
    killed = run_text(*args, '--max_tokens=60000', f'--out_dir={out}', kill_after='parsed:3')
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list((out / 'cache' / 'parsed').glob('stream.*.pkl'))) == 3
    capsys.readouterr()
    assert prepare_here(*args, '--max_tokens=60000', f'--out_dir={out}') == 0
    assert '3 part(s) cached: the stream goes on from document 301' in capsys.readouterr().err
    assert outputs(out) == outputs(reference)
    assert prepare_here(*args, '--max_tokens=20000', f'--out_dir={out}') == 0  # its stop inside a cached part
    assert prepare_here(*args, '--max_tokens=20000', f'--out_dir={tmp_path / "fresh"}') == 0
    assert outputs(out) == outputs(tmp_path / 'fresh')


def test_a_stream_that_breaks_off_is_one_line_and_keeps_its_whole_parts(tmp_path, monkeypatch, capsys, general):
    """The second of three shards cut short (as a dropped connection leaves a download): the parts read before it
    stay, the error names the part and the cause."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    folder, out = tmp_path / 'dataset', tmp_path / 'out'
    folder.mkdir()
    for shard in range(3):
        write_parquet(folder / f'train-{shard}.parquet', general['speeches'][shard * 300:(shard + 1) * 300])
    (folder / 'train-1.parquet').write_bytes((folder / 'train-1.parquet').read_bytes()[:3000])
    with pytest.raises(SystemExit) as exit:
        prepare_here(f'--hf_dataset={folder}', f'--out_dir={out}', '--part_docs=100', '--workers=1')
    errors = error_lines(capsys.readouterr().err)
    assert exit.value.code == 1 and len(errors) == 1 and errors[0].startswith(
        f'error: --hf_dataset={folder}: the stream broke off in part 3 (documents from 301): ArrowInvalid'), errors
    assert errors[0].endswith('the 3 part(s) before it are kept: run the same command again to go on from there')
    assert len(list((out / 'cache' / 'parsed').glob('stream.*.pkl'))) == 3 and not (out / 'train.bin').exists()


def test_a_full_disk_while_streaming_is_one_line_and_keeps_the_whole_parts(tmp_path, monkeypatch, capsys, tmpfs,
                                                                           general):
    """The stream's parts are this preparer's own writes (files go through build.parse_all): a disk that fills up
    while one is written is one line naming it, no temp file is left, the parts before stay whole, and the same
    command finishes once there is room, as a run that never stopped."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    folder = tmp_path / 'dataset'
    folder.mkdir()
    write_parquet(folder / 'train.parquet', general['speeches'][:600])
    out = tmpfs(tmp_path / 'disk') / 'out'
    out.mkdir()
    args = [f'--hf_dataset={folder}', '--part_docs=100', '--workers=1', '--val_fraction=0.2', '--vocab_size=300']
    filler = fill_disk(out.parent, leave=60_000)
    with pytest.raises(SystemExit) as exit:
        prepare_here(*args, f'--out_dir={out}')
    err = capsys.readouterr().err
    errors = error_lines(err)
    assert exit.value.code == 1 and len(errors) == 1, err
    assert errors[0].startswith(f'error: {out}/cache/parsed: the disk is full (No space left on device; ')
    assert errors[0].endswith('then run the same command again (what is done is cached); the files already there are '
                              'unchanged')
    assert not list(out.rglob('*.tmp'))
    parts = sorted((out / 'cache' / 'parsed').glob('stream.*.pkl'))
    assert 0 < len(parts) < 6 and all(len(read_header(p)['split_hash']) == 100 for p in parts)
    filler.unlink()
    assert prepare_here(*args, f'--out_dir={out}') == 0
    assert prepare_here(*args, f'--out_dir={tmp_path / "uninterrupted"}') == 0
    assert outputs(out) == outputs(tmp_path / 'uninterrupted')


# ------------------------------------------------------------------------------------------------
# a mixture's sources share one tokenizer


def test_the_tokenizer_of_a_pubmed_folder_gives_general_text_the_same_spec(tmp_path, general):
    pubmed, out = tmp_path / 'pubmed', tmp_path / 'general'
    r = run_prepare(f'--input={fixture_input(tmp_path)}', f'--out_dir={pubmed}', '--vocab_size=300',
                    '--val_fraction=0.5', '--exclude_pmids=')
    assert r.returncode == 0, r.stderr
    folder = tmp_path / 'general-in'
    folder.mkdir()
    (folder / 'articles.jsonl').write_text(''.join(json.dumps({'text': a}) + '\n' for a in general['articles']))
    r = run_text(f'--input={folder}', f'--out_dir={out}', f'--tokenizer={pubmed}', '--val_fraction=0.2')
    assert r.returncode == 0, r.stderr
    ours, theirs = load_meta(out), load_meta(pubmed)
    assert pickle.dumps(ours['tokenizer']) == pickle.dumps(theirs['tokenizer'])
    assert (ours['vocab_size'], ours['dtype'], ours['eot_token'],
            ours['token_bytes']) == (theirs['vocab_size'], theirs['dtype'], theirs['eot_token'], theirs['token_bytes'])
    assert theirs['source'] == 'PubMed XML (local files)' and sorted(theirs) == sorted(ours)
    assert np.fromfile(out / 'val.bin', dtype=ours['dtype']).max() < 300
    shutil.rmtree(pubmed / 'cache')
