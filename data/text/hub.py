"""
A Hugging Face dataset streamed (datasets' streaming=True: nothing is downloaded whole) into record caches of
--part_docs documents each, "parts" (cache/parsed/stream.<key>.<index>.pkl, formats.Records), up to a budget of
--max_tokens tokens, so a 1% replay share of a 10 TB corpus reads what it uses:

  - The budget counts each streamed document's tokens with the chosen tokenizer plus its <|endoftext|> (what
    train.bin and val.bin hold, before duplicates are dropped); with --tokenizer=bpe, a BPE still to be trained, a
    token counts as 4 characters (about what a byte-level BPE of English gives). The stream stops after the
    document that reaches the budget.
  - A part ends 'full', 'ended' (the split ran out) or 'budget'. A full part records the stream's position after
    it (IterableDataset.state_dict), so a killed run goes on from the last whole part without reading the stream
    from its start again, and a larger budget streams only what it adds.
  - A cached part is used only where a fresh run would write the same part (reusable()), so what the cache held
    never shows in the outputs.

A hub dataset is pinned to the commit its revision names when the run starts (meta's `source` says which); a
local dataset folder (a hub snapshot, a folder of Parquet or JSON Lines files) streams through the same code,
keyed by its files' names, sizes and times, and needs no network.
"""
import os
import pickle
import sys
from contextlib import closing
from itertools import islice

import numpy as np
from tqdm import tqdm

from common import atomic_write, fail, first_line
from data.build import CHUNK, PICKLE, cached, describe, read_header, short_hash, writing_to
from data.text.formats import READ_VERSION, Records, problem_of, text_in
from tokenizer import encoding_from_spec

CHARS_PER_TOKEN = 4  # the budget's token while the BPE is still to be trained
OFFLINE = ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE')
TRUE = ('1', 'on', 'yes', 'true')


class StreamError(Exception):
    """The stream broke off (the network, the server, a file of the dataset): what was written so far stays."""


def is_local(name):
    return os.path.isdir(name)


def offline_setting():
    """The environment variable that keeps the hub out of reach, or None."""
    return next((v for v in OFFLINE if os.environ.get(v, '').strip().lower() in TRUE), None)


def pinned_revision(o):
    """The commit of --hf_revision (the default branch when '') on the hub, asked at once: no network, no such
    dataset, or no such revision is one line before any work."""
    name = o['hf_dataset']
    if offline_setting():
        fail(f'--hf_dataset={name}: {offline_setting()} is set, and streaming from the Hugging Face hub needs the '
             'network: prepare local files with --input=FILES_OR_FOLDER')
    from huggingface_hub import HfApi
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError  # 0.20's and now
    try:
        return HfApi().dataset_info(name, revision=o['hf_revision'] or None, timeout=10).sha
    except GatedRepoError as e:
        fail(f'--hf_dataset={name}: gated or private ({first_line(e)}): log in with `hf auth login` after '
             "accepting its terms on the dataset's page")
    except RevisionNotFoundError:
        fail(f"--hf_revision={o['hf_revision']}: {name} has no such branch, tag or commit", 2)
    except RepositoryNotFoundError:
        fail(f'--hf_dataset={name}: no such dataset on the Hugging Face hub', 2)
    except Exception as e:  # httpx's and requests' errors alike: the hub cannot be reached
        fail(f'--hf_dataset={name}: cannot reach the Hugging Face hub ({type(e).__name__}: {first_line(e)}); '
             'streaming needs the network: prepare local files with --input=FILES_OR_FOLDER')


def folder_fingerprint(folder):
    """What names a local dataset folder's content, cheaply: its files' paths, sizes and modification times."""
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            stat = os.stat(os.path.join(root, name))
            entries.append((os.path.relpath(os.path.join(root, name), folder), stat.st_size, stat.st_mtime_ns))
    return short_hash(*entries)


def open_stream(o):
    """(the streamed dataset, its description for meta's `source`, the key of its parts); a dataset, configuration
    or split that cannot be had, or one without the text field, is one line before any work."""
    name, config, split = o['hf_dataset'], o['hf_config'] or None, o['hf_split']
    revision = None if is_local(name) else pinned_revision(o)  # first: no network is said before datasets loads
    import datasets
    datasets.logging.set_verbosity_error()
    source = 'hf:' + '/'.join(p for p in (name.rstrip('/'), config, split) if p) + (f'@{revision}' if revision else '')
    try:
        dataset = datasets.load_dataset(name, config, split=split, streaming=True, revision=revision)
    except (ValueError, FileNotFoundError) as e:  # no such configuration or split, no data files
        fail(f'--hf_dataset={name}: {first_line(e)}', 2)
    except Exception as e:
        fail(f'--hf_dataset={name}: cannot open the stream ({type(e).__name__}: {first_line(e)})')
    columns = list(dataset.features or [])
    if columns and o['text_field'] not in columns:
        fail(f"--text_field={o['text_field']}: {source} has no such field (its fields: {', '.join(columns)})", 2)
    identity = folder_fingerprint(name) if is_local(name) else source
    return dataset, source, short_hash(READ_VERSION, identity, o['text_field'], o['part_docs'])


