"""
Any text that is not PubMed XML -> train.bin / val.bin / meta.pkl / meta.json: the same data folder as
data/pubmed/prepare.py's (same tokenizer spec, hashes and counts), so a mixture can train on both.

    python data/text/prepare.py --input=corpus/ --out_dir=data/general --tokenizer=models/smollm2
    python data/text/prepare.py --input='shards/*.parquet' --out_dir=data/fw --tokenizer=data/pubmed-smollm2
    python data/text/prepare.py --input=books/ --separator='\\n\\n' --out_dir=data/books --vocab_size=8192
    python data/text/prepare.py --hf_dataset=HuggingFaceFW/fineweb-edu --hf_config=sample-10BT \\
        --max_tokens=50_000_000 --out_dir=data/fineweb-smollm2 --tokenizer=models/smollm2

Stages, each cached under out_dir/cache so a killed run (even kill -9) picks up where it stopped and gives
byte-identical outputs, whatever --workers is:
  1. read      (formats.py)  one worker per file (.jsonl, .jsonl.gz, .parquet, .txt, .txt.gz, .raw) -> its record
               cache; or (hub.py) a Hugging Face dataset streamed up to --max_tokens into parts of --part_docs
               documents
  2. select    the first copy of each text is kept (file order, then document order), later ones are counted as
               duplicates; train/val by a hash of the text
  3. tokenizer, 4. tokenize, 5. write   (data/build.py, the stages every preparer shares)
"""
import functools
import glob
import os
import re
import sys
import time
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, when run as a script
from common import fail, natural_key
from configurator import Option, at_least, configure
from data import build
from data.build import (bad_files_status, check_kept, chosen_tokenizer, lock_out_dir, read_header, short_hash, sizes_of,
                        split_lines, split_plan, write_token_files, writing_to)
from data.text.formats import READ_VERSION, REASONS, SUFFIXES, document, format_of, write_documents
from dataloader import write_meta


def names_a_field(value):
    return None if value else 'is empty: give the name of the field (or column) that holds the text'


# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'input': '',             # local files: one, a folder (searched recursively) or a glob, of .jsonl, .jsonl.gz,
                             # .parquet, .txt, .txt.gz or .raw (WikiText's); other files are ignored; no network
    'out_dir': '',           # where train.bin, val.bin, meta.pkl, meta.json and cache/ go (one folder per corpus)
    'text_field': Option('text', names_a_field),  # the JSON field, Parquet column or streamed field of the text
    'separator': '',         # cut each plain-text file into documents where this text is; \n \r \t \\ are read as
                             # escapes ('\n\n': a blank line; line ends are read as \n); '' = each file one document
    'separator_regex': '',   # ... or where this Python regular expression matches, e.g. '\n\s*\n' (a blank line
                             # that may hold spaces) or '\n(?= = [^=])' (before each WikiText article title)
    'max_files': Option(0, at_least(0)),  # only the first N input files (natural order of their paths); 0 = all
    'allow_bad_files': False,  # exit 0 even if some files could not be read (they are left out either way)
    'hf_dataset': '',        # instead of --input: a Hugging Face dataset, streamed (NAME, e.g.
                             # HuggingFaceFW/fineweb-edu; needs the network), or a local dataset folder
    'hf_config': '',         # its configuration (subset), e.g. sample-10BT; '' = its default
    'hf_split': 'train',     # its split
    'hf_revision': '',       # a branch, tag or commit; '' = the default branch (pinned to its commit at the start)
    'max_tokens': Option(0, at_least(0)),  # stream until this many tokens (a document's + its <|endoftext|>, by
                                           # --tokenizer; 4 characters a token for bpe); 0 = all (local folder only)
    'part_docs': Option(10_000, at_least(1)),  # documents per cached part of a stream (a kill loses one at most)
    **build.OPTIONS,         # --tokenizer, --vocab_size, --bpe_train_chars, --val_fraction (of texts), --workers
}
# yapf: enable
INPUT_ONLY = ('max_files', 'separator', 'separator_regex', 'allow_bad_files')
STREAM_ONLY = ('hf_config', 'hf_split', 'hf_revision', 'max_tokens', 'part_docs')
ESCAPES = {'n': '\n', 'r': '\r', 't': '\t', '\\': '\\'}
UNITS = {'jsonl': 'lines', 'parquet': 'rows', 'text': 'pieces'}  # what a format's records are, for the notes
MAX_NOTES = 10


