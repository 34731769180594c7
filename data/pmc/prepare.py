"""
PMC Open Access full text (JATS XML) -> train.bin / val.bin / meta.pkl / meta.json: the same data folder as
data/pubmed/prepare.py's, with the same guarantees (resumable after kill -9, byte-identical whatever --workers is).

    python data/pmc/prepare.py --input=DIR                 # local .tar.gz packages and/or .xml/.nxml articles
    python data/pmc/prepare.py --base_url=MIRROR/pub/pmc/ --licenses=oa_comm --max_files=1   # download the layout

Stages, each cached per input under out_dir/cache:
  1. download   (packages.py)   NCBI's bulk layout: each package with its File List, resumable, verified
  2. parse      one worker per input -> cache/parsed/<input>.<md5>.<version>.pkl: a package is streamed (never
                extracted), loose articles are read ARTICLES_PER_GROUP to an input; each article's blocks (jats.py)
                are cached, so other text options (--tables) parse nothing again
  3. merge      (selection.py)  the File Lists' facts, the latest version of each article, the rules that drop
                articles (retracted, no body, --licenses, --languages, --exclude_pmids, the subsets); train/val by a
                hash of the PMID (else PMCID, else DOI), as data/pubmed's
  4. tokenizer, 5. tokenize, 6. write   (data/build.py, the stages every preparer shares)
"""
import functools
import glob
import hashlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, when run as a script
import numpy as np

from common import atomic_write, fail, file_md5
from configurator import Option, at_least, configure, positive
from data import build
from data.build import (DROPPED, TRAIN, VAL, blaming_the_input, check_bpe_size, chosen_tokenizer, id_hashes,
                        iter_records, lock_out_dir, short_hash, sizes_of, tokenize_all, train_tokenizer, write_bins,
                        say_exclusion, split_lines, subset_line, write_header, write_records, writing_to)
from data.pmc import selection
from data.pmc.jats import KINDS, MAX_ARTICLE_BYTES, TEXT_KINDS, read_article, render
from data.pmc.packages import (GROUPS, LICENSE_GROUPS, BadFileList, BadPackage, download_packages, file_list_path,
                               group_url, iter_package, list_packages, package_order, parse_licenses, read_file_list)
from data.pubmed.download import DownloadError, natural_key
from data.pubmed.selection import (PUBMEDQA, exclusion_problems, exclusion_record, names_something, read_exclusions,
                                   subset_filters, subset_record)
from dataloader import write_meta

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'input': '',             # local files (a folder, searched recursively, or a glob): .tar.gz bulk packages (with the
                             # .filelist.csv beside each, when there is one) and .xml/.nxml articles; no network
    'out_dir': HERE,         # where train.bin, val.bin, meta.pkl, meta.json and cache/ go
    'raw_dir': '',           # downloaded packages ('' = out_dir/raw)
    'max_files': Option(0, at_least(0)),  # only the first N packages of each license group (or --input files); 0 = all
    'updates': False,        # also download the incremental packages (after the baselines)
    'base_url': '',          # the folder that holds oa_bulk/ in NCBI's bulk layout: a mirror or a local copy (NCBI
                             # retired its own in 2026)
    'groups': '',            # license groups to download: oa_comm, oa_noncomm, oa_other ('' = those with a license
                             # --licenses keeps)
    'connections': Option(3, at_least(1)),  # parallel downloads
    'retries': Option(8, at_least(0)),  # per request, on timeouts, connection errors and 5xx
    'timeout': Option(60.0, positive),  # seconds without data before a request is retried
    'backoff': Option(1.0, at_least(0)),  # seconds before the first retry, doubling each time (with jitter)
    'licenses': 'all',       # comma-separated licenses to keep ('CC BY,CC0') or groups (oa_comm: CC0, CC BY, CC BY-SA,
                             # CC BY-ND); 'all' keeps every one
    'tables': False,         # tables in the text too, one line per row, cells tab-separated (re-parses nothing)
    'languages': Option('eng', names_something),  # comma-separated codes to keep (PubMed's: eng, fre, ger...); 'all'
                                                  # keeps every language
    'export_jsonl': '',      # also write one JSON line per kept article to this path
    'allow_bad_files': False,  # exit 0 even if some packages were cut short, corrupt or failed to download
    # subsets, applied after the rules above (each article dropped is counted under the first rule it fails)
    'years': '',             # publication years to keep, inclusive: 2000-2019, 2020- or -1999
    'journals': '',          # ;-separated journals to keep: any journal-id of the XML (NLM TA 'PLoS One', ISO
                             # abbreviation, publisher id) or its title, any case
    'article_types': '',     # ;-separated JATS article types to keep (research-article;review-article;case-report)
    'drop_article_types': '',  # ;-separated JATS article types to drop (correction;retraction;editorial)
    'keep_pmids': '',        # only the PMIDs listed here: a text file (spaces, commas, lines), a JSON file or a folder
    'exclude_pmids': 'auto',   # PMIDs kept out of both splits (a benchmark's test data), as data/pubmed/prepare.py's;
                               # 'auto' = data/pubmedqa if there
    **build.OPTIONS,           # --tokenizer, --vocab_size, --bpe_train_chars, --val_fraction, --workers
}
# yapf: enable
PARSE_VERSION = 1  # of what a record cache holds: bump when it changes (every input is parsed again)
ARTICLES_PER_GROUP = 1000  # loose articles per input: a cache and a worker task each, not one per article
ARTICLES_PER_PICKLE = 64  # in a record cache: what a stage holds at a time (PubMed's 1,024 abstracts ~ 64 articles)
RETIRED = (
    "NCBI retired its bulk layout in 2026 (ftp.ncbi.nlm.nih.gov/pub/pmc/oa_bulk/, then pub/pmc/deprecated/): "
    'give --base_url=the folder that holds oa_bulk/ in a mirror or a local copy of it, or prepare local packages '
    'or articles with --input=DIR')


