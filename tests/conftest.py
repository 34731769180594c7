import errno
import os
import random
import re
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent  # on sys.path, with bench/ (pytest.ini)
# ../shared beside the checkout (CI) or wherever PUBMED_SHARED points
SHARED = Path(os.environ.get('PUBMED_SHARED', REPO.parent / 'shared'))
PUBMED_XML = SHARED / 'data' / 'pubmed-xml'
PUBMED_CORPUS = SHARED / 'data' / 'pubmed-corpus'
FIXTURES = REPO / 'tests' / 'fixtures'
PREPARE = str(REPO / 'data' / 'pubmed' / 'prepare.py')


def run_ok(*args, timeout=600):
    """A script of the repo (train.py, export_hf.py, sample.py...) in its own process on one thread, as a user runs
    it; asserts it exits 0 (its stderr's end otherwise)."""
    r = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def run_prepare(*args, timeout=300):
    """data/pubmed/prepare.py in its own process, as a user runs it."""
    return subprocess.run([sys.executable, PREPARE, *args], capture_output=True, text=True, timeout=timeout)


def pytest_configure(config):
    from tokenizer import use_tiktoken_cache_copy
    use_tiktoken_cache_copy(SHARED / 'tiktoken-cache',
                            Path(config.rootpath) / '.pytest_cache' / 'tiktoken')  # offline GPT-2
    os.environ.setdefault('WANDB_MODE', 'offline')


@pytest.fixture(scope='module')
def one_thread():
    """Tiny models run fastest on one thread: more only fight over a busy machine's cores."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def gpt2():
    """tiktoken's GPT-2 spec; skips, saying why, when its files are neither in the cache nor downloadable
    (a fresh clone without ../shared and without network)."""
    from tokenizer import gpt2_spec
    try:
        return gpt2_spec()
    except Exception as e:
        pytest.skip(f"tiktoken's GPT-2 files are not at hand ({type(e).__name__}): put ../shared beside the checkout, "
                    'set PUBMED_SHARED, or TIKTOKEN_CACHE_DIR to a folder holding them')


@pytest.fixture
def tmpfs():
    """mount(folder, size, read_only): a small tmpfs at `folder`, a real filesystem to fill up (fill_disk) or that
    cannot be written, unmounted after the test. Mounting needs root (CI runs as root); skips, saying why, where
    it is refused."""
    mounted = []

    def mount(folder, size='1m', read_only=False):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            r = subprocess.run(
                ['mount', '-t', 'tmpfs', '-o', f'size={size}' + (',ro' if read_only else ''), 'tmpfs',
                 str(folder)], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            r = subprocess.CompletedProcess([], 1, '', str(e))
        if r.returncode:
            pytest.skip(f'cannot mount a tmpfs (needs root): {r.stderr.strip()}')
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(['umount', '-l', str(folder)], capture_output=True, timeout=30)


def fill_disk(folder, leave=0):
    """Fill the filesystem of `folder` with one file, `folder/filler` (removing it frees the disk), to the last byte
    or but for about `leave` bytes."""
    fd = os.open(folder / 'filler', os.O_WRONLY | os.O_CREAT)
    try:
        for block in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b'x' * block)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return folder / 'filler'


def error_lines(stderr):
    """The `error:` lines of a command's stderr, progress bars (carriage returns) apart."""
    return [line for line in re.split(r'[\r\n]', stderr) if line.startswith('error:')]


def need(path):
    """Skip (with the reason) when a piece of ../shared is not there."""
    if not Path(path).exists():
        pytest.skip(f'{path} not present')
    return Path(path)


def abstracts(n):
    """The first n abstracts of the shared corpus, as plain text (skips without ../shared)."""
    import gzip
    import html
    import re
    xml = gzip.open(need(PUBMED_CORPUS / 'pubmedcorpus-0001.xml.gz'), 'rt', encoding='utf-8').read()
    found = re.findall(r'<AbstractText[^>]*>(.*?)</AbstractText>', xml, re.S)
    return [html.unescape(re.sub(r'<[^>]+>', '', a)) for a in found[:n]]


def fuzzed(n, seed=0):
    """Strings a tokenizer can get wrong: scripts, digits, spaces before digits, newlines, combining marks
    (NFC composes them), emoji, punctuation runs."""
    rng = random.Random(seed)
    pool = (list('abcXYZ019 ') + [
        ' 12', '  7', '\n', '\r\n', '\t', 'é', 'e\u0301', 'ü', 'ß', 'ﬁ', 'α', 'Ω', 'д', '中文', 'العربية', '١٢٣', '²',
        '😀', '👩\u200d🔬', '...', '--', "'s", "'LL", '?!', '(%)', '\u00a0', '\u2009'
    ])
    return [''.join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(n)]


# A tiny trained model and its checkpoint, shared by the generation, sample.py and HF tests.
TINY_TEXT = ('Metformin lowers blood glucose in patients with type 2 diabetes. '
             'The protein kinase phosphorylates the receptor in vitro. '
             'Aspirin reduces the risk of myocardial infarction in older adults. ') * 20


