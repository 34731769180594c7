"""
PubMed XML -> train.bin / val.bin / meta.pkl / meta.json, nanoGPT style.

    python data/pubmed/prepare.py                                  # download the baseline, prepare it all
    python data/pubmed/prepare.py --input=../shared/data/pubmed-corpus --vocab_size=8192

Stages, each cached per input file under out_dir/cache so a killed run (even kill -9) picks up where
it stopped and gives byte-identical outputs, whatever --workers is:
  1. download   (download.py)  resumable, MD5-verified, parallel
  2. parse      (parse.py)     one worker per file -> cache/parsed/<file>.<md5>.<cfg>.pkl
  3. merge      last file (numeric order) wins per PMID, a later DeleteCitation removes it, drop
                records without abstract or in other languages, train/val by a hash of the PMID
  4. tokenizer  byte-level BPE trained on (a deterministic sample of) the train split, or GPT-2
  5. tokenize   one worker per file -> cache/tokens/<file>.<key>.npz
  6. write      concatenate in file order, temp file + rename
"""
import errno
import fcntl
import glob
import gzip
import hashlib
import json
import multiprocessing
import os
import pickle
import re
import sys
import time
import zipfile
import zlib
from collections import Counter
from contextlib import contextmanager
from itertools import chain

import numpy as np
from lxml import etree
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, when run as a script
from common import atomic_write, die_with_parent, disk_full_message, is_disk_full, load_data_pickle, writable_folder  # noqa: E402
from configurator import configure, fail  # noqa: E402
from data.pubmed.download import DownloadError, download_all, file_md5, list_files, natural_key  # noqa: E402
from data.pubmed.parse import iter_file  # noqa: E402
from dataloader import token_dtype, write_meta  # noqa: E402
from tokenizer import encoding_from_spec, eot_id, gpt2_spec, spec_from_hf_folder, train_bpe, vocab_size_of  # noqa: E402

DEFAULTS = {
    'input': '',             # local .xml/.xml.gz files (a folder, searched recursively, or a glob): no network
    'out_dir': HERE,         # where train.bin, val.bin, meta.pkl, meta.json and cache/ go
    'raw_dir': '',           # downloaded files ('' = out_dir/raw)
    'max_files': 0,          # only the first N baseline (or --input) files; 0 = all
    'updates': False,        # also apply NCBI's update files, in numeric order, after the baseline
    'base_url': 'https://ftp.ncbi.nlm.nih.gov/pubmed/',  # NCBI's PubMed folder (a mirror, or a local server in tests)
    'connections': 3,        # parallel downloads
    'retries': 8,            # per request, on timeouts, connection errors and 5xx
    'timeout': 60.0,         # seconds without data before a request is retried
    'backoff': 1.0,          # seconds before the first retry, doubling each time (with jitter)
    'workers': os.cpu_count() or 1,  # processes for parsing and tokenizing
    'tokenizer': 'bpe',      # 'bpe' (trained here on the train split), 'gpt2', or an existing model's: a Hugging Face
                             # folder (tokenizer.json), a checkpoint (.pt), a prepared data folder or its meta.pkl
    'vocab_size': 32768,     # BPE vocabulary including <|endoftext|>
    'bpe_train_chars': 1_000_000_000,  # at most this many train-split characters to train BPE on
    'val_fraction': 0.005,   # share of PMIDs (by hash) in val.bin
    'languages': 'eng',      # comma-separated Language codes to keep, any case; 'all' keeps every language
    'export_jsonl': '',      # also write one JSON line per kept document to this path
    'allow_bad_files': False,  # exit 0 even if some files were corrupt or failed to download
    # subsets of PubMed, applied before the split (each record dropped is counted under the first rule it fails)
    'mesh': '',              # ;-separated MeSH descriptors (names, any case, or UIs like D009369): keep records with any
    'mesh_major': False,     # ... counting only the headings marked major topic (PubMed's [majr])
    'years': '',             # publication years to keep, inclusive: 2000-2019, 2020- or -1999
    'journals': '',          # ;-separated journals to keep: ISO abbreviations (any case) or NLM IDs
    'publication_types': '',  # ;-separated publication types to keep (names or UIs): records with any of them
    'drop_publication_types': '',  # ;-separated publication types to drop, e.g. 'Retracted Publication;Erratum'
    'keep_pmids': '',        # only the PMIDs listed here: a text file (spaces, commas, lines), a JSON file or a folder
    'exclude_pmids': 'auto',   # PMIDs kept out of both splits (a benchmark's test data): a text file of PMIDs, a JSON
                               # file keyed by PMID (PubMedQA's), or a folder of them; 'auto' = data/pubmedqa if there
}
PUBMEDQA = os.path.join(os.path.dirname(HERE), 'pubmedqa')  # data/pubmedqa: where the README puts PubMedQA's files
PARSE_VERSION = 3  # bump when parse.py's output changes: invalidates cache/parsed
CHUNK = 1024  # records per pickle in the parse cache, documents per tokenizer batch
PICKLE = 4