def parse_options(argv):
    o = configure(OPTIONS, argv, sources=[build.__file__])
    problems = build.option_problems(o) + exclusion_problems(o)
    if o['input'] and not input_files(o['input']):
        problems.append(f"--input={o['input']}: no .tar.gz, .xml or .nxml files there")
    if not o['input'] and not o['base_url']:
        problems.append(f'no --input and no --base_url: {RETIRED}')
    try:
        o['licenses_kept'] = parse_licenses(o['licenses'])
    except ValueError as e:
        problems.append(f"--licenses={o['licenses']}: {e}")
        o['licenses_kept'] = None
    o['group_list'] = [g.strip() for g in o['groups'].split(',') if g.strip()] or groups_for(o['licenses_kept'])
    unknown = [g for g in o['group_list'] if g not in GROUPS]
    if unknown:
        problems.append(f"--groups={o['groups']}: unknown group {unknown[0]!r}: expected some of {', '.join(GROUPS)}")
    if problems:
        fail('; '.join(problems), code=2)
    o['raw_dir'] = o['raw_dir'] or os.path.join(o['out_dir'], 'raw')
    read_exclusions(o, PUBMEDQA)
    o['subset'] = subset_filters(o)
    o['kinds'] = KINDS if o['tables'] else TEXT_KINDS
    return o


def groups_for(licenses):
    """The license groups whose packages hold a license kept (all of them for every license, or for one that NCBI's
    File Lists never name, such as the XML's 'Public Domain')."""
    if licenses is None or licenses - {name for names in LICENSE_GROUPS.values() for name in names}:
        return list(GROUPS)
    return [g for g in GROUPS if licenses & set(LICENSE_GROUPS[g])]


# ------------------------------------------------------------------------------------------------
# 1. sources: local packages and articles, or downloads; loose articles in groups


def input_files(pattern):
    """The .tar.gz, .xml and .nxml files of a folder (searched recursively) or a glob, each once however linked:
    loose articles first (natural order of their paths), then packages in package_order."""
    paths = glob.glob(os.path.join(pattern, '**', '*'), recursive=True) if os.path.isdir(pattern) else glob.glob(
        pattern, recursive=True)
    paths = [p for p in paths if os.path.isfile(p) and p.lower().endswith(('.tar.gz', '.xml', '.nxml'))]
    paths = list({os.path.realpath(p): p for p in sorted(paths, reverse=True)}.values())
    articles = sorted((p for p in paths if not p.endswith('.tar.gz')), key=natural_key)
    packages = {}
    for path in sorted(p for p in paths if p.endswith('.tar.gz')):
        packages.setdefault(os.path.basename(path), []).append(path)
    packages = [path for name in package_order(packages) for path in packages[name]]
    return articles + packages