def parse_options(argv):
    """The options, checked before any work (exit 2 naming each problem); o['files'] the input files, o['cut'] the
    separator as a regular expression (None: each plain-text file whole)."""
    given = set()
    o = configure(OPTIONS, argv, given=given, sources=[build.__file__])
    problems = source_problems(o, given)
    if o['out_dir']:
        problems += build.option_problems(o)
    else:
        problems.append('--out_dir: give the folder to prepare into (one per corpus, e.g. data/general)')
    if not problems and o['input']:
        problems += separator_problems(o) + parquet_problems(o)
    if problems:
        fail('; '.join(problems), 2)
    return o


def source_problems(o, given):
    """--input or --hf_dataset, one of them, each with only its own options; o['files'] from --input."""
    if bool(o['input']) == bool(o['hf_dataset']):
        return [
            'give --input=FILES_OR_FOLDER or --hf_dataset=NAME'
            if not o['input'] else '--input and --hf_dataset: give one of them (prepare each into its own --out_dir)'
        ]
    mode, other = ('--input', STREAM_ONLY) if o['input'] else ('--hf_dataset', INPUT_ONLY)
    problems = [f'--{k} does not apply to {mode}' for k in other if k in given]
    if o['input']:
        o['files'] = input_files(o['input'])[:o['max_files'] or None]
        if os.path.isfile(o['input']) and not format_of(o['input']):
            problems.append(f"--input={o['input']}: not a {', '.join(SUFFIXES)} file")
        elif not o['files']:
            problems.append(f"--input={o['input']}: no {', '.join(SUFFIXES)} files there")
    elif os.path.exists(o['hf_dataset']) and not os.path.isdir(o['hf_dataset']):
        problems.append(f"--hf_dataset={o['hf_dataset']}: a file, not a dataset folder (read files with --input)")
    elif not os.path.exists(o['hf_dataset']) and not o['max_tokens']:
        problems.append(f"--hf_dataset={o['hf_dataset']}: give a budget, e.g. --max_tokens=100_000_000: a hub dataset "
                        'is streamed until it')
    return problems


def input_files(pattern):
    """The files of a path, a folder (recursively) or a glob that are of a format read here, each once however
    linked, in natural order of their paths (shard 10 after shard 9)."""
    if os.path.isdir(pattern):
        paths = glob.glob(os.path.join(pattern, '**', '*'), recursive=True)
    else:
        paths = [pattern] if os.path.isfile(pattern) else glob.glob(pattern, recursive=True)
    paths = [p for p in paths if os.path.isfile(p) and format_of(p)]
    paths = {os.path.realpath(p): p for p in sorted(paths, reverse=True)}.values()
    return sorted(paths, key=lambda p: (natural_key(p), p))


def separator_problems(o):
    """--separator's text or --separator_regex's pattern, as o['cut'] (a regular expression, or None)."""
    o['cut'], problems = None, []
    if o['separator'] and o['separator_regex']:
        return ['--separator and --separator_regex: give one of them']
    if o['separator']:
        try:
            text = unescape(o['separator'])
        except ValueError as e:
            return [f"--separator={o['separator']}: {e}"]
        if '\r' in text:
            problems.append(f"--separator={o['separator']}: holds \\r, but plain-text files are read with their line "
                            'ends as \\n (write \\n)')
        o['cut'] = re.escape(text)
    elif o['separator_regex']:
        try:
            matches_nothing = re.compile(o['separator_regex']).fullmatch('') is not None
        except re.error as e:
            return [f"--separator_regex={o['separator_regex']}: not a regular expression ({e})"]
        if matches_nothing:
            problems.append(f"--separator_regex={o['separator_regex']}: matches the empty text: a separator is at "
                            'least one character')
        o['cut'] = o['separator_regex']
    if o['cut'] and not any(format_of(p) == 'text' for p in o['files']):
        problems.append(f"--separator{'_regex' if o['separator_regex'] else ''} cuts plain-text files, and "
                        f"--input={o['input']} has none")
    return problems


