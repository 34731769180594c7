"""data/pubmed/download.py against a real HTTP server on 127.0.0.1 that serves NCBI's layout and injects
faults: 500s, a connection dropped mid-file, a slow response, a corrupted body (MD5 mismatch)."""
import gzip
import hashlib
import os
import random
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler

import pytest

from conftest import FIXTURES, PREPARE, LocalServer, error_lines, fill_disk, run_prepare
from data.pubmed.download import download_all, parse_listing, parse_md5
from dataloader import load_meta

FAST = dict(timeout=0.5, retries=3, backoff=0.01)  # keep the retries quick
SLOW = 1.5  # seconds a 'slow' response stalls: longer than FAST's timeout


def listing(names):
    """An index page the way NCBI's FTP-over-HTTP server renders one."""
    rows = [f'<a href="{n}">{n}</a>{" " * max(1, 40 - len(n))}2023-12-14 18:08   19M' for n in names]
    return (
        '<html>\n<head><title>Index of /pubmed/baseline</title></head>\n<body>\n<h1>Index of /pubmed/baseline</h1>\n'
        '<pre>Name                     Last modified      Size  <hr><a href="/pubmed/">Parent Directory</a>  -\n' +
        '\n'.join(rows) + '\n<hr></pre>\n</body></html>\n')


def md5_line(name, data):
    return f'MD5({name})= {hashlib.md5(data).hexdigest()}\n'


