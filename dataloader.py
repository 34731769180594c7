"""
The prepared data folder and how training reads it (numpy only: prepare.py uses this file too).

A data folder holds what data/pubmed/prepare.py writes and train.py reads:
    train.bin, val.bin   flat token ids (uint16 while the vocabulary fits, else uint32), every document
                         followed by <|endoftext|>
    meta.pkl             a dict of builtins (write_meta's docstring lists the keys); meta.json beside it
                         says the same for people
meta.pkl is written last and records the size and hash of both token files: it is the commit record
of the folder. load_meta reads it as data (no pickle code runs) and refuses a folder whose token
files are not the ones it describes (a run killed between renames, a truncated copy).

Training reads windows of block_size + 1 tokens (inputs and their next-token targets). Train windows
are visited without replacement in a seeded random order per epoch; the fixed val set is spread
evenly over val.bin and is the same at every evaluation.
"""
import functools
import hashlib
import json
import os
import pickle

import numpy as np

from common import atomic_write, load_data_pickle
from tokenizer import eot_id, token_byte_lengths, vocab_size_of

META_KEYS = ('vocab_size', 'dtype', 'tokenizer', 'eot_token', 'token_bytes', 'train_tokens', 'val_tokens', 'train_docs',
             'val_docs', 'train_bytes', 'val_bytes', 'files', 'bad_files', 'records', 'token_files', 'excluded_pmids',
             'split', 'languages', 'subset', 'source', 'licenses', 'sections')


class DataError(Exception):
    pass


def token_dtype(vocab_size):
    """The dtype name of train.bin/val.bin: 2 bytes a token while the ids fit."""
    return 'uint16' if vocab_size <= 2**16 else 'uint32'


def write_meta(out_dir, spec, **facts):
    """meta.pkl and meta.json for a data folder tokenized with `spec` (tokenizer.py). `facts`: the token,
    document and byte counts of each split (train_tokens, val_tokens, train_docs, val_docs, train_bytes,
    val_bytes), and where they came from (files: [{name, md5}], bad_files: [{name, error}], records:
    {what was seen and dropped: count}, excluded_pmids: {source, listed, excluded, blake2b},
    split: {rule, val_fraction},
    languages: the codes kept, subset: prepare.py's subset options that were set; data/pmc/prepare.py's licenses:
    {license: articles kept}, sections: {in_text: [block kinds], chars: {kind: characters kept}}). vocab_size, dtype,
    eot_token and token_bytes (UTF-8 length of each id, 0 for special tokens: the denominator of bits per
    byte) follow from the spec; token_files
    ({'train.bin': {'bytes', 'blake2b'}, 'val.bin': ...}) from the token files, already in out_dir."""
    unknown = set(facts) - set(META_KEYS)
    assert not unknown, f'not meta.pkl keys: {sorted(unknown)}'
    vocab_size = vocab_size_of(spec)
    token_files = {
        name: {
            'bytes': os.path.getsize(os.path.join(out_dir, name)), 'blake2b': file_hash(os.path.join(out_dir, name))
        }
        for name in ('train.bin', 'val.bin')
    }
    meta = {
        'vocab_size': vocab_size, 'dtype': token_dtype(vocab_size), 'tokenizer': spec, 'eot_token': eot_id(spec),
        'token_bytes': token_byte_lengths(spec), 'files': [], 'bad_files': [], 'records': {}, 'subset': {},
        'licenses': {}, 'sections': {}, 'source': '', 'token_files': token_files,
        'excluded_pmids': {'source': '', 'listed': 0, 'excluded': 0, 'blake2b': ''}, **facts
    }
    summary = {k: v for k, v in meta.items() if k not in ('tokenizer', 'token_bytes')}
    summary['tokenizer'] = {
        'name': spec['name'], 'vocab_size': vocab_size, 'pattern': spec['pattern'],
        'special_tokens': spec['special_tokens']
    }
    with atomic_write(os.path.join(out_dir, 'meta.pkl')) as f:
        pickle.dump(meta, f, 4)
    with atomic_write(os.path.join(out_dir, 'meta.json'), 'w') as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
        f.write('\n')
    return meta


