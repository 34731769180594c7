"""data/pubmed/prepare.py: parsing rules on hand-written fixtures, the real samples, outputs, determinism."""
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from conftest import (FIXTURES, PREPARE, PUBMED_CORPUS, PUBMED_XML, REPO, SHARED, error_lines, fill_disk, need,
                      run_prepare)
from data.pubmed.parse import parse_file
from dataloader import META_KEYS, load_meta
from tokenizer import encoding_from_spec

# every document the fixtures pubmed99n0001-0003 must produce, in output order
EXPECTED = {
    101: 'A plain title.\nA plain abstract spread over lines with odd spacing.',
    102: 'Structured abstract.\nBACKGROUND: Why we did it.\nMETHODS: How we did it.\nRESULTS AND CONCLUSIONS: It '
    'worked.',
    103: 'Xylan Activity of the Thermophilic Fungus Malbranchea cinnamomea by Functional Characterization.\n'
    'Levels of H2O2 and Ca2+ rose in all E. coli strains (n = 3).',
    104: 'Oxygen uptake V.O2 in runners.\nMaximal uptake ( V.O2 max) was measured.',
    107: 'Upper-case language code.\nLanguage ENG is English.',
    108: 'Two languages.\nPublished in German and English.',
    110: 'New version.\nThe last file wins.',
    113: 'Added by the update.\nA citation only in the update file.',
    120: 'Old MedlineCitationSet format with a byte order mark.\nStill parsed & kept; café <ok>.',
}


def in_val(pmid, fraction):
    """The documented split rule, written out independently of prepare.py."""
    digest = hashlib.blake2b(str(pmid).encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], 'little') < fraction * 2**64


def fixture_input(tmp_path, names=('pubmed99n0001.xml', 'pubmed99n0002.xml', 'pubmed99n0003.xml'),
                  gz=('pubmed99n0002.xml', )):
    """Fixtures copied to a folder; those in `gz` gzipped, to cover both kinds of file."""
    folder = tmp_path / 'in'
    folder.mkdir(exist_ok=True)
    for name in names:
        data = (FIXTURES / name).read_bytes()
        if name in gz:
            (folder / (name + '.gz')).write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)
    return folder


def documents(out, split):
    meta = load_meta(out)
    enc = encoding_from_spec(meta['tokenizer'])
    ids = np.fromfile(out / f'{split}.bin', dtype=meta['dtype'])
    assert len(ids) == meta[f'{split}_tokens'] and ids[-1] == meta['eot_token']
    cuts = np.flatnonzero(ids == meta['eot_token'])
    return [enc.decode(ids[a + 1 if i else 0:b].tolist()) for i, (a, b) in enumerate(zip(np.r_[-1, cuts[:-1]], cuts))]


def outputs(out):
    return {name: (out / name).read_bytes() for name in ('train.bin', 'val.bin', 'meta.pkl', 'meta.json')}


# ------------------------------------------------------------------------------------------------
# parsing rules, one fixture record each


def test_parse_rules_on_fixture_records():
    records, deletes, counts = parse_file(FIXTURES / 'pubmed99n0001.xml', with_meta=True)
    by_pmid = {r['pmid']: r for r in records}
    assert [r['pmid'] for r in records] == [101, 102, 103, 104, 105, 106, 107, 108, 110, 111, 112, 112]
    assert counts == {'book': 1, 'no_pmid': 0} and deletes == []
    for pmid in (101, 102, 103, 104, 107, 108):  # labels, markup spacing, MathML, whitespace
        assert f"{by_pmid[pmid]['title']}\n{by_pmid[pmid]['abstract']}" == EXPECTED[pmid]
    assert 'Copyright' not in by_pmid[102]['abstract'] and 'francais' not in by_pmid[102]['abstract']
    assert by_pmid[105]['abstract'] == ''
    assert by_pmid[106]['language'] == ['fre'] and by_pmid[108]['language'] == ['ger', 'eng']
    assert by_pmid[101]['authors'] == ['Jane Doe', 'The Fixture Consortium']
    assert by_pmid[101]['affiliations'] == ['Dept of Tests, Example University.']
    assert (by_pmid[101]['journal'], by_pmid[101]['publication_date']) == ('Journal of Plain Tests', '2020-Jan-05')


def test_parse_old_format_with_bom_and_deletes():
    assert (FIXTURES / 'pubmed99n0003.xml').read_bytes()[:3] == b'\xef\xbb\xbf'
    records, deletes, _ = parse_file(FIXTURES / 'pubmed99n0003.xml')
    assert [(r['pmid'], r['title'] + '\n' + r['abstract']) for r in records] == [(120, EXPECTED[120])]
    assert deletes == [112]
    _, deletes, _ = parse_file(FIXTURES / 'pubmed99n0002.xml')
    assert deletes == [111, 999999]


def test_parse_rejects_malformed_xml():
    with pytest.raises(Exception, match='Opening and ending tag mismatch'):
        parse_file(FIXTURES / 'pubmed99n0004.xml')


def test_parse_does_not_expand_entities_or_load_dtds(tmp_path):
    secret = tmp_path / 'secret.txt'
    secret.write_text('TOP SECRET')
    evil = tmp_path / 'evil.xml'
    evil.write_text(f'<?xml version="1.0"?><!DOCTYPE PubmedArticleSet [<!ENTITY x SYSTEM "file://{secret}">]>'
                    '<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>1</PMID><Article>'
                    '<ArticleTitle>T &x;</ArticleTitle><Abstract><AbstractText>A</AbstractText></Abstract>'
                    '</Article></MedlineCitation></PubmedArticle></PubmedArticleSet>')
    records, _, _ = parse_file(evil)
    assert 'SECRET' not in records[0]['title']


def test_real_samples_all_parse_except_the_truncated_one():
    folder = need(PUBMED_XML)
    paths = sorted(p for p in folder.rglob('*') if p.name.endswith(('.xml', '.xml.gz')))
    assert len(paths) == 23
    failures = []
    for path in paths:
        try:
            records, _, _ = parse_file(path)
            assert records
        except Exception as e:
            failures.append((path.name, type(e).__name__))
    assert failures == [('pubmed23n0001.xml.gz', 'EOFError')]
    titles = [r['title'] for r in parse_file(folder / 'net-synergy__pubmedparser' / 'pubmed21n1005.xml.gz')[0]]
    assert any('Thermophilic Fungus Malbranchea cinnamomea by Functional' in t for t in titles)


