"""
PubMed / MEDLINE XML -> records, one file at a time, streaming (memory does not grow with file size).

    for kind, value in iter_file('pubmed24n0001.xml.gz'):   # ('record', {...}), ('delete', pmid), ...

Both PubmedArticleSet (2017+) and MedlineCitationSet (older) files carry the same MedlineCitation
element, so that is what we extract; PubmedBookArticle has none and is only counted. A record is a
dict {'pmid', 'title', 'abstract', 'language', 'mesh', 'year', 'journal_iso', 'nlm_id', 'publication_types'}
(+ 'authors', 'journal', 'publication_date', 'affiliations' with with_meta=True); `abstract` is '' when there is
none. A corrupt file raises; the caller decides what to do.

The parse cache (prepare.py's cache/parsed/<file>.<md5>.<version>.pkl, a record cache of data/build.py) is
written here too: one input file's records, then a header of per-record arrays the merge reads alone (PMIDs,
lengths, languages, the hashes that split and sample, what the subset options look at). PARSE_VERSION names what
it holds: bump it when what parsing yields changes, and every cache is parsed again.
"""
import gzip
import re

import numpy as np
from lxml import etree

from common import atomic_write
from data.build import CHUNK, blaming_the_input, id_hashes, write_header, write_records

MATHML = '{http://www.w3.org/1998/Math/MathML}'
TAGS = ('PubmedArticle', 'MedlineCitation', 'PubmedBookArticle', 'DeleteCitation')
PARSE_VERSION = 3  # of what a parse cache holds: bump when it changes (every cache is parsed again)


def open_xml(path):
    """A binary stream of the XML in `path`, gunzipping when the file is gzip (by its magic bytes)."""
    f = open(path, 'rb')
    if f.peek(2)[:2] == b'\x1f\x8b':
        return gzip.GzipFile(fileobj=f, mode='rb')
    return f


def normalise(text):
    return ' '.join(text.split())


def _gather(el, out, in_math):
    if not isinstance(el.tag, str):  # an unexpanded entity reference: no text of its own
        return
    # MathML is pretty-printed with whitespace between its elements that is layout, not text
    math = in_math or el.tag.startswith(MATHML)
    if el.text and not (math and el.text.isspace()):
        out.append(el.text)
    for child in el:
        _gather(child, out, math)
        if child.tail and not (math and child.tail.isspace()):
            out.append(child.tail)


def text_of(el):
    """The element's text with inline markup (<i>, <sub>, MathML ...) flattened: raw pieces are
    joined first and whitespace normalised after, so 'Fungus <i>M.</i> by' -> 'Fungus M. by'."""
    if el is None:
        return ''
    if len(el) == 0:
        return normalise(el.text or '')
    out = []
    _gather(el, out, False)
    return normalise(''.join(out))


def abstract_of(article):
    """Article/Abstract sections, one per line, 'LABEL: text' when labelled. CopyrightInformation
    and OtherAbstract are not AbstractText children of Article/Abstract, so they never get in."""
    sections = []
    for part in article.iterfind('Abstract/AbstractText'):
        text = text_of(part)
        if text:
            label = normalise(part.get('Label') or '')
            sections.append(f'{label}: {text}' if label else text)
    return '\n'.join(sections)


def publication_date(article):
    date = article.find('Journal/JournalIssue/PubDate')
    if date is None:
        return ''
    medline = date.findtext('MedlineDate')
    if medline:
        return normalise(medline)
    parts = [date.findtext(key) for key in ('Year', 'Season', 'Month', 'Day')]
    return '-'.join(normalise(p) for p in parts if p)


def meta_of(article):
    authors = []
    for author in article.iterfind('AuthorList/Author'):
        name = ' '.join(normalise(author.findtext(k) or '') for k in ('ForeName', 'LastName')).strip()
        authors.append(name or normalise(author.findtext('CollectiveName') or ''))
    affiliations = list(dict.fromkeys(text_of(a) for a in article.iter('Affiliation')))
    return {
        'authors': [a for a in authors if a], 'journal': normalise(article.findtext('Journal/Title') or ''),
        'publication_date': publication_date(article), 'affiliations': [a for a in affiliations if a]
    }


