"""
Text that is not PubMed XML -> documents, one input file at a time, streaming (memory holds one chunk of
documents, one Parquet row group's text column, or one document of a plain-text file):

    .jsonl, .jsonl.gz         one JSON object a line, its --text_field a document (a blank line is no line)
    .parquet                  its --text_field column, a row group at a time (pyarrow), a cell a document
    .txt, .txt.gz, .raw       UTF-8 text (a BOM skipped; line ends read as '\\n': '\\r\\n' and '\\r' become '\\n');
                              the whole file one document, or cut into documents at a separator (a regular
                              expression: prepare.py turns --separator's literal text into one)

Gzip is recognised by its magic bytes, whatever the name says. A document is the text as it is, byte for byte
(nothing stripped or normalised but the line ends of plain-text files). What cannot be one is counted under a
reason, never fatal (REASONS); a file that cannot be read (truncated gzip, not UTF-8, not Parquet) raises, and
build.parse_all leaves it out.

The record cache (data/build.py; prepare.py's cache/parsed/) holds the documents (each a str), then a header:
`chars`, `split_hash` and `sample_hash` (build.id_hashes of the text itself, so the same text lands in the same
split wherever it appears), `counts` ({'records': what was read: lines, rows, pieces or examples; a count per
reason}) and `first_problem` ((where, reason, detail) of the first record left out, or None), plus whatever its
writer adds (a streamed part's `cost`, `state`, `end`: hub.py).
"""
import gzip
import io
import json
import re
from collections import Counter

import numpy as np

from common import atomic_write
from data.build import CHUNK, blaming_the_input, id_hashes, write_header, write_records

READ_VERSION = 1  # of what a record cache holds: bump when reading changes (every cache is read again)
JSONL, PARQUET, TEXT = ('.jsonl', '.jsonl.gz'), ('.parquet', ), ('.txt', '.txt.gz', '.raw')  # .raw: WikiText's
SUFFIXES = JSONL + PARQUET + TEXT
REASONS = {  # why a record is no document: meta's `records` counts each (with 'records' and 'duplicates')
    'not_json': 'not JSON', 'not_an_object': 'not an object', 'no_text_field': 'without the text field',
    'not_a_string': 'not a string', 'invalid_unicode': 'invalid Unicode', 'empty': 'empty'
}
SURROGATE = re.compile('[\ud800-\udfff]')  # a JSON escape of half a surrogate pair: no UTF-8 for it
BLOCK = 1 << 20  # characters of a plain-text file read at a time when cutting it
LOOKAHEAD = 1 << 16  # characters after a separator read before it is cut there (a match may still grow)


def format_of(path):
    name = str(path).lower()
    return 'jsonl' if name.endswith(JSONL) else 'parquet' if name.endswith(PARQUET) else \
        'text' if name.endswith(TEXT) else None


def document(record):
    """A record's text (build's tokenize and BPE stages ask each record for it)."""
    return record


def problem_of(text, problem=None):
    """Why a text read is no document (a REASONS key), or None."""
    if problem:
        return problem
    if not text or text.isspace():
        return 'empty'
    if SURROGATE.search(text):
        return 'invalid_unicode'
    return None


def text_in(example, field):
    """(text, None) of an object's field, or (None, why not)."""
    if field not in example:
        return None, 'no_text_field'
    text = example[field]
    return (text, None) if isinstance(text, str) else (None, 'not_a_string')


# ------------------------------------------------------------------------------------------------
# the formats: each yields (where, text or None, reason or None), in file order


def open_text(path):
    """A text stream of a file, gunzipped when it is gzip; UTF-8 (a BOM skipped), line ends read as '\\n'."""
    raw = open(path, 'rb')
    if raw.peek(2)[:2] == b'\x1f\x8b':
        raw = gzip.GzipFile(fileobj=raw, mode='rb')
    return io.TextIOWrapper(raw, encoding='utf-8-sig')


