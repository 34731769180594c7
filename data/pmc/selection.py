"""
Which PMC articles a data folder keeps, and in which split: data/pmc/prepare.py's merge of every parsed input (a bulk
package with its File List, or a group of loose articles), from the record caches' headers alone.

An article's facts are its File List row's where a row lists it (PMID, PMCID, license, retracted, last update, and the
year of its citation when the XML gives none), else its XML's. Then each article is dropped by the first rule it
fails, in RULES order, and counted under it:
  no_id       neither PMID, PMCID nor DOI: nothing to split it by, or to know it again in another package
  replaced    an older version of the same article (same PMCID, else same DOI): the latest LastUpdated wins, an
              article no File List dates counts as older than any dated one, and of equal dates (or none) the later
              input (package order, then member order) wins
  retracted   the File List's Retracted column or the XML's marks say so (either: both lag behind at times)
  no_body     no body text (an abstract, a letter's title alone: not full text)
  license     not one of --licenses (an article whose XML states no license is NO-CC CODE, as NCBI names it)
  language    not one of --languages
  excluded    its PMID is in --exclude_pmids (a benchmark's: PubMedQA's by default)
  then the subset rules (SUBSET_RULES), as data/pubmed/selection.py's: not_in_keep_pmids, year, journal, article_type.
The split is by a hash of the article's id (split_id): str(PMID), else 'PMC' + digits, else 'doi:' + the DOI in lower
case; the PMID is the one a PubMed record of the same article is split by (data/build.id_hashes of the int), so an
article's abstract in data/pubmed and its full text here land in the same split.
"""
import hashlib
from collections import Counter

import numpy as np

from data.build import DROPPED, id_hashes, read_header, split_plan
from data.pmc.jats import KINDS, normalise_license
from data.pmc.packages import citation_year
from data.pubmed.selection import language_mask

RULES = ('no_id', 'replaced', 'retracted', 'no_body', 'license', 'language', 'excluded')
SUBSET_RULES = ('not_in_keep_pmids', 'year', 'journal', 'article_type')
SUBSET_OPTIONS = ('licenses', 'years', 'journals', 'article_types', 'drop_article_types', 'keep_pmids')
NO_LICENSE = 'NO-CC CODE'  # NCBI's name for an article without a machine-readable Creative Commons license
DOI_KEY = np.int64(1 << 62)  # keys of articles known by their DOI alone: above every PMCID


def merge(parsed, file_lists, o):
    """(plans, counts, facts): a plan per input (DROPPED/TRAIN/VAL per record), the records seen and dropped by each
    rule, and each input's facts (facts_of: what the later stages need of each article, ~70 bytes of arrays).
    file_lists: per input, its File List's rows or None, consumed one input at a time (all of PMC's rows at once would
    take gigabytes)."""
    facts = [facts_of(read_header(p['cache']), rows, p['damaged']) for p, rows in zip(parsed, file_lists)]
    latest = latest_of(facts)
    wanted = {c.strip().lower() for c in o['languages'].split(',') if c.strip()}
    counts = Counter()
    plans = []
    for f, newest in zip(facts, latest):
        keep = np.ones(len(f['pmid']), dtype=bool)
        for rule, kept in rule_masks(f, newest, wanted, o):  # each record counted under the first rule it fails
            counts[rule] += int((keep & ~kept).sum())
            keep &= kept
        counts.update(f['counts'])
        counts.update(articles=len(keep), not_in_package=f['missing'][0], not_in_file_list=f['unlisted'][0])
        plans.append(split_plan(f, keep, o['val_fraction']))
        f['chars'] = document_chars(f, o['kinds'])  # build's tokenizer stage reads these, with sample_hash
        f['kept_chars'] = f.pop('kind_chars')[keep].sum(axis=0)
        del f['kind_lines'], f['key'], f['updated'], f['has_body']
    return plans, counts, facts


def facts_of(h, rows, damaged=None):
    """One input's per-article facts: its header's, with its File List's where a row lists the article
    (with_file_list)."""
    f = {
        'pmid': h['pmid'].copy(), 'pmcid': h['pmcid'].copy(), 'year': h['year'].copy(),
        'retracted': h['retracted'].copy(), 'license': h['license'].copy(),
        'licenses': [name or NO_LICENSE for name in h['licenses']], 'updated': np.full(len(h['pmid']), -1, np.int64),
        'counts': h['counts'], 'bad_articles': h['bad_articles'], 'missing': (0, None), 'unlisted': (0, None)
    }
    if rows is not None:
        with_file_list(f, h['member'], rows, damaged)
    ids = [split_id(*i) for i in zip(f['pmid'], f['pmcid'], h['doi'])]
    f['split_hash'], f['sample_hash'] = id_hashes(ids)
    f['key'] = np.array([article_key(pmcid, doi) for pmcid, doi in zip(f['pmcid'], h['doi'])], dtype=np.int64)
    keys = ('has_body', 'language', 'languages', 'journal', 'journals', 'article_type', 'article_types', 'kind_chars',
            'kind_lines')
    return {**f, **{k: h[k] for k in keys}}


