"""data/pmc/jats.py, data/pmc/packages.py and data/pmc/prepare.py on the real articles of ../shared/data/pmc-xml: each
article's text equals an independent lxml reading of the documented rules; the bulk layout (tar.gz + File List) built
from those articles reads back streamed, a cut package keeps what came before the cut; the downloader against a local
server with that layout; the preparer on packages and loose articles: each rule counted, the same bytes after a kill
-9 or with another --workers, the same split as data/pubmed/prepare.py for each PMID, every bad input one line."""
import csv
import gzip
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
from lxml import etree

from conftest import REPO, SHARED, LocalServer, error_lines, fill_disk, need
from data.pmc.jats import KINDS, BadArticle, read_article, render
from data.pmc.packages import (HEADER, BadFileList, BadPackage, citation_year, compare_members, download_packages,
                               file_list_path, group_url, iter_package, latest_versions, list_packages, package_order,
                               parse_licenses, read_file_list)
from data.pubmed.download import DownloadError

PMC_XML = SHARED / 'data' / 'pmc-xml'
MML = '{http://www.w3.org/1998/Math/MathML}'


def shared_articles():
    folder = need(PMC_XML)
    return sorted(folder.glob('pmc/*.nxml')) + sorted(folder.glob('elife/*.xml'))


# ------------------------------------------------------------------------------------------------
# the independent reading: prune a copy of the tree, hoist blocks out of paragraphs, then read lines off it in order

DROP = {
    'ref-list', 'ack', 'fn-group', 'fn', 'notes', 'app-group', 'app', 'glossary', 'bio', 'supplementary-material',
    'inline-supplementary-material', 'media', 'object-id', 'graphic', 'inline-graphic', 'alt-text', 'long-desc',
    'attrib', 'sec-meta'
}
BACK_MATTER = {
    'acknowledgements', 'acknowledgments', 'acknowledgement', 'funding', 'competing interests', 'conflict of interest',
    'conflicts of interest', 'disclosure', "authors' contributions", 'author contributions', 'pre-publication history'
}
BLOCKS = {'fig', 'table-wrap', 'list', 'boxed-text', 'disp-quote', 'statement', 'def-list', 'fig-group', 'line'}
CAPTIONED = {'fig', 'table-wrap', 'fig-group', 'table-wrap-group'}


def words(text):
    return ' '.join(text.split())


def detach(el, text=''):
    """Take el out of the tree, leaving `text` and its tail where it was."""
    parent, before, rest = el.getparent(), el.getprevious(), text + (el.tail or '')
    if before is not None:
        before.tail = (before.tail or '') + rest
    else:
        parent.text = (parent.text or '') + rest
    parent.remove(el)


def math_words(el):
    """MathML as the module's docstring says: x^{2}, x_{i}, (a)/(b), tokens joined."""
    tag = el.tag.split('}')[-1]
    if tag in ('mi', 'mn', 'mo', 'mtext', 'ms'):
        return words(''.join(el.itertext())).replace('\u2061', '').replace('\u2062', '').replace('\u2063', '')
    parts = [math_words(k) for k in el if k.tag.split('}')[-1] not in ('annotation', 'annotation-xml')]
    brace = lambda s: s if len(s) < 2 else '{%s}' % s
    paren = lambda s: s if len(s) < 2 else '(%s)' % s
    if tag == 'semantics':
        return parts[0]
    if tag in ('mover', 'munder') and el.get('accent' if tag == 'mover' else 'accentunder') == 'true':
        return parts[0] + parts[1]
    forms = {
        'msub': '{0}_{1}', 'munder': '{0}_{1}', 'msup': '{0}^{1}', 'mover': '{0}^{1}', 'msubsup': '{0}_{1}^{2}',
        'munderover': '{0}_{1}^{2}'
    }
    if tag in forms:
        return forms[tag].format(parts[0], *map(brace, parts[1:]))
    if tag == 'mfrac':
        return f'{paren(parts[0])}/{paren(parts[1])}'
    if tag == 'msqrt':
        return '√' + paren(''.join(parts))
    if tag == 'mfenced':
        return el.get('open', '(') + (el.get('separators', ',').strip() or ' ')[0].join(parts) + el.get('close', ')')
    return {'mtable': '; ', 'mtr': ' '}.get(tag, '').join(parts)


def formula_words(el):
    tex = el.find('.//tex-math')
    if tex is not None:
        return '$' + words(tex.text) + '$'
    math = el.find(f'.//{MML}math')
    return math_words(math) if math is not None else '[formula]'


OPEN, CLOSE = '\ue000', '\ue001'  # around a citation in the tree (lxml takes no control characters)
CITE = f'{OPEN}[^{CLOSE}]*{CLOSE}'
NUMBER = f'{OPEN}[^{CLOSE}A-Za-z]*[0-9][^{CLOSE}A-Za-z]*{CLOSE}'
SEP = '(?: ?[,;\u2013\u2014-] ?| and | )?'
ONLY_CITES = f'(?:\\( ?{CITE}(?:{SEP}{CITE})* ?\\)|\\[ ?{CITE}(?:{SEP}{CITE})* ?\\]|{NUMBER})'
RUN = f'{ONLY_CITES}(?:{SEP}{ONLY_CITES})*'


def line(text):
    """Whitespace collapsed; citations in brackets of their own or numeric removed with the space before them and
    the separator they leave inside a bracket; other citations left as words."""
    text = words(text)
    text = re.sub(f'(?<=[(\\[]) ?{RUN} ?[,;] ?', '', text)
    text = re.sub(f' ?[,;] ?{RUN}(?= ?[)\\]])', '', text)
    text = re.sub(f' ?{RUN}', '', text)
    return words(text.replace(OPEN, '').replace(CLOSE, ''))


def flat(el):
    return line(''.join(el.itertext())) if el is not None else ''


def stop(text):
    return text + '.' if text and text[-1] not in '.:;?!' else text