def unescape(text):
    """--separator's text with its escapes read: \\n, \\r, \\t, \\\\ (others are refused: a pattern belongs in
    --separator_regex)."""

    def one(match):
        if match.group(1) not in ESCAPES:
            raise ValueError(f"\\{match.group(1)} is no escape here (\\n \\r \\t \\\\); for a regular expression use "
                             '--separator_regex')
        return ESCAPES[match.group(1)]

    return re.sub(r'\\(.?)', one, text, flags=re.S)


def parquet_problems(o):
    """A Parquet file without the text column, or whose column is not text: one line naming the file and its
    columns (its footer read only; a file that has none is left for the read stage to report as bad)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    wrong = []
    for path in (p for p in o['files'] if format_of(p) == 'parquet'):
        try:
            schema = pq.read_schema(path)
        except Exception:
            continue
        field = o['text_field']
        if field not in schema.names:
            wrong.append(f"{path}: no column '{field}' (its columns: {', '.join(schema.names)}); set --text_field")
        else:
            kind = schema.field(field).type
            kind = kind.value_type if pa.types.is_dictionary(kind) else kind
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
                wrong.append(f"{path}: column '{field}' holds {schema.field(field).type}, not text")
    return wrong[:1] + ([f'and {len(wrong) - 1} more Parquet file(s) alike'] if len(wrong) > 1 else [])


# ------------------------------------------------------------------------------------------------
# 1. read: every file into its record cache (build.parse_all), or the stream into parts (hub.py)


def read_files(o):
    """(parsed, bad): each file's record cache, keyed by what its format reads (a JSON field or Parquet column, or
    the separator of plain text)."""

    def key(path):
        kind = format_of(path)
        return short_hash(READ_VERSION, kind, o['cut'] if kind == 'text' else o['text_field'])

    write = functools.partial(write_documents, text_field=o['text_field'], separator=o['cut'])
    return build.parse_all([(p, None) for p in o['files']], o, write, key)


# ------------------------------------------------------------------------------------------------
# 2. select: duplicates, then train or val by a hash of the text


def select(parsed, o):
    """A plan per file (DROPPED/TRAIN/VAL per document), the counts of meta's `records`, and the notes on what was
    left out. Only the headers are read; memory holds two 64-bit hashes a document (and sorts them) to find the
    texts met before."""
    counts = Counter({'records': 0, **{reason: 0 for reason in REASONS}})
    split_hashes, sample_hashes, notes = [], [], []
    for p in parsed:
        header = read_header(p['cache'])
        counts.update(header['counts'])
        split_hashes.append(header['split_hash'])
        sample_hashes.append(header['sample_hash'])
        if header['first_problem']:
            notes.append(left_out_note(p, header))
    seen_before = repeated(np.concatenate(split_hashes), np.concatenate(sample_hashes))
    counts['duplicates'] = int(seen_before.sum())
    plans, at = [], 0
    for hashes in split_hashes:
        plans.append(split_plan({'split_hash': hashes}, ~seen_before[at:at + len(hashes)], o['val_fraction']))
        at += len(hashes)
    return plans, dict(sorted(counts.items())), notes


def repeated(split_hash, sample_hash):
    """Which documents repeat a text met earlier (the two hashes together: 128 bits of blake2b): a stable sort puts
    equal texts side by side in input order, so each but the first is marked."""
    order = np.lexsort((sample_hash, split_hash))
    same = (split_hash[order][1:] == split_hash[order][:-1]) & (sample_hash[order][1:] == sample_hash[order][:-1])
    marked = np.zeros(len(order), dtype=bool)
    marked[order[1:][same]] = True
    return marked


def left_out_note(p, header):
    """One line on a file's records that are no documents: how many, why, and where the first is."""
    counts = header['counts']
    where, reason, detail = header['first_problem']
    unit = 'examples' if p['name'].startswith('part ') else UNITS[format_of(p['name'])]
    why = ', '.join(f'{counts[r]:,} {REASONS[r]}' for r in REASONS if counts.get(r))
    fields = f" (its fields: {', '.join(detail)})" if detail is not None else ''
    return (f"note: {p['name']}: {sum(counts.get(r, 0) for r in REASONS):,} of {counts['records']:,} {unit} left out "
            f'({why}); the first: {where}, {REASONS[reason]}{fields}')