class Server(LocalServer):
    """files: {'/pubmed/baseline/x.xml.gz': bytes};
    faults: {path: ['500' | '503' | 'drop' | 'slow' | 'corrupt' | 'norange']}
    consumed one per request. Listings, .md5 companions, README.txt and *_stats.html come for free."""

    def __init__(self, files, faults=None):
        self.files, self.faults, self.log = dict(files), {k: list(v) for k, v in (faults or {}).items()}, []
        for path, data in files.items():
            folder, name = path.rsplit('/', 1)
            self.files[path + '.md5'] = md5_line(name, data).encode()
        for folder in {p.rsplit('/', 1)[0] for p in files}:
            self.files[folder + '/README.txt'] = b'read me'
            self.files[folder + '/pubmed99n9999_stats.html'] = b'<html>stats</html>'
            names = sorted(p.rsplit('/', 1)[1] for p in self.files if p.startswith(folder + '/'))
            self.files[folder + '/'] = listing(names).encode()
        server = self

        class Handler(BaseHTTPRequestHandler):

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.log.append((self.path, self.headers.get('Range')))
                fault = server.faults[self.path].pop(0) if server.faults.get(self.path) else None
                data = server.files.get(self.path)
                if data is None:
                    return self.send_error(404)
                if fault in ('500', '503'):
                    return self.send_error(int(fault))
                if fault == 'slow':
                    time.sleep(SLOW)
                if fault == 'corrupt':
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = int(self.headers['Range'][6:].split('-')[0]) if self.headers.get('Range') else 0
                if fault == 'norange':  # a server that ignores Range sends the whole file again
                    start = 0
                if start >= len(data) and start:
                    return self.send_error(416)
                try:
                    self.send_response(206 if start else 200)
                    if start:
                        self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
                    self.send_header('Content-Length', str(len(data) - start))
                    self.end_headers()
                    body = data[start:]
                    if fault == 'drop':  # half the body, then the connection goes away
                        self.wfile.write(body[:len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up on a slow response
                    pass

        self.serve(Handler)


def blob(seed, size=300_000):
    return random.Random(seed).randbytes(size)


def test_parse_ncbi_listing_and_md5_companion():
    html = listing([
        'README.txt', 'pubmed24n0002.xml.gz', 'pubmed24n0002.xml.gz.md5', 'pubmed24n0010.xml.gz',
        'pubmed24n0001.xml.gz', 'pubmed24n0001.xml.gz.md5', 'pubmed24n1220_stats.html'
    ])
    assert parse_listing(html) == ['pubmed24n0001.xml.gz', 'pubmed24n0002.xml.gz', 'pubmed24n0010.xml.gz']
    line = md5_line('pubmed24n0001.xml.gz', b'x')
    assert len(line) == 60  # NCBI's companions are exactly this
    assert parse_md5(line, 'pubmed24n0001.xml.gz') == hashlib.md5(b'x').hexdigest()
    with pytest.raises(Exception, match='expected'):
        parse_md5(line, 'pubmed24n0002.xml.gz')


def test_download_survives_500s_drops_slowness_and_a_bad_md5(tmp_path):
    files = {f'/pubmed/baseline/f{i}.xml.gz': blob(i) for i in range(4)}
    faults = {
        '/pubmed/baseline/f0.xml.gz': ['500', '500'], '/pubmed/baseline/f1.xml.gz': ['drop'],
        '/pubmed/baseline/f2.xml.gz': ['slow'], '/pubmed/baseline/f3.xml.gz': ['corrupt']
    }
    with Server(files, faults) as s:
        jobs = [(s.url + path, str(tmp_path / path.rsplit('/', 1)[1])) for path in files]
        ok, failed = download_all(jobs, connections=3, **FAST)
    assert failed == []
    assert [(d, m) for d, m in ok] == [(dest, hashlib.md5(files[p]).hexdigest()) for p, (_, dest) in zip(files, jobs)]
    for path, (_, dest) in zip(files, jobs):
        assert open(dest, 'rb').read() == files[path]
        assert open(dest + '.md5').read() == md5_line(path.rsplit('/', 1)[1], files[path])
    assert s.requests('/pubmed/baseline/f0.xml.gz') == [None, None, None]  # two 500s, then served
    first, resumed = s.requests('/pubmed/baseline/f1.xml.gz')  # resumed near where it dropped (150,000)
    assert first is None and 100_000 < int(resumed[6:-1]) <= 150_000
    assert s.requests('/pubmed/baseline/f2.xml.gz') == [None, None]  # timed out, retried
    assert s.requests('/pubmed/baseline/f3.xml.gz') == [None, None]  # bad MD5, fetched again
    assert not list(tmp_path.glob('*.part'))


def test_file_failing_md5_twice_is_left_out(tmp_path):
    files = {'/pubmed/baseline/bad.xml.gz': blob(7), '/pubmed/baseline/good.xml.gz': blob(8)}
    with Server(files, {'/pubmed/baseline/bad.xml.gz': ['corrupt', 'corrupt']}) as s:
        jobs = [(s.url + p, str(tmp_path / p.rsplit('/', 1)[1])) for p in files]
        ok, failed = download_all(jobs, **FAST)
    assert [d for d, _ in ok] == [str(tmp_path / 'good.xml.gz')]
    assert len(failed) == 1 and failed[0][0] == 'bad.xml.gz' and 'MD5 mismatch' in failed[0][1]
    assert s.requests('/pubmed/baseline/bad.xml.gz') == [None, None]
    assert not (tmp_path / 'bad.xml.gz').exists() and not (tmp_path / 'bad.xml.gz.part').exists()


def test_persistent_5xx_gives_up_with_a_message(tmp_path):
    files = {'/pubmed/baseline/x.xml.gz': blob(1)}
    with Server(files, {'/pubmed/baseline/x.xml.gz': ['500'] * 10}) as s:
        ok, failed = download_all([(s.url + '/pubmed/baseline/x.xml.gz', str(tmp_path / 'x.xml.gz'))], **FAST)
    assert ok == [] and 'gave up after 4 attempts' in failed[0][1] and 'HTTP 500' in failed[0][1]


def test_verified_files_are_never_fetched_again_and_parts_resume(tmp_path):
    files = {'/pubmed/baseline/a.xml.gz': blob(2), '/pubmed/baseline/b.xml.gz': blob(3)}
    (tmp_path / 'b.xml.gz.part').write_bytes(files['/pubmed/baseline/b.xml.gz'][:100_000])  # a killed run's part
    with Server(files) as s:
        jobs = [(s.url + p, str(tmp_path / p.rsplit('/', 1)[1])) for p in files]
        ok, failed = download_all(jobs, **FAST)
        assert s.requests('/pubmed/baseline/b.xml.gz') == ['bytes=100000-']
        n = len(s.log)
        ok2, failed2 = download_all(jobs, **FAST)
        assert len(s.log) == n  # not even the .md5 is asked for again
    assert failed == failed2 == [] and ok == ok2
    assert (tmp_path / 'b.xml.gz').read_bytes() == files['/pubmed/baseline/b.xml.gz']


def test_part_is_restarted_when_the_server_ignores_range(tmp_path):
    data = blob(5)
    (tmp_path / 'd.xml.gz.part').write_bytes(data[:50_000])
    with Server({'/pubmed/baseline/d.xml.gz': data}, {'/pubmed/baseline/d.xml.gz': ['norange']}) as s:
        ok, failed = download_all([(s.url + '/pubmed/baseline/d.xml.gz', str(tmp_path / 'd.xml.gz'))], **FAST)
        assert s.requests('/pubmed/baseline/d.xml.gz') == ['bytes=50000-']
    assert failed == [] and (tmp_path / 'd.xml.gz').read_bytes() == data


def test_corrupt_part_from_a_killed_run_is_fetched_again(tmp_path):
    data = blob(4)
    (tmp_path / 'c.xml.gz.part').write_bytes(b'garbage' * 1000)
    with Server({'/pubmed/baseline/c.xml.gz': data}) as s:
        ok, failed = download_all([(s.url + '/pubmed/baseline/c.xml.gz', str(tmp_path / 'c.xml.gz'))], **FAST)
        assert s.requests('/pubmed/baseline/c.xml.gz') == ['bytes=7000-', None]
    assert failed == [] and (tmp_path / 'c.xml.gz').read_bytes() == data


# ------------------------------------------------------------------------------------------------
# prepare.py over the network


def fixture_server_files():
    gz = {
        n: gzip.compress((FIXTURES / f'{n}.xml').read_bytes(), mtime=0)
        for n in ('pubmed99n0001', 'pubmed99n0002', 'pubmed99n0003')
    }
    return {
        '/pubmed/baseline/pubmed99n0001.xml.gz': gz['pubmed99n0001'],
        '/pubmed/baseline/pubmed99n0002.xml.gz': gz['pubmed99n0002'],
        '/pubmed/updatefiles/pubmed99n0003.xml.gz': gz['pubmed99n0003']
    }


def prepare(*args):
    return run_prepare(*args, '--vocab_size=300', '--val_fraction=0.5', '--timeout=0.5', '--backoff=0.01')


def test_prepare_downloads_baseline_then_updates(tmp_path):
    files = fixture_server_files()
    with Server(files, {'/pubmed/baseline/pubmed99n0002.xml.gz': ['drop']}) as s:
        r = prepare(f'--base_url={s.url}/pubmed/', f'--out_dir={tmp_path}', '--updates=True')
        assert r.returncode == 0, r.stderr
        meta = load_meta(tmp_path)
        assert [f['name']
                for f in meta['files']] == ['pubmed99n0001.xml.gz', 'pubmed99n0002.xml.gz', 'pubmed99n0003.xml.gz']
        assert meta['files'][2]['md5'] == hashlib.md5(files['/pubmed/updatefiles/pubmed99n0003.xml.gz']).hexdigest()
        assert meta['records']['deleted'] == 2 and meta['train_docs'] + meta['val_docs'] == 9
        assert (tmp_path / 'raw' / 'updatefiles' / 'pubmed99n0003.xml.gz.md5').exists()
        n = len(s.log)
        r = prepare(f'--base_url={s.url}/pubmed/', f'--out_dir={tmp_path}', '--updates=True')
        assert r.returncode == 0, r.stderr
        assert [p for p, _ in s.log[n:]] == ['/pubmed/baseline/', '/pubmed/updatefiles/']  # listings only


def test_prepare_max_files_and_a_file_that_never_verifies(tmp_path):
    files = fixture_server_files()
    with Server(files, {'/pubmed/baseline/pubmed99n0002.xml.gz': ['corrupt'] * 2}) as s:
        r = prepare(f'--base_url={s.url}/pubmed/', f'--out_dir={tmp_path / "one"}', '--max_files=1')
        assert r.returncode == 0, r.stderr
        assert not any('pubmed99n0002' in p for p, _ in s.log)
        r = prepare(f'--base_url={s.url}/pubmed/', f'--out_dir={tmp_path / "two"}')
    assert r.returncode == 1 and 'pubmed99n0002.xml.gz' in r.stderr and 'MD5 mismatch' in r.stderr
    assert [f['name'] for f in load_meta(tmp_path / 'two')['files']] == ['pubmed99n0001.xml.gz']


def test_a_host_name_that_does_not_resolve_fails_in_seconds_in_one_line(tmp_path):
    """Offline, the README's first command (scripts/demo.sh) waited 3.5 minutes: a name lookup that fails was retried 8
    times with backoff. It is tried twice, with the default retries and backoff, and said in one line."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith('_proxy')}  # the lookup itself, not a proxy's
    start = time.time()
    r = subprocess.run([
        sys.executable, PREPARE, '--base_url=http://nonexistent.invalid/pubmed/', f'--out_dir={tmp_path}',
        '--exclude_pmids='
    ], capture_output=True, text=True, timeout=60, env=env)
    assert time.time() - start < 15 and r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr
    assert r.stderr == (
        'error: cannot list http://nonexistent.invalid/pubmed/baseline/: the host name nonexistent.invalid '
        'does not resolve (gave up after 2 attempts) (no network? prepare local files with --input=DIR)\n')


def test_503s_on_the_listing_are_retried_until_it_is_served(tmp_path):
    with Server(fixture_server_files(), {'/pubmed/baseline/': ['503', '503']}) as s:
        r = prepare(f'--base_url={s.url}/pubmed/', f'--out_dir={tmp_path}')
    assert r.returncode == 0, r.stderr
    assert s.requests('/pubmed/baseline/') == [None] * 3


def test_a_full_disk_during_downloads_is_one_line_not_a_failed_download(tmp_path, tmpfs):
    """raw_dir on a full filesystem: one line saying so, and no file is retried or reported as a download that
    failed (the run went on to parse nothing and said '2 bad')."""
    files = fixture_server_files()
    raw = fill_disk(tmpfs(tmp_path / 'disk')).parent / 'raw'
    with Server(files) as s:
        r = prepare(f'--base_url={s.url}/pubmed/', f'--out_dir={tmp_path / "out"}', f'--raw_dir={raw}',
                    '--connections=1')
    errors = error_lines(r.stderr)
    assert r.returncode == 1 and errors == [
        f'error: {raw}: the disk is full (No space left on device; 0 bytes free): make '
        'room there, or write elsewhere, then run the same command again (what is done is '
        'cached); the files already there are unchanged'
    ], r.stderr
    assert all(len(s.requests(path)) <= 1 for path in files) and 'download failed' not in r.stderr
    assert not list(raw.rglob('*.tmp'))