def pruned(path):
    root = etree.parse(
        str(path),
        etree.XMLParser(load_dtd=False, no_network=True, resolve_entities=False, remove_comments=True,
                        remove_pis=True)).getroot()
    for el in root.xpath('back | sub-article | response | front/journal-meta | front/article-meta/*[not(self::title-'
                         'group or self::abstract)] | front/article-meta/title-group/*[not(self::article-title or '
                         'self::subtitle)] | front/article-meta/abstract[@abstract-type="graphical" or '
                         '@abstract-type="teaser" or @abstract-type="toc" or @abstract-type="video" or '
                         '@abstract-type="web-summary"]'):
        detach(el)
    for el in list(root.iter(*DROP)):
        in_table_foot = any(a.tag == 'table-wrap-foot' for a in el.iterancestors())  # the foot's notes are its text
        if root in el.iterancestors() and not (el.tag == 'fn' and in_table_foot):
            detach(el)
    for el in root.xpath('//xref[@ref-type="fn" or @ref-type="table-fn" or @ref-type="aff" or @ref-type="corresp" '
                         'or @ref-type="author-notes"] | //list-item/label'):
        detach(el)
    for sec in list(root.iter('sec')):
        kind, title = (sec.get('sec-type') or '').lower(), words(''.join(sec.findtext('title') or '')).lower()
        if 'supplementary-material' in kind or 'coi-statement' in kind or title.rstrip('.:') in BACK_MATTER:
            detach(sec)
    for el in list(root.iter('inline-formula', f'{MML}math', 'break', 'disp-formula', 'xref')):
        if root not in el.iterancestors():
            continue  # inside a formula rendered already
        if el.tag == 'disp-formula':  # a line of its own
            new = etree.Element('line')
            new.text, new.tail = formula_words(el), el.tail
            el.getparent().replace(el, new)
        elif el.tag == 'xref':
            if el.get('ref-type') == 'bibr':
                detach(el, OPEN + ''.join(el.itertext()) + CLOSE)
        elif el.tag == 'break':
            detach(el, ' ')
        else:
            detach(el, formula_words(el) if el.tag == 'inline-formula' else math_words(el))
    return root


def hoist(root):
    """Split each paragraph around a block inside it: <p>a<fig/>b</p> -> <p>a</p><fig/><p>b</p>."""
    while True:
        found = [(p, b) for p in root.iter('p') for b in p if b.tag in BLOCKS]
        if not found:
            return
        p, block = found[0]
        after = etree.Element('p')
        after.text, block.tail = block.tail, None
        for sibling in list(block.itersiblings()):
            after.append(sibling)
        p.addnext(block)
        block.addnext(after)


def independent_blocks(path):
    root = pruned(path)
    hoist(root)
    lines = []
    meta = root.find('front/article-meta')
    title, subtitle = flat(meta.find('title-group/article-title')), flat(meta.find('title-group/subtitle'))
    if title or subtitle:
        lines.append(('title', f'{title}: {subtitle}' if title and subtitle else title or subtitle))
    for el in root.iter():
        ancestors = list(el.iterancestors())
        if any(a.tag == 'title-group' for a in ancestors) or any(a.tag == 'caption' and a.getparent().tag in CAPTIONED
                                                                 for a in ancestors):
            continue
        kind = 'abstract' if any(a.tag == 'abstract' for a in ancestors) else 'body'
        in_table = any(a.tag == 'table-wrap' for a in ancestors)
        if el.tag == 'title' and el.getparent().tag in ('sec', 'abstract', 'list', 'statement', 'disp-quote',
                                                        'def-list'):
            heading = flat(el)
            if heading:
                lines.append((kind, f"{flat(el.getparent().find('label'))} {heading}".strip()))
        elif el.tag == 'title' and el.getparent().tag == 'caption' and el.getparent().getparent().tag == 'boxed-text':
            if flat(el):
                lines.append((kind, f"{flat(el.getparent().getparent().find('label'))} {flat(el)}".strip()))
        elif el.tag in CAPTIONED and el.find('caption') is not None:
            caption = el.find('caption')
            parts = [stop(flat(caption.find('title')))] + [flat(c) for c in caption if c.tag != 'title']
            parts = [p for p in parts if p and not re.fullmatch(r'DOI: ?\S+', p)]
            if parts:
                lines.append(('caption', ' '.join([stop(flat(el.find('label')))] + parts).strip()))
        elif el.tag == 'tr' and in_table:
            cells = [flat(c) for c in el if c.tag in ('td', 'th')]
            if any(cells):
                lines.append(('table', '\t'.join(cells)))
        elif el.tag == 'p' and any(a.tag == 'table-wrap-foot' for a in ancestors):
            lines.append(('table', flat(el)))
        elif el.tag in ('p', 'line') and not in_table:
            lines.append((kind, flat(el)))
    return [(k, t) for k, t in lines if t and not re.fullmatch(r'DOI: ?\S+', t)]


def test_each_shared_article_reads_as_the_independent_reading_of_the_rules():
    for path in shared_articles():
        record = read_article(path)
        assert record['blocks'] == independent_blocks(path), path.name
        assert record['text'] == '\n'.join(t for k, t in record['blocks'] if k != 'table')


def test_section_titles_and_captions_are_kept_references_citations_and_the_doctype_are_not():
    raw_parser = etree.XMLParser(load_dtd=False, no_network=True, resolve_entities=False)
    for path in shared_articles():
        raw = etree.parse(str(path), raw_parser).getroot()
        text = read_article(path)['text']
        lines = set(text.split('\n'))
        for sec in raw.iterfind('body/sec'):
            title = words(''.join(sec.find('title').itertext()))
            if sec.get('sec-type') != 'supplementary-material' and title.lower() not in BACK_MATTER:
                assert any(ln.endswith(title) for ln in lines), (path.name, title)
        for fig in raw.iter('fig'):
            first = words(''.join(fig.find('caption')[0].itertext()))[:40] if fig.find('caption') is not None else ''
            assert first.split(' (')[0][:25] in text, (path.name, first)
        for ref in raw.iterfind('back/ref-list/ref'):
            entry = words(' '.join(t for c in ref if c.tag != 'label' for t in c.itertext()))  # authors, title, ...
            assert entry[:80] not in text, (path.name, entry)
        cited = [''.join(x.itertext()) for x in raw.iter('xref') if x.get('ref-type') == 'bibr']
        numbered = sum(bool(re.fullmatch(r'\W*\d+\W*', c)) for c in cited) > len(cited) / 2  # not '[1-38]' of a protein
        marker = re.search(r'(?<![\w\]])\[\d+(?:[,\u2013-] ?\d+)*\]', text)  # '[12]', '[1-3]', '[4, 5]', not 'F[1,12]'
        assert not (numbered and marker), (path.name, marker and text[marker.start() - 80:marker.end()])
        assert 'DOCTYPE' not in text and '.dtd' not in text and '\x02' not in text and '\x03' not in text
        assert not any(a in text for a in ('Reviewing editor', 'decision letter', 'Author response')), path.name


