"""
One JATS article (a PMC .nxml file, a publisher's .xml, or the bytes of a tar member) -> a record dict.

    record = read_article('PMC3166277.nxml')           # or read_article(member_bytes, name='PMC006xxxxxx/PMC1.xml')
    record['text']                                     # the document under the rules below
    render(record['blocks'], TEXT_KINDS + ('table',))  # the same article with its tables as rows, nothing re-parsed

A record is {'pmid': int or None, 'pmcid': 'PMC123' or None, 'doi': str or None, 'title', 'text', 'blocks': [(kind,
text)], 'sections': {kind: characters}, 'license': a name of LICENSES or None, 'year': int (0 = none), 'journal',
'journal_ids': {type: id}, 'article_type': lower case ('' = none), 'language': [code], 'retracted': bool, 'has_body':
bool}. `blocks` holds every block the article yields, each of one kind: 'title', 'abstract', 'body', 'caption' (figure
and table captions) and 'table' (rows, footnotes); `text` renders those of TEXT_KINDS, one block per line.

Text rules, one block per line (why):
- title: article-title, ': ' subtitle (the document's first line, as in a PubMed document: title, then abstract).
- abstracts: every <abstract> but the graphical/teaser/toc/video/web-summary ones (one-line or image duplicates); the
  eLife digest and PLoS author summary are kept (plain-language prose by the authors or editors), each under its own
  <title> line; the main abstract has no heading (so the text starts as the PubMed document of the article does).
- sections: each <sec> of the body is a line '<label> <title>' (no title: no line), then its content in document order,
  nested sections in place. Dropped: a section of sec-type supplementary-material (a list of files) or COI-statement,
  and one titled as back matter ('Acknowledgements', 'Funding', 'Competing interests', 'Conflict of interest',
  'Disclosure', "Authors' contributions", 'Pre-publication history': BMC and OUP journals put these in the body).
- paragraphs: one line each; a figure, table, list, box or display formula inside a paragraph ends the line before it
  and the text after it starts a new one (in the text order of the XML); list-item labels (bullets, numbers) dropped.
- figures and tables: a 'caption' line '<label>. <caption title>. <caption paragraphs>' where it stands (a '.' is added
  to the label and title unless they end in punctuation; no caption: no line); <floats-group> ones follow the body.
  Table cells are NOT in the text (kind 'table', one line per row, cells tab-separated, then the table footnotes):
  they are mostly numbers and abbreviations that cost many tokens for little language, and flattened rows lose the
  structure that gives them meaning; render(blocks, TEXT_KINDS + ('table',)) brings them in without parsing again.
- boxes, statements, quotes: like sections (a heading line from label and caption title, then paragraphs).
- dropped: everything in <front> but the title and abstracts (authors, affiliations, author notes and their COI
  footnotes, funding, permissions, keywords), all of <back> (ref-list, ack, fn-group, notes, app-group, glossary, back
  sections such as eLife's funding and additional files), <sub-article> and <response> (eLife decision letters and
  replies: reviewers' text, not the article's), <supplementary-material>, <media>, footnotes (<fn>) and the xrefs that
  point to them, <object-id>, graphics, <attrib> credit lines, comments and processing instructions. Appendices are
  dropped too: in PMC they mostly hold supplementary methods, questionnaires and extra tables (no shared article has
  one to test a rendering against).
- eLife's 'DOI: http://dx.doi.org/...' paragraph under every figure, table and box is dropped (a link, not text).
- citations: an xref of ref-type bibr is a citation. Brackets holding nothing but citations go with the citations
  ('[1-3]', '[1], [2]', '(Smith et al., 2010; Lee, 2012)'); numeric citations go wherever they are ('cutin [12].');
  an author-year citation in running text stays as words ('as shown by Smith et al., 2010', '(see Lee, 2012 for a
  review)'): it is part of the sentence. Each removal takes the space before it ('genotypes [1-9].' -> 'genotypes.')
  and, inside a bracket, the separator it leaves ('(Rud3p; [7])' -> '(Rud3p)', '[[39], their figure 5]').
  Other xrefs (figures, tables, sections, equations) keep their text ('Figure 2A').
- formulas: TeX when the formula has <tex-math> (the author's source; '$...$'); else MathML as linear text: tokens
  joined, x^{2} / x_{i} / x_{i}^{2} for scripts (braces only around more than one character), (a)/(b) for fractions,
  √(x), fences as written, invisible operators dropped; else the marker '[formula]' (a formula given as an image only).
  Display formulas are lines of their own, inline ones stay in their sentence; equation labels '(1)' are dropped.
- whitespace: inline markup is flattened without adding spaces ('M<italic>m</italic>PPOX' -> 'MmPPOX'), each run of
  whitespace inside a line is one space, lines are stripped, empty lines dropped; lines joined by '\\n' (as a PubMed
  document's title and abstract sections are, so abstracts and full text share one format).

Parsing is hardened as data/pubmed/parse.py's: no DTD loaded (the files name an external one), no network, no entity
expanded; an article that declares entities of its own (how XML bombs and external-file reads are made: NCBI's files
use character references only) is refused with one line, as is one over MAX_ARTICLE_BYTES (memory is bounded per
article: the tree of a 32 MB article is a few hundred MB). Errors are BadArticle (a ValueError) naming the article.

Metadata: pmid, pmcid (article-id pmcid or pmc, 'PMC' + digits), doi from article-meta; license: permissions/license
@xlink:href, else ali:license_ref, else @license-type public-domain, else the words of license-p, normalised to
LICENSES' names (the File List's 'CC BY', 'CC BY-NC-ND', 'CC0', ... and 'Public Domain'), None when none says one;
year: the issue's, as PubMed's PubDate (ppub, else collection, else epub, else any pub-date), 0 when none; journal:
journal-id nlm-ta, else iso-abbrev, else journal-title; language: /article/@xml:lang (JATS's default 'en' when absent)
as PubMed's three-letter codes ('en' -> 'eng', 'fr' -> 'fre', 'de' -> 'ger'), a list like a PubMed record's, so the
preparer's --languages applies unchanged; retracted: the title says 'Retracted' or a related-article says the article
was retracted (retraction-forward, retracted-by); publishers mark this inconsistently, so a package's File List
(Retracted column) is the main source. A retraction notice is article_type 'retraction' and is not itself retracted.
"""
import os
import re

