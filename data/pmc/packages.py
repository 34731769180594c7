"""
NCBI's PMC Open Access bulk packages: their articles streamed out of the tar.gz (never extracted to disk), their File
Lists, the latest version of each article across packages, the license groups and names, and the download of the
layout (listing, resumable, retried, verified).

    for name, data in iter_package('oa_comm_xml.incr.2024-01-29.tar.gz', counts):   # ('PMC010xxxxxx/PMC10.xml', b'...')
    rows = read_file_list('oa_comm_xml.incr.2024-01-29.filelist.csv')                # [Row(file, pmcid, ...)]
    latest = latest_versions(rows_of_every_package_in_package_order())               # {pmcid: Row}

The layout (NCBI, September 2021 to August 2026), one folder per license group:
    {base_url}/oa_bulk/{group}/xml/{group}_xml.PMC00Nxxxxxx.baseline.YYYY-MM-DD.tar.gz   one per million PMCIDs
    {base_url}/oa_bulk/{group}/xml/{group}_xml.incr.YYYY-MM-DD.tar.gz                     added or updated that day
each with a .filelist.csv (and .filelist.txt) beside it whose header is HEADER below: one row per member, its PMCID,
PMID (may be empty), license, last update and whether it was retracted. NCBI moved the layout under pub/pmc/deprecated/
in April 2026 and removed it in August 2026 (articles are now single files in the PMC Cloud Service): there is no
default that still works, so base_url must name a mirror or a local copy of the layout (NCBI_BASE_URL is where it last
was). The listing and the downloads reuse data/pubmed/download.py (retries with backoff, Range resume of a .part
file, two attempts only when the host name does not resolve). NCBI publishes no MD5 beside these packages: a package is
verified by reading its whole gzip stream (CRC and length), its File List by its header and rows; the MD5 of the
verified package is recorded beside it (<name>.md5, as download.py does) so it is never fetched again.
"""
import csv
import difflib
import gzip
import os
import re
import tarfile
import zlib
from contextlib import ExitStack
from typing import NamedTuple

import requests
from tqdm import tqdm

from common import atomic_write, file_md5
from data.pmc.jats import LICENSES, MAX_ARTICLE_BYTES
from data.pubmed.download import DownloadError, download_all, fetch_part, get_text, natural_key, parse_md5, retrying

NCBI_BASE_URL = 'https://ftp.ncbi.nlm.nih.gov/pub/pmc/deprecated/'  # gone since August 2026: a mirror's is needed
GROUPS = ('oa_comm', 'oa_noncomm', 'oa_other')
LICENSE_GROUPS = {  # NCBI's three collections (they complement each other: an article is in one)
    'oa_comm': ('CC0', 'CC BY', 'CC BY-SA', 'CC BY-ND'),  # commercial use allowed
    'oa_noncomm': ('CC BY-NC', 'CC BY-NC-SA', 'CC BY-NC-ND'),  # non-commercial use only
    'oa_other': ('NO-CC CODE', ),  # no machine-readable Creative Commons license, no license, or a custom one
}
HEADER = ('Article File', 'Article Citation', 'AccessionID', 'LastUpdated (YYYY-MM-DD HH:MM:SS)', 'PMID', 'License',
          'Retracted')
ARTICLE_SUFFIXES = ('.xml', '.nxml')
PACKAGE = re.compile(r'(oa_comm|oa_noncomm|oa_other)_(xml|txt)\.(?:(PMC\d{3}x{6})\.baseline|incr)\.'
                     r'(\d{4}-\d{2}-\d{2})\.tar\.gz')
CHUNK = 1 << 20


class BadPackage(Exception):
    """A package that cannot be read to its end (truncated, corrupt, not a tar.gz): the message names it."""


class BadFileList(ValueError):
    """A File List that is not NCBI's (header, a row of the wrong width, a value that cannot be read)."""


class Row(NamedTuple):
    """One File List row: the member's path in the package, the citation, 'PMC123', 'YYYY-MM-DD HH:MM:SS', the PMID
    (None when the article is not in PubMed), NCBI's license name, whether NCBI marks it retracted, the package."""
    file: str
    citation: str
    pmcid: str
    updated: str
    pmid: object
    license: str
    retracted: bool
    package: str


# ------------------------------------------------------------------------------------------------
# packages