def test_spot_checks_of_known_lines():
    blocks = {p.name: read_article(p)['blocks'] for p in shared_articles()}
    lines = {name: [t for _, t in b] for name, b in blocks.items()}
    bmc = lines['1471-2180-11-174.nxml']
    assert bmc[:2] == ['Factors influencing lysis time stochasticity in bacteriophage λ', 'Background']
    assert 'Effect of allelic variation in holin sequence' in bmc and 'Competing interests' not in bmc
    assert any(
        t.startswith('Some phenotypic variation arises from randomness in cellular processes despite identical '
                     'environments and genotypes. Population heterogeneity') for t in bmc)  # '[1-9]' gone
    assert ('caption', 'Figure 1. Exposure to PBDE-47 depressed circulating concentrations of total T4 in males and '
            'females (A), but had no effect on total T3 in males (B). *p < 0.05 compared with control.'
            ) in blocks['ehp-116-1694.nxml']
    assert any('It has been shown that M. tuberculosis is able to store triacylglycerols (TAG) as intracellular lipid '
               'inclusions (ILI), in vivo, during the infection process and in vitro, under stress conditions.' in t
               for t in lines['pone.0046493.nxml'])  # PLoS '[2], [3], [4]' gone with their commas
    digest = lines['elife-00007-v1.xml']
    assert digest[2] == 'eLife digest' and digest[3].startswith('As the population of the world continues to increase')
    assert ('body',
            '∆X^1=c_0+c(σ^1)-aX^1+bX^2+N(0,s^2),∆X^2=-c_0-c(σ^2)-aX^2+bX^1+N(0,s^2),') in blocks['elife-09500-v2.xml']
    assert lines['pone.0000217.nxml'].count('[formula]') == 24  # its formulas are images only
    assert ('abstract', 'Author Summary') in blocks['pntd.0002065.nxml']
    assert ('table', 'Component\tNanogram/20 μL lanolin') in blocks['elife-00007-v1.xml']


def test_ids_license_year_and_journal_are_what_the_xml_says():

    def read(name):
        return read_article(need(PMC_XML) / name)

    one = read('pmc/pone.0046493.nxml')
    assert (one['pmid'], one['pmcid'], one['doi']) == (23029536, 'PMC3460867', '10.1371/journal.pone.0046493')
    assert (one['license'], one['year'], one['journal'], one['article_type']) == ('CC BY', 2012, 'PLoS One',
                                                                                  'research-article')
    assert (one['language'], one['retracted'], one['has_body']) == (['eng'], False, True)
    assert read('pmc/ehp-116-1694.nxml')['license'] == 'Public Domain'  # creativecommons.org/publicdomain/mark
    assert (read('pmc/mds526.nxml')['license'], read('pmc/mds526.nxml')['year']) == ('CC BY-NC', 2013)  # ppub
    assert read('pmc/6605965a.nxml')['license'] is None  # no <license> at all
    cc0 = read('elife/elife-08206-v3.xml')
    assert (cc0['pmid'], cc0['pmcid'], cc0['doi'], cc0['license'], cc0['year']) == (None, None, '10.7554/eLife.08206',
                                                                                    'CC0', 2015)
    assert read('elife/elife-30274-v2.xml')['license'] == 'CC BY'  # also an ali:license_ref
    assert read('elife/elife-00353-v1.xml')['article_type'] == 'discussion'


def article(body='<body><p>Text.</p></body>', front='', doctype='', lang=''):
    return (f'<?xml version="1.0"?>{doctype}<article{lang}><front><article-meta><title-group><article-title>A title'
            f'</article-title></title-group>{front}<abstract><p>An abstract.</p></abstract></article-meta></front>'
            f'{body}</article>').encode()


def test_no_body_tex_graphic_formulas_languages_and_retraction_marks():
    bare = read_article(article(body=''))
    assert (bare['has_body'], bare['text'], bare['sections']) == (False, 'A title\nAn abstract.',
                                                                  {'title': 7, 'abstract': 12})
    tex = read_article(
        article('<body><p>Let <inline-formula><alternatives><tex-math>\\documentclass{minimal}'
                '\\begin{document}$x^2$\\end{document}</tex-math><mml:math xmlns:mml="http://www.w3.'
                'org/1998/Math/MathML"><mml:mi>y</mml:mi></mml:math></alternatives></inline-formula> '
                'hold.</p><disp-formula><label>(1)</label><graphic/></disp-formula></body>'))
    assert tex['text'].split('\n')[2:] == ['Let $x^2$ hold.', '[formula]']
    assert read_article(article(lang=' xml:lang="pt-BR"'))['language'] == ['por']
    assert read_article(article(lang=' xml:lang="xx"'))['language'] == ['xx']
    assert read_article(article().replace(b'A title', b'RETRACTED ARTICLE: A title'))['retracted']
    notice = read_article(article(front='<related-article related-article-type="retracted-article"/>'))
    assert not notice['retracted']


def test_an_external_entity_or_an_entity_bomb_is_refused_in_one_line(tmp_path):
    secret = tmp_path / 'secret.txt'
    secret.write_text('TOP SECRET')
    bomb = '<!DOCTYPE article [<!ENTITY a "aaaaaaaaaa">' + ''.join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)) + ']>'
    external = f'<!DOCTYPE article [<!ENTITY x SYSTEM "file://{secret}">]>'
    for doctype, entity in ((bomb, '&i;'), (external, '&x;')):
        data = article(body=f'<body><p>{entity}</p></body>', doctype=doctype)
        with pytest.raises(BadArticle) as refused:
            read_article(data, name='evil.xml')
        assert str(refused.value).startswith('evil.xml: declares entities of its own') and '\n' not in str(
            refused.value)
    with pytest.raises(BadArticle, match='not well-formed XML'):
        read_article(b'%PDF-1.4 not xml', name='x.xml')
    with pytest.raises(BadArticle, match='root element is <PubmedArticleSet>'):
        read_article(b'<PubmedArticleSet/>', name='x.xml')


def test_an_external_dtd_is_never_fetched():
    with Server({'/x.dtd': b'<!ENTITY t "LOADED">'}) as s:
        record = read_article(article(doctype=f'<!DOCTYPE article SYSTEM "{s.url}/x.dtd">'))
        assert record['title'] == 'A title' and s.log == []


# ------------------------------------------------------------------------------------------------
# bulk packages and File Lists


def pmcid_of(path):
    root = etree.parse(str(path), etree.XMLParser(load_dtd=False, no_network=True)).getroot()
    ids = {a.get('pub-id-type'): a.text for a in root.iterfind('front/article-meta/article-id')}
    return ids.get('pmc'), ids.get('pmid')