def tiny_spec():
    from tokenizer import train_bpe
    return train_bpe([TINY_TEXT], 300)


@pytest.fixture(scope='session')
def spec():
    """The BPE of TINY_TEXT, trained once for the whole session."""
    return tiny_spec()


def fixed_steps(model, batches, steps, lr, optimizers=None, **optimizer):
    """`steps` of train.py's own train_step on the CPU in fp32, cycling through the (x, y) batches, with
    the model's optimizers (AdamW, or optimizer='muon') unless given; the loss of each step."""
    from contextlib import nullcontext

    import torch

    from train import train_step
    optimizers = optimizers or model.configure_optimizers(0.0, lr, (0.9, 0.95), 'cpu', **optimizer)
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    return [
        train_step(model, optimizers, scaler, [batches[i % len(batches)]], nullcontext()).item() for i in range(steps)
    ]


def tiny_model(spec, steps=100, **model_args):
    """A 2-layer model trained `steps` steps on TINY_TEXT: its logits are far apart, so greedy choices
    are not decided by float noise."""
    import torch
    from model import GPT, GPTConfig
    from tokenizer import encoding_from_spec, vocab_size_of
    torch.manual_seed(0)
    args = {**dict(block_size=32, vocab_size=vocab_size_of(spec), n_layer=2, n_head=2, n_embd=32), **model_args}
    model = GPT(GPTConfig(**args))
    data = torch.tensor(encoding_from_spec(spec).encode_ordinary(TINY_TEXT))
    starts = [torch.randint(len(data) - args['block_size'] - 1, (8, )) for _ in range(steps)]
    batches = [(torch.stack([data[j:j + args['block_size']]
                             for j in i]), torch.stack([data[j + 1:j + 1 + args['block_size']] for j in i]))
               for i in starts]
    fixed_steps(model, batches, steps, lr=1e-2, optimizers=[torch.optim.AdamW(model.parameters(), lr=1e-2)])
    return model.eval(), args


def write_tiny_checkpoint(path, spec, **model_args):
    from checkpoint import make_checkpoint, save_checkpoint
    from tokenizer import token_byte_lengths
    model, _ = tiny_model(spec, **model_args)
    save_checkpoint(make_checkpoint(model, spec, token_byte_lengths(spec)), path)
    return model


WORDS = ('patients treated with the drug showed reduced tumour growth in mice while control groups did not '
         'respond to therapy and blood pressure increased after surgery in children with chronic disease').split()


def make_dataset(path, vocab_size=320, n_docs=240, seed=0, spec=None):
    """A small prepared data folder per the data contract (train.bin, val.bin, meta.pkl) from seeded
    synthetic 'abstracts' with a learnable structure, tokenized by `spec` or else a BPE trained on them."""
    import random

    import numpy as np

    from dataloader import token_dtype, write_meta
    from tokenizer import encoding_from_spec, eot_id, train_bpe, vocab_size_of
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        start = rng.randrange(len(WORDS))
        sentences = [
            ' '.join(WORDS[(start + k + j) % len(WORDS)] for j in range(rng.randint(4, 9))).capitalize() + '.'
            for k in range(rng.randint(2, 5))
        ]
        docs.append(' '.join(sentences))
    spec = spec or train_bpe(docs, vocab_size)
    enc = encoding_from_spec(spec)
    eot = eot_id(spec)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    split = {'train': docs[:n_docs * 9 // 10], 'val': docs[n_docs * 9 // 10:]}
    sizes = {}
    for name, part in split.items():
        ids = [t for d in part for t in enc.encode_ordinary(d) + [eot]]
        np.array(ids, dtype=token_dtype(vocab_size_of(spec))).tofile(path / f'{name}.bin')
        sizes.update(
            {f'{name}_tokens': len(ids), f'{name}_docs': len(part), f'{name}_bytes': len(''.join(part).encode())})
    write_meta(path, spec, **sizes)
    return path


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='session')
def smollm2():
    """The shared SmolLM2-135M-Instruct as a float32 Hugging Face folder (converted from its GGUF once, cached
    outside git: hf_folders.smollm2_folder); skips, saying why, without ../shared or the gguf package."""
    pytest.importorskip('gguf',
                        reason='the gguf package reads the shared SmolLM2 file: pip install -r requirements-dev.txt')
    from hf_folders import smollm2_folder
    folder = smollm2_folder(SHARED)
    if folder is None:
        pytest.skip(f'{SHARED}/models/smollm2-135m-instruct (the real SmolLM2 weights) not present')
    return folder


class LocalServer:
    """A download test's HTTP server on 127.0.0.1 (a free port), serving from a thread inside `with`: a subclass
    sets self.log ([(path, Range header)]) and calls serve(its request handler class)."""

    def serve(self, handler):
        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'

    def requests(self, path):
        return [rng for p, rng in self.log if p == path]

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope='module')
def offline():
    """Hugging Face libraries kept off the network (as on a machine without one): the hub's data is not fetched."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv('HF_DATASETS_OFFLINE', '1')
        env.setenv('HF_HUB_OFFLINE', '1')
        yield