def parse_options(argv):
    o = configure(DEFAULTS, argv)
    problems = []
    if o['tokenizer'] not in ('bpe', 'gpt2') and not os.path.exists(o['tokenizer']):
        problems.append(f"--tokenizer={o['tokenizer']}: expected bpe, gpt2, or the path of a Hugging Face folder, a "
                        'checkpoint, a prepared data folder or a meta.pkl')
    if o['tokenizer'] == 'bpe' and not 258 <= o['vocab_size'] <= 2 ** 32:
        problems.append(f"--vocab_size={o['vocab_size']}: a byte-level BPE needs 258 .. 2**32 tokens")
    if not 0 < o['val_fraction'] < 1:
        problems.append(f"--val_fraction={o['val_fraction']}: expected a number between 0 and 1")
    for key in ('workers', 'connections', 'bpe_train_chars'):
        if o[key] < 1:
            problems.append(f'--{key}={o[key]}: expected a positive number')
    for key in ('max_files', 'retries'):
        if o[key] < 0:
            problems.append(f'--{key}={o[key]}: expected 0 or more')
    if not [c for c in o['languages'].split(',') if c.strip()]:
        problems.append("--languages is empty: give codes such as 'eng,fre' or 'all'")
    if o['input'] and not input_files(o['input']):
        problems.append(f"--input={o['input']}: no .xml or .xml.gz files there")
    if os.path.exists(o['out_dir']) and not os.path.isdir(o['out_dir']):
        problems.append(f"--out_dir={o['out_dir']}: is a file, not a folder")
    elif not writable_folder(o['out_dir']):
        problems.append(f"--out_dir={o['out_dir']}: cannot create or write to it")
    if o['export_jsonl'] and not writable_folder(os.path.dirname(os.path.abspath(o['export_jsonl'])), create=False):
        problems.append(f"--export_jsonl={o['export_jsonl']}: its folder does not exist or is not writable")
    if o['exclude_pmids'] not in ('', 'auto') and not os.path.exists(o['exclude_pmids']):
        problems.append(f"--exclude_pmids={o['exclude_pmids']}: no such file or folder")
    if problems:
        fail('; '.join(problems), code=2)
    o['raw_dir'] = o['raw_dir'] or os.path.join(o['out_dir'], 'raw')
    auto = o['exclude_pmids'] == 'auto'
    if auto:  # PubMedQA's PMIDs stay out of the training data wherever its files are at hand
        o['exclude_pmids'] = PUBMEDQA if os.path.isdir(PUBMEDQA) else ''
    try:  # read now, not after hours of parsing
        o['excluded'] = excluded_pmids(o['exclude_pmids'], only_pubmedqa=auto) if o['exclude_pmids'] else np.zeros(0, np.int64)
    except ValueError as e:
        fail(f"--exclude_pmids={o['exclude_pmids']}: {e}", code=2)
    if o['exclude_pmids'] and not len(o['excluded']):  # an empty list would let the benchmark into the training data unsaid
        if not auto:
            fail(f"--exclude_pmids={o['exclude_pmids']}: lists no PMID (--exclude_pmids='' excludes none)", 2)
        print(f"note: {PUBMEDQA}: no PMID in PubMedQA's files there ({', '.join(PUBMEDQA_FILES)}): none excluded",
              file=sys.stderr)
        o['exclude_pmids'] = ''
    o['subset'] = subset_filters(o)
    return o


def subset_filters(o):
    """The subset options as the merge applies them ({} when none is set); exit 2 naming a value that is none, or
    options that could keep nothing whatever the input (a reversed range, a type both kept and dropped, an empty list)."""
    filters = {}
    for key in ('mesh', 'journals', 'publication_types', 'drop_publication_types'):
        if o[key]:
            filters[key] = {w.strip().lower() for w in o[key].split(';') if w.strip()}
            if not filters[key]:  # ';' alone: no filter at all would be applied, unsaid
                fail(f"--{key}={o[key]}: names nothing (give ;-separated names or UIs)", 2)
    both = sorted(filters.get('publication_types', set()) & filters.get('drop_publication_types', set()))
    if both:
        fail(f"--publication_types and --drop_publication_types both name {'; '.join(both)}: a record cannot be kept "
             'and dropped for the same type', 2)
    if o['years']:
        found = re.fullmatch(r'\s*(\d{4})?\s*-\s*(\d{4})?\s*|\s*(\d{4})\s*', o['years'])
        if not found or not any(found.groups()):
            fail(f"--years={o['years']}: expected a range of years such as 2000-2019, 2020- or -1999 (or one year)", 2)
        lo, hi, one = found.groups()
        filters['years'] = (int(one or lo or 0), int(one or hi or 9999))
        if filters['years'][0] > filters['years'][1]:
            fail(f"--years={o['years']}: the first year is after the last (did you mean {hi}-{lo}?)", 2)
    if o['keep_pmids']:
        if not os.path.exists(o['keep_pmids']):
            fail(f"--keep_pmids={o['keep_pmids']}: no such file or folder", 2)
        try:
            filters['keep_pmids'] = excluded_pmids(o['keep_pmids'])
        except ValueError as e:
            fail(f"--keep_pmids={o['keep_pmids']}: {e}", 2)
        if not len(filters['keep_pmids']):
            fail(f"--keep_pmids={o['keep_pmids']}: lists no PMID, so nothing would be kept", 2)
        if np.isin(filters['keep_pmids'], o['excluded']).all():
            fail(f"--keep_pmids={o['keep_pmids']}: every PMID it lists is excluded by --exclude_pmids={o['exclude_pmids']}, "
                 "so nothing would be kept (--exclude_pmids='' keeps them)", 2)
    if o['mesh_major'] and 'mesh' not in filters:
        fail('--mesh_major=True: give the headings with --mesh', 2)
    if o['mesh_major']:
        filters['mesh_major'] = True
    return filters


def pmid_list_hash(pmids):
    """What names a list of PMIDs whatever its file's format: blake2b-128 of the sorted PMIDs, one per line
    (`sort -n | uniq | b2sum -l 128` of the list's numbers gives the same)."""
    return hashlib.blake2b(''.join(f'{p}\n' for p in np.unique(pmids)).encode(), digest_size=16).hexdigest()


def lock_out_dir(out_dir):
    """Hold out_dir for this run (released when the process ends, even by kill -9), then remove the temp
    files of killed runs: with the lock held, no other prepare.py is writing them."""
    lock = open(os.path.join(out_dir, '.prepare.lock'), 'a+')
    try:  # a POSIX record lock: held by this process only, not by the workers it forks
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):  # not held by anyone: this filesystem has no locks (ENOLCK)
            fail(f'{out_dir}: cannot be locked ({e.strerror}): its filesystem does not support locks (some network '
                 'filesystems): use an --out_dir on a local disk')
        lock.seek(0)
        fail(f"another prepare.py (pid {lock.read().strip() or '?'}) is writing to {out_dir}: wait for it to finish, "
             'or use another --out_dir')
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    stale = remove_temp_files(out_dir, os.path.join(out_dir, 'cache', '**'))
    if stale:
        print(f'removed {stale} temp file(s) left by a killed run', file=sys.stderr)
    return lock