def pmid_of(text):
    """The PMID as an int, or None unless it is 1-10 ASCII digits ('²' and other scripts' digits are
    digits to str.isdigit, and int() reads some of them: they would name another record)."""
    pmid = (text or '').strip()
    return int(pmid) if pmid.isascii() and pmid.isdigit() and len(pmid) <= 10 else None


def year_of(article):
    """The publication year (PubDate's Year, else the first year of its MedlineDate, e.g. '1998 Dec-1999 Jan'), or 0."""
    date = article.find('Journal/JournalIssue/PubDate')
    text = '' if date is None else (date.findtext('Year') or date.findtext('MedlineDate') or '')
    found = re.search(r'\b(1[5-9]|2[0-9])\d\d\b', text)
    return int(found.group(0)) if found else 0


def subjects_of(citation, article):
    """What prepare.py's subset options look at: MeSH descriptors [UI, name, major topic] (major when the descriptor or
    any of its qualifiers is marked so, as PubMed's [majr] search), the year, the journal (ISO abbreviation and NLM ID)
    and the publication types [UI, name]."""
    mesh = []
    for heading in citation.iterfind('MeshHeadingList/MeshHeading'):
        descriptor = heading.find('DescriptorName')
        if descriptor is None:
            continue
        major = descriptor.get('MajorTopicYN') == 'Y' or any(
            q.get('MajorTopicYN') == 'Y' for q in heading.iterfind('QualifierName'))
        mesh.append([descriptor.get('UI') or '', normalise(descriptor.text or ''),
                     major])  # MEDLINE before 2014 had no UIs
    return {
        'mesh': mesh, 'year': year_of(article),
        'journal_iso': normalise(article.findtext('Journal/ISOAbbreviation') or
                                 ''), 'nlm_id': normalise(citation.findtext('MedlineJournalInfo/NlmUniqueID') or ''),
        'publication_types': [[t.get('UI') or '', normalise(t.text or '')]
                              for t in article.iterfind('PublicationTypeList/PublicationType')]
    }


def record_of(citation, with_meta):
    """A MedlineCitation element -> record dict, or None when it has no usable PMID."""
    pmid = pmid_of(citation.findtext('PMID'))
    if pmid is None:
        return None
    article = citation.find('Article')
    if article is None:
        article = etree.Element('Article')  # an empty stand-in: no title, no abstract
    record = {
        'pmid': pmid, 'title': text_of(article.find('ArticleTitle')), 'abstract': abstract_of(article),
        'language': [normalise(lang.text or '').lower() for lang in article.iterfind('Language')],
        **subjects_of(citation, article)
    }
    if with_meta:
        record.update(meta_of(article))
    return record


def iter_file(path, with_meta=False):
    """Yield ('record', dict), ('delete', pmid), ('book', None) and ('no_pmid', None) in document order.
    Raises (EOFError, OSError, zlib.error, XMLSyntaxError, ValueError) on a corrupt or truncated file,
    possibly after yielding some of it: callers must not keep anything of a file that raised."""
    with open_xml(path) as f:
        # hardened: no entity expansion, no DTD, no network (NCBI files reference an http DTD)
        events = etree.iterparse(f, events=('end', ), tag=TAGS, resolve_entities=False, load_dtd=False, no_network=True,
                                 remove_comments=True, remove_pis=True)
        for _, el in events:
            if el.tag == 'MedlineCitation':
                record = record_of(el, with_meta)
                yield ('record', record) if record else ('no_pmid', None)
            elif el.tag == 'DeleteCitation':
                for p in el.iterfind('PMID'):
                    pmid = pmid_of(p.text)
                    yield ('no_pmid', None) if pmid is None else ('delete', pmid)
            elif el.tag == 'PubmedBookArticle':
                yield 'book', None
            el.clear()
            while el.getprevious() is not None:  # drop finished siblings: constant memory
                del el.getparent()[0]
        root = events.root
    if root is None or root.tag not in ('PubmedArticleSet', 'MedlineCitationSet'):
        raise ValueError(f'not PubMed XML: root element is <{getattr(root, "tag", None)}>, '
                         'expected <PubmedArticleSet> or <MedlineCitationSet>')