from lxml import etree

from data.pubmed.parse import pmid_of

MATHML = '{http://www.w3.org/1998/Math/MathML}'
XLINK_HREF = '{http://www.w3.org/1999/xlink}href'
ALI = '{http://www.niso.org/schemas/ali/1.0/}'
XML_LANG = '{http://www.w3.org/XML/1998/namespace}lang'
MAX_ARTICLE_BYTES = 32 << 20  # no real article comes near (PMC's largest are a few MB); its tree is ~10x the bytes

KINDS = ('title', 'abstract', 'body', 'caption', 'table')
TEXT_KINDS = ('title', 'abstract', 'body', 'caption')  # what `text` holds: tables as captions only

# names as NCBI's File Lists write them (License column), and ours for a public-domain mark in the XML
LICENSES = ('CC0', 'CC BY', 'CC BY-SA', 'CC BY-ND', 'CC BY-NC', 'CC BY-NC-SA', 'CC BY-NC-ND', 'NO-CC CODE',
            'Public Domain')
DROPPED_ABSTRACTS = {'graphical', 'teaser', 'toc', 'video', 'web-summary'}  # short or image duplicates of the abstract
# whole elements left out wherever they are (their tail text stays: it belongs to the parent)
DROPPED = {
    'ref-list', 'ack', 'fn-group', 'fn', 'notes', 'app-group', 'app', 'glossary', 'bio', 'supplementary-material',
    'inline-supplementary-material', 'media', 'sub-article', 'response', 'object-id', 'graphic', 'inline-graphic',
    'alt-text', 'long-desc', 'attrib', 'permissions', 'contrib-group', 'aff', 'author-notes', 'funding-group',
    'kwd-group', 'sec-meta', 'table-wrap-foot'
}
NOTE_XREFS = {'fn', 'table-fn', 'aff', 'corresp', 'author-notes'}  # markers of what is dropped
HEADED = {'sec', 'boxed-text', 'statement', 'list', 'def-list', 'disp-quote'}  # label + title make a heading line
CONTAINERS = HEADED | {
    'p', 'list-item', 'def-item', 'def', 'fig-group', 'table-wrap-group', 'disp-formula-group', 'verse-group'
}
BLOCKS = CONTAINERS | {'fig', 'table-wrap', 'disp-formula'}  # lines of their own wherever they stand
DROPPED_SEC_TYPES = ('supplementary-material', 'coi-statement')
BACK_MATTER_TITLES = re.compile(  # body sections that are back matter by another name
    r"(acknowledge?ments?|funding|sources? of funding|financial (support|disclosures?)"
    r"|competing (financial )?interests?|conflicts? of interests?|declarations? of (competing )?interests?"
    r"|disclosures?|(the )?authors?'? ?contributions?|pre-?publication history)[.:]?", re.I)