def jsonl_documents(path, field):
    with open_text(path) as f:
        for number, line in enumerate(f, 1):
            if line.isspace():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                yield f'line {number}', None, 'not_json'
                continue
            if not isinstance(value, dict):
                yield f'line {number}', None, 'not_an_object'
                continue
            text, problem = text_in(value, field)
            yield f'line {number}', text, problem if problem != 'no_text_field' else (problem, sorted(value)[:10])


def parquet_documents(path, field):
    """A row group at a time, only the text column read (prepare.py checked its type before any work)."""
    import pyarrow.parquet as pq
    row = 0
    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches(batch_size=CHUNK, columns=[field], use_threads=False):
            for value in batch.column(0).to_pylist():
                row += 1
                yield f'row {row}', *((value, None) if isinstance(value, str) else (None, 'not_a_string'))


def text_documents(path, separator):
    with open_text(path) as f:
        if separator is None:
            yield 'the file', f.read(), None
            return
        for number, piece in enumerate(cut(f, re.compile(separator)), 1):
            yield f'piece {number}', piece, None


def cut(f, pattern):
    """The pieces of a text stream between the matches of `pattern` (empty matches ignored), read BLOCK characters
    at a time: what re.split gives on the whole text, for any separator that is decided within LOOKAHEAD characters
    of its start. Memory holds a block and the piece being read."""
    text, searched = '', 0  # no separator starts in text[:searched] that has not been cut at already
    while True:
        block = f.read(BLOCK)
        text += block
        settled = len(text) - LOOKAHEAD if block else len(text)  # a match ending after this may grow with more text
        start, again = 0, None
        for match in pattern.finditer(text, searched):
            if match.end() > settled:
                again = match.start()
                break
            if match.end() > match.start():
                yield text[start:match.start()]
                start = match.end()
        searched = again if again is not None else max(start, settled)
        text, searched = text[start:], searched - start
        if not block:
            yield text
            return


def documents_of(path, text_field, separator):
    kind = format_of(path)
    if kind == 'jsonl':
        return jsonl_documents(path, text_field)
    if kind == 'parquet':
        return parquet_documents(path, text_field)
    return text_documents(path, separator)


# ------------------------------------------------------------------------------------------------
# record caches


class Records:
    """Documents on their way into an open record cache: CHUNK to a pickle, their header arrays gathered as they
    come (the split and sample hashes a chunk at a time, so no file's texts are ever held whole)."""

    def __init__(self, f):
        self.f, self.chunk, self.chars, self.hashes = f, [], [], []
        self.counts, self.first_problem = Counter({'records': 0, **{reason: 0 for reason in REASONS}}), None

    def add(self, where, text, problem):
        """Count what was read; keep it when `problem` (problem_of's) is None. Whether it was kept."""
        self.counts['records'] += 1
        if problem:
            reason, detail = problem if isinstance(problem, tuple) else (problem, None)
            self.counts[reason] += 1
            self.first_problem = self.first_problem or (where, reason, detail)
            return False
        self.chunk.append(text)
        self.chars.append(len(text))
        if len(self.chunk) == CHUNK:
            self.flush()
        return True

    def flush(self):
        write_records(self.f, self.chunk)  # an empty chunk is one empty pickle: what iter_records expects
        self.hashes.append(id_hashes(self.chunk))
        self.chunk = []

    def close(self, **more):
        """The last chunk, then the header (with `more` of the writer's); the number of documents."""
        self.flush()
        split_hash = np.concatenate([h[0] for h in self.hashes])
        write_header(
            self.f, {
                'chars': np.array(self.chars, dtype=np.int64), 'split_hash': split_hash, 'sample_hash': np.concatenate(
                    [h[1]
                     for h in self.hashes]), 'counts': dict(self.counts), 'first_problem': self.first_problem, **more
            })
        return len(split_hash)


def write_documents(path, cache, text_field, separator):
    """build.parse_all's writer (workers get it pickled, as a functools.partial): one input file's documents into
    its record cache; how many. A separator of None keeps a plain-text file whole."""
    with atomic_write(cache) as f:
        records = Records(f)
        for where, text, problem in blaming_the_input(documents_of(path, text_field, separator)):
            records.add(where, text, problem_of(text, problem))
        return records.close()
