"""
PubMed XML -> train.bin / val.bin / meta.pkl / meta.json, nanoGPT style.

    python data/pubmed/prepare.py                                  # download the baseline, prepare it all
    python data/pubmed/prepare.py --input=../shared/data/pubmed-corpus --vocab_size=8192

Stages, each cached per input file under out_dir/cache so a killed run (even kill -9) picks up where
it stopped and gives byte-identical outputs, whatever --workers is:
  1. download   (download.py)   resumable, MD5-verified, parallel
  2. parse      (parse.py)      one worker per file -> cache/parsed/<file>.<md5>.<cfg>.pkl
  3. merge      (selection.py)  last file (numeric order) wins per PMID, a later DeleteCitation removes it, drop
                records without abstract, in other languages, excluded or outside the subset; train/val by a hash
                of the PMID
  4. tokenizer, 5. tokenize, 6. write   (data/build.py, the stages every preparer shares)
"""
import functools
import glob
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, when run as a script
from common import atomic_write, fail
from configurator import Option, at_least, configure, positive
from data import build
from data.build import (DROPPED, VAL, bad_files_status, check_kept, chosen_tokenizer, iter_records, lock_out_dir,
                        say_exclusion, short_hash, sizes_of, split_lines, subset_line, write_token_files, writing_to)
from data.pubmed.download import DownloadError, download_all, list_files, natural_key
from data.pubmed.parse import PARSE_VERSION, document, write_parsed
from data.pubmed.selection import (PUBMEDQA, SUBSET_OPTIONS, SUBSET_RULES, exclusion_problems, exclusion_record, merge,
                                   names_something, read_exclusions, subset_filters, subset_record, why_nothing_is_kept)
from dataloader import write_meta

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
    **build.OPTIONS,           # --tokenizer, --vocab_size, --bpe_train_chars, --val_fraction (of PMIDs), --workers
}
# yapf: enable


def parse_options(argv):
    o = configure(OPTIONS, argv, sources=[build.__file__])
    problems = build.option_problems(o)
    if o['input'] and not input_files(o['input']):
        problems.append(f"--input={o['input']}: no .xml or .xml.gz files there")
    problems += exclusion_problems(o)
    if problems:
        fail('; '.join(problems), code=2)
    o['raw_dir'] = o['raw_dir'] or os.path.join(o['out_dir'], 'raw')
    read_exclusions(o, PUBMEDQA)
    o['subset'] = subset_filters(o)
    return o


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
# 2. parse (parse.py): one worker per file, into its record cache (data/build.py)


def parse_files(sources, o):
    """Every file's parse cache; the PubMed fields the subsets read are always parsed (PARSE_VERSION), the
    export's extra fields only with --export_jsonl."""
    with_meta = bool(o['export_jsonl'])
    return build.parse_all(sources, o, functools.partial(write_parsed, with_meta=with_meta),
                           short_hash(PARSE_VERSION, with_meta))


# ------------------------------------------------------------------------------------------------
# 3. merge (selection.py): which record of which file ends up where (0 = dropped, 1 = train, 2 = val)

# ------------------------------------------------------------------------------------------------
# 4. tokenizer

# ------------------------------------------------------------------------------------------------
# 5. tokenize: one file -> cache/tokens/<file>.<key>.npz with its train and val tokens

# ------------------------------------------------------------------------------------------------
# 6. outputs


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


def source_of(o):
    """meta's `source`: where the XML came from, in a few words."""
    return 'PubMed XML (' + ('local files' if o['input'] else 'downloaded baseline' +
                             (' and updates' if o['updates'] else '')) + ')'


def print_summary(meta, counts, n_files, elapsed):
    docs = meta['train_docs'] + meta['val_docs']
    lines = [
        f"files: {n_files} given, {len(meta['files'])} prepared, {len(meta['bad_files'])} bad",
        f"records: {counts['records'] + counts['book'] + counts['no_pmid']:,} seen, {docs:,} kept; dropped: "
        f"{counts['no_abstract']:,} without abstract, {counts['language']:,} other language, "
        f"{counts['book']:,} books, {counts['no_pmid']:,} without a valid PMID",
        f"PMIDs: {counts['replaced']:,} duplicates replaced by a later version, {counts['deleted']:,} deleted "
        f"({counts['delete_requests']:,} delete requests), {counts['excluded']:,} excluded "
        f"({meta['excluded_pmids']['source'] or 'no --exclude_pmids'})",
        *([subset_line(meta['subset'], counts, SUBSET_OPTIONS, SUBSET_RULES)] if meta['subset'] else []),
        *split_lines(meta, elapsed),
    ]
    print('\n'.join(lines))


def main(argv=None):
    t0 = time.time()
    o = parse_options(argv)
    say_exclusion(o)
    spec = chosen_tokenizer(o['tokenizer'])
    lock = lock_out_dir(o['out_dir'])  # noqa: F841 (held until the process ends)
    with writing_to(o['raw_dir']):  # downloads only
        sources, failed_downloads = gather_sources(o)
    parsed, corrupt = parse_files(sources, o)
    bad = failed_downloads + corrupt
    if not parsed:
        fail('no file could be prepared' + (f' ({len(bad)} bad)' if bad else ''))
    plans, counts = merge(parsed, o, o['excluded'])
    check_kept(plans, lambda: why_nothing_is_kept(counts, o),
               'more input files' + (', a subset that keeps more' if o['subset'] else ''))
    if o['export_jsonl']:  # before the token files: a failed export leaves the folder as it was
        with writing_to(o['export_jsonl']):
            write_jsonl(parsed, plans, o['export_jsonl'])
    spec, totals = write_token_files(parsed, plans, spec, o, document)
    with writing_to(o['out_dir']):
        meta = write_meta(o['out_dir'], spec, excluded_pmids=exclusion_record(o, counts),
                          records=dict(sorted(counts.items())), files=[{'name': p['name'], 'md5': p['md5']}
                                                                       for p in parsed],
                          bad_files=[{'name': n, 'error': e} for n, e in bad],
                          split={'rule': 'a hash of the PMID', 'val_fraction': o['val_fraction']},
                          languages=o['languages'], subset=subset_record(o), source=source_of(o), **sizes_of(totals))
    print_summary(meta, counts, len(sources) + len(failed_downloads), time.time() - t0)
    return bad_files_status(bad, o['allow_bad_files'])


if __name__ == '__main__':
    sys.exit(main())