def remove_temp_files(*folders):
    """Remove atomic_write's temp files in these folders (globs): only while this process holds the lock, when
    none is another run's. Returns how many there were."""
    stale = [p for folder in folders for p in glob.glob(os.path.join(folder, '*.tmp'), recursive=True)]
    for path in stale:
        os.remove(path)
    return len(stale)


@contextmanager
def writing_to(where, needed=None, workers_write_in=None):
    """The block writes at `where` (a file, or a folder of them; `needed` bytes when known): an OSError of this
    machine's there, a full disk above all, ends the run with one error line naming it (exit 1), never a traceback
    or an input file blamed. What the block wrote goes through atomic_write, so what was there before stays whole;
    the temp files of workers killed with their pool are removed from `workers_write_in`."""
    try:
        yield
    except OSError as e:
        if workers_write_in:
            remove_temp_files(workers_write_in)
        if is_disk_full(e):
            fail(f'{disk_full_message(where, e, needed)}, then run the same command again (what is done is cached); '
                 'the files already there are unchanged')
        fail(f"{where}: cannot write ({e.strerror or e}{f': {e.filename}' if e.filename else ''}); the files already "
             'there are unchanged')


def short_hash(*parts):
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
    return h.hexdigest()


def pool_imap(fn, items, workers, initializer=None, initargs=()):
    """Ordered map over a list, in this process for 1 worker, else in a pool of at most one process per item."""
    workers = min(workers, len(items))
    if workers <= 1:
        if initializer:
            initializer(*initargs)
        yield from map(fn, items)
        return
    with multiprocessing.Pool(workers, worker_init, (initializer, initargs)) as pool:
        yield from pool.imap(fn, items)


def worker_init(initializer, initargs):
    die_with_parent()  # a killed prepare.py takes its workers with it
    if initializer:
        initializer(*initargs)


# ------------------------------------------------------------------------------------------------
# 1. sources: local files or downloads, in numeric file order

def input_files(pattern):
    if os.path.isdir(pattern):
        paths = glob.glob(os.path.join(pattern, '**', '*'), recursive=True)
    else:
        paths = glob.glob(pattern, recursive=True)
    paths = [p for p in paths if os.path.isfile(p) and p.endswith(('.xml', '.xml.gz'))]
    paths = {os.path.realpath(p): p for p in sorted(paths, reverse=True)}.values()  # each file once, however linked
    return sorted(paths, key=lambda p: (natural_key(os.path.basename(p)), p))


def gather_sources(o):
    """[(path, md5 or None)] in the order records override each other, and [(name, error)]."""
    if o['input']:
        paths = input_files(o['input'])
        return [(p, None) for p in paths[:o['max_files'] or None]], []
    jobs = []
    for folder in ('baseline', 'updatefiles') if o['updates'] else ('baseline',):
        url = o['base_url'].rstrip('/') + f'/{folder}/'
        try:
            names = list_files(url, o['timeout'], o['retries'], o['backoff'])
        except (DownloadError, OSError) as e:  # requests' errors are OSErrors
            fail(f"cannot list {url}: {str(e).removeprefix(f'{url}: ')} (no network? prepare local files with --input=DIR)")
        if folder == 'baseline' and o['max_files']:
            names = names[:o['max_files']]
        print(f'{url}: {len(names)} files')
        jobs += [(url + n, os.path.join(o['raw_dir'], folder, n)) for n in names]
    ok, failed = download_all(jobs, o['connections'], o['timeout'], o['retries'], o['backoff'])
    for name, error in failed:
        print(f'error: {name}: download failed, left out: {error}', file=sys.stderr)
    return ok, failed


# ------------------------------------------------------------------------------------------------
# 2. parse: one file -> cached arrays (the header, read alone by the merge) + records (the body)

def pmid_hashes(pmids):
    """Two independent uniform 64-bit numbers per PMID: train/val split and BPE sample."""
    digests = b''.join(hashlib.blake2b(str(p).encode(), digest_size=16).digest() for p in pmids)
    pairs = np.frombuffer(digests, dtype='<u8').reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def write_parsed(path, cache, with_meta):
    """Stream one file's records into its cache, CHUNK records per pickle, then the header: the
    per-record arrays the merge needs, found through the file's last 8 bytes."""
    pmids, chars, codes, deletes, counts, chunk = [], [], [], [], {'book': 0, 'no_pmid': 0}, []
    subjects = {'year': [], 'journal': [], 'mesh': [], 'publication_type': []}
    with atomic_write(cache) as f:
        for kind, value in read_input(path, with_meta):
            if kind == 'record':
                pmids.append(value['pmid'])
                chars.append(len(document(value)) if value['abstract'] else 0)
                codes.append(','.join(value['language']))
                subjects['year'].append(value['year'])
                subjects['journal'].append((value['journal_iso'], value['nlm_id']))
                subjects['mesh'].append([(ui, name, major) for ui, name, major in value['mesh']])
                subjects['publication_type'].append([(ui, name, False) for ui, name in value['publication_types']])
                chunk.append(value)
                if len(chunk) == CHUNK:
                    pickle.dump(chunk, f, PICKLE)
                    chunk = []
            elif kind == 'delete':
                deletes.append(value)
            else:
                counts[kind] += 1
        pickle.dump(chunk, f, PICKLE)
        languages = sorted(set(codes))
        index = {code: i for i, code in enumerate(languages)}
        split_hash, sample_hash = pmid_hashes(pmids)
        header = {'pmid': np.array(pmids, dtype=np.int64), 'deletes': np.array(deletes, dtype=np.int64),
                  'counts': counts, 'chars': np.array(chars, dtype=np.int64), 'languages': languages,
                  'language': np.array([index[c] for c in codes], dtype=np.int32),
                  'split_hash': split_hash, 'sample_hash': sample_hash, **subject_arrays(subjects)}
        header_at = f.tell()
        pickle.dump(header, f, PICKLE)
        f.write(header_at.to_bytes(8, 'little'))
    return len(pmids)