def bulk_package(folder, stem, articles, extra=(), cut=None):
    """A package NAME.tar.gz + NAME.filelist.csv in NCBI's layout: articles [(path, pmcid, pmid, license, retracted,
    updated, in_tar)], `extra` [(member name, bytes)] members no row lists."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as tar:
        for path, pmcid, *_, in_tar in articles:
            if in_tar:
                add_member(tar, member_path(pmcid), path.read_bytes())
        for name, data in extra:
            add_member(tar, name, data)
    data = gzip.compress(buffer.getvalue(), mtime=0)
    (folder / f'{stem}.tar.gz').write_bytes(data[:cut])
    with open(folder / f'{stem}.filelist.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for _, pmcid, pmid, license, retracted, updated, _ in articles:
            writer.writerow([
                member_path(pmcid), 'J Test. 2020 Jan 1; 1(1):1', pmcid, updated, pmid or '', license,
                'yes' if retracted else 'no'
            ])
    return folder / f'{stem}.tar.gz'


def member_path(pmcid):
    return f'PMC{int(pmcid[3:]) // 1_000_000:03d}xxxxxx/{pmcid}.xml'


def add_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def shared_rows():
    """The 8 PMC articles with their real ids, then 3 eLife ones with made-up PMCIDs (one not in PubMed)."""
    rows = []
    for path in shared_articles():
        pmc, pmid = pmcid_of(path)
        if pmc:
            rows.append((path, f'PMC{pmc}', pmid, 'CC BY', False, '2024-01-01 00:00:00', True))
    for i, path in enumerate([p for p in shared_articles() if p.parent.name == 'elife'][:3]):
        rows.append((path, f'PMC{9000001 + i}', None if i == 0 else str(40000000 + i), 'CC0', False,
                     '2024-01-01 00:00:00', True))
    return rows


class OneWay(io.RawIOBase):
    """A file that can only be read forward: proof that a package is streamed, never sought in."""

    def __init__(self, data):
        self.data, self.at = data, 0

    def readable(self):
        return True

    def readinto(self, b):
        chunk = self.data[self.at:self.at + len(b)]
        b[:len(chunk)] = chunk
        self.at += len(chunk)
        return len(chunk)


def test_a_bulk_package_reads_back_streamed_with_its_file_list(tmp_path):
    rows = shared_rows()
    rows[1] = (*rows[1][:4], True, *rows[1][5:])  # retracted
    rows[2] = (*rows[2][:4], True, *rows[2][5:])
    rows[3] = (*rows[3][:6], False)  # listed, not in the package
    package = bulk_package(
        tmp_path, 'oa_comm_xml.PMC002xxxxxx.baseline.2024-06-18', rows,
        extra=[('PMC002xxxxxx/PMC2999999.xml', rows[0][0].read_bytes()), ('PMC002xxxxxx/PMC2999999.pdf', b'%PDF-1.4')])
    counts = {}
    members = list(iter_package(OneWay(package.read_bytes()), counts))
    assert counts == {'articles': len(rows), 'not_xml': 1, 'too_large': 0, 'not_file': 0}
    expected = [(member_path(r[1]), r[0].read_bytes()) for r in rows if r[6]]
    assert members == expected + [('PMC002xxxxxx/PMC2999999.xml', rows[0][0].read_bytes())]
    listed = read_file_list(file_list_path(package))
    assert [(r.file, r.pmcid, r.pmid, r.license, r.retracted)
            for r in listed] == [(member_path(r[1]), r[1], int(r[2]) if r[2] else None, r[3], r[4]) for r in rows]
    assert {r.package for r in listed} == {package.name} and sum(r.retracted for r in listed) == 2
    missing, unlisted = compare_members(listed, [name for name, _ in members])
    assert [r.pmcid for r in missing] == [rows[3][1]] and unlisted == ['PMC002xxxxxx/PMC2999999.xml']
    records = [read_article(data, name) for name, data in members]
    assert [r['pmcid'] for r in records[:8] if r['pmcid']] == [r[1] for r in rows[:8] if r[6]]


def test_a_cut_package_keeps_the_articles_before_the_cut_and_names_the_file(tmp_path):
    whole = bulk_package(tmp_path, 'whole', shared_rows())
    cut = bulk_package(tmp_path, 'oa_comm_xml.incr.2024-01-29', shared_rows(), cut=len(whole.read_bytes()) * 6 // 10)
    kept = []
    with pytest.raises(BadPackage) as error:
        for name, data in iter_package(cut):
            kept.append((name, data))
    assert 0 < len(kept) < len(shared_rows()) and kept == list(iter_package(whole))[:len(kept)]
    message = str(error.value)
    assert message.startswith(f'oa_comm_xml.incr.2024-01-29.tar.gz: truncated or corrupt after {len(kept)} article(s)')
    assert '\n' not in message
    (tmp_path / 'not.tar.gz').write_bytes(b'<html>Not Found</html>')
    with pytest.raises(BadPackage, match='not.tar.gz: truncated or corrupt after 0 article'):
        list(iter_package(tmp_path / 'not.tar.gz'))


def test_latest_versions_package_order_and_file_list_errors(tmp_path):
    base = bulk_package(tmp_path, 'oa_comm_xml.PMC003xxxxxx.baseline.2024-06-18', shared_rows()[:3])
    updated = [(*shared_rows()[0][:5], '2024-07-01 10:00:00', True),
               (*shared_rows()[1][:5], '2023-01-01 00:00:00', True),
               (*shared_rows()[2][:5], '2024-01-01 00:00:00', True)]
    incr = bulk_package(tmp_path, 'oa_comm_xml.incr.2024-07-01', updated)
    names = package_order([
        incr.name, 'oa_comm_xml.incr.2024-06-30.tar.gz', base.name,
        'oa_comm_xml.PMC000xxxxxx.baseline.2024-06-18.tar.gz'
    ])
    assert names == [
        'oa_comm_xml.PMC000xxxxxx.baseline.2024-06-18.tar.gz', base.name, 'oa_comm_xml.incr.2024-06-30.tar.gz',
        incr.name
    ]
    latest = latest_versions(read_file_list(file_list_path(base)) + read_file_list(file_list_path(incr)))
    assert {pmcid: row.package
            for pmcid, row in latest.items()
            } == {shared_rows()[0][1]: incr.name,
                  shared_rows()[1][1]: base.name,
                  shared_rows()[2][1]: incr.name}  # newer, tie
    bad = tmp_path / 'bad.filelist.csv'
    bad.write_text('File,Article Citation,Accession ID,Last Updated (YYYY-MM-DD HH:MM:SS),PMID,License\n')
    with pytest.raises(BadFileList,
                       match=r'bad.filelist.csv: not a PMC File List: .*missing Article File, AccessionID'):
        read_file_list(bad)
    bad.write_text(','.join(HEADER) + '\nPMC0/PMC1.xml,"J. 2020",PMC1,2020-01-01,1,CC BY,no\n')
    with pytest.raises(BadFileList, match="line 2: LastUpdated '2020-01-01' is not YYYY-MM-DD HH:MM:SS"):
        read_file_list(bad)
    assert [citation_year(c) for c in ('Front Oncol. 2019 Dec 6; 9:1306', 'Nature. 1998 Jan; 391:1', '', 'J. 12:1')
            ] == [2019, 1998, 0, 0]


def test_licenses_option_names_groups_and_close_matches():
    assert parse_licenses('CC BY, cc0') == {'CC BY', 'CC0'}
    assert parse_licenses('oa_comm') == {'CC0', 'CC BY', 'CC BY-SA', 'CC BY-ND'}
    assert parse_licenses('all') is None and parse_licenses('') is None
    with pytest.raises(ValueError) as unknown:
        parse_licenses('CC BY,CC-BY-NC')
    assert str(unknown.value).startswith("unknown license 'CC-BY-NC' (did you mean 'CC BY-NC'")
    assert 'known are CC0, CC BY' in str(unknown.value) and '\n' not in str(unknown.value)


# ------------------------------------------------------------------------------------------------
# the downloader against a local server with NCBI's bulk layout


class Server(LocalServer):
    """files: {path: bytes} served with Range support and an index page per folder; faults: {path: ['drop' |
    'corrupt']}, one per request. log: [(path, Range header)]."""

    def __init__(self, files, faults=None):
        self.files, self.faults, self.log = dict(files), {k: list(v) for k, v in (faults or {}).items()}, []
        for folder in {p.rsplit('/', 1)[0] for p in files}:
            names = sorted(p.rsplit('/', 1)[1] for p in files if p.rsplit('/', 1)[0] == folder)
            self.files[folder + '/'] = ('<html><body><h1>Index</h1><pre><a href="../">Parent Directory</a>\n' +
                                        ''.join(f'<a href="{n}">{n}</a>  2024-06-18 12:00  1M\n'
                                                for n in names) + '</pre></body></html>').encode()
        server = self

        class Handler(BaseHTTPRequestHandler):

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.log.append((self.path, self.headers.get('Range')))
                fault = server.faults[self.path].pop(0) if server.faults.get(self.path) else None
                data = server.files.get(self.path)
                if data is None:
                    return self.send_error(404)
                if fault == 'corrupt':
                    data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
                start = int(self.headers['Range'][6:].split('-')[0]) if self.headers.get('Range') else 0
                if start and start >= len(data):
                    return self.send_error(416)
                self.send_response(206 if start else 200)
                self.send_header('Content-Length', str(len(data) - start))
                self.end_headers()
                body = data[start:]
                try:
                    self.wfile.write(body[:len(body) // 2] if fault == 'drop' else body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = fault == 'drop'

        self.serve(Handler)


FAST = dict(timeout=2.0, retries=3, backoff=0.01)


def test_the_downloader_lists_fetches_resumes_verifies_and_never_fetches_twice(tmp_path):
    made = tmp_path / 'made'
    made.mkdir()
    baseline = bulk_package(made, 'oa_comm_xml.PMC003xxxxxx.baseline.2024-06-18', shared_rows())
    incr = bulk_package(made, 'oa_comm_xml.incr.2024-06-19', shared_rows()[:2])
    folder = '/pub/pmc/oa_bulk/oa_comm/xml'
    files = {f'{folder}/{p.name}': p.read_bytes() for p in made.iterdir()}
    files[f'{folder}/{baseline.name[:-7]}.filelist.txt'] = b'txt list'
    files[f'{folder}/oa_comm_txt.incr.2024-06-19.tar.gz'] = b'a txt package'
    raw = tmp_path / 'raw'
    raw.mkdir()
    (raw / (baseline.name + '.part')).write_bytes(baseline.read_bytes()[:20_000])  # a killed run's part
    with Server(files, {f'{folder}/{baseline.name}': ['drop'], f'{folder}/{incr.name}': ['corrupt']}) as s:
        url = group_url(s.url + '/pub/pmc/', 'oa_comm')
        names = list_packages(url, **FAST)
        assert names == [baseline.name, incr.name]
        jobs = [(url + n, str(raw / n)) for n in names]
        ok, failed = download_packages(jobs, connections=2, **FAST)
        assert failed == [] and ok == [(str(raw / n), hashlib.md5((made / n).read_bytes()).hexdigest()) for n in names]
        resumed, dropped = s.requests(f'{folder}/{baseline.name}')  # from the part, then from where the drop cut it
        assert resumed == 'bytes=20000-' and int(dropped[6:-1]) > 20_000
        assert s.requests(f'{folder}/{incr.name}') == [None, None]  # a bad CRC: fetched whole once more
        for n in names:
            assert (raw / n).read_bytes() == (made / n).read_bytes()
            assert read_file_list(file_list_path(raw / n)) == read_file_list(file_list_path(made / n))
        seen = len(s.log)
        assert download_packages(jobs, **FAST) == (ok, [])
        assert len(s.log) == seen  # nothing fetched again, not even a File List
    assert not list(raw.glob('*.part'))


def test_a_package_that_never_verifies_is_left_out_and_the_others_go_on(tmp_path):
    made = tmp_path / 'made'
    made.mkdir()
    good = bulk_package(made, 'oa_comm_xml.incr.2024-06-19', shared_rows()[:2])
    bad = bulk_package(made, 'oa_comm_xml.incr.2024-06-20', shared_rows()[2:4])
    files = {f'/oa_bulk/oa_comm/xml/{p.name}': p.read_bytes() for p in made.iterdir()}
    with Server(files, {f'/oa_bulk/oa_comm/xml/{bad.name}': ['corrupt', 'corrupt']}) as s:
        jobs = [(f'{s.url}/oa_bulk/oa_comm/xml/{p.name}', str(tmp_path / p.name)) for p in (good, bad)]
        ok, failed = download_packages(jobs, **FAST)
    assert [d for d, _ in ok] == [str(tmp_path / good.name)]
    assert failed[0][0] == bad.name and 'BadGzipFile' in failed[0][1] and 'twice' in failed[0][1]
    assert not (tmp_path / bad.name).exists() and not (tmp_path / (bad.name + '.part')).exists()


def test_a_host_name_that_does_not_resolve_fails_in_seconds(monkeypatch):
    for key in [k for k in os.environ if k.lower().endswith('_proxy')]:
        monkeypatch.delenv(key)  # the lookup itself, not a proxy's answer
    start = time.time()
    with pytest.raises(DownloadError, match='the host name nonexistent.invalid does not resolve'):
        list_packages(group_url('http://nonexistent.invalid/pub/pmc/', 'oa_comm'))
    assert time.time() - start < 15
    with pytest.raises(ValueError, match='unknown license group'):
        group_url('http://x/', 'oa_all')


def test_render_brings_tables_in_without_parsing_again():
    record = read_article(need(PMC_XML) / 'elife' / 'elife-00007-v1.xml')
    with_tables = render(record['blocks'], KINDS)
    assert 'Component\tNanogram/20 μL lanolin' in with_tables and 'Component\tNanogram' not in record['text']
    assert len(with_tables) == len(record['text']) + record['sections']['table'] + sum(
        1 for k, _ in record['blocks'] if k == 'table')


# ------------------------------------------------------------------------------------------------
# the preparer: data/pmc/prepare.py on packages built from the shared articles, and loose articles

PMC_PREPARE = str(REPO / 'data' / 'pmc' / 'prepare.py')
QUICK = ['--vocab_size=300', '--val_fraction=0.5', '--workers=1', '--exclude_pmids=']
BASELINE, UPDATE = 'oa_comm_xml.PMC002xxxxxx.baseline.2024-06-18', 'oa_comm_xml.incr.2024-07-01'
NO_BODY = article(body='', front='<article-id pub-id-type="pmc">2999998</article-id>')
BOMB = article(
    body='<body><p>&i;</p></body>', doctype='<!DOCTYPE article [<!ENTITY a "aaaaaaaaaa">' +
    ''.join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)) + ']>')


def prepare_pmc(*args):
    """data/pmc/prepare.py's main in this process: its exit code (an option error's too)."""
    from data.pmc import prepare
    try:
        return prepare.main([str(a) for a in args])
    except SystemExit as e:
        return e.code


def documents(out, split):
    """A data folder's documents of a split, decoded."""
    from dataloader import load_meta
    from tokenizer import encoding_from_spec
    meta = load_meta(out)
    ids = np.fromfile(out / f'{split}.bin', dtype=meta['dtype'])
    cuts = np.flatnonzero(ids == meta['eot_token'])
    enc = encoding_from_spec(meta['tokenizer'])
    return [enc.decode(ids[a + 1:b].tolist()) for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]