def why_nothing_is_kept(counts, o):
    dropped = ', '.join(f'{counts[r]:,} {REASONS[r]}' for r in REASONS if counts[r])
    hint = f" (is --text_field={o['text_field']} the right field?)" if counts['no_text_field'] else ''
    return f"{counts['records']:,} records read, none a document{': ' + dropped if dropped else ''}{hint}"


# ------------------------------------------------------------------------------------------------
# 3. tokenizer, 4. tokenize, 5. write: data/build.py


def uncut_text(o):
    return o['input'] and o['cut'] is None and any(format_of(p) == 'text' for p in o['files'])


def source_of(o, stream):
    if stream:
        return stream['source']
    kinds = Counter(os.path.basename(p).lower().split('.', 1)[-1] for p in o['files'])
    return 'local files (' + ', '.join(f'{n} .{kind}' for kind, n in sorted(kinds.items())) + ')'


def print_summary(meta, stream, n_files, elapsed):
    counts, docs = meta['records'], meta['train_docs'] + meta['val_docs']
    dropped = ', '.join([f'{counts[r]:,} {REASONS[r]}'
                         for r in REASONS if counts[r]] + [f"{counts['duplicates']:,} duplicates"])
    lines = [
        f"source: {meta['source']}; " +
        (f"{stream['parts']} part(s), {stream['read']:,} examples read, {stream['tokens']:,} tokens counted "
         f"({'the budget reached' if stream['end'] == 'budget' else 'the whole split'})"
         if stream else f"files: {n_files} given, {len(meta['files'])} prepared, {len(meta['bad_files'])} bad"),
        f"records: {counts['records']:,} seen, {docs:,} kept; dropped: {dropped}",
        *split_lines(meta, elapsed),
    ]
    print('\n'.join(lines))


def read_sources(o, spec):
    """(parsed, bad, stream): the record caches of the files or of the stream's parts, the files left out, and the
    stream's facts (None for files)."""
    if not o['hf_dataset']:
        return *read_files(o), None
    from data.text.hub import stream_parts
    dataset, source, key = o.pop('stream')
    parsed, facts = stream_parts(dataset, key, o, spec)
    return parsed, [], {'source': source, **facts}


def main(argv=None):
    t0 = time.time()
    o = parse_options(argv)
    if o['hf_dataset']:  # the network, the dataset and its text field checked at once, before any work
        from data.text.hub import open_stream
        o['stream'] = open_stream(o)
    spec = chosen_tokenizer(o['tokenizer'])
    lock = lock_out_dir(o['out_dir'])  # noqa: F841 (held until the process ends)
    parsed, bad, stream = read_sources(o, spec)
    if not parsed:
        fail('no file could be prepared' + (f' ({len(bad)} bad)' if bad else ''))
    plans, counts, notes = select(parsed, o)
    for note in notes[:MAX_NOTES]:
        print(note, file=sys.stderr)
    if len(notes) > MAX_NOTES:
        print(f"note: and {len(notes) - MAX_NOTES} more with records left out (meta.json's records counts them all)",
              file=sys.stderr)
    check_kept(plans, lambda: why_nothing_is_kept(counts, o),
               'more text' + (', cut into more documents (--separator)' if uncut_text(o) else ''))
    spec, totals = write_token_files(parsed, plans, spec, o, document)
    with writing_to(o['out_dir']):
        meta = write_meta(o['out_dir'], spec, source=source_of(o, stream), records=counts,
                          files=[{'name': p['name'], 'md5': p['md5']} for p in parsed] if not stream else [],
                          bad_files=[{'name': n, 'error': e} for n, e in bad],
                          split={'rule': 'a hash of the text', 'val_fraction': o['val_fraction']}, languages='all',
                          **sizes_of(totals))
    print_summary(meta, stream, len(o.get('files', [])), time.time() - t0)
    return bad_files_status(bad, o['allow_bad_files'])


if __name__ == '__main__':
    sys.exit(main())