def iter_package(source, counts=None, name=None, max_member=MAX_ARTICLE_BYTES):
    """Yield (member name, bytes) for each .xml/.nxml member of a tar.gz (a path or a binary file object), in archive
    order, one member in memory at a time. Other members are skipped and counted in `counts` (a dict, updated in place:
    'articles', 'not_xml', 'too_large', 'not_file'). A package that ends early or is corrupt raises BadPackage naming
    it, after yielding every article before the damage (the caller keeps those)."""
    counts = counts if counts is not None else {}
    for key in ('articles', 'not_xml', 'too_large', 'not_file'):
        counts.setdefault(key, 0)
    is_path = isinstance(source, (str, os.PathLike))
    name = name or (os.path.basename(source) if is_path else getattr(source, 'name', 'package'))
    last = None
    try:
        with ExitStack() as stack:
            raw = stack.enter_context(open(source, 'rb')) if is_path else source
            # gzip here, not tarfile's 'r|gz': GzipFile raises at a cut stream (EOFError) and checks the CRC, where
            # tarfile's stream takes a gzip stream cut between two members for the end of the archive
            tar = stack.enter_context(tarfile.open(fileobj=stack.enter_context(gzip.GzipFile(fileobj=raw)), mode='r|'))
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile():
                    counts['not_file'] += 1
                elif not member.name.lower().endswith(ARTICLE_SUFFIXES):
                    counts['not_xml'] += 1
                elif member.size > max_member:
                    counts['too_large'] += 1
                else:
                    data = tar.extractfile(member).read()
                    last = member_name(member.name)
                    counts['articles'] += 1
                    yield last, data
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        after = f'after {counts["articles"]} article(s)' + (f', the last {last}' if last else '')
        raise BadPackage(f'{name}: truncated or corrupt {after}: {type(e).__name__}: {e}') from e


def member_name(name):
    return name.removeprefix('./')


def file_list_path(package_path):
    """The File List beside a package: NAME.tar.gz -> NAME.filelist.csv."""
    return re.sub(r'\.tar\.gz$', '', str(package_path)) + '.filelist.csv'


def package_order(names):
    """Package names in the order their articles override each other: baselines (by PMCID range, then date), then
    incremental packages by date. Names that are no package of the layout come first, in natural order."""

    def key(name):
        found = PACKAGE.fullmatch(os.path.basename(name))
        if not found:
            return (0, '', natural_key(os.path.basename(name)))
        _, _, baseline, date = found.groups()
        return (1, '', natural_key(baseline), date) if baseline else (2, date, natural_key(os.path.basename(name)))

    return sorted(names, key=key)


# ------------------------------------------------------------------------------------------------
# File Lists


def read_file_list(path, package=None):
    """A package's .filelist.csv -> [Row]; `package` names the package the rows describe (default: the name beside
    it). BadFileList (one line, naming the file and the line) when it is not NCBI's File List."""
    package = package or os.path.basename(re.sub(r'\.filelist\.csv$', '.tar.gz', str(path)))
    with open(path, newline='', encoding='utf-8-sig') as f:
        return list(parse_file_list(f, str(path), package))


def parse_file_list(lines, name, package):
    reader = csv.reader(lines)
    header = tuple(h.strip() for h in next(reader, ()))
    if header != HEADER:
        missing = [h for h in HEADER if h not in header]
        raise BadFileList(f'{name}: not a PMC File List: its header is {",".join(header)[:120]!r}' +
                          (f' (missing {", ".join(missing)})' if missing else f', expected {",".join(HEADER)!r}'))
    for line, fields in enumerate(reader, start=2):
        if not fields:
            continue
        if len(fields) != len(HEADER):
            raise BadFileList(f'{name}: line {line}: {len(fields)} fields, expected {len(HEADER)}')
        yield row_of(fields, f'{name}: line {line}', package)


def row_of(fields, where, package):
    file, citation, pmcid, updated, pmid, license, retracted = (f.strip() for f in fields)
    if not re.fullmatch(r'PMC\d+', pmcid):
        raise BadFileList(f'{where}: AccessionID {pmcid!r} is not PMC followed by digits')
    if not re.fullmatch(r'\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}', updated):
        raise BadFileList(f'{where}: LastUpdated {updated!r} is not YYYY-MM-DD HH:MM:SS')
    digits = pmid.removeprefix('PMID:')
    if digits and not (digits.isascii() and digits.isdigit()):
        raise BadFileList(f'{where}: PMID {pmid!r} is not a number')
    if retracted.lower() not in ('yes', 'no', ''):
        raise BadFileList(f'{where}: Retracted {retracted!r} is not yes or no')
    if not file:
        raise BadFileList(f'{where}: no Article File')
    pmid = int(digits) if digits else None
    return Row(member_name(file), citation, pmcid, updated, pmid, license, retracted.lower() == 'yes', package)


def compare_members(rows, names):
    """(rows whose article is not among the member names, member names no row lists), each in its own order: a File
    List and its package should name the same articles."""
    names = list(names)
    listed, present = {row.file for row in rows}, set(names)
    return [row for row in rows if row.file not in present], [n for n in names if n not in listed]


def latest_versions(rows):
    """{pmcid: Row} keeping, for each article, the row with the latest LastUpdated; `rows` in package order (baselines,
    then incremental packages by date: package_order), so of equal dates the later package's row wins."""
    latest = {}
    for row in rows:
        old = latest.get(row.pmcid)
        if old is None or row.updated >= old.updated:
            latest[row.pmcid] = row
    return latest


def citation_year(citation):
    """The year of an 'Article Citation' ('Front Oncol. 2019 Dec 6; 9:1306' -> 2019), 0 when it names none."""
    found = re.search(r'(?:^|[.;]\s*|\s)((?:1[89]|20)\d\d)\b', citation or '')
    return int(found.group(1)) if found else 0