def subject_arrays(subjects):
    """What the subset options look at, as the header's arrays: the year of each record; its journal as an index into
    a list of [ISO abbreviation, NLM ID]; its MeSH descriptors and publication types as codes (2 x the index of
    [UI, name] in the file's list of them, + 1 for a major topic) with each record's range of them in `*_at`."""
    journals = sorted(set(subjects['journal']))
    journal_index = {j: i for i, j in enumerate(journals)}
    arrays = {'year': np.array(subjects['year'], dtype=np.int32), 'journals': [list(j) for j in journals],
              'journal': np.array([journal_index[j] for j in subjects['journal']], dtype=np.int32)}
    for kind in ('mesh', 'publication_type'):
        terms = sorted({(ui, name) for entries in subjects[kind] for ui, name, _ in entries})
        index = {term: i for i, term in enumerate(terms)}
        arrays[f'{kind}_terms'] = [list(t) for t in terms]
        arrays[kind] = np.array([2 * index[ui, name] + major for entries in subjects[kind] for ui, name, major in entries],
                                dtype=np.int32)
        arrays[f'{kind}_at'] = np.cumsum([0] + [len(entries) for entries in subjects[kind]]).astype(np.int64)
    return arrays


def read_header(cache):
    with open(cache, 'rb') as f:
        f.seek(-8, os.SEEK_END)
        f.seek(int.from_bytes(f.read(8), 'little'))
        return load_data_pickle(f)


def iter_records(cache):
    """A cached file's records in document order, one chunk in memory at a time."""
    with open(cache, 'rb') as f:
        f.seek(-8, os.SEEK_END)
        header_at = int.from_bytes(f.read(8), 'little')
        f.seek(0)
        while f.tell() < header_at:
            yield from load_data_pickle(f)


def cached(path, read):
    """read(path) of a cache file; None when there is none, or when it is unreadable (said, and the file
    removed to be rebuilt): a cache is ours to rebuild, never a reason to drop an input file."""
    if not os.path.exists(path):
        return None
    try:
        return read(path)
    except MemoryError:  # this machine's, not the file's: the cache is fine
        raise
    except Exception as e:
        print(f'note: {path}: unreadable cache ({type(e).__name__}: {e}): rebuilding it', file=sys.stderr)
        os.remove(path)
        return None


def load_pickle_file(path):
    with open(path, 'rb') as f:
        return load_data_pickle(f)


def describe(e):
    if isinstance(e, EOFError):
        return f'truncated gzip stream (an incomplete download?): {e}'
    if isinstance(e, (zlib.error, gzip.BadGzipFile)):
        return f'bad gzip data: {e}'
    if isinstance(e, etree.XMLSyntaxError):
        return f'malformed or truncated XML: {e}'
    return f'{type(e).__name__}: {e}'


class BadInput(Exception):
    """An input file that cannot be read or parsed (its problem, describe()d): it is left out, the others go on."""


def read_input(path, with_meta):
    """iter_file(path), its errors raised as BadInput: only what reading the input raised blames the input, not
    what writing its cache raised (a full disk, a folder that cannot be written: this machine's, they stop the run)."""
    try:
        yield from iter_file(path, with_meta)
    except MemoryError:
        raise
    except Exception as e:
        raise BadInput(describe(e)) from e


def parse_task(task):
    """Worker: parse one file into the cache unless already there; never raises on a bad file (only on errors of
    this machine's, which no other file would escape)."""
    path, md5, cache_dir, with_meta = task
    name = os.path.basename(path)
    try:
        try:
            md5 = md5 or file_md5(path)
        except OSError as e:
            raise BadInput(describe(e))
        stem = name.split('.')[0]
        cache = os.path.join(cache_dir, f'{stem}.{md5[:16]}.{short_hash(PARSE_VERSION, with_meta)}.pkl')
        n = cached(cache, lambda path: len(read_header(path)['pmid']))
        if n is None:
            n = write_parsed(path, cache, with_meta)
        return {'name': name, 'md5': md5, 'cache': cache, 'records': n, 'error': None}
    except BadInput as e:  # a corrupt file is reported with its name, the others go on
        return {'name': name, 'path': path, 'error': str(e)}


def parse_all(sources, o):
    cache_dir = os.path.join(o['out_dir'], 'cache', 'parsed')
    os.makedirs(cache_dir, exist_ok=True)
    tasks = [(path, md5, cache_dir, bool(o['export_jsonl'])) for path, md5 in sources]
    parsed, bad, records = [], [], 0
    with writing_to(cache_dir, workers_write_in=cache_dir), \
            tqdm(pool_imap(parse_task, tasks, o['workers']), total=len(tasks), unit='file', desc='parse') as bar:
        for result in bar:
            if result['error']:
                tqdm.write(f"error: {result['path']}: corrupt or unreadable, left out: {result['error']}", file=sys.stderr)
                bad.append((result['name'], result['error']))
            else:
                parsed.append(result)
                records += result['records']
                bar.set_postfix(records=f'{records:,}')
    return parsed, bad


# ------------------------------------------------------------------------------------------------
# 3. merge: which record of which file ends up where (0 = dropped, 1 = train, 2 = val)

DROPPED, TRAIN, VAL = 0, 1, 2
SUBSET_RULES = ('not_in_keep_pmids', 'year', 'journal', 'mesh', 'publication_type')
SUBSET_OPTIONS = ('mesh', 'mesh_major', 'years', 'journals', 'publication_types', 'drop_publication_types', 'keep_pmids')
RULE_OPTIONS = {'not_in_keep_pmids': ('keep_pmids',), 'year': ('years',), 'journal': ('journals',), 'mesh': ('mesh', 'mesh_major'),
                'publication_type': ('publication_types', 'drop_publication_types')}  # the options behind each rule
SPLITS = {TRAIN: 'train', VAL: 'val'}


def language_mask(header, wanted):
    if 'all' in wanted:
        return np.ones(len(header['pmid']), dtype=bool)
    ok = [bool(wanted & set(code.split(','))) for code in header['languages']]
    return np.array(ok, dtype=bool)[header['language']] if ok else np.zeros(0, dtype=bool)


