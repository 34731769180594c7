"""
A prepared data folder, built: the stages every preparer shares (data/pubmed/prepare.py for PubMed XML,
data/text/prepare.py for any other text, data/pmc/prepare.py for PMC full text).

A preparer turns each input file into a record cache (cache/parsed/: its records, CHUNK to a pickle, then a header
of per-record arrays the later stages read alone: at least `chars`, `split_hash` and `sample_hash`; `damaged` where the
file could be read only up to some damage, e.g. a cut archive: its records before the damage are kept and the file is
reported bad all the same), decides where each record goes (a plan per file: DROPPED, TRAIN or VAL per record, VAL
when its split hash falls below the val fraction), and hands over to the stages here:
  tokenizer   a byte-level BPE trained on a deterministic sample of the train split (cached by sample), GPT-2's,
              or an existing model's (a model folder, a checkpoint, a prepared data folder)
  tokenize    one worker per file -> cache/tokens/<file>.<key>.npz, each document followed by <|endoftext|>
  write       train.bin and val.bin in file order; then meta.pkl (dataloader.write_meta), the folder's commit record
A preparer's main ends the same way: check_kept (nothing kept, or a split empty, is one line), write_token_files (the
three stages), write_meta, bad_files_status (its exit status). Every stage writes through atomic_write and caches
what it made, out_dir is locked while a preparer writes, so a killed run (kill -9 included) picks up where it stopped
and gives byte-identical outputs, whatever --workers is.
"""
import errno
import fcntl
import glob
import gzip
import hashlib
import multiprocessing
import os
import pickle
import sys
import zipfile
import zlib
from collections import Counter
from contextlib import closing, contextmanager
from itertools import chain

import numpy as np
from tqdm import tqdm

from common import (atomic_write, die_with_parent, disk_full_message, fail, file_md5, is_disk_full, load_data_pickle,
                    writable_folder)
from configurator import Option, at_least, inside
from dataloader import token_dtype
from tokenizer import encoding_from_spec, eot_id, gpt2_spec, model_tokenizer, train_bpe, vocab_size_of

DROPPED, TRAIN, VAL = 0, 1, 2  # where a record goes: a plan holds one of these per record of a file
SPLITS = {TRAIN: 'train', VAL: 'val'}
CHUNK = 1024  # records per pickle in a record cache, documents per tokenizer batch
BATCH_CHARS = 1 << 23  # characters per tokenizer batch at most (a full-text article is ~40 thousand)
PICKLE = 4

# yapf: disable (a table: its comments aligned)
OPTIONS = {  # every preparer's (it adds its own: its input, out_dir, what it keeps)
    'tokenizer': 'bpe',      # 'bpe' (trained here on the train split), 'gpt2', or an existing model's: a Hugging Face
                             # folder (tokenizer.json), a checkpoint (.pt), a prepared data folder or its meta.pkl
    'vocab_size': 32768,     # BPE vocabulary including <|endoftext|>
    'bpe_train_chars': Option(1_000_000_000, at_least(1)),  # at most this many train-split characters to train BPE on
    'val_fraction': Option(0.005, inside(0, 1)),  # share of documents (by a hash of their id) in val.bin
    'workers': Option(os.cpu_count() or 1, at_least(1)),  # processes for parsing and tokenizing
}
# yapf: enable