CITE_OPEN, CITE_CLOSE = '\x02', '\x03'  # around a citation's text while a line is tidied: XML 1.0 forbids both chars
INVISIBLE = dict.fromkeys(map(ord, '\u2061\u2062\u2063\u2064'))  # MathML's invisible function application, times...


class BadArticle(ValueError):
    """An article that cannot be read: not XML, not JATS, too large, or declaring entities (refused)."""


# ------------------------------------------------------------------------------------------------
# reading


def read_article(source, name=None):
    """A path, or the bytes of an article (`name` says which in errors) -> its record."""
    name = name or (str(source) if isinstance(source, (str, os.PathLike)) else 'article')
    return record_of(parse_xml(read_bytes(source, name), name))


def read_bytes(source, name):
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        if os.path.getsize(source) > MAX_ARTICLE_BYTES:
            raise BadArticle(f'{name}: {os.path.getsize(source):,} bytes, over {MAX_ARTICLE_BYTES:,}: refused')
        with open(source, 'rb') as f:
            data = f.read()
    if len(data) > MAX_ARTICLE_BYTES:
        raise BadArticle(f'{name}: {len(data):,} bytes, over {MAX_ARTICLE_BYTES:,}: refused')
    return data


def parse_xml(data, name='article'):
    """The article's root element, parsed hardened: no DTD, no network, no entity expanded; comments and processing
    instructions removed. BadArticle for what is not XML, not a JATS <article>, or declares entities."""
    prolog = data[:re.search(rb'<(?![!?])|$', data).start()]  # before the root element: the DOCTYPE, if any
    declared = re.findall(rb'<!ENTITY\s+(?:%\s+)?([^\s>]+)', prolog)
    if declared:  # refused before parsing: libxml2 would stop a bomb, but say "amplification factor exceeded"
        refuse_entities(name, [d.decode(errors='replace') for d in declared])
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, remove_comments=True,
                             remove_pis=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise BadArticle(f'{name}: not well-formed XML: {e}') from None
    dtd = root.getroottree().docinfo.internalDTD
    declared = [e.name for e in dtd.iterentities()] if dtd is not None else []
    if declared:
        refuse_entities(name, declared)
    if local(root.tag) != 'article':
        raise BadArticle(f'{name}: not a JATS article: the root element is <{local(root.tag)}>, expected <article>')
    return root


def refuse_entities(name, declared):
    raise BadArticle(f"{name}: declares entities of its own ({', '.join(declared[:3])}): refused (how XML bombs and "
                     'external-file reads are made; PMC articles use character references)')


def record_of(root):
    """A parsed <article> -> its record (see the module docstring)."""
    meta = root.find('front/article-meta')
    meta = meta if meta is not None else etree.Element('article-meta')
    ids = article_ids(meta)
    blocks = blocks_of(root, meta)
    sections = {}
    for kind, text in blocks:
        sections[kind] = sections.get(kind, 0) + len(text)
    journal_ids = {(j.get('journal-id-type') or ''): normalise(j.text or '')
                   for j in root.iterfind('front/journal-meta/journal-id')}
    journal = journal_ids.get('nlm-ta') or journal_ids.get('iso-abbrev') or normalise(
        root.findtext('front/journal-meta//journal-title') or '')
    title = next((text for kind, text in blocks if kind == 'title'), '')
    return {
        'pmid': ids['pmid'],
        'pmcid': ids['pmcid'],
        'doi': ids['doi'],
        'title': title,
        'text': render(blocks),
        'blocks': blocks,
        'sections': sections,
        'license': license_of(meta),
        'year': year_of(meta),
        'journal': journal,
        'journal_ids': journal_ids,
        'article_type': normalise(root.get('article-type') or '').lower(),
        'language': [language_code(root.get(XML_LANG))],
        'retracted': is_retracted(meta, title),
        'has_body': any(kind == 'body' for kind, _ in blocks),
    }


