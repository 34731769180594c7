"""
Benchmarks of the data pipeline (data/pubmed/prepare.py); every figure is one JSON line on stdout.

    python bench/bench_prepare.py                       # a few minutes on 2 cores
    python bench/bench_prepare.py --parse_mb=200 --rss_factor=4

- parse: records/s and MB/s (uncompressed XML) on one core, ours vs PyPI pubmed-parser's
  parse_medline_xml on the same .xml.gz bytes: the real PubmedArticle records of ../shared/data/pubmed-xml
  (pubmed-parser cannot read the minimal records of pubmed-corpus) repeated to --parse_mb.
- tokenizer: BPE training time, tokens/s with 1 and --workers processes, bytes per token of the trained
  BPE vs GPT-2 on the val split of ../shared/data/pubmed-corpus.
- memory: peak RSS of a whole prepare.py run (all its processes) on pubmed-corpus and on a copy
  --rss_factor times as large (each copy with new PMIDs).
"""
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from configurator import configure
from data.pubmed import prepare
from data.pubmed.parse import parse_file
from run import figure
from tokenizer import encoding_from_spec, gpt2_spec, use_tiktoken_cache_copy

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'shared': str(REPO.parent / 'shared'),  # the read-only samples and corpus
    'parse_mb': 40,          # uncompressed MB of XML for the parse benchmark
    'vocab_size': 32768,     # the BPE measured against GPT-2
    'workers': os.cpu_count() or 1,  # prepare.py's processes
    'rss_factor': 8,         # the larger input of the memory benchmark, in copies of pubmed-corpus
    'rss_vocab_size': 8192,  # the BPE size of the peak-memory runs
}
# yapf: enable


def emit(name, value, unit, baseline=None):
    """A figure rounded to 4 places, with its ratio to baseline when there is one."""
    compared = {} if baseline is None else {'baseline': round(baseline, 4), 'ratio': round(value / baseline, 4)}
    figure(name, round(value, 4), unit, **compared)


# ------------------------------------------------------------------------------------------------


def pubmed_articles(folder):
    """The serialized <PubmedArticle> elements of every readable PubmedArticleSet sample."""
    articles = []
    for path in sorted(folder.rglob('*.xml*')):
        try:
            parse_file(path)
            data = gzip.open(path).read() if path.suffix == '.gz' else path.read_bytes()
        except Exception:
            continue  # the truncated sample
        articles += re.findall(rb'<PubmedArticle>.*?</PubmedArticle>', data, flags=re.S)
    return articles


def bench_parse(o, tmp):
    import pubmed_parser
    articles = pubmed_articles(Path(o['shared']) / 'data' / 'pubmed-xml')
    body, size = [], 0
    while size < o['parse_mb'] * 1e6:
        for a in articles:
            body.append(a)
            size += len(a)
    xml = b'<?xml version="1.0" encoding="utf-8"?>\n<PubmedArticleSet>\n' + b'\n'.join(
        body) + b'\n</PubmedArticleSet>\n'
    path = tmp / 'parse.xml.gz'
    path.write_bytes(gzip.compress(xml, compresslevel=1))
    mb, n = len(xml) / 1e6, len(body)

    def timed(fn):
        t0 = time.perf_counter()
        count = fn()
        return time.perf_counter() - t0, count

    ours_s, ours_n = timed(lambda: len(parse_file(path, with_meta=True)[0]))
    lean_s, _ = timed(lambda: len(parse_file(path)[0]))
    theirs_s, theirs_n = timed(lambda: sum(1 for _ in pubmed_parser.parse_medline_xml(str(path))))
    assert ours_n == theirs_n == n, (ours_n, theirs_n, n)
    emit('parse_records_per_s', n / ours_s, 'records/s', n / theirs_s)
    emit('parse_mb_per_s', mb / ours_s, 'MB/s', mb / theirs_s)
    emit('parse_text_only_mb_per_s', mb / lean_s, 'MB/s', mb / theirs_s)
    emit('parse_input_mb', mb, 'MB')