def option_problems(o):
    """What is wrong with the shared options and the output paths (each a message), before any work."""
    problems = []
    if o['tokenizer'] not in ('bpe', 'gpt2') and not os.path.exists(o['tokenizer']):
        problems.append(f"--tokenizer={o['tokenizer']}: expected bpe, gpt2, or the path of a Hugging Face folder, a "
                        'checkpoint, a prepared data folder or a meta.pkl')
    if o['tokenizer'] == 'bpe' and not 258 <= o['vocab_size'] <= 2**32:
        problems.append(f"--vocab_size={o['vocab_size']}: a byte-level BPE needs 258 .. 2**32 tokens")
    if os.path.exists(o['out_dir']) and not os.path.isdir(o['out_dir']):
        problems.append(f"--out_dir={o['out_dir']}: is a file, not a folder")
    elif not writable_folder(o['out_dir']):
        problems.append(f"--out_dir={o['out_dir']}: cannot create or write to it")
    if o.get('export_jsonl') and not writable_folder(os.path.dirname(os.path.abspath(o['export_jsonl'])), create=False):
        problems.append(f"--export_jsonl={o['export_jsonl']}: its folder does not exist or is not writable")
    return problems


# ------------------------------------------------------------------------------------------------
# the output folder: held by one preparer at a time; every write said in one line when it fails


def lock_out_dir(out_dir):
    """Hold out_dir for this run (released when the process ends, even by kill -9), then remove the temp
    files of killed runs: with the lock held, no other preparer is writing them."""
    with writing_to(out_dir):
        os.makedirs(out_dir, exist_ok=True)
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


def pool_map(fn, items, workers, initializer=None, initargs=()):
    """Ordered map over a list, in this process for 1 worker, else in a pool of at most one process per item; use it
    as `with closing(pool_map(...)) as results:`, so an error in the loop ends the pool before it goes on up."""
    workers = min(workers, len(items))
    if workers <= 1:
        if initializer:
            initializer(*initargs)
        yield from map(fn, items)
        return
    with multiprocessing.Pool(workers, worker_init, (initializer, initargs)) as pool:
        yield from pool.imap(fn, items)


def worker_init(initializer, initargs):
    die_with_parent()  # a killed preparer takes its workers with it
    if initializer:
        initializer(*initargs)


# ------------------------------------------------------------------------------------------------
# parse: every input file -> its record cache (one worker per file), a bad file reported and left out


class BadInput(Exception):
    """An input file that cannot be read or parsed (its problem, describe()d): it is left out, the others go on."""


def describe(e):
    if isinstance(e, EOFError):
        return f'truncated gzip stream (an incomplete download?): {e}'
    if isinstance(e, (zlib.error, gzip.BadGzipFile)):
        return f'bad gzip data: {e}'
    if isinstance(e, UnicodeDecodeError):
        return f'not UTF-8 text: {e}'
    if type(e).__name__ == 'XMLSyntaxError':  # lxml's
        return f'malformed or truncated XML: {e}'
    return f'{type(e).__name__}: {e}'


def blaming_the_input(items):
    """The items an input file's reader yields, its errors raised as BadInput: what reading the input raised blames
    the input, not what writing its cache raised (a full disk, a folder that cannot be written: this machine's,
    they stop the run)."""
    try:
        yield from items
    except MemoryError:
        raise
    except Exception as e:
        raise BadInput(describe(e)) from e


def parse_task(task):
    """Worker: parse one input into its record cache unless already there (write(path, cache) writes it); never
    raises on a bad input (only on errors of this machine's, which no other input would escape)."""
    path, md5, name, cache_dir, key, write, digest = task
    try:
        try:
            md5 = md5 or digest(path)
        except OSError as e:
            raise BadInput(describe(e))
        cache = os.path.join(cache_dir, f"{name.split('.')[0]}.{md5[:16]}.{key}.pkl")
        header = cached(cache, cache_facts)
        if header is None:
            write(path, cache)
            header = cache_facts(cache)
        return {'name': name, 'md5': md5, 'cache': cache, **header, 'error': None}
    except BadInput as e:  # a corrupt file is reported with its name, the others go on
        return {'name': name, 'error': str(e)}


def cache_facts(cache):
    """What parse_all reports of a record cache: its record count, and the damage that cut its input short."""
    header = read_header(cache)
    return {'records': len(header['split_hash']), 'damaged': header.get('damaged')}


