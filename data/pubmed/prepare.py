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
import hashlib
import json
import multiprocessing
import os
import pickle
import sys
import time
import zipfile
from collections import Counter
from contextlib import contextmanager
from itertools import chain

import numpy as np
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, when run as a script
from common import (atomic_write, die_with_parent, disk_full_message, fail, is_disk_full, load_data_pickle,
                    writable_folder)
from configurator import Option, at_least, configure, inside, positive
from data.pubmed.download import DownloadError, download_all, file_md5, list_files, natural_key
from data.pubmed.parse import (PARSE_VERSION, BadInput, describe, document, iter_records, read_header, write_parsed)
from data.pubmed.selection import (DROPPED, PUBMEDQA_FILES, SPLITS, SUBSET_OPTIONS, SUBSET_RULES, TRAIN, VAL,
                                   exclusion_record, merge, read_pmid_list, subset_filters, subset_record,
                                   why_nothing_is_kept)
from dataloader import token_dtype, write_meta
from tokenizer import encoding_from_spec, eot_id, gpt2_spec, model_tokenizer, train_bpe, vocab_size_of


def names_something(value):
    return None if [c for c in value.split(',') if c.strip()] else "is empty: give codes such as 'eng,fre' or 'all'"


# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'input': '',             # local .xml/.xml.gz files (a folder, searched recursively, or a glob): no network
    'out_dir': HERE,         # where train.bin, val.bin, meta.pkl, meta.json and cache/ go
    'raw_dir': '',           # downloaded files ('' = out_dir/raw)
    'max_files': Option(0, at_least(0)),  # only the first N baseline (or --input) files; 0 = all
    'updates': False,        # also apply NCBI's update files, in numeric order, after the baseline
    'base_url': 'https://ftp.ncbi.nlm.nih.gov/pubmed/',  # NCBI's PubMed folder (a mirror, or a local server in tests)
    'connections': Option(3, at_least(1)),  # parallel downloads
    'retries': Option(8, at_least(0)),  # per request, on timeouts, connection errors and 5xx
    'timeout': Option(60.0, positive),  # seconds without data before a request is retried
    'backoff': Option(1.0, at_least(0)),  # seconds before the first retry, doubling each time (with jitter)
    'workers': Option(os.cpu_count() or 1, at_least(1)),  # processes for parsing and tokenizing
    'tokenizer': 'bpe',      # 'bpe' (trained here on the train split), 'gpt2', or an existing model's: a Hugging Face
                             # folder (tokenizer.json), a checkpoint (.pt), a prepared data folder or its meta.pkl
    'vocab_size': 32768,     # BPE vocabulary including <|endoftext|>
    'bpe_train_chars': Option(1_000_000_000, at_least(1)),  # at most this many train-split characters to train BPE on
    'val_fraction': Option(0.005, inside(0, 1)),  # share of PMIDs (by hash) in val.bin
    'languages': Option('eng', names_something),  # comma-separated Language codes to keep, any case; 'all' keeps every
                                                  # language
    'export_jsonl': '',      # also write one JSON line per kept document to this path
    'allow_bad_files': False,  # exit 0 even if some files were corrupt or failed to download
    # subsets of PubMed, applied before the split (each record dropped is counted under the first rule it fails)
    'mesh': '',              # ;-separated MeSH descriptors (names, any case, or UIs like D009369): keep records with
                             # any
    'mesh_major': False,     # ... counting only the headings marked major topic (PubMed's [majr])
    'years': '',             # publication years to keep, inclusive: 2000-2019, 2020- or -1999
    'journals': '',          # ;-separated journals to keep: ISO abbreviations (any case) or NLM IDs
    'publication_types': '',  # ;-separated publication types to keep (names or UIs): records with any of them
    'drop_publication_types': '',  # ;-separated publication types to drop, e.g. 'Retracted Publication;Erratum'
    'keep_pmids': '',        # only the PMIDs listed here: a text file (spaces, commas, lines), a JSON file or a folder
    'exclude_pmids': 'auto',   # PMIDs kept out of both splits (a benchmark's test data): a text file of PMIDs, a JSON
                               # file keyed by PMID (PubMedQA's), or a folder of them; 'auto' = data/pubmedqa if there
}
# yapf: enable
PUBMEDQA = os.path.join(os.path.dirname(HERE), 'pubmedqa')  # data/pubmedqa: where the README puts PubMedQA's files
CHUNK = 1024  # documents per tokenizer batch
PICKLE = 4


def parse_options(argv):
    o = configure(OPTIONS, argv)
    problems = []
    if o['tokenizer'] not in ('bpe', 'gpt2') and not os.path.exists(o['tokenizer']):
        problems.append(f"--tokenizer={o['tokenizer']}: expected bpe, gpt2, or the path of a Hugging Face folder, a "
                        'checkpoint, a prepared data folder or a meta.pkl')
    if o['tokenizer'] == 'bpe' and not 258 <= o['vocab_size'] <= 2**32:
        problems.append(f"--vocab_size={o['vocab_size']}: a byte-level BPE needs 258 .. 2**32 tokens")
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
        o['excluded'] = read_pmid_list(o['exclude_pmids'], only_pubmedqa=auto) if o['exclude_pmids'] else np.zeros(
            0, np.int64)
    except ValueError as e:
        fail(f"--exclude_pmids={o['exclude_pmids']}: {e}", code=2)
    if o['exclude_pmids'] and not len(
            o['excluded']):  # an empty list would let the benchmark into the training data unsaid
        if not auto:
            fail(f"--exclude_pmids={o['exclude_pmids']}: lists no PMID (--exclude_pmids='' excludes none)", 2)
        print(f"note: {PUBMEDQA}: no PMID in PubMedQA's files there ({', '.join(PUBMEDQA_FILES)}): none excluded",
              file=sys.stderr)
        o['exclude_pmids'] = ''
    o['subset'] = subset_filters(o)
    return o


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
    for folder in ('baseline', 'updatefiles') if o['updates'] else ('baseline', ):
        url = o['base_url'].rstrip('/') + f'/{folder}/'
        try:
            names = list_files(url, o['timeout'], o['retries'], o['backoff'])
        except (DownloadError, OSError) as e:  # requests' errors are OSErrors
            fail(f"cannot list {url}: {str(e).removeprefix(f'{url}: ')} (no network? prepare local files with "
                 "--input=DIR)")
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
                tqdm.write(f"error: {result['path']}: corrupt or unreadable, left out: {result['error']}",
                           file=sys.stderr)
                bad.append((result['name'], result['error']))
            else:
                parsed.append(result)
                records += result['records']
                bar.set_postfix(records=f'{records:,}')
    return parsed, bad