def render(blocks, kinds=TEXT_KINDS):
    """The document: the blocks of these kinds, one per line."""
    return '\n'.join(text for kind, text in blocks if kind in kinds)


# ------------------------------------------------------------------------------------------------
# blocks: the article as lines of a kind


def local(tag):
    if not isinstance(tag, str):
        return ''
    return tag if tag[0] != '{' else tag.rsplit('}', 1)[1]  # JATS has no namespace: most tags are theirs already


def normalise(text):
    return ' '.join(text.split())


def blocks_of(root, meta):
    """[(kind, text)] in document order: title, abstracts, body, floats."""
    blocks = []
    title_group = meta.find('title-group')
    if title_group is not None:
        title = line_of(title_group.find('article-title'))
        subtitle = line_of(title_group.find('subtitle'))
        title = f'{title}: {subtitle}' if title and subtitle else title or subtitle
        if title:
            blocks.append(('title', title))
    for abstract in meta.iterfind('abstract'):
        if (abstract.get('abstract-type') or '').lower() not in DROPPED_ABSTRACTS:
            container(abstract, 'abstract', blocks)
    for part in ('body', 'floats-group'):
        el = root.find(part)
        if el is not None:
            flow(el, 'body', blocks)
    return blocks


def flow(el, kind, blocks, skip=()):
    """el's content in document order: runs of inline content as lines, its block children as theirs."""
    pieces = [el.text or '']
    for child in el:
        name = local(child.tag)
        if name in skip or dropped(child):
            pass
        elif name in BLOCKS:
            emit(pieces, kind, blocks)
            pieces = []
            block(child, name, kind, blocks)
        else:
            inline(child, pieces)
        pieces.append(child.tail or '')
    emit(pieces, kind, blocks)


def block(el, name, kind, blocks):
    if name == 'fig':
        caption_block(el, blocks)
    elif name == 'table-wrap':
        table_blocks(el, blocks)
    elif name == 'disp-formula':
        add(blocks, kind, formula_text(el))
    elif name in ('fig-group', 'table-wrap-group'):
        caption_block(el, blocks)
        flow(el, kind, blocks, skip=('label', 'caption'))
    elif name == 'sec' and is_back_matter(el):
        pass
    elif name in HEADED:
        container(el, kind, blocks)
    else:  # a paragraph, list item, definition...: no heading (a list item's label is a bullet or a number)
        flow(el, kind, blocks, skip=('label', ))


def is_back_matter(sec):
    sec_type = (sec.get('sec-type') or '').lower()
    return any(t in sec_type for t in DROPPED_SEC_TYPES) or BACK_MATTER_TITLES.fullmatch(line_of(sec.find('title')))


def container(el, kind, blocks):
    """A section-like element: a heading line '<label> <title>' (a box's title is in its caption), then its content."""
    caption = el.find('caption')
    title = el.find('title')
    if title is None and caption is not None:
        title = caption.find('title')
    heading = line_of(title)
    if heading:
        add(blocks, kind, f'{line_of(el.find("label"))} {heading}')
    if caption is not None:
        flow(caption, kind, blocks, skip=('title', ))
    flow(el, kind, blocks, skip=('label', 'title', 'caption'))


def caption_block(el, blocks):
    """A figure's or table's caption line: '<label>. <title>. <paragraphs>'; none without caption text."""
    caption = el.find('caption')
    if caption is None:
        return
    title = line_of(caption.find('title'))
    paragraphs = [line_of(c) for c in caption if local(c.tag) != 'title' and not dropped(c)]
    parts = [with_stop(title)] * bool(title) + [p for p in paragraphs if p and not is_doi_line(p)]
    if parts:
        label = line_of(el.find('label'))
        add(blocks, 'caption', ' '.join([with_stop(label)] * bool(label) + parts))


def table_blocks(el, blocks):
    """A table's caption line, then one 'table' line per row (cells tab-separated), then its footnotes."""
    caption_block(el, blocks)
    for row in el.iter('tr'):
        cells = [line_of(cell) for cell in row if local(cell.tag) in ('td', 'th')]
        if any(cells):
            blocks.append(('table', '\t'.join(cells)))
    for foot in el.iterfind('table-wrap-foot'):
        for p in foot.iter('p'):
            add(blocks, 'table', line_of(p))


def with_stop(text):
    return text if not text or text[-1] in '.:;?!' else text + '.'


def is_doi_line(text):
    return re.fullmatch(r'DOI: ?\S+', text) is not None