def outputs(out):
    return {name: (out / name).read_bytes() for name in ('train.bin', 'val.bin', 'meta.pkl', 'meta.json')}


def pmc_inputs(folder):
    """A baseline package (one row retracted, one missing from the package, one CC BY-NC, and members no row lists: a
    PDF, an entity bomb, an article without body), an incremental one (a newer version of one article, an older one
    of another), and the other eLife articles loose in a folder."""
    folder.mkdir(parents=True)
    rows = shared_rows()
    rows[1] = (*rows[1][:4], True, *rows[1][5:])  # retracted
    rows[3] = (*rows[3][:6], False)  # listed, not in the package
    rows[4] = (*rows[4][:3], 'CC BY-NC', *rows[4][4:])
    extra = [('PMC002xxxxxx/PMC2999999.pdf', b'%PDF-1.4'), ('PMC002xxxxxx/bomb.xml', BOMB),
             ('PMC002xxxxxx/nobody.xml', NO_BODY)]
    bulk_package(folder, BASELINE, rows, extra=extra)
    bulk_package(folder, UPDATE, [(*rows[2][:5], '2024-07-01 10:00:00', True),
                                  (*rows[0][:5], '2023-01-01 00:00:00', True)])
    (folder / 'loose').mkdir()
    in_packages = {r[0] for r in rows}
    for path in shared_articles():
        if path not in in_packages:
            (folder / 'loose' / path.name).write_bytes(path.read_bytes())
    return rows