def parse_all(sources, o, write, key, digest=file_md5):
    """Every source's record cache: sources [(path, md5 or None)] or [(path, md5 or None, name)] (a name for a source
    that is not one file, e.g. a group of files: its path whatever write() takes, its name safe in a file name),
    write(path, cache) the preparer's parser (a module-level function or a partial of one: workers get it pickled),
    key names what the caches hold (a version and the options that change them; or key(path) gives it, where it
    differs by source: data/text/prepare.py's formats read different options), digest(path) the md5 of a source
    given none. (parsed: [{name, md5, cache, records, damaged, path}], bad: [(name, why)]): a source read only in part
    (its cache's `damaged`) is in both, its records before the damage kept."""
    cache_dir = os.path.join(o['out_dir'], 'cache', 'parsed')
    with writing_to(cache_dir):
        os.makedirs(cache_dir, exist_ok=True)
    named = [(path, md5, rest[0] if rest else os.path.basename(path)) for path, md5, *rest in sources]
    tasks = [(path, md5, name, cache_dir, key(path) if callable(key) else key, write, digest)
             for path, md5, name in named]
    parsed, bad, records = [], [], 0
    with writing_to(cache_dir, workers_write_in=cache_dir), \
            closing(pool_map(parse_task, tasks, o['workers'])) as results, \
            tqdm(results, total=len(tasks), unit='file', desc='parse') as bar:
        for (path, _, _), result in zip(named, bar):
            where = path if isinstance(path, str) else result['name']
            if result['error']:
                tqdm.write(f"error: {where}: corrupt or unreadable, left out: {result['error']}", file=sys.stderr)
                bad.append((result['name'], result['error']))
                continue
            if result['damaged']:
                tqdm.write(
                    f"error: {where}: read in part, its {result['records']:,} record(s) before the damage "
                    f"kept: {result['damaged']}", file=sys.stderr)
                bad.append((result['name'], result['damaged']))
            parsed.append({**result, 'path': path})
            records += result['records']
            bar.set_postfix(records=f'{records:,}')
    return parsed, bad


# ------------------------------------------------------------------------------------------------
# record caches: one input file's records, CHUNK per pickle, then a header found through the last 8 bytes


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


def write_records(f, records):
    """Records to an open record cache, CHUNK to a pickle (the last chunk may be shorter, or empty)."""
    for i in range(0, max(len(records), 1), CHUNK):
        pickle.dump(records[i:i + CHUNK], f, PICKLE)


def write_header(f, header):
    """The header after the records, and its offset in the file's last 8 bytes."""
    header_at = f.tell()
    pickle.dump(header, f, PICKLE)
    f.write(header_at.to_bytes(8, 'little'))


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


def id_hashes(ids):
    """Two independent uniform 64-bit numbers per document id (a PMID, a PMCID, a text's hash): the train/val split
    and the BPE sample. The same id always lands in the same split, whatever else is prepared beside it."""
    digests = b''.join(hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in ids)
    pairs = np.frombuffer(digests, dtype='<u8').reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def split_plan(header, keep, val_fraction):
    """The plan of a file: VAL where a kept record's split hash falls below the val fraction, else TRAIN; DROPPED
    where `keep` is False."""
    val_below = np.uint64(min(int(val_fraction * 2.0**64), 2**64 - 1))
    plan = np.where(header['split_hash'] < val_below, VAL, TRAIN).astype(np.int8)
    plan[~keep] = DROPPED
    return plan


def check_kept(plans, why_nothing, more):
    """(train_docs, val_docs) of the plans; one error line, nothing written, when nothing is kept (why_nothing(): the
    reasons) or a split is empty (`more`: what gives more documents)."""
    train_docs, val_docs = sum(int((p == TRAIN).sum()) for p in plans), sum(int((p == VAL).sum()) for p in plans)
    if not train_docs and not val_docs:
        fail(f'no documents to keep: {why_nothing()}; nothing written')
    if not train_docs or not val_docs:
        fail(f'the {"val" if train_docs else "train"} split is empty ({train_docs} train, {val_docs} val documents): '
             f'use {more} or a {"larger" if train_docs else "smaller"} --val_fraction; nothing written')
    return train_docs, val_docs