def add(blocks, kind, text):
    text = text.strip()
    if text and not is_doi_line(text):
        blocks.append((kind, text))


def emit(pieces, kind, blocks):
    add(blocks, kind, tidy(''.join(pieces)))


def dropped(el):
    """Whether an element is left out whole: DROPPED tags, markers of dropped notes, comments/PIs/entities."""
    if not isinstance(el.tag, str):
        return True
    name = local(el.tag)
    return name in DROPPED or (name == 'xref' and el.get('ref-type') in NOTE_XREFS)


def line_of(el):
    """An element's inline content as one tidy line ('' for None)."""
    if el is None:
        return ''
    pieces = [el.text or '']
    for child in el:
        if not dropped(child):
            inline(child, pieces)
        pieces.append(child.tail or '')
    return tidy(''.join(pieces))


def inline(el, pieces):
    """Append an inline element's text (not its tail): citations wrapped for tidy(), formulas rendered."""
    name = local(el.tag)
    if name == 'xref' and el.get('ref-type') == 'bibr':
        pieces.append(CITE_OPEN + ''.join(el.itertext()).replace(CITE_CLOSE, '') + CITE_CLOSE)
    elif name in ('inline-formula', 'disp-formula'):
        pieces.append(formula_text(el))
    elif el.tag.startswith(MATHML):
        pieces.append(math_text(el))
    elif name == 'break':
        pieces.append(' ')
    else:
        pieces.append(el.text or '')
        for child in el:
            if not dropped(child):
                inline(child, pieces)
            pieces.append(child.tail or '')


# ------------------------------------------------------------------------------------------------
# citations

_CITE = '\x02[^\x03]*\x03'
_NUMERIC = '\x02[\\s\\d,;\\[\\]()\u2013\u2014-]*\\d[\\s\\d,;\\[\\]()\u2013\u2014-]*\x03'  # '12', '[3]', '1-4'
_SEP = ' ?(?:[,;\u2013\u2014-]|and)? ?'  # between citations of one run: ', ' '; ' '-' ' and '
_RUN = f'{_CITE}(?:{_SEP}{_CITE})*'
_UNIT = f'(?:\\( ?{_RUN} ?\\)|\\[ ?{_RUN} ?\\]|{_NUMERIC})'  # a bracket of citations only, or a numeric citation
_UNITS = f'{_UNIT}(?:{_SEP}{_UNIT})*'
REMOVED_CITATIONS = (  # in this order: with the separator they leave inside a bracket ('(Rud3p; [1])'), then alone
    re.compile(f'(?<=[(\\[]) ?{_UNITS} ?[,;] ?'), re.compile(f' ?[,;] ?{_UNITS}(?= ?[)\\]])'),
    re.compile(f' ?{_UNITS}'))


def tidy(text):
    """One line: whitespace runs -> one space, removable citations removed (with the space before them, and the
    separator they leave inside a bracket), the citations left (author-year ones in running text) as plain words."""
    text = normalise(text)
    if CITE_OPEN in text:
        for pattern in REMOVED_CITATIONS:
            # only from a little before the first citation to a little after the last: a match reaches at most 5
            # characters beyond the citations it holds ('; ( ' before, ' ) ; ' after), and scanning is the cost
            start = text.find(CITE_OPEN)
            if start < 0:
                break
            start, end = max(0, start - 8), text.rfind(CITE_CLOSE) + 9
            text = text[:start] + pattern.sub('', text[start:end]) + text[end:]
        text = normalise(text.replace(CITE_OPEN, '').replace(CITE_CLOSE, ''))
    return text


# ------------------------------------------------------------------------------------------------
# formulas


def formula_text(el):
    """TeX when the formula has it ($...$), else its MathML as linear text, else its own words, else '[formula]'."""
    tex = next(el.iter('tex-math'), None)
    if tex is not None and (tex.text or '').strip():
        return f'${tex_body(tex.text)}$'
    math = next(el.iter(f'{MATHML}math'), None)
    if math is not None:
        return math_text(math)
    pieces = [el.text or '']
    for child in el:
        if local(child.tag) != 'label' and not dropped(child):
            inline(child, pieces)
        pieces.append(child.tail or '')
    return normalise(''.join(pieces)) or '[formula]'