def file_hash(path):
    h = hashlib.blake2b(digest_size=16)
    with open(path, 'rb') as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def load_meta(data_dir):
    """meta.pkl of a prepared data folder, after checking the token files are the ones it describes;
    DataError naming the file, what is wrong and how to mend it."""
    make = ('python data/pubmed/prepare.py' if os.path.abspath(data_dir) == os.path.abspath('data/pubmed') else
            f'python data/pubmed/prepare.py --out_dir={data_dir}')
    for name in ('train.bin', 'val.bin', 'meta.pkl'):
        path = os.path.join(data_dir, name)
        if not os.path.isfile(path):
            raise DataError(f'{path} not found: prepare the data first with `{make}` '
                            '(or point --data_dir at a prepared folder)')
    path = os.path.join(data_dir, 'meta.pkl')
    try:
        with open(path, 'rb') as f:
            meta = load_data_pickle(f)
        assert isinstance(meta, dict), f'a {type(meta).__name__}, not a dict'
        missing = [k for k in ('vocab_size', 'dtype', 'tokenizer', 'eot_token', 'token_bytes') if k not in meta]
        assert not missing, f"no {', '.join(missing)}"
        itemsize = np.dtype(meta['dtype']).itemsize
    except (pickle.UnpicklingError, EOFError, AssertionError, TypeError, ValueError, AttributeError, ImportError) as e:
        raise DataError(
            f'{path}: not a readable meta.pkl ({str(e) or type(e).__name__}): prepare the folder again with `{make}`')
    for split in ('train', 'val'):
        check_token_file(os.path.join(data_dir, f'{split}.bin'), meta, split, itemsize, make)
    return meta


def check_token_file(path, meta, split, itemsize, make):
    """DataError unless the token file has the size (and, for the small val.bin, the hash) meta.pkl records."""
    size, name = os.path.getsize(path), os.path.basename(path)
    recorded = meta.get('token_files', {}).get(name, {})
    expected = recorded.get('bytes', meta[f'{split}_tokens'] * itemsize if f'{split}_tokens' in meta else None)
    problem = None
    if size == 0 or size % itemsize:
        problem = f'{size} bytes: not a whole number of {meta["dtype"]} tokens' if size else 'empty'
    elif expected is not None and size != expected:
        problem = f'{size} bytes, but meta.pkl records {expected}'
    elif split == 'val' and 'blake2b' in recorded and file_hash(path) != recorded['blake2b']:
        problem = 'its content is not the one meta.pkl records'
    if problem:
        raise DataError(f'{path}: {problem} (truncated, or from another prepare run than meta.pkl): '
                        f'prepare the folder again with `{make}`')


def open_tokens(data_dir, split, meta):
    return np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=meta['dtype'], mode='r')


# ---------------------------------------------------------------------------------------------
# windows