def token_counter(spec):
    """costs(texts): each text's tokens + 1 (its <|endoftext|>) with the tokenizer, or CHARS_PER_TOKEN characters
    a token for a BPE still to be trained (spec None); and the name of that count, for the parts' key."""
    if spec is None:
        return lambda texts: [-(-len(t) // CHARS_PER_TOKEN) + 1 for t in texts], f'chars/{CHARS_PER_TOKEN}'
    enc = encoding_from_spec(spec)
    spec_key = short_hash(pickle.dumps({k: v for k, v in spec.items() if k != 'name'}, PICKLE))  # as build's
    return lambda texts: [len(ids) + 1 for ids in enc.encode_ordinary_batch(texts)], spec_key


def reusable(header, spent, budget):
    """Whether a cached part is what a fresh run with this budget writes, `spent` tokens before it."""
    total = spent + int(header['cost'].sum())
    if header['end'] == 'budget':  # it stopped at the budget of its run: only the same stop point will do
        return budget is not None and total - int(header['cost'][-1]) < budget <= total
    return budget is None or total < budget  # a fresh run reads it whole


def stream_parts(dataset, key, o, spec):
    """The record caches of the stream's parts, reused or written, up to the budget: (parsed, facts), parsed as
    build.parse_all's ([{name, md5, cache, records}]), facts {parts, read, tokens, end}. A stream that breaks off,
    or a disk that fills up, is one line once the progress bar is closed."""
    folder = os.path.join(o['out_dir'], 'cache', 'parsed')
    try:
        with writing_to(folder), closing(Stream(dataset)) as stream, \
                tqdm(total=o['max_tokens'] or None, unit='tok', unit_scale=True, desc='stream') as bar:
            os.makedirs(folder, exist_ok=True)
            return read_parts(stream, folder, key, o, spec, bar)
    except StreamError as e:
        fail(f"--hf_dataset={o['hf_dataset']}: {e}: run the same command again to go on from there")


def read_parts(stream, folder, key, o, spec, bar):
    """stream_parts' walk: each part from the cache where reusable(), else from the stream (opened at the first
    part to read, from the state of the part before)."""
    budget, (costs_of, counted_as) = o['max_tokens'] or None, token_counter(spec)
    key = short_hash(key, counted_as)
    parsed, spent, state, index, read = [], 0, None, 0, 0
    while True:
        path = os.path.join(folder, f'stream.{key}.{index:06d}.pkl')
        header = None if stream.started else cached(path, read_header)
        if header is None or not reusable(header, spent, budget):
            if not stream.started and index:
                tqdm.write(f'{index} part(s) cached: the stream goes on from document {read + 1:,}', file=sys.stderr)
            try:
                header = write_part(path, stream.at(state), o, costs_of, spent, bar, read)
            except StreamError as e:
                raise StreamError(f"the stream broke off in part {index} (documents from {read + 1:,}): "
                                  f"{str(e).rstrip('.')}; the {index} part(s) before it are kept") from e
        else:
            bar.update(int(header['cost'].sum()))
        parsed.append({'name': f'part {index}', 'md5': '', 'cache': path, 'records': len(header['split_hash'])})
        spent, state, read = spent + int(header['cost'].sum()), header['state'], read + header['read']
        bar.set_postfix(parts=len(parsed), docs=f'{read:,}')
        if header['end'] != 'full':
            return parsed, {'parts': len(parsed), 'read': read, 'tokens': spent, 'end': header['end']}
        index += 1


class Stream:
    """The dataset's examples, opened at a part's start on first use (resumed from the state a full part recorded),
    then read on; its errors raised as StreamError."""

    def __init__(self, dataset):
        self.dataset, self.examples = dataset, None

    @property
    def started(self):
        return self.examples is not None

    def at(self, state):
        if self.examples is None:
            if state is not None:
                self.dataset.load_state_dict(state)
            self.examples = iter(self.dataset)
        return self

    def take(self, n):
        try:
            return list(islice(self.examples, n))
        except Exception as e:
            raise StreamError(describe(e)) from e

    def state(self):
        return self.dataset.state_dict()

    def close(self):  # now, not at interpreter exit, when pyarrow is half torn down
        if self.examples is not None:
            self.examples.close()


def write_part(path, stream, o, costs_of, spent, bar, read_before):
    """Read up to --part_docs examples of the stream into a part (atomically); stop after the document that reaches
    the budget. Its header adds `cost` (per document), `read` (examples), `end` and `state` (the stream's position
    after a full part)."""
    costs, read, end, used, budget = [], 0, 'full', spent, o['max_tokens']
    with atomic_write(path) as f:
        records = Records(f)
        while end == 'full' and read < o['part_docs']:
            batch = stream.take(min(CHUNK, o['part_docs'] - read))
            if not batch:
                end = 'ended'
                break
            found = [text_in(e, o['text_field']) if isinstance(e, dict) else (None, 'not_an_object') for e in batch]
            found = [(text, problem_of(text, problem)) for text, problem in found]
            batch_costs = iter(costs_of([text for text, problem in found if not problem]))
            for offset, (example, (text, problem)) in enumerate(zip(batch, found)):
                detail = (problem, sorted(example)[:10]) if problem == 'no_text_field' else problem
                if records.add(f'example {read_before + read + offset + 1:,}', text, detail):
                    costs.append(next(batch_costs))
                    used += costs[-1]
                    bar.update(costs[-1])
                    if budget and used >= budget:
                        end, batch = 'budget', batch[:offset + 1]
                        break
            read += len(batch)
        records.close(cost=np.array(costs, dtype=np.int64), read=read, end=end,
                      state=stream.state() if end == 'full' else None)
    return read_header(path)