def local_sources(o):
    """[(path or a tuple of article paths, None, name)]: each package one input, loose articles ARTICLES_PER_GROUP
    to an input by folder (named by the folder, relative to --input, and its part when it has several)."""
    paths = input_files(o['input'])[:o['max_files'] or None]
    root = o['input'] if os.path.isdir(o['input']) else os.path.dirname(
        os.path.commonpath([os.path.abspath(p) for p in paths]))
    folders = {}
    for path in paths:
        if not path.endswith('.tar.gz'):
            folders.setdefault(os.path.dirname(path), []).append(path)
    sources = []
    for folder, members in folders.items():
        rel = os.path.relpath(os.path.abspath(folder), os.path.abspath(root))
        base = (os.path.basename(os.path.abspath(root)) if rel == '.' else rel.replace(os.sep, '_')).replace('.', '_')
        parts = [members[i:i + ARTICLES_PER_GROUP] for i in range(0, len(members), ARTICLES_PER_GROUP)]
        sources += [(tuple(part), None, base if len(parts) == 1 else f'{base}-{i + 1}') for i, part in enumerate(parts)]
    return sources + [(p, None, os.path.basename(p)) for p in paths if p.endswith('.tar.gz')]


def download_sources(o):
    """Each license group's packages (baselines, then incremental ones with --updates; --max_files of each), fetched
    with their File Lists: ([(path, md5, name)] in package order, [(name, error)])."""
    jobs = []
    for group in o['group_list']:
        url = group_url(o['base_url'], group)
        try:
            names = list_packages(url, o['timeout'], o['retries'], o['backoff'])
        except (DownloadError, OSError) as e:  # requests' errors are OSErrors
            fail(f"cannot list {url}: {str(e).removeprefix(f'{url}: ')} ({RETIRED})")
        names = [n for n in names if '.baseline.' in n] + ([n for n in names if '.incr.' in n] if o['updates'] else [])
        names = names[:o['max_files'] or None]
        print(f'{url}: {len(names)} packages')
        jobs += [(url + n, os.path.join(o['raw_dir'], group, n)) for n in names]
    if not jobs:
        fail(f"no XML packages listed under {o['base_url']} for {', '.join(o['group_list'])} ({RETIRED})")
    ok, failed = download_packages(jobs, o['connections'], o['timeout'], o['retries'], o['backoff'])
    for name, error in failed:
        print(f'error: {name}: download failed, left out: {error}', file=sys.stderr)
    at = {os.path.basename(path): (path, md5) for path, md5 in ok}
    return [(*at[name], name) for name in package_order(at)], failed


def source_md5(source):
    """A package's md5, or a group's: of its articles' names and md5s."""
    if isinstance(source, str):
        return file_md5(source)
    md5 = hashlib.md5()
    for path in source:
        md5.update(f'{os.path.basename(path)}\t{file_md5(path)}\n'.encode())
    return md5.hexdigest()


# ------------------------------------------------------------------------------------------------
# 2. parse: an input's articles -> its record cache (data/build.py's), the header the merge reads


def write_articles(source, cache):
    """Stream one input's articles into its record cache, ARTICLES_PER_PICKLE to a pickle, then the header. A package
    cut short or corrupt keeps the articles before the damage (the header's `damaged` says what); an article that
    cannot be read is counted (bad_article) and named (bad_articles); a member that is not .xml/.nxml is counted."""
    counts, bad, damage = {}, [], []
    members = package_articles(source, counts, damage) if isinstance(source, str) else loose_articles(
        source, counts, bad)
    header, chunk = Header(), []
    with atomic_write(cache) as f:
        for member, data in blaming_the_input(members):
            try:
                record = read_article(data, member)
            except (ValueError, RecursionError) as e:  # BadArticle: an XML bomb, an entity, not JATS, not XML
                bad.append((member, str(e).removeprefix(f'{member}: ')))
                continue
            chunk.append(header.add(member, record))
            if len(chunk) == ARTICLES_PER_PICKLE:
                write_records(f, chunk)
                chunk = []
        write_records(f, chunk)
        counts['bad_article'] = len(bad)
        counts.pop('articles', None)  # the merge counts the articles read: the records
        write_header(
            f, {**header.arrays(), 'counts': counts, 'bad_articles': bad, 'damaged': damage[0] if damage else None})
    return len(header)