def bench_tokenizer(o, tmp):
    corpus = Path(o['shared']) / 'data' / 'pubmed-corpus'
    opts = prepare.parse_options([
        f'--input={corpus}', f'--out_dir={tmp / "tok"}', f'--vocab_size={o["vocab_size"]}', f'--workers={o["workers"]}'
    ])
    parsed, _ = prepare.parse_files(prepare.gather_sources(opts)[0], opts)
    plans, _ = prepare.merge(parsed, opts)
    t0 = time.perf_counter()
    spec = prepare.train_tokenizer(parsed, plans, opts, prepare.document)
    emit('bpe_train_s', time.perf_counter() - t0, 's')
    for workers in sorted({1, o['workers']}):
        shutil.rmtree(tmp / 'tok' / 'cache' / 'tokens', ignore_errors=True)
        t0 = time.perf_counter()
        _, totals = prepare.tokenize_all(parsed, plans, spec, dict(opts, workers=workers), prepare.document)
        emit(f'tokenize_tokens_per_s_{workers}_workers', (totals['train'] + totals['val']) / (time.perf_counter() - t0),
             'tokens/s')
    val = [
        prepare.document(r) for p, plan in zip(parsed, plans)
        for r, split in zip(prepare.iter_records(p['cache']), plan) if split == prepare.VAL
    ]
    nbytes = sum(len(t.encode()) for t in val)
    ours, gpt2 = (sum(len(t) for t in encoding_from_spec(s).encode_ordinary_batch(val)) for s in (spec, gpt2_spec()))
    emit(f'val_bytes_per_token_bpe{o["vocab_size"]}', nbytes / ours, 'bytes/token', nbytes / gpt2)
    emit(f'val_tokens_bpe{o["vocab_size"]}_vs_gpt2', ours / gpt2, 'fraction', None)


# ------------------------------------------------------------------------------------------------


def replicate(corpus, folder, copies):
    """`copies` copies of the corpus; copy k > 0 gets fresh PMIDs just above the corpus's largest."""
    folder.mkdir()
    for k in range(copies):
        counter = iter(range(31_000_000 + k * 25_000, 31_000_000 + (k + 1) * 25_000))
        for path in sorted(corpus.glob('*.xml.gz')):
            if k == 0:
                os.symlink(path, folder / path.name)
                continue
            data = re.sub(rb'(<PMID Version="\d+">)\d+(</PMID>)', lambda m: m[1] + str(next(counter)).encode() + m[2],
                          gzip.open(path).read())
            (folder / f'{path.name[:-7]}-copy{k}.xml.gz').write_bytes(gzip.compress(data, compresslevel=1))


def peak_rss_mb(args):
    """Run prepare.py; the peak of the summed RSS of it and its worker processes, sampled every 20 ms."""
    import psutil
    proc = subprocess.Popen([sys.executable, str(REPO / 'data' / 'pubmed' / 'prepare.py'), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, p = 0, psutil.Process(proc.pid)
    t0 = time.perf_counter()
    while proc.poll() is None:
        try:
            peak = max(peak, sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.02)
    assert proc.returncode == 0, f'prepare.py {args} failed'
    return peak / 2**20, time.perf_counter() - t0


def bench_rss(o, tmp):
    corpus = Path(o['shared']) / 'data' / 'pubmed-corpus'
    results = {}
    for copies in (1, o['rss_factor']):
        replicate(corpus, tmp / f'x{copies}', copies)
        results[copies] = peak_rss_mb([
            f'--input={tmp / f"x{copies}"}', f'--out_dir={tmp / f"out{copies}"}', f'--workers={o["workers"]}',
            f'--vocab_size={o["rss_vocab_size"]}'
        ])
    (rss1, s1), (rssn, sn) = results[1], results[o['rss_factor']]
    emit('prepare_seconds_1x', s1, 's')
    emit(f'prepare_seconds_{o["rss_factor"]}x', sn, 's', s1)
    emit('prepare_peak_rss_1x', rss1, 'MB')
    emit(f'prepare_peak_rss_{o["rss_factor"]}x', rssn, 'MB', rss1)


def main(argv=None):
    o = configure(OPTIONS, argv)
    use_tiktoken_cache_copy(Path(o['shared']) / 'tiktoken-cache', REPO / '.pytest_cache' / 'tiktoken')
    with tempfile.TemporaryDirectory() as tmp:
        bench_parse(o, Path(tmp))
        bench_tokenizer(o, Path(tmp))
        bench_rss(o, Path(tmp))


if __name__ == '__main__':
    main()