def with_file_list(f, members, rows, damaged):
    """The File List's facts over the XML's for each article a row lists (by member name); f's `missing`: the rows
    whose article the input lacks (none counted for a `damaged` package: the rows after its cut are missing, and the
    package is reported already), `unlisted`: its articles no row lists, each (count, the first)."""
    listed = np.zeros(len(members), dtype=bool)
    at = {name: i for i, name in enumerate(members)}
    missing = []
    for row in rows:
        i = at.get(row.file)
        if i is None:
            missing += [] if damaged else [row.file]
            continue
        listed[i] = True
        f['updated'][i] = int(row.updated.replace('-', '').replace(':', '').replace(' ', ''))
        f['pmid'][i] = row.pmid or f['pmid'][i]  # an empty PMID: not in PubMed, or not yet
        f['pmcid'][i] = int(row.pmcid[3:])
        name = normalise_license(row.license) or row.license
        if name not in f['licenses']:
            f['licenses'].append(name)
        f['license'][i] = f['licenses'].index(name)
        f['retracted'][i] |= row.retracted
        f['year'][i] = f['year'][i] or citation_year(row.citation)
    unlisted = [m for m, seen in zip(members, listed) if not seen]
    f['missing'], f['unlisted'] = [(len(names), names[0] if names else None) for names in (missing, unlisted)]


def split_id(pmid, pmcid, doi):
    """What an article is split by: str(PMID) exactly as a PubMed record's (so both land in one split), else
    'PMC' + digits, else 'doi:' + the DOI; '' when it has none (dropped as no_id)."""
    return str(pmid) if pmid else f'PMC{pmcid}' if pmcid else f'doi:{doi}' if doi else ''


def article_key(pmcid, doi):
    """An article's identity across inputs, as an int: its PMCID's digits, else its DOI's hash above every PMCID,
    else -1 (no identity: dropped as no_id)."""
    if pmcid:
        return pmcid
    if doi:
        return DOI_KEY | (int.from_bytes(hashlib.blake2b(doi.encode(), digest_size=8).digest(), 'little') >> 2)
    return -1


def latest_of(facts):
    """Per input, whether each article is the latest version of its article among all inputs: the latest LastUpdated
    (-1 for none), then the later input, then the later member: one sort of every article's key."""
    key = np.concatenate([f['key'] for f in facts])
    updated = np.concatenate([f['updated'] for f in facts])
    order = np.concatenate([np.arange(len(f['key'])) for f in facts])
    source = np.concatenate([np.full(len(f['key']), i) for i, f in enumerate(facts)])
    by = np.lexsort((order, source, updated, key))
    last = np.ones(len(by), dtype=bool)
    last[:-1] = key[by][1:] != key[by][:-1]  # the last of each key's run is its latest version
    newest = np.empty(len(by), dtype=bool)
    newest[by] = last
    return np.split(newest, np.cumsum([len(f['key']) for f in facts])[:-1])


def rule_masks(f, newest, wanted, o):
    """[(rule, kept)] in RULES order, then the subset rules that are set."""
    licenses = o['licenses_kept']
    yield 'no_id', f['key'] >= 0
    yield 'replaced', newest
    yield 'retracted', ~f['retracted']
    yield 'no_body', f['has_body']
    yield 'license', np.array([licenses is None or name in licenses for name in f['licenses']] + [False])[f['license']]
    yield 'language', language_mask(f, wanted)
    yield 'excluded', ~((f['pmid'] > 0) & np.isin(f['pmid'], o['excluded']))
    yield from subset_masks(f, o['subset'])


def subset_masks(f, subset):
    if 'keep_pmids' in subset:
        yield 'not_in_keep_pmids', (f['pmid'] > 0) & np.isin(f['pmid'], subset['keep_pmids'])
    if 'years' in subset:
        lo, hi = subset['years']
        yield 'year', (f['year'] > 0) & (f['year'] >= lo) & (f['year'] <= hi)  # no year: in no range
    if 'journals' in subset:
        ok = [bool(subset['journals'] & set(names)) for names in f['journals']]
        yield 'journal', np.array(ok + [False])[f['journal']]
    for option, keep in (('article_types', True), ('drop_article_types', False)):
        if option in subset:
            hit = np.array([t in subset[option] for t in f['article_types']] + [False])[f['article_type']]
            yield 'article_type', hit if keep else ~hit


def kept_licenses(facts, plans):
    """{license: articles kept}, by name."""
    counts = Counter()
    for f, plan in zip(facts, plans):
        for code, n in zip(*np.unique(f['license'][plan != DROPPED], return_counts=True)):
            counts[f['licenses'][code]] += int(n)
    return dict(sorted(counts.items()))


def kept_sections(facts, kinds):
    """meta's `sections`: the kinds of block in the text, and the characters of each kind in the kept documents."""
    chars = sum((f['kept_chars'] for f in facts), np.zeros(len(KINDS), dtype=np.int64))
    return {'in_text': list(kinds), 'chars': {k: int(n) for k, n in zip(KINDS, chars)}}


def document_chars(f, kinds):
    """Each article's document length under these kinds: its blocks of them, joined by newlines."""
    columns = [KINDS.index(k) for k in kinds]
    lines = f['kind_lines'][:, columns].sum(axis=1)
    return f['kind_chars'][:, columns].sum(axis=1) + np.maximum(lines - 1, 0)
