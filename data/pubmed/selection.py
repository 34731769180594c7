"""
Which PubMed records a data folder keeps, and in which split: prepare.py's merge of every parsed file
(the last word on a PMID counts), then the rules that drop records: no abstract, another language, a PMID
kept out of both splits (--exclude_pmids: a benchmark's), and the subset options (--mesh, --years,
--journals, --publication_types, --drop_publication_types, --keep_pmids), each record counted under the
first rule it fails. The split is by a hash of the PMID, so a record's split never depends on the others.

Reads the parse cache's headers only (parse.py), never the records themselves.
"""
import glob
import hashlib
import json
import os
import re
import sys
from collections import Counter

import numpy as np

from common import fail
from data.build import read_header, split_plan

SUBSET_RULES = ('not_in_keep_pmids', 'year', 'journal', 'mesh', 'publication_type')
SUBSET_OPTIONS = ('mesh', 'mesh_major', 'years', 'journals', 'publication_types', 'drop_publication_types',
                  'keep_pmids')
RULE_OPTIONS = {
    'not_in_keep_pmids': ('keep_pmids', ), 'year': ('years', ), 'journal': ('journals', ),
    'mesh': ('mesh', 'mesh_major'), 'publication_type': ('publication_types', 'drop_publication_types')
}  # the options behind each rule

PUBMEDQA_FILES = ('ori_pqal.json', 'test_ground_truth.json', 'ori_pqaa.json', 'ori_pqau.json')  # keyed by PMID
# data/pubmedqa: where the README puts PubMedQA's files, what --exclude_pmids=auto reads (every preparer's)
PUBMEDQA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pubmedqa')

TERM_OPTIONS = {
    'mesh': 'mesh', 'publication_types': 'publication_type', 'drop_publication_types': 'publication_type',
    'journals': 'journal'
}

TERM_LISTS = ('mesh', 'journals', 'publication_types', 'drop_publication_types', 'article_types', 'drop_article_types'
              )  # ;-separated, any case (article types: data/pmc/prepare.py's)


def subset_filters(o):
    """The subset options as the merge applies them ({} when none is set), of those the preparer has (o); exit 2 naming
    a value that is none, or options that could keep nothing whatever the input (a reversed range, a type both kept
    and dropped, an empty list)."""
    filters = {}
    for key in TERM_LISTS:
        if o.get(key):
            filters[key] = {w.strip().lower() for w in o[key].split(';') if w.strip()}
            if not filters[key]:  # ';' alone: no filter at all would be applied, unsaid
                fail(f"--{key}={o[key]}: names nothing (give ;-separated names or UIs)", 2)
    for keep, drop in (('publication_types', 'drop_publication_types'), ('article_types', 'drop_article_types')):
        both = sorted(filters.get(keep, set()) & filters.get(drop, set()))
        if both:
            fail(
                f"--{keep} and --{drop} both name {'; '.join(both)}: a record cannot be kept and dropped for the same "
                'type', 2)
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
            filters['keep_pmids'] = read_pmid_list(o['keep_pmids'])
        except ValueError as e:
            fail(f"--keep_pmids={o['keep_pmids']}: {e}", 2)
        if not len(filters['keep_pmids']):
            fail(f"--keep_pmids={o['keep_pmids']}: lists no PMID, so nothing would be kept", 2)
        if np.isin(filters['keep_pmids'], o['excluded']).all():
            fail(
                f"--keep_pmids={o['keep_pmids']}: every PMID it lists is excluded by "
                f"--exclude_pmids={o['exclude_pmids']}, "
                "so nothing would be kept (--exclude_pmids='' keeps them)", 2)
    if o.get('mesh_major') and 'mesh' not in filters:
        fail('--mesh_major=True: give the headings with --mesh', 2)
    if o.get('mesh_major'):
        filters['mesh_major'] = True
    return filters


def names_something(value):
    """--languages' check (every preparer's)."""
    return None if [c for c in value.split(',') if c.strip()] else "is empty: give codes such as 'eng,fre' or 'all'"


def exclusion_problems(o):
    """What is wrong with --exclude_pmids before any work: a path that is not there."""
    if o['exclude_pmids'] not in ('', 'auto') and not os.path.exists(o['exclude_pmids']):
        return [f"--exclude_pmids={o['exclude_pmids']}: no such file or folder"]
    return []