def parse_file(path, with_meta=False):
    """The whole file at once: (records, deleted PMIDs, {'book': n, 'no_pmid': n})."""
    records, deletes, counts = [], [], {'book': 0, 'no_pmid': 0}
    for kind, value in iter_file(path, with_meta):
        if kind == 'record':
            records.append(value)
        elif kind == 'delete':
            deletes.append(value)
        else:
            counts[kind] += 1
    return records, deletes, counts


# ------------------------------------------------------------------------------------------------
# the parse cache of one input file


def write_parsed(path, cache, with_meta):
    """Stream one file's records into its record cache (data/build.py), CHUNK records per pickle, then the header:
    the per-record arrays the merge needs."""
    pmids, chars, codes, deletes, counts, chunk = [], [], [], [], {'book': 0, 'no_pmid': 0}, []
    subjects = {'year': [], 'journal': [], 'mesh': [], 'publication_type': []}
    with atomic_write(cache) as f:
        for kind, value in read_input(path, with_meta):
            if kind == 'record':
                pmids.append(value['pmid'])
                chars.append(len(document(value)) if value['abstract'] else 0)
                codes.append(','.join(value['language']))
                subjects['year'].append(value['year'])
                subjects['journal'].append((value['journal_iso'], value['nlm_id']))
                subjects['mesh'].append([(ui, name, major) for ui, name, major in value['mesh']])
                subjects['publication_type'].append([(ui, name, False) for ui, name in value['publication_types']])
                chunk.append(value)
                if len(chunk) == CHUNK:
                    write_records(f, chunk)
                    chunk = []
            elif kind == 'delete':
                deletes.append(value)
            else:
                counts[kind] += 1
        write_records(f, chunk)
        languages = sorted(set(codes))
        index = {code: i for i, code in enumerate(languages)}
        split_hash, sample_hash = id_hashes(pmids)
        write_header(
            f, {
                'pmid': np.array(pmids, dtype=np.int64), 'deletes': np.array(deletes, dtype=np.int64), 'counts': counts,
                'chars': np.array(chars, dtype=np.int64), 'languages': languages, 'language': np.array(
                    [index[c] for c in codes], dtype=np.int32), 'split_hash': split_hash, 'sample_hash': sample_hash,
                **subject_arrays(subjects)
            })
    return len(pmids)


def subject_arrays(subjects):
    """What the subset options look at, as the header's arrays: the year of each record; its journal as an index into
    a list of [ISO abbreviation, NLM ID]; its MeSH descriptors and publication types as codes (2 x the index of
    [UI, name] in the file's list of them, + 1 for a major topic) with each record's range of them in `*_at`."""
    journals = sorted(set(subjects['journal']))
    journal_index = {j: i for i, j in enumerate(journals)}
    arrays = {
        'year': np.array(subjects['year'], dtype=np.int32), 'journals': [list(j) for j in journals],
        'journal': np.array([journal_index[j] for j in subjects['journal']], dtype=np.int32)
    }
    for kind in ('mesh', 'publication_type'):
        terms = sorted({(ui, name) for entries in subjects[kind] for ui, name, _ in entries})
        index = {term: i for i, term in enumerate(terms)}
        arrays[f'{kind}_terms'] = [list(t) for t in terms]
        arrays[kind] = np.array(
            [2 * index[ui, name] + major for entries in subjects[kind] for ui, name, major in entries], dtype=np.int32)
        arrays[f'{kind}_at'] = np.cumsum([0] + [len(entries) for entries in subjects[kind]]).astype(np.int64)
    return arrays


def read_input(path, with_meta):
    """iter_file(path), its errors raised as BadInput: only what reading the input raised blames the input, not
    what writing its cache raised (a full disk, a folder that cannot be written: this machine's, they stop the run)."""
    yield from blaming_the_input(iter_file(path, with_meta))


def document(record):
    return f"{record['title']}\n{record['abstract']}" if record['title'] else record['abstract']