PUBMEDQA_FILES = ('ori_pqal.json', 'test_ground_truth.json', 'ori_pqaa.json', 'ori_pqau.json')  # keyed by PMID


def excluded_pmids(path, only_pubmedqa=False):
    """The sorted PMIDs that path lists: a JSON file's keys (PubMedQA's files are keyed by PMID) or list, the PMIDs of
    a text file (separated by spaces, commas or lines; '#' starts a comment), or those of every .json/.txt file in a
    folder (only PubMedQA's own files with only_pubmedqa: other JSON, e.g. pubmedqa.py's results, may lie beside them).
    ValueError naming the file and the first entry that is not a PMID (1-10 ASCII digits)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in PUBMEDQA_FILES if os.path.isfile(os.path.join(path, n))) \
            if only_pubmedqa else sorted(glob.glob(os.path.join(path, '**', '*.json'), recursive=True) +
                                         glob.glob(os.path.join(path, '**', '*.txt'), recursive=True))
    else:
        files = [path]
    pmids = []
    for name in files:
        try:
            with open(name, encoding='utf-8') as f:
                text = f.read()
            if name.endswith('.json'):
                listed = json.loads(text)
                entries = list(listed.keys() if isinstance(listed, dict) else listed if isinstance(listed, list) else [listed])
            else:
                entries = re.split(r'[\s,]+', re.sub(r'#.*', '', text).strip())
        except (OSError, ValueError) as e:  # ValueError: not UTF-8, or not (whole) JSON
            raise ValueError(f'{name}: not readable ({type(e).__name__}: {e})')
        for entry in entries:
            if entry == '' and not name.endswith('.json'):
                continue
            if not re.fullmatch(r'[0-9]{1,10}', str(entry)) or isinstance(entry, bool):
                raise ValueError(f'{name}: {entry!r} is not a PMID (1-10 digits)')
            pmids.append(int(entry))
    return np.unique(np.array(pmids, dtype=np.int64))


def merge(parsed, o, excluded=np.zeros(0, dtype=np.int64)):
    """Which record of which file is kept, in which split: a plan per file (DROPPED/TRAIN/VAL per record).
    `excluded`: sorted PMIDs kept out of both splits (excluded_pmids).

    NCBI's rule is that the last word on a PMID counts: a record in a later file replaces earlier ones,
    a DeleteCitation removes them. So the files are walked last to first and the first event met for a
    PMID wins; everything older about it loses. One small array holds each PMID's state:
        0 not met yet   1 a record won   2 a delete won   3 a delete won and removed a record
    Example, files f1 = [record 5, record 7], f2 = [record 5, delete 7], f3 = [delete 9]:
        f3: delete 9 wins                       state 9 = 2
        f2: (read backwards) delete 7 wins      state 7 = 2;  record 5 wins: kept from f2, state 5 = 1
        f1: record 7 loses to a delete          state 7 = 3;  record 5 loses to f2's: 'replaced' + 1
    At the end 'deleted' counts the 3s (PMID 7; delete 9 removed nothing)."""
    wanted = {c.strip().lower() for c in o['languages'].split(',') if c.strip()}
    val_below = np.uint64(min(int(o['val_fraction'] * 2.0 ** 64), 2 ** 64 - 1))
    # every PMID met, sorted: a PMID's state lives at its index here, so memory grows with the number of
    # PMIDs, not with the largest one (a single 10-digit PMID would otherwise cost gigabytes). The headers
    # are read again in the walk below: holding them all would cost ~36 bytes a record (1.3 GB for PubMed)
    met, terms = [], {'mesh': set(), 'publication_type': set(), 'journal': set()}
    for h in (read_header(p['cache']) for p in parsed):
        met.append(np.unique(np.concatenate([h['pmid'], h['deletes']])))
        for kind in ('mesh', 'publication_type'):
            terms[kind].update(tuple(term) for term in h[f'{kind}_terms'])
        terms['journal'].update((nlm, iso) for iso, nlm in h['journals'])
    subset = with_other_spellings(o['subset'], terms)
    ids = np.unique(np.concatenate(met))
    state = np.zeros(len(ids), dtype=np.int8)
    counts, plans = Counter(), [None] * len(parsed)
    for i in reversed(range(len(parsed))):
        h = read_header(parsed[i]['cache'])
        deletes = h['deletes']
        counts.update(h['counts'])
        counts['records'] += len(h['pmid'])
        counts['delete_requests'] += len(deletes)
        pmid = np.searchsorted(ids, h['pmid'])  # indices into state from here on
        events = np.concatenate([pmid, np.searchsorted(ids, deletes)])[::-1]  # within a file deletes come after the records
        _, first = np.unique(events, return_index=True)
        wins = np.zeros(len(events), dtype=bool)
        wins[first] = True
        wins &= state[events] == 0
        is_record = np.arange(len(events)) >= len(deletes)
        state[events[wins & is_record]] = 1
        state[events[wins & ~is_record]] = 2
        wins = wins[::-1][:len(pmid)]
        counts['replaced'] += int(np.sum(~wins & (state[pmid] == 1)))
        state[pmid[~wins & (state[pmid] >= 2)]] = 3
        no_abstract = wins & (h['chars'] == 0)
        other_language = wins & ~no_abstract & ~language_mask(h, wanted)
        counts['no_abstract'] += int(no_abstract.sum())
        counts['language'] += int(other_language.sum())
        listed = wins & ~no_abstract & ~other_language & np.isin(h['pmid'], excluded)
        counts['excluded'] += int(listed.sum())
        keep = wins & ~no_abstract & ~other_language & ~listed
        for rule, kept in subset_masks(h, subset):  # each record counted under the first rule it fails
            counts[rule] += int((keep & ~kept).sum())
            keep &= kept
        plan = np.where(h['split_hash'] < val_below, VAL, TRAIN).astype(np.int8)
        plan[~keep] = DROPPED
        plans[i] = plan
    counts['deleted'] = int(np.sum(state == 3))
    return plans, counts


TERM_OPTIONS = {'mesh': 'mesh', 'publication_types': 'publication_type', 'drop_publication_types': 'publication_type',
                'journals': 'journal'}


def with_other_spellings(subset, terms):
    """The subset with every MeSH heading, publication type or journal it names by its ID (a UI, an NLM ID) also named
    by each name the input gives that ID, and one named by name also by its ID and that ID's other names: MEDLINE
    before 2014 wrote no UIs, older records abbreviate a journal otherwise ('J. Clin. Oncol.', now 'J Clin Oncol'),
    NLM renames headings now and then; without this a rule would silently miss those records.
    terms: {kind: {(ID, name)}} of every input file."""
    subset = dict(subset)
    for key, kind in TERM_OPTIONS.items():
        if key in subset:
            wanted = subset[key]
            ids = {i.lower() for i, name in terms[kind] if i and (i.lower() in wanted or name.lower() in wanted)}
            subset[key] = wanted | ids | {name.lower() for i, name in terms[kind] if name and i.lower() in ids}
    return subset


def any_term(h, kind, wanted, major_only=False):
    """Per record of a file's header: whether any of its `kind` terms (mesh, publication_type) is wanted (by UI or name,
    lower case), counting major topics only if asked."""
    hit = np.array([ui.lower() in wanted or name.lower() in wanted for ui, name in h[f'{kind}_terms']] + [False])
    codes, at = h[kind], h[f'{kind}_at']
    ok = hit[codes // 2] & ((codes % 2 == 1) if major_only else True)
    total = np.concatenate([[0], np.cumsum(ok)])
    return total[at[1:]] > total[at[:-1]]


def subset_masks(h, subset):
    """[(rule, kept)] for the subset options set (parse_options' o['subset']), in the order the summary counts them."""
    masks = []
    if 'keep_pmids' in subset:
        masks.append(('not_in_keep_pmids', np.isin(h['pmid'], subset['keep_pmids'])))
    if 'years' in subset:
        lo, hi = subset['years']
        known = h['year'] > 0  # 0: the record gives no year, so none of the range (-1999 is from year 1, not from 0)
        masks.append(('year', known & (h['year'] >= lo) & (h['year'] <= hi)))
    if 'journals' in subset:
        ok = np.array([iso.lower() in subset['journals'] or nlm.lower() in subset['journals'] for iso, nlm in h['journals']]
                      + [False])
        masks.append(('journal', ok[h['journal']]))
    if 'mesh' in subset:
        masks.append(('mesh', any_term(h, 'mesh', subset['mesh'], subset.get('mesh_major', False))))
    if 'publication_types' in subset:
        masks.append(('publication_type', any_term(h, 'publication_type', subset['publication_types'])))
    if 'drop_publication_types' in subset:
        masks.append(('publication_type', ~any_term(h, 'publication_type', subset['drop_publication_types'])))
    return masks


# ------------------------------------------------------------------------------------------------
# 4. tokenizer

def document(record):
    return f"{record['title']}\n{record['abstract']}" if record['title'] else record['abstract']


def existing_tokenizer(path):
    """The tokenizer of an existing model or data folder, so new files are tokenized for a model that exists."""
    try:
        if os.path.isfile(os.path.join(path, 'tokenizer.json')) or os.path.isfile(os.path.join(path, 'config.json')):
            return spec_from_hf_folder(path)
        meta = os.path.join(path, 'meta.pkl') if os.path.isdir(path) else path
        if meta.endswith('.pkl') and os.path.isfile(meta):
            return load_pickle_file(meta)['tokenizer']
        from checkpoint import read_fields, tokenizer_of  # torch, only for this case
        return tokenizer_of(read_fields(path), path)  # a ckpt.pt or a sharded NAME.dcp, weights unread
    except Exception as e:
        fail(f'--tokenizer={path}: no tokenizer to be had from it ({type(e).__name__}: {e})', 2)


def load_gpt2():
    try:
        return gpt2_spec()
    except (OSError, ValueError) as e:  # requests' errors are OSErrors
        fail(f"cannot load tiktoken's GPT-2 files ({type(e).__name__}): tiktoken downloads them once; offline, "
             'set TIKTOKEN_CACHE_DIR to a folder that holds them (e.g. a copy of ../shared/tiktoken-cache)')


def check_bpe_size(spec, o):
    """A BPE stops merging when its sample has no pair left to merge: say so, and refuse one with no merge."""
    size = vocab_size_of(spec)
    if size <= 256 + len(spec['special_tokens']):
        fail(f"the BPE sample is too small to learn any merge (--bpe_train_chars={o['bpe_train_chars']}, "
             f"{o['vocab_size']} tokens asked): give it more text; nothing written")
    if size < o['vocab_size']:
        print(f"note: the BPE has {size:,} tokens, fewer than --vocab_size={o['vocab_size']:,}: its sample had no more "
              'pairs to merge (more text, or a larger --bpe_train_chars, gives more); meta.pkl records the real size',
              file=sys.stderr)


def train_tokenizer(parsed, plans, o):
    """The BPE of a sample of about bpe_train_chars characters of the train split (cached by sample)."""
    headers = [read_header(p['cache']) for p in parsed]
    train_chars = sum(int(h['chars'][plan == TRAIN].sum()) for h, plan in zip(headers, plans))
    below = np.uint64(min(int(min(1.0, o['bpe_train_chars'] / max(train_chars, 1)) * 2.0 ** 64), 2 ** 64 - 1))
    samples = [(plan == TRAIN) & (h['sample_hash'] <= below) for h, plan in zip(headers, plans)]
    key = short_hash(o['vocab_size'], *[(p['cache'], s.tobytes()) for p, s in zip(parsed, samples)])
    cache = os.path.join(o['out_dir'], 'cache', f'bpe.{key}.pkl')
    spec = cached(cache, load_pickle_file)
    if spec is not None:
        return spec

    def texts():
        for p, sample in zip(parsed, samples):
            yield from (document(r) for r, chosen in zip(iter_records(p['cache']), sample) if chosen)
    n_chars = sum(int(h['chars'][s].sum()) for h, s in zip(headers, samples))
    print(f'training a {o["vocab_size"]}-token BPE on {n_chars:,} characters of the train split ...', file=sys.stderr)
    with writing_to(cache), atomic_write(cache) as f:
        pickle.dump(train_bpe(texts(), o['vocab_size']), f, PICKLE)
    return load_pickle_file(cache)  # always the unpickled copy: meta.pkl's bytes must not depend on the path taken


# ------------------------------------------------------------------------------------------------
# 5. tokenize: one file -> cache/tokens/<file>.<key>.npz with its train and val tokens

_encoder = {}


def init_encoder(spec):
    _encoder['enc'] = encoding_from_spec(spec)
    _encoder['eot'] = eot_id(spec)
    _encoder['dtype'] = np.dtype(token_dtype(vocab_size_of(spec)))


def tokenize_task(task):
    """Worker: one file's kept documents -> train and val token arrays, each document + <|endoftext|>."""
    parsed_cache, plan, out = task
    stats = cached(out, shard_stats)
    if stats is not None:
        return stats
    enc, eot, dtype = _encoder['enc'], _encoder['eot'], _encoder['dtype']
    texts, arrays, stats = {TRAIN: [], VAL: []}, {TRAIN: [], VAL: []}, Counter()

    def flush(split):
        ids = enc.encode_ordinary_batch(texts[split], num_threads=1)  # a literal <|endoftext|> in a text is text
        arrays[split].append(np.fromiter(chain.from_iterable(t + [eot] for t in ids), dtype=dtype,
                                         count=sum(len(t) + 1 for t in ids)))
        texts[split].clear()
    for record, split in zip(iter_records(parsed_cache), plan):
        if split != DROPPED:
            text = document(record)
            texts[split].append(text)
            stats[f'{SPLITS[split]}_docs'] += 1
            stats[f'{SPLITS[split]}_bytes'] += len(text.encode())
            if len(texts[split]) == CHUNK:
                flush(split)
    for split in (TRAIN, VAL):
        flush(split)
    with atomic_write(out) as f:
        np.savez(f, train=np.concatenate(arrays[TRAIN]), val=np.concatenate(arrays[VAL]),
                 **{k: stats[k] for k in ('train_docs', 'train_bytes', 'val_docs', 'val_bytes')})
    return shard_stats(out)


def shard_stats(path):
    """Token, document and byte counts of a token shard, from its headers (the tokens are not read)."""
    with np.load(path) as z:
        return {k: int(z[k]) if k.endswith(('_docs', '_bytes')) else stored_length(z, k) for k in z.files}


def stored_length(npz, key):
    """The length of array `key` of an open .npz, from its header: the tokens are not read just to count them."""
    with npz.zip.open(f'{key}.npy') as f:
        version = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return header(f)[0][0]


def tokenize_all(parsed, plans, spec, o):
    token_dir = os.path.join(o['out_dir'], 'cache', 'tokens')
    os.makedirs(token_dir, exist_ok=True)
    spec_key = short_hash(pickle.dumps({k: v for k, v in spec.items() if k != 'name'}, PICKLE))
    tasks = [(p['cache'], plan, os.path.join(token_dir, f"{os.path.basename(p['cache'])[:-4]}.{short_hash(spec_key, plan.tobytes())}.npz"))
             for p, plan in zip(parsed, plans)]
    totals = Counter()
    with writing_to(token_dir, workers_write_in=token_dir), tqdm(total=len(tasks), unit='file', desc='tokenize') as bar:
        for stats in pool_imap(tokenize_task, tasks, o['workers'], init_encoder, (spec,)):
            totals.update(stats)
            bar.update()
            bar.set_postfix(tokens=f"{totals['train'] + totals['val']:,}")
    return [t[2] for t in tasks], totals


# ------------------------------------------------------------------------------------------------
# 6. outputs

def write_bins(shards, out_dir, needed):
    """train.bin and val.bin: the shards' tokens in file order (`needed` bytes in all, said if the disk is full)."""
    with writing_to(out_dir, needed), atomic_write(os.path.join(out_dir, 'train.bin')) as train, \
            atomic_write(os.path.join(out_dir, 'val.bin')) as val:
        for shard in shards:
            tokens = read_shard(shard)
            train.write(tokens['train'])  # file.write raises on a full disk; ndarray.tofile lost that error: a short file
            val.write(tokens['val'])


def read_shard(shard):
    """A token shard's arrays; an unreadable one is removed (to be rebuilt) with one error line."""
    try:
        with np.load(shard) as z:
            return {'train': z['train'], 'val': z['val']}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        os.remove(shard)
        fail(f'{shard}: unreadable cache ({type(e).__name__}: {e}): removed; run the same command again to rebuild it')


def write_jsonl(parsed, plans, path):
    with atomic_write(path, 'w') as f:
        for p, plan in zip(parsed, plans):
            for r, split in zip(iter_records(p['cache']), plan):
                if split == DROPPED:
                    continue
                f.write(json.dumps({'pmid': r['pmid'], 'split': 'val' if split == VAL else 'train',
                                    'title': r['title'], 'abstract': r['abstract'], 'authors': r['authors'],
                                    'journal': r['journal'], 'publication_date': r['publication_date'],
                                    'affiliations': r['affiliations'], 'language': r['language'], 'year': r['year'],
                                    'journal_iso': r['journal_iso'], 'nlm_id': r['nlm_id'], 'mesh': r['mesh'],
                                    'publication_types': r['publication_types']},
                                   ensure_ascii=False) + '\n')


def subset_record(o):
    """meta's `subset`: the subset options set, as given; with --keep_pmids also the list itself, by its number of
    PMIDs and its hash (pmid_list_hash): a path says nothing of what the file held when the data was made."""
    record = {k: o[k] for k in SUBSET_OPTIONS if o[k]}
    if o['keep_pmids']:
        pmids = o['subset']['keep_pmids']
        record.update(keep_pmids_listed=len(pmids), keep_pmids_blake2b=pmid_list_hash(pmids))
    return record


def why_nothing_is_kept(counts, o):
    """Of the records met, how many each rule dropped (those that dropped any), a subset rule by its options."""
    if not counts['records']:
        return 'the files hold no citation records'
    reasons = [(counts['replaced'], 'replaced by a later version'), (counts['deleted'], 'deleted'),
               (counts['no_abstract'], 'without abstract'),
               (counts['language'], f"in another language (--languages={o['languages']}"
                                    f"{'' if o['subset'] else '; --languages=all keeps every one'})"),
               (counts['excluded'], f"excluded by --exclude_pmids={o['exclude_pmids']}"),
               *((counts[rule], 'dropped by ' + ' '.join(f'--{k}={o[k]}' for k in RULE_OPTIONS[rule] if o[k]))
                 for rule in SUBSET_RULES)]
    return f"of the {counts['records']:,} records, " + ', '.join(f'{n:,} {why}' for n, why in reasons if n)


def print_summary(meta, counts, n_files, elapsed):
    docs = meta['train_docs'] + meta['val_docs']
    tokens = meta['train_tokens'] + meta['val_tokens'] - docs  # <|endoftext|> is not text
    lines = [
        f"files: {n_files} given, {len(meta['files'])} prepared, {len(meta['bad_files'])} bad",
        f"records: {counts['records'] + counts['book'] + counts['no_pmid']:,} seen, {docs:,} kept; dropped: "
        f"{counts['no_abstract']:,} without abstract, {counts['language']:,} other language, "
        f"{counts['book']:,} books, {counts['no_pmid']:,} without a valid PMID",
        f"PMIDs: {counts['replaced']:,} duplicates replaced by a later version, {counts['deleted']:,} deleted "
        f"({counts['delete_requests']:,} delete requests), {counts['excluded']:,} excluded "
        f"({meta['excluded_pmids']['source'] or 'no --exclude_pmids'})",
        *([f"subset ({', '.join(f'{k}={v!r}' for k, v in meta['subset'].items() if k in SUBSET_OPTIONS)}): dropped "
           f"{', '.join(f'{counts[rule]:,} by {rule}' for rule in SUBSET_RULES if rule in counts)}"] if meta['subset'] else []),
        f"train: {meta['train_docs']:,} docs, {meta['train_tokens']:,} tokens; "
        f"val: {meta['val_docs']:,} docs, {meta['val_tokens']:,} tokens",
        f"{(meta['train_bytes'] + meta['val_bytes']) / max(tokens, 1):.3f} bytes per token "
        f"({meta['tokenizer']['name']}, vocab {meta['vocab_size']:,}); {elapsed:.1f}s",
    ]
    print('\n'.join(lines))


def main(argv=None):
    t0 = time.time()
    o = parse_options(argv)
    if o['exclude_pmids']:
        print(f"excluding the PMIDs listed in {o['exclude_pmids']} from both splits (benchmark data, e.g. PubMedQA's; "
              "--exclude_pmids='' keeps them)", file=sys.stderr)
    if o['tokenizer'] == 'bpe':
        spec = None  # trained after the merge, on the train split
    else:  # a tokenizer that cannot be had fails now, not after the parse
        spec = load_gpt2() if o['tokenizer'] == 'gpt2' else existing_tokenizer(o['tokenizer'])
    with writing_to(o['out_dir']):
        os.makedirs(o['out_dir'], exist_ok=True)
        lock = lock_out_dir(o['out_dir'])  # noqa: F841 (held until the process ends)
    with writing_to(o['raw_dir']):  # downloads only
        sources, failed_downloads = gather_sources(o)
    parsed, corrupt = parse_all(sources, o)
    bad = failed_downloads + corrupt
    if not parsed:
        fail('no file could be prepared' + (f' ({len(bad)} bad)' if bad else ''))
    excluded = o['excluded']
    plans, counts = merge(parsed, o, excluded)
    train_docs, val_docs = sum(int((p == TRAIN).sum()) for p in plans), sum(int((p == VAL).sum()) for p in plans)
    if not train_docs and not val_docs:
        fail(f'no documents to keep: {why_nothing_is_kept(counts, o)}; nothing written')
    if not train_docs or not val_docs:
        fail(f'the {"val" if train_docs else "train"} split is empty ({train_docs} train, {val_docs} val '
             f'documents): use more input files{", a subset that keeps more" if o["subset"] else ""} or a '
             f'{"larger" if train_docs else "smaller"} --val_fraction; nothing written')
    if spec is None:
        spec = train_tokenizer(parsed, plans, o)
        check_bpe_size(spec, o)
    shards, totals = tokenize_all(parsed, plans, spec, o)
    if o['export_jsonl']:
        with writing_to(o['export_jsonl']):
            write_jsonl(parsed, plans, o['export_jsonl'])
    write_bins(shards, o['out_dir'], (totals['train'] + totals['val']) * np.dtype(token_dtype(vocab_size_of(spec))).itemsize)
    sizes = {'train_tokens': totals['train'], 'val_tokens': totals['val'],
             **{k: totals[k] for k in ('train_docs', 'val_docs', 'train_bytes', 'val_bytes')}}
    exclusion = {'source': o['exclude_pmids'], 'listed': len(excluded), 'excluded': counts['excluded'],
                 'blake2b': pmid_list_hash(excluded) if o['exclude_pmids'] else ''}
    with writing_to(o['out_dir']):
        meta = write_meta(o['out_dir'], spec, excluded_pmids=exclusion, files=[{'name': p['name'], 'md5': p['md5']} for p in parsed],
                          bad_files=[{'name': n, 'error': e} for n, e in bad], records=dict(sorted(counts.items())),
                          split={'rule': 'a hash of the PMID', 'val_fraction': o['val_fraction']}, languages=o['languages'],
                          subset=subset_record(o), **sizes)
    print_summary(meta, counts, len(sources) + len(failed_downloads), time.time() - t0)
    if bad:
        print(f"{len(bad)} bad file(s) left out: {', '.join(n for n, _ in bad)}", file=sys.stderr)
        if not o['allow_bad_files']:
            print('exiting with status 1 (use --allow_bad_files=True to accept the outputs as they are)', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