def tex_body(tex):
    """Math-mode TeX: what is inside \\begin{document} (PMC wraps formulas in a whole LaTeX file) and $ or \\[ \\]."""
    found = re.search(r'\\begin\{document\}(.*?)\\end\{document\}', tex, re.S)
    tex = (found.group(1) if found else tex).strip()
    tex = re.sub(r'^(\$\$?|\\\[|\\\()(.*?)(\$\$?|\\\]|\\\))$', r'\2', tex, flags=re.S)
    return normalise(tex)


def math_text(el):
    """MathML as linear text: x^{2}, x_{i}, (a)/(b), √(x), tokens joined without spaces."""
    name = local(el.tag)
    if name in ('mi', 'mn', 'mo', 'mtext', 'ms'):
        return normalise(''.join(el.itertext()).translate(INVISIBLE))
    children = [c for c in el if isinstance(c.tag, str) and local(c.tag) not in ('annotation', 'annotation-xml')]
    if name == 'semantics':
        children = children[:1]
    parts = [math_text(c) for c in children]
    if name in ('msub', 'msup', 'munder', 'mover') and len(parts) == 2:
        accent = el.get('accent' if name == 'mover' else 'accentunder') == 'true'
        mark = '_' if name in ('msub', 'munder') else '^'
        return parts[0] + parts[1] if accent else f'{parts[0]}{mark}{braced(parts[1])}'
    if name in ('msubsup', 'munderover') and len(parts) == 3:
        return f'{parts[0]}_{braced(parts[1])}^{braced(parts[2])}'
    if name == 'mfrac' and len(parts) == 2:
        return f'{parenthesised(parts[0])}/{parenthesised(parts[1])}'
    if name == 'msqrt':
        return f"√{parenthesised(''.join(parts))}"
    if name == 'mroot' and len(parts) == 2:
        return f'{braced(parts[1])}√{parenthesised(parts[0])}'
    if name == 'mfenced':
        separator = (el.get('separators', ',').strip() or ' ')[0]
        return el.get('open', '(') + separator.join(parts) + el.get('close', ')')
    if name == 'mtable':
        return '; '.join(parts)
    if name in ('mtr', 'mlabeledtr'):
        return ' '.join(parts)
    return ''.join(parts)


def braced(text):
    return text if len(text) <= 1 else '{' + text + '}'


def parenthesised(text):
    return text if len(text) <= 1 else '(' + text + ')'


# ------------------------------------------------------------------------------------------------
# metadata


def article_ids(meta):
    ids = {'pmid': None, 'pmcid': None, 'doi': None}
    for el in meta.iterfind('article-id'):
        kind, value = el.get('pub-id-type'), normalise(el.text or '')
        if kind == 'pmid' and ids['pmid'] is None:
            ids['pmid'] = pmid_of(value)
        elif kind in ('pmcid', 'pmc') and ids['pmcid'] is None:
            digits = value.upper().removeprefix('PMC')
            ids['pmcid'] = f'PMC{int(digits)}' if digits.isascii() and digits.isdigit() else None
        elif kind == 'doi' and ids['doi'] is None and value:
            ids['doi'] = value
    return ids


CC_PATHS = {
    'by': 'CC BY', 'by-sa': 'CC BY-SA', 'by-nd': 'CC BY-ND', 'by-nc': 'CC BY-NC', 'by-nc-sa': 'CC BY-NC-SA',
    'by-nc-nd': 'CC BY-NC-ND', 'by-nd-nc': 'CC BY-NC-ND'
}
CC_WORDS = (  # license-p prose, most specific first
    (r'attribution[- ]?non[- ]?commercial[- ]?no[- ]?deriv',
     'CC BY-NC-ND'), (r'attribution[- ]?non[- ]?commercial[- ]?share[- ]?alike', 'CC BY-NC-SA'),
    (r'attribution[- ]?non[- ]?commercial', 'CC BY-NC'), (r'attribution[- ]?no[- ]?deriv', 'CC BY-ND'),
    (r'attribution[- ]?share[- ]?alike', 'CC BY-SA'), (r'creative commons zero|\bcc0\b',
                                                       'CC0'), (r'creative commons attribution', 'CC BY'))


