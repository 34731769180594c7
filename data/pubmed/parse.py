"""
PubMed / MEDLINE XML -> records, one file at a time, streaming (memory does not grow with file size).

    for kind, value in iter_file('pubmed24n0001.xml.gz'):   # ('record', {...}), ('delete', pmid), ...

Both PubmedArticleSet (2017+) and MedlineCitationSet (older) files carry the same MedlineCitation
element, so that is what we extract; PubmedBookArticle has none and is only counted. A record is a
dict {'pmid', 'title', 'abstract', 'language', 'mesh', 'year', 'journal_iso', 'nlm_id', 'publication_types'}
(+ 'authors', 'journal', 'publication_date', 'affiliations' with with_meta=True); `abstract` is '' when there is
none. A corrupt file raises; the caller decides what to do.
"""
import gzip
import re

from lxml import etree

MATHML = '{http://www.w3.org/1998/Math/MathML}'
TAGS = ('PubmedArticle', 'MedlineCitation', 'PubmedBookArticle', 'DeleteCitation')


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
    return {'authors': [a for a in authors if a], 'journal': normalise(article.findtext('Journal/Title') or ''),
            'publication_date': publication_date(article), 'affiliations': [a for a in affiliations if a]}


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
        major = descriptor.get('MajorTopicYN') == 'Y' or any(q.get('MajorTopicYN') == 'Y' for q in heading.iterfind('QualifierName'))
        mesh.append([descriptor.get('UI') or '', normalise(descriptor.text or ''), major])  # MEDLINE before 2014 had no UIs
    return {'mesh': mesh, 'year': year_of(article), 'journal_iso': normalise(article.findtext('Journal/ISOAbbreviation') or ''),
            'nlm_id': normalise(citation.findtext('MedlineJournalInfo/NlmUniqueID') or ''),
            'publication_types': [[t.get('UI') or '', normalise(t.text or '')]
                                  for t in article.iterfind('PublicationTypeList/PublicationType')]}


def record_of(citation, with_meta):
    """A MedlineCitation element -> record dict, or None when it has no usable PMID."""
    pmid = pmid_of(citation.findtext('PMID'))
    if pmid is None:
        return None
    article = citation.find('Article')
    if article is None:
        article = etree.Element('Article')  # an empty stand-in: no title, no abstract
    record = {'pmid': pmid, 'title': text_of(article.find('ArticleTitle')),
              'abstract': abstract_of(article),
              'language': [normalise(lang.text or '').lower() for lang in article.iterfind('Language')],
              **subjects_of(citation, article)}
    if with_meta:
        record.update(meta_of(article))
    return record


def iter_file(path, with_meta=False):
    """Yield ('record', dict), ('delete', pmid), ('book', None) and ('no_pmid', None) in document order.
    Raises (EOFError, OSError, zlib.error, XMLSyntaxError, ValueError) on a corrupt or truncated file,
    possibly after yielding some of it: callers must not keep anything of a file that raised."""
    with open_xml(path) as f:
        # hardened: no entity expansion, no DTD, no network (NCBI files reference an http DTD)
        events = etree.iterparse(f, events=('end',), tag=TAGS, resolve_entities=False, load_dtd=False,
                                 no_network=True, remove_comments=True, remove_pis=True)
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