def say_exclusion(o):
    """The first line of a preparer that leaves benchmark PMIDs out (stderr)."""
    if o.get('exclude_pmids'):
        print(
            f"excluding the PMIDs listed in {o['exclude_pmids']} from both splits (benchmark data, e.g. "
            "PubMedQA's; --exclude_pmids='' keeps them)", file=sys.stderr)


def subset_line(subset, counts, options, rules):
    """The summary's line of a subset: its options (of `options`) and what each rule (of `rules`) dropped."""
    chosen = ', '.join(f'{k}={v!r}' for k, v in subset.items() if k in options)
    dropped = ', '.join(f'{counts[rule]:,} by {rule}' for rule in rules if rule in counts)
    return f'subset ({chosen})' + (f': dropped {dropped}' if dropped else '')


def split_lines(meta, elapsed):
    """The last lines of every preparer's summary: each split's documents and tokens, the bytes per token of text
    (<|endoftext|> is not text), the time."""
    docs = meta['train_docs'] + meta['val_docs']
    tokens = meta['train_tokens'] + meta['val_tokens'] - docs
    return [
        f"train: {meta['train_docs']:,} docs, {meta['train_tokens']:,} tokens; "
        f"val: {meta['val_docs']:,} docs, {meta['val_tokens']:,} tokens",
        f"{(meta['train_bytes'] + meta['val_bytes']) / max(tokens, 1):.3f} bytes per token "
        f"({meta['tokenizer']['name']}, vocab {meta['vocab_size']:,}); {elapsed:.1f}s",
    ]


# ------------------------------------------------------------------------------------------------
# the tokenizer


def chosen_tokenizer(option):
    """The spec of --tokenizer, read now so that one that cannot be had fails before any parsing; None for 'bpe'
    (trained after the split, on the train split)."""
    if option == 'bpe':
        return None
    return load_gpt2() if option == 'gpt2' else existing_tokenizer(option)


def existing_tokenizer(path):
    """The tokenizer of an existing model or data folder, so new files are tokenized for a model that exists."""
    try:
        if os.path.isfile(os.path.join(path, 'tokenizer.json')) or os.path.isfile(os.path.join(path, 'config.json')):
            return model_tokenizer(path)  # what train.py --init_from=FOLDER checks the data against
        meta = os.path.join(path, 'meta.pkl') if os.path.isdir(path) else path
        if meta.endswith('.pkl') and os.path.isfile(meta):
            return load_pickle_file(meta)['tokenizer']
        from checkpoint import read_fields, tokenizer_of  # torch: seconds of start-up only this case needs
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
            f"note: the BPE has {size:,} tokens, fewer than --vocab_size={o['vocab_size']:,}: its sample had no "
            'more pairs to merge (more text, or a larger --bpe_train_chars, gives more); meta.pkl records the real '
            'size', file=sys.stderr)


def train_tokenizer(parsed, plans, o, document, text_key='', headers=None):
    """The BPE of a sample of about bpe_train_chars characters of the train split (cached by sample); document(record)
    is a record's text. A preparer whose documents depend on options a record cache does not name (which parts of a
    record make the text) names them by `text_key`, and gives the `headers` ({chars, sample_hash} per file) its
    options and its merge made of the caches' (a document's length under them, a sample hash of an id the merge
    chose); by default the caches' own."""
    headers = headers or [read_header(p['cache']) for p in parsed]
    train_chars = sum(int(h['chars'][plan == TRAIN].sum()) for h, plan in zip(headers, plans))
    below = np.uint64(min(int(min(1.0, o['bpe_train_chars'] / max(train_chars, 1)) * 2.0**64), 2**64 - 1))
    samples = [(plan == TRAIN) & (h['sample_hash'] <= below) for h, plan in zip(headers, plans)]
    key = short_hash(o['vocab_size'], *[(p['cache'], s.tobytes()) for p, s in zip(parsed, samples)])
    if text_key:
        key = short_hash(key, text_key)
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
# tokenize: one file -> cache/tokens/<file>.<key>.npz with its train and val tokens