def window_starts(tokens, block, eot=None):
    """Offsets of the windows: every block tokens (non-overlapping); or, given the <|endoftext|> id that
    ends each document, aligned to documents: a window at the <|endoftext|> before each document (so the
    first target is its first token) and every block tokens after it that is still inside the document."""
    last = len(tokens) - block - 1  # a window reads block + 1 tokens
    if eot is None:
        return np.arange(0, last + 1, block)
    chunk = 1 << 26  # scan a large memmap piece by piece
    ends = np.concatenate([np.flatnonzero(tokens[i:i + chunk] == eot) + i for i in range(0, len(tokens), chunk)])
    origins = np.concatenate(([0], ends))[:-1]  # the <|endoftext|> before each document (0 for the first)
    counts = np.maximum(1, -(-(ends - origins) // block))  # windows per document: ceil(length / block)
    nth = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # 0, 1, .. within each document
    starts = np.repeat(origins, counts) + nth * block
    return starts[starts <= last]


@functools.lru_cache(maxsize=8)  # each source's current epoch order (and the next one's at the boundary)
def epoch_order(seed, epoch, n_windows, source=0):
    """A permutation of the windows for one epoch; each source of a mixture draws its own (the first: as alone)."""
    return np.random.default_rng([seed, epoch] + ([source] if source else [])).permutation(n_windows)


def window_ids(first, count, n_windows, seed, source=0):
    """Windows at positions first .. first+count-1 of a source's stream of per-epoch permutations."""
    positions = np.arange(first, first + count)
    epochs = positions // n_windows
    ids = np.empty(count, dtype=np.int64)
    for epoch in np.unique(epochs):
        order = epoch_order(seed, int(epoch), n_windows, source)
        mask = epochs == epoch
        ids[mask] = order[positions[mask] % n_windows]
    return ids


def mix_sources(weights, credit, count):
    """Which source each of the next `count` windows of a mixture comes from, and the credit after them: smooth
    weighted round-robin on integer weights (each window goes to the source with the most credit, which then pays
    the total), so any run of windows holds each source within one window of its share, deterministically and in
    integers: a resumed run continues the same sequence exactly from the credit its checkpoint holds."""
    credit, total, chosen = list(credit), sum(weights), np.empty(count, dtype=np.int64)
    for i in range(count):
        for s, w in enumerate(weights):
            credit[s] += w
        best = max(range(len(weights)), key=lambda s: (credit[s], -s))
        credit[best] -= total
        chosen[i] = best
    return chosen, credit


def read_windows(tokens, starts, block):
    """(x, y) int64 arrays of shape (len(starts), block) from the windows at these offsets."""
    rows = np.stack([tokens[s:s + block + 1] for s in starts]).astype(np.int64)
    return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])


def eval_starts(tokens, block, count):
    """The fixed val set: `count` windows of the fixed grid, spread evenly over the tokens."""
    starts = window_starts(tokens, block)
    return starts[np.unique(np.linspace(0, len(starts) - 1, min(count, len(starts))).round().astype(np.int64))]