def pmc_split(pmid, pmcid, doi, fraction=0.5):
    """The documented split rule, written out independently of the preparer: blake2b of str(PMID), else 'PMC' +
    digits, else 'doi:' + the DOI in lower case."""
    key = str(pmid) if pmid else pmcid if pmcid else f'doi:{doi.lower()}'
    return 'val' if int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest()[:8],
                                   'little') < fraction * 2**64 else 'train'


def expected_documents(rows, loose, kinds=None):
    """(what, path, pmid, pmcid) of the articles pmc_inputs' inputs keep with --licenses=oa_comm, in output order:
    loose articles, then the baseline's members, then the update's."""
    kept = [('loose', p, None, None) for p in loose]
    kept += [('base', r[0], r[2], r[1]) for i, r in enumerate(rows) if i in (0, 5, 6, 7, 8, 9, 10)]
    return kept + [('update', rows[2][0], rows[2][2], rows[2][1])]


def split_documents(kept, kinds):
    from data.pmc.jats import render
    texts = {'train': [], 'val': []}
    for _, path, pmid, pmcid in kept:
        record = read_article(path)
        texts[pmc_split(pmid, pmcid, record['doi'])].append(render(record['blocks'], kinds))
    return texts


def test_prepare_keeps_the_latest_licensed_bodied_articles_and_counts_each_rule(tmp_path, capsys):
    from data.pmc.jats import KINDS, TEXT_KINDS
    from dataloader import META_KEYS, load_meta
    rows = pmc_inputs(tmp_path / 'in')
    out = tmp_path / 'out'
    code = prepare_pmc(f'--input={tmp_path / "in"}', f'--out_dir={out}', '--licenses=oa_comm', *QUICK,
                       f'--export_jsonl={tmp_path / "docs.jsonl"}')
    err = capsys.readouterr().err
    assert code == 0, err
    loose = sorted((tmp_path / 'in' / 'loose').iterdir())
    kept = expected_documents(rows, loose)
    expected = split_documents(kept, TEXT_KINDS)
    assert {split: documents(out, split) for split in ('train', 'val')} == expected
    meta = load_meta(out)
    assert sorted(meta) == sorted(META_KEYS)
    assert meta['records'] == {
        'articles': 22, 'replaced': 2, 'retracted': 1, 'no_body': 1, 'license': 1, 'language': 0, 'excluded': 0,
        'no_id': 0, 'not_xml': 1, 'too_large': 0, 'not_file': 0, 'bad_article': 1, 'not_in_package': 1,
        'not_in_file_list': 1
    }
    records = [read_article(path) for _, path, _, _ in kept]
    licenses = [r['license'] for r in records[:len(loose)]] + ['CC BY'] * 4 + ['CC0'] * 3 + ['CC BY']  # File Lists'
    assert meta['licenses'] == {name: licenses.count(name) for name in sorted(set(licenses))}
    assert meta['sections'] == {
        'in_text': list(TEXT_KINDS), 'chars': {k: sum(r['sections'].get(k, 0) for r in records)
                                               for k in KINDS}
    }
    assert meta['subset'] == {'licenses': 'oa_comm'} and [f['name'] for f in meta['files']
                                                          ] == ['loose', BASELINE + '.tar.gz', UPDATE + '.tar.gz']
    assert meta['files'][1]['file_list_md5'] == hashlib.md5(
        (tmp_path / 'in' / f'{BASELINE}.filelist.csv').read_bytes()).hexdigest()
    lines = [json.loads(line) for line in (tmp_path / 'docs.jsonl').read_text().splitlines()]
    assert [(d['pmid'], d['pmcid'], d['license'])
            for d in lines[-4:-1]] == [(None, rows[8][1], 'CC0'), (40000001, rows[9][1], 'CC0'),
                                       (40000002, rows[10][1], 'CC0')]  # the File List's
    notes = [line for line in err.splitlines() if line.startswith('note: ')]
    assert notes == [
        f'note: {BASELINE}.tar.gz: PMC002xxxxxx/bomb.xml: left out: declares entities of its own (a, b, c): refused '
        '(how XML bombs and external-file reads are made; PMC articles use character references)',
        f'note: {BASELINE}.tar.gz: 1 File List row(s) name no article in it (first {member_path(rows[3][1])}), 1 '
        'article(s) in it are in no row (first PMC002xxxxxx/nobody.xml): counted; the latter read by their XML alone'
    ]