def read_exclusions(o, pubmedqa=PUBMEDQA):
    """--exclude_pmids read now, not after hours of parsing: o['exclude_pmids'] becomes the list's path ('' for none;
    'auto' is the `pubmedqa` folder when it is there, PubMedQA's own files in it only) and o['excluded'] its sorted
    PMIDs. Exit 2 naming the file and the entry that is not a PMID, or a list given by name that lists none."""
    auto = o['exclude_pmids'] == 'auto'
    if auto:  # PubMedQA's PMIDs stay out of the training data wherever its files are at hand
        o['exclude_pmids'] = pubmedqa if os.path.isdir(pubmedqa) else ''
    try:
        listed = o['exclude_pmids']
        o['excluded'] = read_pmid_list(listed, only_pubmedqa=auto) if listed else np.zeros(0, np.int64)
    except ValueError as e:
        fail(f"--exclude_pmids={o['exclude_pmids']}: {e}", code=2)
    if o['exclude_pmids'] and not len(o['excluded']):  # an empty list would let the benchmark in unsaid
        if not auto:
            fail(f"--exclude_pmids={o['exclude_pmids']}: lists no PMID (--exclude_pmids='' excludes none)", 2)
        print(f"note: {pubmedqa}: no PMID in PubMedQA's files there ({', '.join(PUBMEDQA_FILES)}): none excluded",
              file=sys.stderr)
        o['exclude_pmids'] = ''


def pmid_list_hash(pmids):
    """What names a list of PMIDs whatever its file's format: blake2b-128 of the sorted PMIDs, one per line
    (`sort -n | uniq | b2sum -l 128` of the list's numbers gives the same)."""
    return hashlib.blake2b(''.join(f'{p}\n' for p in np.unique(pmids)).encode(), digest_size=16).hexdigest()


def language_mask(header, wanted):
    if 'all' in wanted:
        return np.ones(len(header['pmid']), dtype=bool)
    ok = [bool(wanted & set(code.split(','))) for code in header['languages']]
    return np.array(ok, dtype=bool)[header['language']] if ok else np.zeros(0, dtype=bool)


def read_pmid_list(path, only_pubmedqa=False):
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
                entries = list(
                    listed.keys() if isinstance(listed, dict) else listed if isinstance(listed, list) else [listed])
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
    `excluded`: sorted PMIDs kept out of both splits (read_pmid_list).

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
        events = np.concatenate([pmid, np.searchsorted(ids,
                                                       deletes)])[::-1]  # within a file deletes come after the records
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
        plans[i] = split_plan(h, keep, o['val_fraction'])
    counts['deleted'] = int(np.sum(state == 3))
    return plans, counts


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
        ok = np.array(
            [iso.lower() in subset['journals'] or nlm.lower() in subset['journals']
             for iso, nlm in h['journals']] + [False])
        masks.append(('journal', ok[h['journal']]))
    if 'mesh' in subset:
        masks.append(('mesh', any_term(h, 'mesh', subset['mesh'], subset.get('mesh_major', False))))
    if 'publication_types' in subset:
        masks.append(('publication_type', any_term(h, 'publication_type', subset['publication_types'])))
    if 'drop_publication_types' in subset:
        masks.append(('publication_type', ~any_term(h, 'publication_type', subset['drop_publication_types'])))
    return masks


def subset_record(o, options=SUBSET_OPTIONS):
    """meta's `subset`: the subset options set (of `options`), as given; with --keep_pmids also the list itself, by its
    number of PMIDs and its hash (pmid_list_hash): a path says nothing of what the file held when the data was
    made."""
    record = {k: o[k] for k in options if o[k]}
    if o['keep_pmids']:
        pmids = o['subset']['keep_pmids']
        record.update(keep_pmids_listed=len(pmids), keep_pmids_blake2b=pmid_list_hash(pmids))
    return record


def exclusion_record(o, counts):
    """meta's `excluded_pmids`: the list kept out of both splits (its path, number of PMIDs and hash) and how many
    records it excluded."""
    return {
        'source': o['exclude_pmids'], 'listed': len(o['excluded']), 'excluded': counts['excluded'],
        'blake2b': pmid_list_hash(o['excluded']) if o['exclude_pmids'] else ''
    }


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