def package_articles(path, counts, damage):
    """A package's (member, bytes), stopping at damage (said in `damage`): what came before it is kept."""
    try:
        yield from iter_package(path, counts)
    except BadPackage as e:
        damage.append(str(e).removeprefix(f'{os.path.basename(path)}: '))


def loose_articles(paths, counts, bad):
    """Loose articles' (file name, bytes); one too large is counted, not read (as a package's member), one that
    cannot be read is a bad article (the group's others go on)."""
    counts.update(too_large=0)
    for path in paths:
        try:
            if os.path.getsize(path) > MAX_ARTICLE_BYTES:
                counts['too_large'] += 1
                continue
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as e:
            bad.append((os.path.basename(path), f'unreadable: {e.strerror or e}'))
            continue
        yield os.path.basename(path), data


class Header:
    """The per-article arrays of a record cache's header, gathered while its records are written."""
    NUMBERS = {'pmid': np.int64, 'pmcid': np.int64, 'year': np.int32, 'retracted': bool, 'has_body': bool}
    CODED = ('license', 'journal', 'article_type', 'language')  # a value that repeats: its list, and an index each

    def __init__(self):
        self.columns = {k: [] for k in (*self.NUMBERS, *self.CODED, 'member', 'doi', 'kind_chars', 'kind_lines')}

    def add(self, member, r):
        """Note an article's record; returns what the cache keeps of it (its blocks, not the rendered text)."""
        journal = sorted({v.lower() for v in (*r['journal_ids'].values(), r['journal']) if v})
        values = {
            'member': member, 'pmid': r['pmid'] or 0, 'pmcid': int(r['pmcid'][3:]) if r['pmcid'] else 0,
            'doi': (r['doi'] or '').lower(), 'year': r['year'], 'retracted': r['retracted'], 'has_body': r['has_body'],
            'kind_chars': [r['sections'].get(k, 0) for k in KINDS],
            'kind_lines': [sum(kind == k for kind, _ in r['blocks']) for k in KINDS], 'license': r['license'] or '',
            'journal': tuple(journal), 'article_type': r['article_type'], 'language': ','.join(r['language'])
        }
        for key, value in values.items():
            self.columns[key].append(value)
        return {'member': member, **{k: r[k] for k in KEPT}}

    def __len__(self):
        return len(self.columns['member'])

    def arrays(self):
        c = self.columns
        arrays = {k: np.array(c[k], dtype=dtype) for k, dtype in self.NUMBERS.items()}
        arrays.update(member=c['member'], doi=c['doi'])
        for key in ('kind_chars', 'kind_lines'):
            arrays[key] = np.array(c[key], dtype=np.int32).reshape(-1, len(KINDS))  # an article is under 32 MB
        arrays['chars'] = selection.document_chars(arrays, TEXT_KINDS)
        # the XML's ids: the merge hashes the ids a File List gives its own
        arrays['split_hash'], arrays['sample_hash'] = id_hashes(
            [selection.split_id(*i) for i in zip(c['pmid'], c['pmcid'], c['doi'])])
        for key in self.CODED:  # each distinct value once (`<key>s`), an index per article
            distinct = sorted(set(c[key]))
            index = {v: i for i, v in enumerate(distinct)}
            arrays[f'{key}s'] = [list(v) if isinstance(v, tuple) else v for v in distinct]
            arrays[key] = np.array([index[v] for v in c[key]], dtype=np.int32)
        return arrays


KEPT = ('pmid', 'pmcid', 'doi', 'title', 'blocks', 'license', 'year', 'journal', 'article_type', 'language')


def parse_inputs(sources, o):
    return build.parse_all(sources, o, write_articles, short_hash(PARSE_VERSION), digest=source_md5)


def document(record, kinds=TEXT_KINDS):
    return render(record['blocks'], kinds)


# ------------------------------------------------------------------------------------------------
# 3. merge (selection.py), with each package's File List