def normalise_license(text):
    """A license URL, a File List name or license-p prose -> a name of LICENSES, or None."""
    text = normalise(text or '')
    lower = text.lower()
    url = re.search(r'creativecommons\.org/(licenses|publicdomain)/([a-z-]+)', lower)
    if url:
        kind, path = url.groups()
        return CC_PATHS.get(path) if kind == 'licenses' else 'CC0' if path == 'zero' else 'Public Domain'
    by_name = {name.lower(): name for name in LICENSES}
    if lower in by_name:
        return by_name[lower]
    compact = re.fullmatch(r'cc[- ]?(by(?:[- ](?:nc|sa|nd))*)(?: \d\.\d)?', lower)  # 'CC-BY-NC 4.0'
    if compact:
        return CC_PATHS.get(re.sub('[- ]', '-', compact.group(1)))
    for pattern, name in CC_WORDS:
        if re.search(pattern, lower):
            return name
    if 'public domain' in lower:
        return 'Public Domain'
    return None


def license_of(meta):
    """The article's license name: @xlink:href, ali:license_ref, @license-type, then the words of license-p."""
    for license in meta.iterfind('permissions/license'):
        refs = [license.get(XLINK_HREF)] + [r.text for r in license.iterfind(f'{ALI}license_ref')]
        for ref in refs:
            name = normalise_license(ref)
            if name:
                return name
        if (license.get('license-type') or '').lower() == 'public-domain':
            return 'Public Domain'
        name = normalise_license(' '.join(license.itertext()))
        if name:
            return name
    for ref in meta.iterfind(f'permissions/{ALI}license_ref'):
        name = normalise_license(ref.text)
        if name:
            return name
    return None


def year_of(meta):
    """The issue's year as PubMed's PubDate gives it: ppub, else collection, else epub, else any pub-date; 0 if none."""
    dates = {}
    for date in meta.iterfind('pub-date'):
        kind = date.get('pub-type') or (date.get('date-type') or '') + '/' + (date.get('publication-format') or '')
        kind = {
            'pub/print': 'ppub', 'pub/electronic': 'epub', 'publication/print': 'ppub',
            'publication/electronic': 'epub', 'collection/': 'collection', 'epub-ppub': 'ppub'
        }.get(kind, kind)
        year = normalise(date.findtext('year') or '')
        if year.isascii() and year.isdigit() and len(year) == 4:
            dates.setdefault(kind, int(year))
    for kind in ('ppub', 'collection', 'epub'):
        if kind in dates:
            return dates[kind]
    return next((year for kind, year in dates.items() if kind != 'pmc-release'), 0)  # not an embargo's end


# ISO 639-1 (xml:lang) -> the MARC codes of PubMed's <Language> (ISO 639-2/B)
LANGUAGES = {
    'en': 'eng', 'fr': 'fre', 'de': 'ger', 'es': 'spa', 'it': 'ita', 'pt': 'por', 'nl': 'dut', 'ru': 'rus', 'zh': 'chi',
    'ja': 'jpn', 'ko': 'kor', 'pl': 'pol', 'cs': 'cze', 'sk': 'slo', 'sl': 'slv', 'hu': 'hun', 'ro': 'rum', 'bg': 'bul',
    'hr': 'hrv', 'sr': 'srp', 'uk': 'ukr', 'el': 'gre', 'tr': 'tur', 'ar': 'ara', 'he': 'heb', 'fa': 'per', 'sv': 'swe',
    'no': 'nor', 'nb': 'nor', 'da': 'dan', 'fi': 'fin', 'is': 'ice', 'et': 'est', 'lv': 'lav', 'lt': 'lit', 'ca': 'cat',
    'gl': 'glg', 'eu': 'baq', 'cy': 'wel', 'ga': 'gle', 'af': 'afr', 'id': 'ind', 'ms': 'may', 'th': 'tha', 'vi': 'vie',
    'hi': 'hin', 'bn': 'ben', 'ur': 'urd', 'ka': 'geo', 'hy': 'arm', 'mk': 'mac', 'sq': 'alb', 'la': 'lat', 'eo': 'epo'
}


def language_code(lang):
    """xml:lang ('en', 'pt-BR', absent = 'en' as JATS says) -> PubMed's code ('eng', 'por'); other codes as given."""
    primary = normalise(lang or 'en').lower().split('-')[0].split('_')[0] or 'en'
    return LANGUAGES.get(primary, primary)


RETRACTED_LINKS = {'retraction-forward', 'retracted-by'}


def is_retracted(meta, title):
    if re.match(r'\W*retracted\b', title, re.I):
        return True
    return any(
        (r.get('related-article-type') or '').lower() in RETRACTED_LINKS for r in meta.iterfind('related-article'))