_encoder = {}


def init_encoder(spec):
    _encoder['enc'] = encoding_from_spec(spec)
    _encoder['eot'] = eot_id(spec)
    _encoder['dtype'] = np.dtype(token_dtype(vocab_size_of(spec)))


def tokenize_task(task):
    """Worker: one file's kept documents -> train and val token arrays, each document + <|endoftext|>. Memory stays
    bounded however large the file (a PMC package holds a billion tokens): documents are tokenized CHUNK or
    BATCH_CHARS characters at a time, their tokens go to a temp file per split, and the shard is written from those
    (memory-mapped)."""
    parsed_cache, plan, out, document = task
    stats = cached(out, shard_stats)
    if stats is not None:
        return stats
    enc, eot, dtype = _encoder['enc'], _encoder['eot'], _encoder['dtype']
    parts = {split: f'{out}.{os.getpid()}.{name}.tmp' for split, name in SPLITS.items()}
    texts, stats = {TRAIN: [], VAL: []}, Counter()
    try:
        with open(parts[TRAIN], 'wb') as train, open(parts[VAL], 'wb') as val:
            files = {TRAIN: train, VAL: val}

            def flush(split):
                ids = enc.encode_ordinary_batch(texts[split], num_threads=1)  # a literal <|endoftext|> is text
                count = sum(len(t) + 1 for t in ids)
                # file.write raises on a full disk; ndarray.tofile lost that error, leaving a short file
                files[split].write(np.fromiter(chain.from_iterable(t + [eot] for t in ids), dtype=dtype, count=count))
                texts[split].clear()
                stats[f'{SPLITS[split]}_pending'] = 0

            for record, split in zip(iter_records(parsed_cache), plan):
                if split != DROPPED:
                    text = document(record)
                    texts[split].append(text)
                    name = SPLITS[split]
                    stats[f'{name}_docs'] += 1
                    stats[f'{name}_bytes'] += len(text.encode())
                    stats[f'{name}_pending'] += len(text)
                    if len(texts[split]) == CHUNK or stats[f'{name}_pending'] >= BATCH_CHARS:
                        flush(split)
            for split in (TRAIN, VAL):
                flush(split)
        counts = {k: stats[k] for k in ('train_docs', 'train_bytes', 'val_docs', 'val_bytes')}
        with atomic_write(out) as f:
            np.savez(f, train=mapped(parts[TRAIN], dtype), val=mapped(parts[VAL], dtype), **counts)
    finally:
        for part in parts.values():
            if os.path.exists(part):
                os.remove(part)
    return shard_stats(out)


def mapped(path, dtype):
    """A file's tokens, memory-mapped (np.memmap refuses an empty file)."""
    return np.memmap(path, dtype=dtype, mode='r') if os.path.getsize(path) else np.zeros(0, dtype=dtype)


def shard_stats(path):
    """Token, document and byte counts of a token shard, from its headers (the tokens are not read)."""
    with np.load(path) as z:
        return {k: int(z[k]) if k.endswith(('_docs', '_bytes')) else stored_length(z, k) for k in z.files}


def stored_length(npz, key):
    """The length of array `key` of an open .npz, from its header: the tokens are not read just to count them."""
    with npz.zip.open(f'{key}.npy') as f:
        return npy_length(f)


def npy_length(f):
    """Read a .npy header off an open file, leaving it at the array's bytes; the array's length."""
    version = np.lib.format.read_magic(f)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return header(f)[0][0]