# ------------------------------------------------------------------------------------------------
# licenses


def parse_licenses(value):
    """A --licenses value -> the frozenset of license names it keeps, None for all ('' or 'all'). Comma-separated
    names of LICENSES (any case: 'CC BY,cc0') or groups (oa_comm: its licenses). ValueError naming an unknown one, the
    closest known names, and all of them."""
    words = [' '.join(w.split()) for w in (value or '').split(',') if w.strip()]
    if not words or any(w.lower() == 'all' for w in words):
        return None
    spelled = {name.lower(): name for name in (*LICENSES, *LICENSE_GROUPS)}
    names = set()
    for word in words:
        name = spelled.get(word.lower())
        if name is None:
            close = difflib.get_close_matches(word.lower(), list(spelled), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(repr(spelled[c]) for c in close)}?)" if close else ''
            raise ValueError(f"unknown license {word!r}{hint}: known are {', '.join(LICENSES)}, the groups "
                             f"{', '.join(LICENSE_GROUPS)} (their licenses), or all")
        names.update(LICENSE_GROUPS.get(name, (name, )))
    return frozenset(names)


# ------------------------------------------------------------------------------------------------
# download


def group_url(base_url, group):
    """The folder of a license group's XML packages under base_url (the folder that holds oa_bulk/)."""
    if group not in GROUPS:
        raise ValueError(f"unknown license group {group!r}: expected one of {', '.join(GROUPS)}")
    return f"{base_url.rstrip('/')}/oa_bulk/{group}/xml/"


def parse_package_listing(html):
    """The XML package names (*.tar.gz of the layout) linked from a folder's HTML index, in package_order."""
    names = {m.group(1) for m in re.finditer(r'href="([^"/?#]+\.tar\.gz)"', html) if PACKAGE.fullmatch(m.group(1))}
    return package_order([n for n in names if PACKAGE.fullmatch(n).group(2) == 'xml'])


def list_packages(url, timeout=60.0, retries=8, backoff=1.0):
    """The package names in a group folder's listing. DownloadError when it cannot be had (in seconds when the host
    name does not resolve)."""
    with requests.Session() as session:
        return parse_package_listing(get_text(session, url, timeout, retries, backoff))


def check_gzip(path):
    """Read a .tar.gz's whole gzip stream: its CRC and length catch a truncated or corrupted download."""
    try:
        with gzip.open(path, 'rb') as f:
            while f.read(CHUNK):
                pass
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # not OSError at large: a disk that fails is this machine's
        return f'{type(e).__name__}: {e}'
    return None


def fetch_verified(session, url, dest, verify, timeout, retries, backoff, bar):
    """Fetch url into dest through dest.part (resumed where a killed run or a dropped connection left it, retried),
    then verify(part) -> None or what is wrong; a part that fails is fetched once more from scratch."""
    part, problem, sized = dest + '.part', None, []
    for _ in range(2):
        retrying(lambda: fetch_part(session, url, part, timeout, bar, sized), url, retries, backoff)
        problem = verify(part)
        if problem is None:
            os.replace(part, dest)
            return
        os.remove(part)
    raise DownloadError(f'{os.path.basename(dest)}: {problem} (twice); left out')


def check_file_list(path):
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            for _ in parse_file_list(f, os.path.basename(path), ''):
                pass
    except (BadFileList, UnicodeDecodeError) as e:
        return str(e)
    return None


def download_package(url, dest, timeout=60.0, retries=8, backoff=1.0, bar=None):
    """Fetch a package's File List, then the package, beside each other at dest (the .tar.gz path); returns the
    package's MD5. A package next to its .md5 record (and its File List) is not fetched again."""
    record, listing = dest + '.md5', file_list_path(dest)
    name = os.path.basename(dest)
    if os.path.exists(dest) and os.path.exists(record) and os.path.exists(listing):
        with open(record) as f:
            return parse_md5(f.read(), name)
    bar = bar if bar is not None else tqdm(total=0, disable=True)
    with requests.Session() as session:
        if not os.path.exists(listing):  # first: a package is worth nothing without it
            fetch_verified(session, file_list_path(url), listing, check_file_list, timeout, retries, backoff, bar)
        if os.path.exists(dest) and os.path.exists(record):
            with open(record) as f:
                return parse_md5(f.read(), name)
        fetch_verified(session, url, dest, check_gzip, timeout, retries, backoff, bar)
    md5 = file_md5(dest)
    with atomic_write(record, 'w') as f:  # after the package is in place: a record always speaks of a whole file
        f.write(f'MD5({name})= {md5}\n')
    return md5


def download_packages(jobs, connections=3, timeout=60.0, retries=8, backoff=1.0):
    """jobs: [(package url, dest .tar.gz path)] -> (ok: [(dest, md5)] in job order, failed: [(name, message)]): each
    package with its File List, in parallel as data/pubmed/download.py fetches files."""
    return download_all(jobs, connections, timeout, retries, backoff, fetch=download_package)
