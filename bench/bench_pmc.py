"""
Benchmark of PMC full-text parsing (data/pmc/jats.py); every figure is one JSON line on stdout.

    python bench/bench_pmc.py                  # about 30 s on 2 cores
    python bench/bench_pmc.py --repeats=50 --rounds=3

articles/s and MB/s (bytes of XML read) of read_article on the articles of ../shared/data/pmc-xml, against PyPI
pubmed-parser's own PMC parser (parse_pubmed_xml + parse_pubmed_paragraph(all_paragraph=True): its metadata and every
body paragraph) on the same files, side by side in one run, and the peak RSS of each. Each side runs in a process of
its own (this script with --side=ours or --side=pubmed_parser) so that neither's memory counts for the other; the sides
alternate for --rounds rounds and the fastest round of each is reported (a shared machine only ever slows a round down).
Both read the files from the page cache after one warm-up pass. The two do not produce the same text: pubmed_parser
keeps citation markers and reference-list-free paragraphs without section titles, tables or formulas as text.
"""
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from configurator import Option, at_least, configure, one_of  # noqa: E402
from run import figure  # noqa: E402

OPTIONS = {
    'shared': str(REPO.parent / 'shared'),  # the read-only samples
    'repeats': Option(20, at_least(1)),  # passes over the articles per round
    'rounds': Option(2, at_least(1)),  # rounds per side, alternating; the fastest counts
    'side': Option('', one_of('', 'ours', 'pubmed_parser')),  # internal: run one side in this process
}


def articles(shared):
    folder = Path(shared) / 'data' / 'pmc-xml'
    paths = sorted(folder.glob('pmc/*.nxml')) + sorted(folder.glob('elife/*.xml'))
    if not paths:
        sys.exit(f'error: no articles in {folder} (--shared=the folder that holds data/pmc-xml)')
    return [str(p) for p in paths]


def parser_of(side):
    """One article path -> something made of its whole text, by one side."""
    if side == 'ours':
        from data.pmc.jats import read_article
        return lambda path: read_article(path)['text']
    import pubmed_parser
    return lambda path: (pubmed_parser.parse_pubmed_xml(path),
                         pubmed_parser.parse_pubmed_paragraph(path, all_paragraph=True))


def run_side(o):
    """This process times one side and prints its numbers as one JSON line."""
    paths = articles(o['shared'])
    parse = parser_of(o['side'])
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for path in paths:  # warm-up: imports, page cache
        parse(path)
    t0 = time.perf_counter()
    for _ in range(o['repeats']):
        for path in paths:
            parse(path)
    seconds = time.perf_counter() - t0
    print(
        json.dumps({
            'seconds': seconds, 'articles': o['repeats'] * len(paths),
            'bytes': o['repeats'] * sum(Path(p).stat().st_size for p in paths),
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'rss_after_imports_mb': rss_loaded
        }))


def measure(o, side):
    out = subprocess.run(
        [sys.executable, __file__, f'--side={side}', f"--shared={o['shared']}", f"--repeats={o['repeats']}"],
        capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def emit(name, value, unit, baseline):
    figure(name, round(value, 4), unit, baseline=round(baseline, 4), ratio=round(value / baseline, 4))


def main(argv=None):
    o = configure(OPTIONS, argv)
    if o['side']:
        return run_side(o)
    runs = {'ours': [], 'pubmed_parser': []}
    for _ in range(o['rounds']):
        for side in runs:
            runs[side].append(measure(o, side))
    best = {side: min(r, key=lambda x: x['seconds']) for side, r in runs.items()}
    ours, theirs = best['ours'], best['pubmed_parser']
    emit('pmc_parse_articles_per_s', ours['articles'] / ours['seconds'], 'articles/s',
         theirs['articles'] / theirs['seconds'])
    emit('pmc_parse_mb_per_s', ours['bytes'] / 1e6 / ours['seconds'], 'MB/s', theirs['bytes'] / 1e6 / theirs['seconds'])
    emit('pmc_parse_peak_rss_mb', max(r['peak_rss_mb'] for r in runs['ours']), 'MB',
         max(r['peak_rss_mb'] for r in runs['pubmed_parser']))
    emit('pmc_parse_rss_after_imports_mb', ours['rss_after_imports_mb'], 'MB', theirs['rss_after_imports_mb'])
    figure('pmc_parse_input', len(articles(o['shared'])), 'articles',
           mb=round(sum(Path(p).stat().st_size for p in articles(o['shared'])) / 1e6, 4), repeats=o['repeats'])


if __name__ == '__main__':
    main()