# ------------------------------------------------------------------------------------------------
# 3. merge (selection.py): which record of which file ends up where (0 = dropped, 1 = train, 2 = val)

# ------------------------------------------------------------------------------------------------
# 4. tokenizer


def existing_tokenizer(path):
    """The tokenizer of an existing model or data folder, so new files are tokenized for a model that exists."""
    try:
        if os.path.isfile(os.path.join(path, 'tokenizer.json')) or os.path.isfile(os.path.join(path, 'config.json')):
            return model_tokenizer(path)  # what train.py --init_from=FOLDER checks the data against
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
        print(
            f"note: the BPE has {size:,} tokens, fewer than --vocab_size={o['vocab_size']:,}: its sample had no more "
            'pairs to merge (more text, or a larger --bpe_train_chars, gives more); meta.pkl records the real size',
            file=sys.stderr)


def train_tokenizer(parsed, plans, o):
    """The BPE of a sample of about bpe_train_chars characters of the train split (cached by sample)."""
    headers = [read_header(p['cache']) for p in parsed]
    train_chars = sum(int(h['chars'][plan == TRAIN].sum()) for h, plan in zip(headers, plans))
    below = np.uint64(min(int(min(1.0, o['bpe_train_chars'] / max(train_chars, 1)) * 2.0**64), 2**64 - 1))
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
        arrays[split].append(
            np.fromiter(chain.from_iterable(t + [eot] for t in ids), dtype=dtype, count=sum(len(t) + 1 for t in ids)))
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
                 **{k: stats[k]
                    for k in ('train_docs', 'train_bytes', 'val_docs', 'val_bytes')})
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
    tasks = [(p['cache'], plan,
              os.path.join(token_dir,
                           f"{os.path.basename(p['cache'])[:-4]}.{short_hash(spec_key, plan.tobytes())}.npz"))
             for p, plan in zip(parsed, plans)]
    totals = Counter()
    with writing_to(token_dir, workers_write_in=token_dir), tqdm(total=len(tasks), unit='file', desc='tokenize') as bar:
        for stats in pool_imap(tokenize_task, tasks, o['workers'], init_encoder, (spec, )):
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
            train.write(
                tokens['train'])  # file.write raises on a full disk; ndarray.tofile lost that error: a short file
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
                f.write(
                    json.dumps(
                        {
                            'pmid': r['pmid'], 'split': 'val' if split == VAL else 'train', 'title': r['title'],
                            'abstract': r['abstract'], 'authors': r['authors'], 'journal': r['journal'],
                            'publication_date': r['publication_date'], 'affiliations': r['affiliations'],
                            'language': r['language'], 'year': r['year'], 'journal_iso': r['journal_iso'],
                            'nlm_id': r['nlm_id'], 'mesh': r['mesh'], 'publication_types': r['publication_types']
                        }, ensure_ascii=False) + '\n')


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
        *([
            f"subset ({', '.join(f'{k}={v!r}' for k, v in meta['subset'].items() if k in SUBSET_OPTIONS)}): dropped "
            f"{', '.join(f'{counts[rule]:,} by {rule}' for rule in SUBSET_RULES if rule in counts)}"
        ] if meta['subset'] else []),
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
        print(
            f"excluding the PMIDs listed in {o['exclude_pmids']} from both splits (benchmark data, e.g. PubMedQA's; "
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
    plans, counts = merge(parsed, o, o['excluded'])
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
    write_bins(shards, o['out_dir'],
               (totals['train'] + totals['val']) * np.dtype(token_dtype(vocab_size_of(spec))).itemsize)
    sizes = {
        'train_tokens': totals['train'], 'val_tokens': totals['val'],
        **{k: totals[k]
           for k in ('train_docs', 'val_docs', 'train_bytes', 'val_bytes')}
    }
    with writing_to(o['out_dir']):
        meta = write_meta(o['out_dir'], spec, excluded_pmids=exclusion_record(o, counts),
                          records=dict(sorted(counts.items())), files=[{'name': p['name'], 'md5': p['md5']}
                                                                       for p in parsed],
                          bad_files=[{'name': n, 'error': e} for n, e in bad],
                          split={'rule': 'a hash of the PMID', 'val_fraction': o['val_fraction']},
                          languages=o['languages'], subset=subset_record(o), **sizes)
    print_summary(meta, counts, len(sources) + len(failed_downloads), time.time() - t0)
    if bad:
        print(f"{len(bad)} bad file(s) left out: {', '.join(n for n, _ in bad)}", file=sys.stderr)
        if not o['allow_bad_files']:
            print('exiting with status 1 (use --allow_bad_files=True to accept the outputs as they are)',
                  file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