def test_other_text_options_and_subsets_parse_nothing_again(tmp_path, capsys):
    from data.pmc.jats import KINDS
    rows = pmc_inputs(tmp_path / 'in')
    out, args = tmp_path / 'out', [f'--input={tmp_path / "in"}', '--licenses=oa_comm', *QUICK]
    assert prepare_pmc(*args, f'--out_dir={out}') == 0
    caches = {p: p.stat().st_mtime_ns for p in (out / 'cache' / 'parsed').iterdir()}
    assert prepare_pmc(*args, f'--out_dir={out}', '--tables=True') == 0
    assert {p: p.stat().st_mtime_ns for p in (out / 'cache' / 'parsed').iterdir()} == caches
    kept = expected_documents(rows, sorted((tmp_path / 'in' / 'loose').iterdir()))
    assert {split: documents(out, split) for split in ('train', 'val')} == split_documents(kept, KINDS)
    assert load_meta_of(out)['sections']['in_text'] == list(KINDS)
    assert prepare_pmc(*args, f'--out_dir={out}', '--article_types=editorial', '--years=2013-') == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        'error: no documents to keep: of the 22 articles, 2 older versions, 1 retracted, 1 without body text, 1 by '
        '--licenses, 6 dropped by the subset (year), 11 dropped by the subset (article_type); nothing written')
    (tmp_path / 'exclude.txt').write_text(f'{rows[7][2]}\n')  # pone.0046493's PMID
    assert prepare_pmc(*args, f'--out_dir={out}', f'--exclude_pmids={tmp_path / "exclude.txt"}',
                       '--journals=eLife;PLOS ONE') == 0
    meta = load_meta_of(out)
    assert (meta['records']['excluded'], meta['records']['journal']) == (1, 3)  # BMC, PLoS NTD and BJC's by journal
    assert meta['train_docs'] + meta['val_docs'] == 13
    assert meta['subset'] == {'licenses': 'oa_comm', 'journals': 'eLife;PLOS ONE'}
    assert meta['excluded_pmids']['listed'] == meta['excluded_pmids']['excluded'] == 1
    assert {p: p.stat().st_mtime_ns for p in (out / 'cache' / 'parsed').iterdir()} == caches


def corpus_of_packages(folder):
    """Six small packages and a loose folder: enough inputs for a kill to land mid-run."""
    folder.mkdir(parents=True)
    rows = shared_rows()
    for i in range(6):
        bulk_package(folder, f'oa_comm_xml.incr.2024-07-{i + 1:02d}', rows[i * 2:i * 2 + 2])
    (folder / 'loose').mkdir()
    for path in [p for p in shared_articles() if p.parent.name == 'elife'][3:]:
        (folder / 'loose' / path.name).write_bytes(path.read_bytes())