# ------------------------------------------------------------------------------------------------
# prepare.py end to end


def test_prepare_fixtures_end_to_end(tmp_path):
    folder, out = fixture_input(tmp_path), tmp_path / 'out'
    r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5', '--workers=2',
                    f'--export_jsonl={tmp_path / "docs.jsonl"}')
    assert r.returncode == 0, r.stderr
    order = list(EXPECTED)  # file order, then record order within a file
    assert documents(out, 'train') == [EXPECTED[p] for p in order if not in_val(p, 0.5)]
    assert documents(out, 'val') == [EXPECTED[p] for p in order if in_val(p, 0.5)]
    meta = load_meta(out)
    assert meta['vocab_size'] == 300 and meta['dtype'] == 'uint16' and meta['eot_token'] == 299
    assert meta['tokenizer']['name'] == 'bpe' and len(meta['token_bytes']) == 300 and meta['token_bytes'][299] == 0
    assert meta['token_bytes'][:256] == [1] * 256
    assert meta['train_docs'] + meta['val_docs'] == 9
    assert [f['name'] for f in meta['files']] == ['pubmed99n0001.xml', 'pubmed99n0002.xml.gz', 'pubmed99n0003.xml']
    assert meta['files'][0]['md5'] == hashlib.md5((FIXTURES / 'pubmed99n0001.xml').read_bytes()).hexdigest()
    assert meta['records'] == {
        'book': 1, 'delete_requests': 3, 'deleted': 2, 'excluded': 0, 'language': 1, 'no_abstract': 1, 'no_pmid': 0,
        'records': 15, 'replaced': 1
    }
    assert sorted(meta) == sorted(META_KEYS)  # the data contract: dataloader.write_meta's keys, no others
    summary = json.loads((out / 'meta.json').read_text())
    assert summary['train_tokens'] == meta['train_tokens'] and summary['tokenizer']['vocab_size'] == 300
    assert '16 seen, 9 kept' in r.stdout and '1 duplicates replaced' in r.stdout and '2 deleted' in r.stdout
    lines = [json.loads(line) for line in (tmp_path / 'docs.jsonl').read_text().splitlines()]
    assert [d['pmid'] for d in lines] == order
    assert lines[-1] == {
        'pmid': 120, 'split': 'val' if in_val(120, 0.5) else 'train',
        'title': 'Old MedlineCitationSet format with a byte order mark.', 'abstract': 'Still parsed & kept; café <ok>.',
        'authors': ['Richard Roe'], 'journal': 'Old format journal', 'publication_date': '1998 Jan-Feb',
        'affiliations': ['Old Institute.'], 'language': ['eng'], 'year': 1998, 'journal_iso': '', 'nlm_id': '',
        'mesh': [], 'publication_types': []
    }


def test_languages_option_is_case_insensitive_and_accepts_all(tmp_path):
    folder = fixture_input(tmp_path)
    for languages, extra in (('ENG,fre', [106]), ('all', [106])):
        out = tmp_path / languages
        r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5',
                        f'--languages={languages}', '--workers=1')
        assert r.returncode == 0, r.stderr
        assert load_meta(out)['train_docs'] + load_meta(out)['val_docs'] == 9 + len(extra)
        assert any(d.startswith('[A French article.]') for d in documents(out, 'train') + documents(out, 'val'))


def test_gpt2_tokenizer(tmp_path, gpt2):
    folder, out = fixture_input(tmp_path), tmp_path / 'out'
    r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--tokenizer=gpt2', '--val_fraction=0.5')
    assert r.returncode == 0, r.stderr
    meta = load_meta(out)
    assert (meta['vocab_size'], meta['eot_token'], meta['dtype']) == (50257, 50256, 'uint16')
    assert documents(out, 'val') == [EXPECTED[p] for p in EXPECTED if in_val(p, 0.5)]


def test_corrupt_file_is_reported_and_left_out(tmp_path):
    folder = fixture_input(tmp_path,
                           names=('pubmed99n0001.xml', 'pubmed99n0002.xml', 'pubmed99n0003.xml', 'pubmed99n0004.xml'),
                           gz=())
    out = tmp_path / 'out'
    r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5')
    assert r.returncode == 1
    assert 'pubmed99n0004.xml' in r.stderr and 'malformed or truncated XML' in r.stderr
    assert 'allow_bad_files' in r.stderr
    meta = load_meta(out)  # the good files are still prepared, nothing of the bad one gets in
    assert [f['name'] for f in meta['files']] == ['pubmed99n0001.xml', 'pubmed99n0002.xml', 'pubmed99n0003.xml']
    assert meta['bad_files'][0]['name'] == 'pubmed99n0004.xml'
    assert 'Good record in a bad file.' not in ' '.join(documents(out, 'train') + documents(out, 'val'))
    r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5',
                    '--allow_bad_files=True')
    assert r.returncode == 0 and 'pubmed99n0004.xml' in r.stderr


def test_real_samples_truncated_gzip_reported_rest_prepared(tmp_path):
    folder, out = need(PUBMED_XML), tmp_path / 'out'
    r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.05')
    assert r.returncode == 1
    assert 'pubmed23n0001.xml.gz' in r.stderr and 'truncated gzip' in r.stderr
    meta = load_meta(out)
    assert len(meta['files']) == 22 and [b['name'] for b in meta['bad_files']] == ['pubmed23n0001.xml.gz']
    assert meta['records']['records'] == 1235 and meta['train_docs'] > 900 and meta['val_docs'] > 0


@pytest.mark.parametrize(
    'args, message',
    [
        (['--vocab_sise=300'], "unknown key 'vocab_sise'"),
        (['--val_fraction=abc'], '--val_fraction=abc'),
        (['--tokenizer=wordpiece'], 'expected bpe, gpt2, or the path of a Hugging Face folder'),
        (['--val_fraction=1.5'], 'between 0 and 1'),
        (['--input=/nonexistent/*.xml'], 'no .xml or .xml.gz files'),
        (['--years=abc'], '--years=abc: expected a range of years'),
        (['--mesh_major=True'], '--mesh_major=True: give the headings with --mesh'),
        (['--keep_pmids=/nonexistent'], '--keep_pmids=/nonexistent: no such file or folder'),
        # options that keep nothing whatever the input, or that would be no filter at all
        (['--years=2020-2000'], '--years=2020-2000: the first year is after the last (did you mean 2000-2020?)'),
        (['--publication_types=Review;Letter', '--drop_publication_types=REVIEW'
          ], '--publication_types and --drop_publication_types both name review: a record cannot be kept and dropped'),
        (['--mesh=;'], '--mesh=;: names nothing'),
    ])