def tokenize_all(parsed, plans, spec, o, document, text_key=''):
    """Every file's kept documents as token shards (cached by file, plan, tokenizer and text_key: train_tokenizer's);
    (shard paths, totals)."""
    token_dir = os.path.join(o['out_dir'], 'cache', 'tokens')
    os.makedirs(token_dir, exist_ok=True)
    spec_key = short_hash(pickle.dumps({k: v for k, v in spec.items() if k != 'name'}, PICKLE))
    if text_key:  # documents that other text options make otherwise: other tokens
        spec_key = short_hash(spec_key, text_key)
    name = lambda cache, plan: f'{os.path.basename(cache)[:-4]}.{short_hash(spec_key, plan.tobytes())}.npz'
    tasks = [(p['cache'], plan, os.path.join(token_dir, name(p['cache'], plan)), document)
             for p, plan in zip(parsed, plans)]
    totals = Counter()
    with writing_to(token_dir, workers_write_in=token_dir), \
            tqdm(total=len(tasks), unit='file', desc='tokenize') as bar, \
            closing(pool_map(tokenize_task, tasks, o['workers'], init_encoder, (spec, ))) as results:
        for stats in results:
            totals.update(stats)
            bar.update()
            bar.set_postfix(tokens=f"{totals['train'] + totals['val']:,}")
    return [t[2] for t in tasks], totals


# ------------------------------------------------------------------------------------------------
# write: train.bin and val.bin


def write_bins(shards, out_dir, spec, totals):
    """train.bin and val.bin: the shards' tokens in file order (the bytes they need said if the disk is full)."""
    needed = (totals['train'] + totals['val']) * np.dtype(token_dtype(vocab_size_of(spec))).itemsize
    with writing_to(out_dir, needed), atomic_write(os.path.join(out_dir, 'train.bin')) as train, \
            atomic_write(os.path.join(out_dir, 'val.bin')) as val:
        for shard in shards:
            for key, out in (('train', train), ('val', val)):
                for block in shard_blocks(shard, key):
                    out.write(block)  # file.write raises on a full disk


def shard_blocks(shard, key):
    """The tokens of a shard's `key` array as bytes, BATCH_CHARS at a time (never the whole array in memory: np.savez
    stores it uncompressed, after its .npy header); an unreadable shard is removed (to be rebuilt) with one error
    line."""
    try:
        with np.load(shard) as z, z.zip.open(f'{key}.npy') as f:
            npy_length(f)
            while block := f.read(BATCH_CHARS):
                yield block
    except (OSError, ValueError, zipfile.BadZipFile) as e:  # the shard's: a write's error is raised where it writes
        os.remove(shard)
        fail(f'{shard}: unreadable cache ({type(e).__name__}: {e}): removed; run the same command again to rebuild it')


def sizes_of(totals):
    """meta's token, document and byte counts of each split."""
    return {
        'train_tokens': totals['train'], 'val_tokens': totals['val'],
        **{k: totals[k]
           for k in ('train_docs', 'val_docs', 'train_bytes', 'val_bytes')}
    }


def write_token_files(parsed, plans, spec, o, document):
    """The tokenizer (a BPE trained on the train split when spec is None), every file's kept documents tokenized,
    then train.bin and val.bin: (spec, totals) for meta."""
    if spec is None:
        spec = train_tokenizer(parsed, plans, o, document)
        check_bpe_size(spec, o)
    shards, totals = tokenize_all(parsed, plans, spec, o, document)
    write_bins(shards, o['out_dir'], spec, totals)
    return spec, totals


def bad_files_status(bad, allow_bad_files):
    """The exit status of a run that prepared what it could: 1 when files were left out (named), unless allowed."""
    if not bad:
        return 0
    print(f"{len(bad)} bad file(s) left out: {', '.join(n for n, _ in bad)}", file=sys.stderr)
    if allow_bad_files:
        return 0
    print('exiting with status 1 (use --allow_bad_files=True to accept the outputs as they are)', file=sys.stderr)
    return 1