def run_pmc(*args):
    return subprocess.run([sys.executable, PMC_PREPARE, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_kill_9_then_rerun_and_one_or_two_workers_give_identical_bytes(tmp_path):
    corpus_of_packages(tmp_path / 'in')
    args = [f'--input={tmp_path / "in"}', '--vocab_size=300', '--val_fraction=0.5', '--exclude_pmids=']
    r = run_pmc(*args, f'--out_dir={tmp_path / "w1"}', '--workers=1')
    assert r.returncode == 0, r.stderr
    expected = outputs(tmp_path / 'w1')
    assert run_pmc(*args, f'--out_dir={tmp_path / "w2"}', '--workers=2').returncode == 0
    assert outputs(tmp_path / 'w2') == expected
    out = tmp_path / 'out'
    for marker in ('cache/parsed', 'cache/tokens'):  # killed once some inputs are parsed, once some are tokenized
        p = subprocess.Popen([sys.executable, PMC_PREPARE, *args, f'--out_dir={out}', '--workers=2'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and p.poll() is None and not any((out / marker).glob('*.p*')) | any(
            (out / marker).glob('*.npz')):
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        p.wait()
        for name in ('train.bin', 'val.bin', 'meta.pkl'):  # never half-written under the final name
            assert not (out / name).exists() or (out / name).read_bytes() == expected[name]
    r = run_pmc(*args, f'--out_dir={out}', '--workers=2')
    assert r.returncode == 0, r.stderr
    assert outputs(out) == expected


def test_a_full_disk_is_one_line_keeps_what_was_done_and_the_rerun_gives_the_same_bytes(tmp_path, tmpfs, capsys):
    """The disk fills while the articles' caches are written: one line saying where and what to do, exit 1, no temp
    file left; once there is room the same command finishes with the bytes of a run that was never stopped."""
    corpus_of_packages(tmp_path / 'in')
    args = [f'--input={tmp_path / "in"}', *QUICK]
    out = tmpfs(tmp_path / 'disk', size='4m') / 'out'
    out.mkdir()
    filler = fill_disk(out.parent, leave=60_000)
    assert prepare_pmc(*args, f'--out_dir={out}') == 1
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and errors[0].startswith(f'error: {out}/') and 'the disk is full' in errors[0], errors
    assert not list(out.rglob('*.tmp')) and not (out / 'train.bin').exists()
    filler.unlink()
    assert prepare_pmc(*args, f'--out_dir={out}') == 0
    assert prepare_pmc(*args, f'--out_dir={tmp_path / "uninterrupted"}') == 0
    assert outputs(out) == outputs(tmp_path / 'uninterrupted')


def test_an_articles_abstract_and_its_full_text_land_in_the_same_split(tmp_path, capsys):
    """The shared articles with a PMID (8, and 2 eLife ones the File List gives one) as full text here, and as PubMed
    abstracts written for the same PMIDs through data/pubmed/prepare.py: each PMID is in one split in both folders."""
    from data.pubmed import prepare as pubmed
    rows = shared_rows()
    bulk_package(tmp_path, BASELINE, rows)
    pmids = [int(r[2]) for r in rows if r[2]]
    assert len(pmids) == 10
    citations = ''.join(
        f'<PubmedArticle><MedlineCitation><PMID>{p}</PMID><Article><ArticleTitle>Title {p}.</ArticleTitle><Abstract>'
        f'<AbstractText>Abstract {p}.</AbstractText></Abstract><Language>eng</Language></Article></MedlineCitation>'
        '</PubmedArticle>' for p in pmids)
    (tmp_path / 'abstracts').mkdir()
    (tmp_path / 'abstracts' / 'pubmed99n0001.xml').write_text(f'<PubmedArticleSet>{citations}</PubmedArticleSet>')
    splits = {}
    runs = (('pmc', lambda argv: prepare_pmc(*argv), tmp_path / f'{BASELINE}.tar.gz'), ('pubmed', pubmed.main,
                                                                                        tmp_path / 'abstracts'))
    for name, main, source in runs:
        code = main(
            [f'--input={source}', f'--out_dir={tmp_path / name}', *QUICK, f'--export_jsonl={tmp_path / name}.jsonl'])
        assert code == 0, capsys.readouterr().err
        splits[name] = {d['pmid']: d['split'] for d in map(json.loads, open(f'{tmp_path / name}.jsonl')) if d['pmid']}
    assert splits['pmc'] == splits['pubmed'] and set(splits['pmc']) == set(pmids)
    assert set(splits['pmc'].values()) == {'train', 'val'}


def test_a_cut_package_keeps_what_came_before_the_cut_and_is_reported_in_one_line(tmp_path, capsys):
    rows = shared_rows()
    (tmp_path / 'whole').mkdir()
    (tmp_path / 'in').mkdir()
    whole = bulk_package(tmp_path / 'whole', BASELINE, rows)
    cut = bulk_package(tmp_path / 'in', BASELINE, rows, cut=len(whole.read_bytes()) * 6 // 10)
    bulk_package(tmp_path / 'in', UPDATE, rows[:1])  # a whole one beside it, with a File List that is not one
    (tmp_path / 'in' / f'{UPDATE}.filelist.csv').write_text('not,a,file,list\n')
    before = len(list(iter_package(whole))) - 1
    kept = []
    with pytest.raises(BadPackage):
        for name, _ in iter_package(cut):
            kept.append(name)
    for allow, code in ((False, 1), (True, 0)):
        out = tmp_path / f'out{allow}'
        assert prepare_pmc(f'--input={tmp_path / "in"}', f'--out_dir={out}', *QUICK, f'--allow_bad_files={allow}',
                           f'--export_jsonl={out}.jsonl') == code
        err = capsys.readouterr().err
        errors = [line for line in re.split(r'[\r\n]', err) if line.startswith('error:')]
        assert errors == [
            f'error: {cut}: read in part, its {len(kept)} record(s) before the damage kept: truncated or corrupt after '
            f'{len(kept)} article(s), the last {kept[-1]}: EOFError: Compressed file ended before the end-of-stream '
            'marker was reached',
            f"error: {tmp_path / 'in' / UPDATE}.filelist.csv: not a File List NCBI writes, its package read by its XML "
            "alone: not a PMC File List: its header is 'not,a,file,list' (missing Article File, Article Citation, "
            'AccessionID, LastUpdated (YYYY-MM-DD HH:MM:SS), PMID, License, Retracted)'
        ]
        members = [(d['source'], d['member']) for d in map(json.loads, open(f'{out}.jsonl'))]
        assert members == [(f'{BASELINE}.tar.gz', m) for m in kept]
        meta = load_meta_of(out)
        assert [b['name'] for b in meta['bad_files']] == [f'{BASELINE}.tar.gz', f'{UPDATE}.filelist.csv']
        assert meta['records']['replaced'] == 1  # the update's copy, undated without its File List: older
    assert 0 < len(kept) < before


def load_meta_of(out):
    from dataloader import load_meta
    return load_meta(out)


@pytest.mark.parametrize('args, message', [
    (['--licenses=CC BY,CC-BY-NC'], "--licenses=CC BY,CC-BY-NC: unknown license 'CC-BY-NC' (did you mean 'CC BY-NC'"),
    (['--groups=oa_all'], "--groups=oa_all: unknown group 'oa_all': expected some of oa_comm, oa_noncomm, oa_other"),
    (['--input='], 'no --input and no --base_url: NCBI retired its bulk layout in 2026'),
    (['--years=2020-2000'], '--years=2020-2000: the first year is after the last'),
    (['--article_types=review-article', '--drop_article_types=Review-Article'
      ], '--article_types and --drop_article_types both name review-article'),
])
def test_bad_options_are_one_line_before_any_work(tmp_path, capsys, args, message):
    assert prepare_pmc(f'--input={need(PMC_XML)}', f'--out_dir={tmp_path / "out"}', *args) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ') and message in err, err
    assert not (tmp_path / 'out').exists()


def test_downloads_of_the_layout_prepare_what_the_same_local_packages_do_and_fail_fast_offline(
        tmp_path, capsys, monkeypatch):
    pmc_inputs(tmp_path / 'in')
    packages = sorted((tmp_path / 'in').glob('*.tar.gz')) + sorted((tmp_path / 'in').glob('*.filelist.csv'))
    local = tmp_path / 'local'
    (local / 'in').mkdir(parents=True)
    for p in packages:
        (local / 'in' / p.name).write_bytes(p.read_bytes())
    args = ['--licenses=oa_comm', *QUICK]
    assert prepare_pmc(f'--input={local / "in"}', f'--out_dir={local / "out"}', *args) == 0
    folder = '/mirror/oa_bulk/oa_comm/xml'
    with Server({f'{folder}/{p.name}': p.read_bytes() for p in packages}) as s:
        for updates, out in ((False, tmp_path / 'baseline'), (True, tmp_path / 'out'), (True, tmp_path / 'out')):
            assert prepare_pmc(f'--base_url={s.url}/mirror/', f'--out_dir={out}', f'--updates={updates}', *args,
                               '--retries=1', '--backoff=0.01') == 0, capsys.readouterr().err
        fetched = [p for p, _ in s.log if p.endswith(('.tar.gz', '.csv'))]
    assert sorted(fetched) == sorted([f'{folder}/{BASELINE}.tar.gz', f'{folder}/{BASELINE}.filelist.csv'] * 2 +
                                     [f'{folder}/{UPDATE}.tar.gz', f'{folder}/{UPDATE}.filelist.csv'])  # never twice
    downloaded, read_locally = outputs(tmp_path / 'out'), outputs(local / 'out')
    assert [downloaded[k] for k in ('train.bin', 'val.bin')] == [read_locally[k] for k in ('train.bin', 'val.bin')]
    facts = [load_meta_of(folder) for folder in (tmp_path / 'out', local / 'out')]
    assert [f.pop('source')
            for f in facts] == [f'PMC full text (downloaded from {s.url}/mirror/)', 'PMC full text (local files)']
    assert facts[0] == facts[1]  # everything else the same
    assert [f['name'] for f in load_meta_of(tmp_path / 'baseline')['files']] == [f'{BASELINE}.tar.gz']
    out = capsys.readouterr().out
    assert f'{s.url}/mirror/oa_bulk/oa_comm/xml/: 1 packages' in out and 'xml/: 2 packages' in out
    for key in [k for k in os.environ if k.lower().endswith('_proxy')]:
        monkeypatch.delenv(key)  # the lookup itself, not a proxy's answer
    start = time.time()
    assert prepare_pmc('--base_url=http://nonexistent.invalid/pub/pmc/', f'--out_dir={tmp_path / "offline"}') == 1
    err = capsys.readouterr().err
    assert time.time() - start < 15 and err.count('\n') == 1, err
    assert err.startswith('error: cannot list http://nonexistent.invalid/pub/pmc/oa_bulk/oa_comm/xml/: the host name '
                          'nonexistent.invalid does not resolve (gave up after 2 attempts) (NCBI retired its bulk ')