def test_bad_options_exit_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / 'out'
    r = run_prepare(f'--out_dir={out}', '--input=' + str(FIXTURES), *args)
    assert r.returncode == 2 and message in r.stderr
    assert not out.exists()


def test_empty_val_split_is_an_error_with_a_hint(tmp_path):
    folder, out = fixture_input(tmp_path), tmp_path / 'out'
    r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.0001')
    assert r.returncode == 1 and 'val split is empty' in r.stderr and '--val_fraction' in r.stderr
    assert not (out / 'train.bin').exists() and not (out / 'meta.pkl').exists()


# ------------------------------------------------------------------------------------------------
# determinism, resumability, caching


def corpus_input(tmp_path, n=3):
    """The first n pubmed-corpus files (~2,258 records each), linked into a folder."""
    folder = tmp_path / 'corpus'
    folder.mkdir()
    for path in sorted(need(PUBMED_CORPUS).glob('*.xml.gz'))[:n]:
        os.symlink(path, folder / path.name)
    return folder


@pytest.mark.slow
def test_one_and_two_workers_give_identical_bytes(tmp_path):
    folder = corpus_input(tmp_path)
    results = []
    for workers in (1, 2):
        out = tmp_path / f'w{workers}'
        r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=400', f'--workers={workers}')
        assert r.returncode == 0, r.stderr
        results.append(outputs(out))
    assert results[0] == results[1]
    assert load_meta(tmp_path / 'w1')['train_docs'] + load_meta(tmp_path / 'w1')['val_docs'] == 3 * 2258


@pytest.mark.slow
def test_kill_9_then_rerun_gives_identical_outputs(tmp_path):
    folder = corpus_input(tmp_path)
    args = [f'--input={folder}', '--vocab_size=400', '--workers=2']
    reference = tmp_path / 'reference'
    assert run_prepare(*args, f'--out_dir={reference}').returncode == 0
    expected = outputs(reference)
    out = tmp_path / 'out'
    # kill at the start of parsing, after some parsed files, after some tokenized files
    for marker in (None, 'cache/parsed', 'cache/tokens'):
        p = subprocess.Popen([sys.executable, PREPARE, *args, f'--out_dir={out}'], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while marker and time.time() < deadline and p.poll() is None:
            if (out / marker).is_dir() and any((out / marker).glob('*.p*')) | any((out / marker).glob('*.npz')):
                break
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
        p.wait()
        for name in ('train.bin', 'val.bin', 'meta.pkl'):  # never half-written under the final name
            assert not (out / name).exists() or (out / name).read_bytes() == expected[name]
    r = run_prepare(*args, f'--out_dir={out}')
    assert r.returncode == 0, r.stderr
    assert outputs(out) == expected


def test_rerun_and_added_files_reuse_the_cache(tmp_path):
    folder = fixture_input(tmp_path, names=('pubmed99n0001.xml', 'pubmed99n0002.xml'), gz=())
    out = tmp_path / 'out'
    args = [f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5']
    assert run_prepare(*args).returncode == 0
    parsed = {p.name: p.stat().st_mtime_ns for p in (out / 'cache' / 'parsed').iterdir()}
    shutil.copy(FIXTURES / 'pubmed99n0003.xml', folder)
    assert run_prepare(*args).returncode == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / 'cache' / 'parsed').iterdir()}
    assert len(after) == 3 and all(after[name] == mtime for name, mtime in parsed.items())
    assert documents(out, 'train') + documents(out, 'val') != [] and load_meta(out)['records']['deleted'] == 2


# ------------------------------------------------------------------------------------------------
# hostile and clumsy input


def citation(pmid, title='A title.', abstract='An abstract.'):
    return (f'<PubmedArticle><MedlineCitation><PMID Version="1">{pmid}</PMID><Article><ArticleTitle>{title}'
            f'</ArticleTitle><Abstract><AbstractText>{abstract}</AbstractText></Abstract><Language>eng</Language>'
            '</Article></MedlineCitation></PubmedArticle>')


def write_xml(path, *items):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<PubmedArticleSet>' + ''.join(items) + '</PubmedArticleSet>\n',
        encoding='utf-8')
    return path


class Payload:
    """A pickle that, loaded with plain pickle.load, creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.mark.slow
def test_a_pickle_payload_in_meta_pkl_or_a_cache_never_runs(tmp_path):
    import pickle
    folder, out, marker = fixture_input(tmp_path), tmp_path / 'out', tmp_path / 'pwned'
    args = [f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5']
    assert run_prepare(*args).returncode == 0
    expected = outputs(out)
    # a poisoned parse cache (its header, which the merge reads) is refused and rebuilt
    cache = sorted((out / 'cache' / 'parsed').glob('pubmed99n0001.*.pkl'))[0]
    header_at = int.from_bytes(cache.read_bytes()[-8:], 'little')
    cache.write_bytes(cache.read_bytes()[:header_at] + pickle.dumps(Payload(marker)) + header_at.to_bytes(8, 'little'))
    r = run_prepare(*args)
    assert r.returncode == 0 and 'unreadable cache' in r.stderr and 'posix.system, which is not plain data' in r.stderr
    assert outputs(out) == expected and not marker.exists()
    # a poisoned meta.pkl stops train.py with one line
    (out / 'meta.pkl').write_bytes(pickle.dumps({'vocab_size': Payload(marker)}))
    t = subprocess.run(
        [sys.executable, str(REPO / 'train.py'), f'--data_dir={out}', f'--out_dir={tmp_path / "run"}'],
        capture_output=True, text=True, timeout=120)
    assert t.returncode == 1 and t.stderr.count('\n') == 1, t.stderr
    assert 'meta.pkl: not a readable meta.pkl' in t.stderr and 'posix.system' in t.stderr
    assert not marker.exists() and not (tmp_path / 'run').exists()


KILLED_AFTER_RENAME = """
import os, runpy, signal, sys
rename = os.replace
def rename_then_die(src, dst):
    rename(src, dst)
    if os.path.basename(dst) == os.environ['KILL_AFTER']:
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9, right after that output is in place
os.replace = rename_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_token_files_that_meta_pkl_does_not_describe_are_refused(tmp_path):
    folder, out = fixture_input(tmp_path), tmp_path / 'out'
    assert run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=300',
                       '--val_fraction=0.5').returncode == 0
    assert load_meta(out)['token_files']['val.bin']['bytes'] == (out / 'val.bin').stat().st_size
    # a second prepare with another vocabulary, killed between its renames: its val.bin beside the first's train.bin and
    # meta.pkl
    killed = subprocess.run([
        sys.executable, '-c', KILLED_AFTER_RENAME, PREPARE, f'--input={folder}', f'--out_dir={out}', '--vocab_size=320',
        '--val_fraction=0.5'
    ], env={**os.environ, 'KILL_AFTER': 'val.bin'}, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    with pytest.raises(Exception, match=r'val.bin: .*(content|bytes, but meta.pkl records).*prepare the folder again'):
        load_meta(out)
    assert run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=320',
                       '--val_fraction=0.5').returncode == 0
    train = out / 'train.bin'
    train.write_bytes(train.read_bytes()[:-2])  # truncated by one token
    with pytest.raises(Exception, match=r'train.bin: \d+ bytes, but meta.pkl records \d+'):
        load_meta(out)
    train.write_bytes(train.read_bytes()[:-1])  # and now half a token
    with pytest.raises(Exception, match='not a whole number of uint16 tokens'):
        load_meta(out)