def split_step(batch_size, micro_steps, world):
    """(micro-steps, windows per micro-batch) of each rank for a step of batch_size x micro_steps windows over
    `world` ranks: the fewest equal micro-batches of at most batch_size. ValueError when the ranks cannot share it."""
    windows = batch_size * micro_steps  # per step, all ranks
    if windows % world:
        raise ValueError(uneven_split_message(batch_size, micro_steps, world))
    share = windows // world
    steps = next(m for m in range(1, share + 1) if share % m == 0 and share // m <= batch_size)
    return steps, share // steps


class TrainLoader:
    """This rank's micro-batches of each optimizer step, from one global stream of windows.

    A step trains on the next batch_size * micro_steps windows of the stream (micro_steps: micro-batches
    per step, summed over all ranks). They are cut into micro-batches dealt to ranks in turn: micro-batch
    m of rank r is the stream's (m * world + r)-th. Dealing in turn rather than in blocks keeps the set
    of windows a step trains on the same for any split of (ranks x micro-steps per rank), so 8 GPUs x 4
    micro-steps and 1 GPU x 32 train alike. When the ranks do not divide micro_steps (2 processes, 1
    micro-step), the micro-batches shrink instead: each rank trains its share of the step's windows in
    the fewest equal micro-batches of at most batch_size. The position in the stream is the whole
    state: resuming on another number of ranks works.

    A mixture (tokens a list of several sources' token files, with integer weights) draws each window of the
    stream from one source (mix_sources: in proportion to the weights, deterministically), the n-th window a source
    gives being the n-th of its own stream of per-epoch permutations; a source smaller than its share repeats
    (a new permutation each epoch). A weight of 0 is never drawn. The state adds what each source gave and the
    round-robin's credit."""

    def __init__(self, tokens, block, batch_size, micro_steps, seed, rank=0, world=1, eot=None, weights=None):
        self.micro_steps, self.micro_batch = split_step(batch_size, micro_steps, world)
        sources = tokens if weights is not None else [tokens]
        self.sources, self.weights = sources, weights or [1]
        self.block, self.seed, self.rank, self.world = block, seed, rank, world
        self.aligned = eot is not None
        self.starts_of = [window_starts(t, block, eot) for t in sources]
        self.windows_seen = 0  # windows of the stream used by the steps so far, all ranks
        self.drawn = [0] * len(sources)  # of them, how many each source gave
        self.credit = [0] * len(sources)

    @property
    def starts(self):  # (one source's windows: what a run without a mixture reads)
        return self.starts_of[0]

    def step_plan(self):
        """(source, its stream position) of each window of the next step, all ranks."""
        windows = self.micro_batch * self.micro_steps * self.world
        if len(self.sources) == 1:
            return np.zeros(windows, dtype=np.int64), self.drawn[0] + np.arange(windows), self.credit
        source, credit = mix_sources(self.weights, self.credit, windows)
        position = np.empty(windows, dtype=np.int64)
        for s in range(len(self.sources)):
            mine = source == s
            position[mine] = self.drawn[s] + np.arange(mine.sum())
        return source, position, credit

    def read_step(self):
        """[(x, y)] of this rank for the next step, the stream not moved (advance() moves it)."""
        source, position, _ = self.step_plan()
        batches = []
        for micro in range(self.micro_steps):
            first = (micro * self.world + self.rank) * self.micro_batch
            sources, positions = source[first:first + self.micro_batch], position[first:first + self.micro_batch]
            starts = np.empty(self.micro_batch, dtype=np.int64)
            for s in np.unique(sources):  # a source's windows in a micro-batch are consecutive in its own stream
                mine = sources == s
                grid = self.starts_of[s]
                starts[mine] = grid[window_ids(int(positions[mine][0]), int(mine.sum()), len(grid), self.seed, int(s))]
            rows = np.stack([self.sources[s][i:i + self.block + 1] for s, i in zip(sources, starts)]).astype(np.int64)
            batches.append((np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])))
        return batches

    def advance(self):
        """Move the stream past the next step (all ranks)."""
        source, _, self.credit = self.step_plan()
        for s in range(len(self.sources)):
            self.drawn[s] += int((source == s).sum())
        self.windows_seen += self.micro_batch * self.micro_steps * self.world

    def epochs(self):
        """How many times each source's windows have been drawn through (a source smaller than its share repeats)."""
        return [drawn / max(len(starts), 1) for drawn, starts in zip(self.drawn, self.starts_of)]

    def state_dict(self):
        state = {
            'windows_seen': self.windows_seen, 'seed': self.seed, 'block_size': self.block,
            'align_windows': self.aligned
        }
        if len(self.sources) > 1:
            state.update(weights=list(self.weights), drawn=list(self.drawn), credit=list(self.credit))
        return state

    def load_state_dict(self, state):
        self.windows_seen = state['windows_seen']
        self.drawn = list(state.get('drawn', [state['windows_seen']]))
        self.credit = list(state.get('credit', [0] * len(self.sources)))


def uneven_split_message(batch_size, micro_steps, world):
    """What to do when world processes cannot share the step's batch_size x micro_steps windows equally."""
    windows = batch_size * micro_steps
    counts = [n for n in range(1, 2 * world + 1) if windows % n == 0]
    below, above = max(n for n in counts if n < world), [n for n in counts if n > world][:1]
    steps = [m for m in range(1, 2 * micro_steps + world) if batch_size * m % world == 0]
    nearest = sorted(steps, key=lambda m: abs(m - micro_steps))[:2]
    return (
        f'{world} processes cannot share a step of batch_size x gradient_accumulation_steps = {batch_size} x '
        f'{micro_steps} = {windows} windows equally: run {" or ".join(map(str, [below, *above]))} processes, or '
        f'set gradient_accumulation_steps to {" or ".join(map(str, sorted(nearest)))} (the global batch changes then)')
