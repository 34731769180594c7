"""
Resumable, verified, parallel download of NCBI's PubMed files (used by prepare.py).

    ok, failed = download_all([(url, dest), ...], connections=3, retries=8, timeout=60, backoff=1)

NCBI serves a plain HTML index per folder and, beside every data file, a companion `<name>.md5`
holding `MD5(<name>)= <32 hex digits>`. A file is streamed into `<dest>.part` (resumed with an HTTP
Range request after a dropped connection or a killed run), checked against its MD5, then renamed.
Its verified MD5 is recorded in `<dest>.md5` first, so a file next to its record is never fetched
again. Timeouts, connection errors and 5xx responses are retried with exponential backoff + jitter; a host name
that does not resolve (no network) is tried twice, not `retries` times. A file that cannot be had is left out and
the others go on; an error of this machine's (a full disk, a folder that cannot be written) stops them all.
"""
import os
import random
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests
from tqdm import tqdm

from common import atomic_write, file_md5, natural_key

CHUNK = 1 << 16  # a dropped connection loses at most this much of what was received


class DownloadError(Exception):
    """A file that cannot be had: reported, left out, and the run exits non-zero."""


class ServerError(Exception):
    """A 5xx response: worth retrying."""


def parse_listing(html):
    """Data file names in an NCBI directory index: every linked *.xml.gz (not .md5, README, stats)."""
    names = set(re.findall(r'href="([^"/?#]+\.xml\.gz)"', html))
    return sorted(names, key=natural_key)


def parse_md5(text, name):
    match = re.search(r'MD5\((.+?)\)\s*=\s*([0-9a-fA-F]{32})', text)
    if not match or match.group(1) != name:
        raise DownloadError(f'{name}.md5: expected "MD5({name})= <32 hex digits>", got {text[:80]!r}')
    return match.group(2).lower()


UNRESOLVED_ATTEMPTS = 2  # a host name that does not resolve is no network (or a typo): one retry, not minutes of them


def name_not_resolved(error):
    """Whether a requests error comes from a host name lookup that failed (socket.gaierror, under urllib3's
    wrappers)."""
    pending, seen = [error], set()
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror) or type(e).__name__ == 'NameResolutionError':
            return True
        pending += [
            getattr(e, 'reason', None), e.__cause__, e.__context__, *(a for a in e.args if isinstance(a, BaseException))
        ]
    return False


def retrying(fn, what, retries, backoff):
    """Call fn() until it succeeds; retry timeouts, connection errors and 5xx with backoff + jitter."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, ServerError) as e:
            if name_not_resolved(e) and attempt + 1 >= min(UNRESOLVED_ATTEMPTS, retries + 1):
                raise DownloadError(f'{what}: the host name {urlsplit(what).hostname} does not resolve '
                                    f'(gave up after {attempt + 1} attempts)') from e
            if attempt == retries:
                raise DownloadError(f'{what}: gave up after {retries + 1} attempts: {e}') from e
            time.sleep(min(60.0, backoff * 2**attempt) * random.uniform(0.5, 1.5))


def check_status(response, url):
    if response.status_code >= 500:
        raise ServerError(f'HTTP {response.status_code} from {url}')
    if response.status_code >= 400 and response.status_code != 416:
        raise DownloadError(f'HTTP {response.status_code} from {url}')


def get_text(session, url, timeout, retries, backoff):

    def get():
        r = session.get(url, timeout=timeout)
        check_status(r, url)
        return r.text

    return retrying(get, url, retries, backoff)


def list_files(url, timeout=60.0, retries=8, backoff=1.0):
    with requests.Session() as session:
        return parse_listing(get_text(session, url, timeout, retries, backoff))


def fetch_part(session, url, part, timeout, bar, sized):
    """Stream url into `part`, continuing from its current size with a Range request."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {'Range': f'bytes={have}-'} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        check_status(r, url)
        if r.status_code == 416:  # nothing left to fetch: the part is complete (MD5 decides)
            return
        if r.status_code != 206:  # the server sent the whole file: start over
            have = 0
        if not sized:  # count each file's size once in the bar's total, however often it is retried
            sized.append(have + int(r.headers.get('Content-Length', 0)))
            bar.total += sized[0]
            bar.update(have)
        with open(part, 'r+b' if have else 'wb') as f:
            f.seek(have)
            f.truncate()
            for block in r.iter_content(CHUNK):
                f.write(block)
                bar.update(len(block))


def download_file(url, dest, timeout, retries, backoff, bar):
    """Fetch and verify one file; returns its MD5. Raises DownloadError when it cannot be had."""
    record = dest + '.md5'
    if os.path.exists(dest) and os.path.exists(record):
        with open(record) as f:
            return parse_md5(f.read(), os.path.basename(dest))
    name, part = os.path.basename(dest), dest + '.part'
    with requests.Session() as session:
        expected = parse_md5(get_text(session, url + '.md5', timeout, retries, backoff), name)
        sized = []
        for attempt in range(2):  # a file that fails verification is fetched once more from scratch
            retrying(lambda: fetch_part(session, url, part, timeout, bar, sized), url, retries, backoff)
            got = file_md5(part)
            if got == expected:
                with atomic_write(record, 'w') as f:
                    f.write(f'MD5({name})= {got}\n')
                os.replace(part, dest)
                return got
            os.remove(part)
    raise DownloadError(f'{name}: MD5 mismatch (expected {expected}, got {got}) twice; left out')


def download_all(jobs, connections=3, timeout=60.0, retries=8, backoff=1.0, fetch=None):
    """jobs: [(url, dest)] -> (ok: [(dest, md5)] in job order, failed: [(name, message)]), each job done by
    fetch(url, dest, timeout, retries, backoff, bar) (download_file; data/pmc/packages.py's download_package); raises
    this machine's errors (OSError: a full disk, a folder that cannot be written), never counted as a file that
    failed."""
    fetch = fetch or download_file
    for _, dest in jobs:
        os.makedirs(os.path.dirname(dest) or '.', exist_ok=True)
    with tqdm(total=0, unit='B', unit_scale=True, unit_divisor=1024, desc='download') as bar, \
            ThreadPoolExecutor(max(1, connections)) as pool:
        futures = [pool.submit(fetch, url, dest, timeout, retries, backoff, bar) for url, dest in jobs]
        ok, failed = [], []
        for (url, dest), future in zip(jobs, futures):
            try:
                ok.append((dest, future.result()))
            except (DownloadError, requests.RequestException) as e:  # this file cannot be had: the others go on
                failed.append((os.path.basename(dest), str(e)))
            except BaseException:  # this machine's (a full disk, a folder it may not write): no other file fares better
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return ok, failed