def test_stale_temp_files_are_removed_and_a_second_prepare_is_locked_out(tmp_path):
    import fcntl
    folder, out = fixture_input(tmp_path), tmp_path / 'out'
    args = [f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5']
    (out / 'cache' / 'tokens').mkdir(parents=True)
    stale = [out / 'train.bin.4242.tmp', out / 'cache' / 'tokens' / 'x.npz.4242.tmp']
    for path in stale:
        path.write_bytes(b'left by a killed run')
    with open(out / '.prepare.lock', 'a+') as lock:  # another prepare.py holds out_dir
        lock.write('4242')
        lock.flush()
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = subprocess.run([sys.executable, PREPARE, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and r.stderr.count('\n') == 1
        assert f'another prepare.py (pid 4242) is writing to {out}' in r.stderr
        assert all(p.exists() for p in stale) and not (out / 'train.bin').exists()
    r = run_prepare(*args)
    assert r.returncode == 0 and 'removed 2 temp file(s) left by a killed run' in r.stderr
    assert not any(p.exists() for p in stale)


def test_the_bpe_says_when_it_is_smaller_than_asked_and_refuses_to_learn_nothing(tmp_path):
    folder = fixture_input(tmp_path)
    r = run_prepare(f'--input={folder}', f'--out_dir={tmp_path / "big"}', '--vocab_size=70000', '--val_fraction=0.5')
    meta = load_meta(tmp_path / 'big')
    assert r.returncode == 0 and 300 < meta['vocab_size'] < 70000
    assert f"the BPE has {meta['vocab_size']:,} tokens, fewer than --vocab_size=70,000" in r.stderr
    assert json.loads((tmp_path / 'big' / 'meta.json').read_text())['vocab_size'] == meta['vocab_size']
    r = run_prepare(f'--input={folder}', f'--out_dir={tmp_path / "tiny"}', '--bpe_train_chars=1', '--val_fraction=0.5')
    assert r.returncode == 1 and 'too small to learn any merge' in r.stderr.splitlines()[-1]
    assert not (tmp_path / 'tiny' / 'train.bin').exists() and not (tmp_path / 'tiny' / 'meta.pkl').exists()


def test_a_ten_digit_pmid_costs_no_memory_and_non_ascii_digits_are_no_pmid(tmp_path):
    folder = tmp_path / 'in'
    write_xml(folder / 'pubmed99n0001.xml', *(citation(p, abstract=f'Record {p}.') for p in range(1, 41)),
              citation('²', abstract='Superscript two.'), citation('١٠١', abstract='Arabic-Indic 101.'))
    write_xml(folder / 'pubmed99n0002.xml', citation('٣', abstract='Arabic-Indic 3 must not replace record 3.'),
              '<DeleteCitation><PMID Version="1">9999999999</PMID></DeleteCitation>')
    out = tmp_path / 'out'
    # the peak memory of prepare.py itself (VmHWM: of this process image only, not of the forked test runner)
    peak = ("import atexit, runpy, sys; atexit.register(lambda: print([l for l in open('/proc/self/status') "
            "if l.startswith('VmHWM')][0], file=sys.stderr)); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
            "run_name='__main__')")
    r = subprocess.run([
        sys.executable, '-c', peak, PREPARE, f'--input={folder}', f'--out_dir={out}', '--vocab_size=300',
        '--val_fraction=0.5', '--workers=1'
    ], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert int(
        r.stderr.split('VmHWM:')[1].split()[0]) < 1_000_000  # kB: the dense array of before took 10 GB for this PMID
    docs = documents(out, 'train') + documents(out, 'val')
    assert sorted(docs) == sorted(f'A title.\nRecord {p}.' for p in range(1, 41))
    assert load_meta(out)['records']['no_pmid'] == 3 and '3 without a valid PMID' in r.stdout


def test_a_corrupt_parse_cache_is_rebuilt_and_a_symlink_loop_counts_each_file_once(tmp_path):
    folder, out = fixture_input(tmp_path), tmp_path / 'out'
    os.symlink('.', folder / 'loop')  # in/loop/loop/... : the same files again and again
    args = [f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5']
    r = run_prepare(*args)
    assert r.returncode == 0 and 'files: 3 given, 3 prepared, 0 bad' in r.stdout
    expected = outputs(out)
    cache = sorted((out / 'cache' / 'parsed').glob('pubmed99n0002.*.pkl'))[0]
    cache.write_bytes(cache.read_bytes()[:100])  # truncated: its header is gone
    r = run_prepare(*args)
    assert r.returncode == 0 and f'{cache}: unreadable cache' in r.stderr and 'rebuilding it' in r.stderr
    assert 'left out' not in r.stderr and outputs(out) == expected
    shard = sorted((out / 'cache' / 'tokens').glob('pubmed99n0001.*.npz'))[0]
    shard.write_bytes(shard.read_bytes()[:50])  # a corrupt token cache
    r = run_prepare(*args)
    assert r.returncode == 0 and f'{shard}: unreadable cache' in r.stderr and outputs(out) == expected


def test_paths_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    (tmp_path / 'afile').write_text('x')
    cases = {
        f'--out_dir={tmp_path / "afile"}': 'is a file, not a folder',
        f'--export_jsonl={tmp_path / "missing" / "docs.jsonl"}': 'its folder does not exist or is not writable'
    }
    for arg, message in cases.items():
        r = run_prepare(f'--input={FIXTURES}', f'--out_dir={tmp_path / "out"}', arg)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1, r.stderr
    assert not (tmp_path / 'out').exists()


def test_no_document_at_all_says_why_without_a_val_fraction_hint(tmp_path):
    folder = fixture_input(tmp_path)
    r = run_prepare(f'--input={folder}', f'--out_dir={tmp_path / "out"}', '--languages=xyz')
    assert r.returncode == 1 and 'no documents to keep' in r.stderr and '--languages=all' in r.stderr
    assert 'val_fraction' not in r.stderr


def test_a_literal_endoftext_in_an_abstract_is_text_not_a_document_end(tmp_path):
    folder, out = tmp_path / 'in', tmp_path / 'out'
    write_xml(folder / 'pubmed99n0001.xml', *(citation(p) for p in range(1, 30)),
              citation(30, abstract='The string &lt;|endoftext|&gt; is only text here.'))
    r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5')
    assert r.returncode == 0, r.stderr
    docs = documents(out, 'train') + documents(out, 'val')  # split at the end-of-text ids
    assert len(docs) == 30 and 'A title.\nThe string <|endoftext|> is only text here.' in docs


@pytest.mark.slow
def test_gpt2_tests_skip_with_the_reason_on_a_fresh_clone_offline(tmp_path):
    """No ../shared, an empty tiktoken cache, and every download refused: the GPT-2 tests skip, none fails."""
    env = {
        **os.environ, 'PUBMED_SHARED': str(tmp_path / 'no-shared'), 'TIKTOKEN_CACHE_DIR': str(tmp_path / 'empty-cache'),
        'HTTPS_PROXY': 'http://127.0.0.1:9', 'HTTP_PROXY': 'http://127.0.0.1:9', 'NO_PROXY': ''
    }
    r = subprocess.run([
        sys.executable, '-m', 'pytest', '-q', '-rs', '-p', 'no:cacheprovider',
        'tests/test_tokenizer.py::test_gpt2_spec_matches_tiktoken_and_byte_lengths',
        'tests/test_prepare.py::test_gpt2_tokenizer',
        'tests/test_hf.py::test_train_init_from_gpt2_weights_and_its_clear_errors'
    ], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    assert '3 skipped' in r.stdout and r.stdout.count("tiktoken's GPT-2 files are not at hand") == 3


@pytest.mark.slow
def test_exclude_pmids_keeps_pubmedqa_out_of_both_splits(tmp_path):
    """894 of PubMedQA's 1,000 labelled PMIDs are in the shared corpus, question as title, conclusion included."""
    pubmedqa = need(SHARED / 'data' / 'pubmedqa')
    listed = {int(p) for p in json.loads((pubmedqa / 'ori_pqal.json').read_text())}
    questions = [q['QUESTION'] for q in json.loads((pubmedqa / 'ori_pqal.json').read_text()).values()]
    runs = {}
    for name, exclude in (('with', str(pubmedqa)), ('without', '')):
        out = tmp_path / name
        r = run_prepare(f'--input={need(PUBMED_CORPUS)}', f'--out_dir={out}', '--vocab_size=300',
                        f'--exclude_pmids={exclude}', f'--export_jsonl={tmp_path / name}.jsonl')
        assert r.returncode == 0, r.stderr
        pmids = {json.loads(line)['pmid'] for line in open(f'{tmp_path / name}.jsonl')}
        titles = {doc.split('\n', 1)[0] for doc in documents(out, 'train') + documents(out, 'val')}
        runs[name] = (pmids & listed, sum(q in titles for q in questions), load_meta(out), r)
    kept, found, meta, r = runs['without']  # 6 of the 894 titles are not the question verbatim
    assert len(kept) == 894 and found == 888
    assert meta['excluded_pmids'] == {'source': '', 'listed': 0, 'excluded': 0, 'blake2b': ''}
    kept, found, meta, r = runs['with']
    assert kept == set() and found == 0
    assert meta['excluded_pmids'] == {
        'source': str(pubmedqa),
        'listed': 1000,
        'excluded': 894,  # the list by its hash too
        'blake2b': hashlib.blake2b(''.join(f'{p}\n' for p in sorted(listed)).encode(), digest_size=16).hexdigest()
    }
    assert '894 excluded' in r.stdout and f'excluding the PMIDs listed in {pubmedqa}' in r.stderr
    assert json.loads((tmp_path / 'with' / 'meta.json').read_text())['records']['excluded'] == 894


def test_exclude_pmids_files_are_checked_before_any_work_and_auto_reads_only_pubmedqas_files(tmp_path):
    from data.pubmed.selection import read_pmid_list
    bad = {
        'key.json': ('{"123": 1, "abc": 2}', "'abc' is not a PMID (1-10 digits)"),
        'latin1.txt': ('123 caf\xe9'.encode('latin-1'), 'not readable (UnicodeDecodeError'),
        'long.txt': ('123\n12345678901234567890\n', "'12345678901234567890' is not a PMID"),
        'cut.json': ('{"123": {"QUESTION": "Does', 'not readable (JSONDecodeError')
    }
    procs = []
    for name, (content, _) in bad.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        procs.append(
            subprocess.Popen([
                sys.executable, PREPARE, f'--input={FIXTURES}', f'--out_dir={tmp_path / name}.out',
                f'--exclude_pmids={path}'
            ], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc, (name, (_, message)) in zip(procs, bad.items()):
        code, err = proc.wait(timeout=120), proc.stderr.read()
        assert code == 2 and err.count('\n') == 1 and message in err and name in err, err
        assert not (tmp_path / f'{name}.out').exists()  # refused before the parse stage wrote anything
    folder = tmp_path / 'pubmedqa'
    folder.mkdir()
    (folder / 'ori_pqal.json').write_text('{"21645374": {}, "12377809": {}}')
    (folder / 'results.json').write_text('{"accuracy": 0.5, "items": []}')  # pubmedqa.py --out_json saved beside them
    assert read_pmid_list(str(folder), only_pubmedqa=True).tolist() == [12377809, 21645374]
    with pytest.raises(ValueError, match="results.json: 'accuracy' is not a PMID"):
        read_pmid_list(str(folder))  # a folder given by name: every file in it is a list of PMIDs
    (tmp_path / 'list.txt').write_text('# PubMedQA test\n21645374, 12377809\n\n123\n')
    assert read_pmid_list(str(tmp_path / 'list.txt')).tolist() == [123, 12377809, 21645374]


def independent_subjects(paths):
    """PMID -> what the subset options look at, read here with lxml's xpath alone (not parse.py), the last file
    in prepare.py's order winning for a PMID."""
    import gzip as gz

    from lxml import etree
    found = {}
    for path in paths:
        opener = gz.open if path.endswith('.gz') else open
        with opener(path, 'rb') as f:
            try:
                root = etree.parse(f, etree.XMLParser(resolve_entities=False, no_network=True,
                                                      load_dtd=False)).getroot()
            except Exception:
                continue
        for citation in root.iter('MedlineCitation'):
            pub = citation.xpath('string(Article/Journal/JournalIssue/PubDate/Year)') or \
                citation.xpath('string(Article/Journal/JournalIssue/PubDate/MedlineDate)')
            mesh = [(h.xpath('string(DescriptorName/@UI)'), ' '.join(h.xpath('string(DescriptorName)').split()),
                     bool(h.xpath('DescriptorName[@MajorTopicYN="Y"] | QualifierName[@MajorTopicYN="Y"]')))
                    for h in citation.xpath('MeshHeadingList/MeshHeading')]
            found[int(citation.findtext('PMID'))] = {
                'year': int(pub[:4]) if pub[:4].isdigit() else 0, 'mesh': mesh,
                'iso': citation.xpath('string(Article/Journal/ISOAbbreviation)'),
                'nlm': citation.xpath('string(MedlineJournalInfo/NlmUniqueID)'), 'types': [(t.get('UI') or '', ' '.join(
                    (t.text or '').split())) for t in citation.xpath('Article/PublicationTypeList/PublicationType')]
            }
    return found


@pytest.mark.slow
def test_subsets_keep_what_an_independent_reading_of_the_xml_says_from_the_same_parse_cache(tmp_path):
    """MeSH (names, UIs, major topics), years, journals, publication types kept or dropped, a PMID list: each subset
    of the shared samples is the set an lxml reading of the files predicts, counted in meta and the summary, and
    changing a filter re-parses nothing."""
    from data.pubmed.prepare import input_files
    folder, out = need(PUBMED_XML), tmp_path / 'out'
    base = [
        f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.05', '--allow_bad_files=True',
        '--exclude_pmids='
    ]

    def kept(*args):
        r = run_prepare(*base, *args, f'--export_jsonl={tmp_path / "docs.jsonl"}')
        assert r.returncode == 0, r.stderr
        return {json.loads(line)['pmid']: json.loads(line) for line in open(tmp_path / 'docs.jsonl')}, r

    everything, _ = kept()
    parsed = {p: p.stat().st_mtime_ns for p in (out / 'cache' / 'parsed').iterdir()}
    info = independent_subjects([str(p) for p in input_files(str(folder))])
    journals = Counter(info[p]['iso'] for p in everything).most_common(2)
    nlm = next(info[p]['nlm'] for p in everything if info[p]['iso'] == journals[1][0])
    (tmp_path / 'keep.txt').write_text('\n'.join(map(str, sorted(everything)[::3])))

    def spellings(kind, *words):
        """The words with every UI and name the input pairs with one of them: a heading given by UI matches the
        records written without UIs (MEDLINE before 2014; 82 of the kept records have such MeSH headings)."""
        pairs = {(term[0], term[1]) for i in info.values() for term in i[kind] if term[0]}
        uis = {ui for ui, name in pairs if ui in words or name in words}
        return set(words) | uis | {name for ui, name in pairs if ui in uis}

    humans_or_male, neoplasms_or_brain = spellings('mesh', 'Humans',
                                                   'D008297'), spellings('mesh', 'D009369', 'Neoplasms', 'Brain')
    review_or_support = spellings('types', 'Review', 'D013485')  # 43 kept records name one of these without a UI
    cases = {
        'mesh': (['--mesh=Humans;D008297'], 'mesh', lambda i: any(n in humans_or_male or ui in humans_or_male
                                                                  for ui, n, _ in i['mesh'])),
        'mesh major': (['--mesh=d009369;Neoplasms;Brain', '--mesh_major=True'], 'mesh',
                       lambda i: any(m and (ui in neoplasms_or_brain or n in neoplasms_or_brain)
                                     for ui, n, m in i['mesh'])),
        'years': (['--years=1990-2005'], 'year', lambda i: 1990 <= i['year'] <= 2005),
        'journals': (
            [f'--journals={journals[0][0].upper()};{nlm}'],
            'journal',  # its older abbreviation too, by its NLM ID
            lambda i: i['nlm'] in {nlm} | {j['nlm']
                                           for j in info.values() if j['iso'] == journals[0][0]}),
        'types kept': (['--publication_types=Review;Case Reports'], 'publication_type',
                       lambda i: any(n in ('Review', 'Case Reports') for _, n in i['types'])),
        'types dropped': (['--drop_publication_types=Review;D013485'], 'publication_type',
                          lambda i: not any(n in review_or_support or ui in review_or_support for ui, n in i['types'])),
        'pmid list': ([f'--keep_pmids={tmp_path / "keep.txt"}'], 'not_in_keep_pmids', lambda i: True),
    }
    for name, (args, rule, wanted) in cases.items():
        subset, r = kept(*args)
        expected = {
            p
            for p in everything if wanted(info[p]) and (rule != 'not_in_keep_pmids' or p in sorted(everything)[::3])
        }
        assert set(subset) == expected and 0 < len(expected) < len(everything), name
        meta = json.loads((out / 'meta.json').read_text())
        assert meta['records'][rule] == len(everything) - len(expected) and meta['subset'], name
        assert f"dropped {len(everything) - len(expected):,} by {rule}" in r.stdout, name
    record = next(iter(subset.values()))  # what the filters looked at is exported
    assert {'mesh', 'year', 'journal_iso', 'nlm_id', 'publication_types'} <= set(record)
    assert [m[0] for m in record['mesh']] == [m[0] for m in info[record['pmid']]['mesh']]
    assert {p: p.stat().st_mtime_ns for p in (out / 'cache' / 'parsed').iterdir()} == parsed  # nothing parsed again
    r = run_prepare(*base, '--years=2020-2010x')
    assert r.returncode == 2 and '--years=2020-2010x: expected a range of years' in r.stderr


def subject_citation(pmid, year=None, journal=None, mesh=(), types=()):
    """A record with what the subset rules look at, each left out when None or empty: the publication year, the
    journal as (ISO abbreviation, NLM ID), MeSH descriptors and publication types as (UI, name), a UI '' written
    without one as MEDLINE did before 2014."""
    tag = lambda name, ui, text: f'<{name} UI="{ui}">{text}</{name}>' if ui else f'<{name}>{text}</{name}>'
    issue = f'<JournalIssue><PubDate><Year>{year}</Year></PubDate></JournalIssue>' if year else ''
    iso = f'<ISOAbbreviation>{journal[0]}</ISOAbbreviation>' if journal else ''
    journal_xml = f'<Journal>{issue}{iso}</Journal>'
    types = ''.join(tag('PublicationType', ui, n) for ui, n in types) if types else ''
    types_xml = f'<PublicationTypeList>{types}</PublicationTypeList>' if types else ''
    mesh_xml = ('<MeshHeadingList>' + ''.join(f"<MeshHeading>{tag('DescriptorName', ui, n)}</MeshHeading>"
                                              for ui, n in mesh) + '</MeshHeadingList>') if mesh else ''
    return (
        f'<PubmedArticle><MedlineCitation><PMID Version="1">{pmid}</PMID><Article>{journal_xml}<ArticleTitle>Record '
        f'{pmid}.'
        '</ArticleTitle><Abstract><AbstractText>An '
        f'abstract.</AbstractText></Abstract><Language>eng</Language>{types_xml}'
        f'</Article>' +
        (f'<MedlineJournalInfo><NlmUniqueID>{journal[1]}</NlmUniqueID></MedlineJournalInfo>' if journal else '') +
        f'{mesh_xml}</MedlineCitation></PubmedArticle>')


def test_each_subset_rule_drops_a_record_that_lacks_its_field_and_matches_a_term_written_without_its_ui(tmp_path):
    """docs/data.md: a record without a year is dropped by --years (it was kept by an open lower bound, the year 0
    being inside -1999), without a journal by --journals, without MeSH by --mesh, without publication types by
    --publication_types; --drop_publication_types keeps it. A MeSH heading or publication type asked for by UI also
    matches the records that name it without one (MEDLINE before 2014), by the name the input gives that UI; a journal
    its older abbreviation (J. Test), by its NLM ID."""
    groups = {  # 12 records each, so that both splits have some of every kept set
        'new': dict(year=1990, journal=('J Test', '0001'), mesh=[('D006801', 'Humans')], types=[('D016454', 'Review')]),
        'old': dict(year=1998, journal=('J. Test', '0001'), mesh=[('', 'Humans')], types=[('', 'Review')]),
        'mice': dict(year=2010, journal=('Other J', '0002'), mesh=[('D051379', 'Mice')],
                     types=[('D016428', 'Journal Article')]),
        'bare': dict(),
    }
    pmids = {group: range(1 + 12 * i, 13 + 12 * i) for i, group in enumerate(groups)}
    write_xml(tmp_path / 'in' / 'pubmed99n0001.xml',
              *(subject_citation(p, **groups[g]) for g in groups for p in pmids[g]))
    cases = {
        '--years=-1999': ('new', 'old'), '--years=2000-': ('mice', ), '--journals=j test': ('new', 'old'),
        '--mesh=D006801': ('new', 'old'), '--publication_types=D016454': ('new', 'old'),
        '--drop_publication_types=D016454': ('mice', 'bare')
    }
    runs = {
        option: subprocess.Popen([
            sys.executable, PREPARE, f'--input={tmp_path / "in"}', f'--out_dir={tmp_path / str(i)}', '--vocab_size=300',
            '--val_fraction=0.5', '--exclude_pmids=', option, f'--export_jsonl={tmp_path / str(i)}.jsonl'
        ], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i, option in enumerate(cases)
    }  # at once: ~1 s each
    for i, (option, kept) in enumerate(cases.items()):
        out, err = runs[option].communicate(timeout=120)
        assert runs[option].returncode == 0, err
        assert [json.loads(line)['pmid']
                for line in open(tmp_path / f'{i}.jsonl')] == [p for g in kept for p in pmids[g]], option
        assert f'dropped {48 - 12 * len(kept)} by' in out, option


def test_a_subset_that_keeps_nothing_names_the_rule_that_dropped_each_record(tmp_path):
    """The shared samples' 1,235 records (the truncated file left out) with a subset that matches none of them: the
    error counts each rule's drops, the subset's by its option, where it said 'none has an abstract in a kept
    language'."""
    base = [f'--input={need(PUBMED_XML)}', f'--out_dir={tmp_path / "out"}', '--exclude_pmids=', '--workers=1']
    for option in ('--journals=Nonexistent', '--years=1800-1850'):
        r = run_prepare(*base, option)
        assert r.returncode == 1 and error_lines(r.stderr)[-1] == (
            'error: no documents to keep: of the 1,235 records, 12 replaced by a later version, 238 without abstract, '
            f'23 in another language (--languages=eng), 962 dropped by {option}; nothing written'), r.stderr
    assert not (tmp_path / 'out' / 'train.bin').exists()


def test_pmid_lists_that_keep_or_exclude_nothing_are_option_errors(tmp_path, monkeypatch, capsys):
    """An empty --keep_pmids list keeps nothing; a list all excluded by --exclude_pmids too; an empty
    --exclude_pmids list would let a benchmark in unsaid: exit 2 before any work. An auto data/pubmedqa without
    PubMedQA's files excludes nothing, and says so."""
    (tmp_path / 'empty.txt').write_text('# none yet\n')
    (tmp_path / 'some.txt').write_text('101 102')
    cases = {
        (f'--keep_pmids={tmp_path / "empty.txt"}', ): 'empty.txt: lists no PMID, so nothing would be kept',
        (f'--keep_pmids={tmp_path / "some.txt"}', f'--exclude_pmids={tmp_path / "some.txt"}'): 'every PMID it lists is '
        'excluded by --exclude_pmids',
        (f'--exclude_pmids={tmp_path / "empty.txt"}', ): "empty.txt: lists no PMID (--exclude_pmids='' excludes none)"
    }
    for args, message in cases.items():
        r = run_prepare(f'--input={FIXTURES}', f'--out_dir={tmp_path / "out"}', *args)
        assert r.returncode == 2 and r.stderr.count('\n') == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / 'out').exists()
    from data.pubmed import prepare
    (tmp_path / 'pubmedqa').mkdir()
    monkeypatch.setattr(prepare, 'PUBMEDQA', str(tmp_path / 'pubmedqa'))
    assert prepare.parse_options([f'--input={FIXTURES}', f'--out_dir={tmp_path / "out"}'])['exclude_pmids'] == ''
    assert f"note: {tmp_path / 'pubmedqa'}: no PMID in PubMedQA's files there" in capsys.readouterr().err


def test_meta_records_the_pmid_lists_by_count_and_hash_not_only_by_path(tmp_path):
    """--keep_pmids and --exclude_pmids are files that can change after the data is made: meta names each list by its
    number of PMIDs and the blake2b-128 of its sorted PMIDs one per line (`sort -n | uniq | b2sum -l 128`), the same
    for the same PMIDs in another file or format."""
    folder = fixture_input(tmp_path)
    keep = [101, 102, 103, 104, 107, 108, 110, 999]  # 999 is in no input file
    (tmp_path / 'keep.txt').write_text('# mine\n101, 102 103\n104\n107\n108\n110\n999\n102\n')
    (tmp_path / 'keep.json').write_text(json.dumps([str(p) for p in reversed(keep)]))
    (tmp_path / 'exclude.txt').write_text('110\n')
    digest = lambda pmids: hashlib.blake2b(''.join(f'{p}\n'
                                                   for p in sorted(pmids)).encode(), digest_size=16).hexdigest()
    for name in ('keep.txt', 'keep.json'):
        out = tmp_path / name.replace('.', '_')
        r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5',
                        f'--keep_pmids={tmp_path / name}', f'--exclude_pmids={tmp_path / "exclude.txt"}')
        assert r.returncode == 0, r.stderr
        for meta in (load_meta(out), json.loads((out / 'meta.json').read_text())):
            assert meta['subset'] == {
                'keep_pmids': str(tmp_path / name), 'keep_pmids_listed': 8, 'keep_pmids_blake2b': digest(keep)
            }
            assert meta['excluded_pmids'] == {
                'source': str(tmp_path / 'exclude.txt'), 'listed': 1, 'excluded': 1, 'blake2b': digest([110])
            }
            assert meta['records'][
                'not_in_keep_pmids'] == 2 and meta['train_docs'] + meta['val_docs'] == 6  # 113, 120 not kept
        assert f"subset (keep_pmids='{tmp_path / name}'): dropped 2 by not_in_keep_pmids" in r.stdout


def test_a_full_disk_at_each_stage_is_one_line_and_leaves_the_outputs_and_caches_whole(tmp_path, tmpfs):
    """A real full filesystem (a 1 MB tmpfs filled to the last byte) under out_dir, at each stage that writes: one
    `error:` line saying the disk is full, where, and what it needed when known (the token files' size), exit 1; the
    previous outputs byte for byte, every cache file whole (none removed as unreadable), no temp file left; the input
    never called corrupt. Once there is room again, the same command finishes. (ndarray.tofile lost the error while
    writing train.bin: prepare.py exited 0 with an empty train.bin and a meta.pkl describing it.)"""
    from common import size_text
    folder, out = fixture_input(tmp_path, gz=()), tmpfs(tmp_path / 'disk') / 'out'
    args = [f'--input={folder}', f'--out_dir={out}', '--val_fraction=0.5', '--exclude_pmids=']
    assert run_prepare(*args, '--vocab_size=300').returncode == 0
    expected, caches = outputs(out), {p: p.read_bytes() for p in (out / 'cache').rglob('*') if p.is_file()}
    meta = load_meta(out)
    filler = fill_disk(out.parent)
    stages = {  # what each run has to write first: the token files, a new BPE, new token shards, two new parse caches
        'write': (['--vocab_size=300'], f"{out}: the disk is full (No space left on device; "
                  f"{size_text(2 * (meta['train_tokens'] + meta['val_tokens']))} needed, 0 bytes free)"),
        'bpe': (['--vocab_size=310'], f'{out}/cache/bpe.'),
        'tokenize': ([f'--tokenizer={out}', '--val_fraction=0.4'], f'{out}/cache/tokens: the disk is full'),
        'parse': (['--vocab_size=300', '--workers=2'], f'{out}/cache/parsed: the disk is full'),
    }
    for stage, (extra, where) in stages.items():
        if stage == 'parse':
            for n in (5, 6):
                write_xml(folder / f'pubmed99n000{n}.xml', *(citation(p) for p in range(1000 * n, 1000 * n + 5)))
        r = run_prepare(*args, *extra)
        errors = error_lines(r.stderr)
        assert r.returncode == 1 and len(errors) == 1 and where in errors[0] and 'the disk is full' in errors[0], (
            stage, r.stderr)
        assert 'Traceback' not in r.stderr and 'corrupt' not in r.stderr and 'unreadable' not in r.stderr, stage
        assert outputs(out) == expected and {p: p.read_bytes() for p in caches} == caches, stage
        assert not list(out.rglob('*.tmp')), stage
    filler.unlink()
    r = run_prepare(*args, '--vocab_size=300')
    assert r.returncode == 0 and 'files: 5 given, 5 prepared, 0 bad' in r.stdout, r.stderr


def test_a_cache_folder_that_cannot_be_written_blames_no_input_file(tmp_path, tmpfs):
    """cache/parsed on a read-only filesystem: one line naming it, where each intact input file was 'corrupt or
    unreadable, left out'."""
    folder, out = fixture_input(tmp_path), tmp_path / 'out'
    tmpfs(out / 'cache' / 'parsed', read_only=True)
    r = run_prepare(f'--input={folder}', f'--out_dir={out}', '--vocab_size=300', '--val_fraction=0.5')
    errors = error_lines(r.stderr)
    assert r.returncode == 1 and len(errors) == 1 and 'corrupt' not in r.stderr, r.stderr
    assert errors[0].startswith(
        f'error: {out}/cache/parsed: cannot write (Read-only file system: {out}/cache/parsed/pubmed99n000')


def test_a_filesystem_without_locks_is_not_taken_for_another_prepare(tmp_path, monkeypatch, capsys):
    """lockf fails with ENOLCK on filesystems without locks (some NFS): no prepare.py holds out_dir, so none is
    named."""
    import errno
    import fcntl

    from data.pubmed.prepare import lock_out_dir

    def no_locks(*args):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, 'lockf', no_locks)
    with pytest.raises(SystemExit) as exit:
        lock_out_dir(str(tmp_path))
    err = capsys.readouterr().err
    assert exit.value.code == 1 and 'No locks available): its filesystem does not support locks' in err
    assert 'another prepare.py' not in err