def file_lists(parsed, bad):
    """Each parsed input's File List rows (None for loose articles, or a package without one), one input at a time; a
    File List that cannot be read is said, added to `bad` [(name, why)], and its package read by its XML alone."""
    for p in parsed:
        path = file_list_path(p['path']) if isinstance(p['path'], str) else None
        if path is None or not os.path.isfile(path):
            yield None
            continue
        try:
            yield read_file_list(path, p['name'])
        except (BadFileList, UnicodeDecodeError) as e:
            problem = str(e).removeprefix(f'{path}: ')
            print(f'error: {path}: not a File List NCBI writes, its package read by its XML alone: {problem}',
                  file=sys.stderr)
            bad.append((os.path.basename(path), problem))
            yield None


def files_record(parsed):
    """meta's `files`: each input's name and md5, and its File List's md5 where it has one."""
    files = []
    for p in parsed:
        path = file_list_path(p['path']) if isinstance(p['path'], str) else None
        listed = {'file_list_md5': file_md5(path)} if path and os.path.isfile(path) else {}
        files.append({'name': p['name'], 'md5': p['md5'], **listed})
    return files


def report_members(parsed, facts):
    """One line per article that could not be read, and per input whose File List and articles disagree."""
    for p, f in zip(parsed, facts):
        for member, problem in f['bad_articles']:
            print(f"note: {p['name']}: {member}: left out: {problem}", file=sys.stderr)
        (missing, first_missing), (unlisted, first_unlisted) = f['missing'], f['unlisted']
        if missing or unlisted:
            print(
                f"note: {p['name']}: {missing:,} File List row(s) name no article in it"
                f"{f' (first {first_missing})' if missing else ''}, {unlisted:,} article(s) in it are in no row"
                f"{f' (first {first_unlisted})' if unlisted else ''}: counted; the latter read by their XML alone",
                file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# 6. outputs


def write_jsonl(parsed, plans, facts, path, kinds):
    """One JSON line per kept article: its ids and facts as the merge saw them, its split and its text."""
    with atomic_write(path, 'w') as f:
        for p, plan, facts_ in zip(parsed, plans, facts):
            for i, (r, split) in enumerate(zip(iter_records(p['cache']), plan)):
                if split == DROPPED:
                    continue
                pmid, pmcid = int(facts_['pmid'][i]), int(facts_['pmcid'][i])
                license = facts_['licenses'][facts_['license'][i]]
                f.write(
                    json.dumps(
                        {
                            'pmid': pmid or None, 'pmcid': f'PMC{pmcid}' if pmcid else None, 'doi': r['doi'],
                            'split': 'val' if split == VAL else 'train', 'title': r['title'], 'text': document(
                                r, kinds), 'license': license, 'year': int(
                                    facts_['year'][i]), 'journal': r['journal'], 'article_type': r['article_type'],
                            'language': r['language'], 'source': p['name'], 'member': r['member']
                        }, ensure_ascii=False) + '\n')


def print_summary(meta, counts, n_inputs, elapsed):
    docs = meta['train_docs'] + meta['val_docs']
    unread = sum(counts[k] for k in ('not_xml', 'too_large', 'not_file', 'bad_article'))
    lines = [
        f"inputs: {n_inputs} given, {len(meta['files'])} prepared, {len(meta['bad_files'])} bad",
        f"articles: {counts['articles']:,} read, {docs:,} kept; dropped: " + ', '.join(f'{counts[rule]:,} {why}'
                                                                                       for rule, why in RULE_WORDS) +
        f" ({meta['excluded_pmids']['source'] or 'no --exclude_pmids'})",
        f"members not read: {unread:,} ({counts['not_xml']:,} not .xml/.nxml, {counts['too_large']:,} too large, "
        f"{counts['bad_article']:,} unreadable or refused)",
        *([
            f"File Lists: {counts['not_in_package']:,} row(s) with no article, {counts['not_in_file_list']:,} "
            'article(s) in no row'
        ] if counts['not_in_package'] or counts['not_in_file_list'] else []),
        *([subset_line(meta['subset'], counts, selection.SUBSET_OPTIONS, selection.SUBSET_RULES)]
          if meta['subset'] else []),
        'licenses kept: ' + (', '.join(f'{n:,} {name}' for name, n in meta['licenses'].items()) or 'none'),
        'characters kept: ' +
        ', '.join(f"{n:,} {kind}{'' if kind in meta['sections']['in_text'] else ' (not in the text)'}"
                  for kind, n in meta['sections']['chars'].items()),
        *split_lines(meta, elapsed),
    ]
    print('\n'.join(lines))


RULE_WORDS = (('replaced', 'older versions'), ('retracted', 'retracted'), ('no_body', 'without body text'),
              ('license', 'by --licenses'), ('language', 'other language'), ('no_id', 'without PMID, PMCID or DOI'),
              ('excluded', 'excluded'))


def why_nothing_is_kept(counts, o):
    if not counts['articles']:
        return 'the inputs hold no article that could be read'
    reasons = [(counts[rule], why) for rule, why in RULE_WORDS] + [(counts[rule], f'dropped by the subset ({rule})')
                                                                   for rule in selection.SUBSET_RULES]
    return f"of the {counts['articles']:,} articles, " + ', '.join(f'{n:,} {why}' for n, why in reasons if n)


def check_splits(plans, counts, o):
    """Exit 1, nothing written, when a split would be empty, saying which rules dropped the articles."""
    train_docs, val_docs = sum(int((p == TRAIN).sum()) for p in plans), sum(int((p == VAL).sum()) for p in plans)
    if not train_docs and not val_docs:
        fail(f'no documents to keep: {why_nothing_is_kept(counts, o)}; nothing written')
    if not train_docs or not val_docs:
        fail(f'the {"val" if train_docs else "train"} split is empty ({train_docs} train, {val_docs} val '
             f'documents): use more inputs{", a subset that keeps more" if o["subset"] else ""} or a '
             f'{"larger" if train_docs else "smaller"} --val_fraction; nothing written')


def meta_facts(o, parsed, bad, counts, facts, plans):
    """What meta.pkl says of where the documents came from and what was kept (write_meta's facts but the sizes)."""
    kept = o['licenses'] if o['licenses_kept'] else ''  # every license is no subset
    return {
        'excluded_pmids': exclusion_record(o, counts), 'records': dict(sorted(counts.items())),
        'files': files_record(parsed), 'bad_files': [{'name': n, 'error': e} for n, e in bad], 'split': {
            'rule': 'a hash of the PMID, else of PMC + the PMCID, else of doi: + the DOI',
            'val_fraction': o['val_fraction']
        }, 'languages': o['languages'], 'subset': subset_record({**o, 'licenses': kept}, selection.SUBSET_OPTIONS),
        'licenses': selection.kept_licenses(facts, plans), 'sections': selection.kept_sections(facts, o['kinds']),
        'source': 'PMC full text (' + ('local files' if o['input'] else f"downloaded from {o['base_url']}") + ')'
    }


def main(argv=None):
    t0 = time.time()
    o = parse_options(argv)
    say_exclusion(o)
    spec = chosen_tokenizer(o['tokenizer'])
    lock = lock_out_dir(o['out_dir'])  # noqa: F841 (held until the process ends)
    if o['input']:
        sources, failed = local_sources(o), []
    else:
        with writing_to(o['raw_dir']):  # downloads only
            sources, failed = download_sources(o)
    parsed, corrupt = parse_inputs(sources, o)
    bad = failed + corrupt
    if not parsed:
        fail('no input could be prepared' + (f' ({len(bad)} bad)' if bad else ''))
    plans, counts, facts = selection.merge(parsed, file_lists(parsed, bad), o)
    report_members(parsed, facts)
    check_splits(plans, counts, o)
    render_as = functools.partial(document, kinds=o['kinds'])
    text_key = short_hash(o['kinds'])
    if spec is None:
        spec = train_tokenizer(parsed, plans, o, render_as, text_key, headers=facts)
        check_bpe_size(spec, o)
    shards, totals = tokenize_all(parsed, plans, spec, o, render_as, text_key)
    if o['export_jsonl']:
        with writing_to(o['export_jsonl']):
            write_jsonl(parsed, plans, facts, o['export_jsonl'], o['kinds'])
    write_bins(shards, o['out_dir'], spec, totals)
    with writing_to(o['out_dir']):
        meta = write_meta(o['out_dir'], spec, **meta_facts(o, parsed, bad, counts, facts, plans), **sizes_of(totals))
    print_summary(meta, counts, len(sources) + len(failed), time.time() - t0)
    if bad:
        print(f"{len(bad)} bad input(s): {', '.join(n for n, _ in bad)}", file=sys.stderr)
        if not o['allow_bad_files']:
            print('exiting with status 1 (use --allow_bad_files=True to accept the outputs as they are)',
                  file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
