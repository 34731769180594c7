import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# ../shared beside the checkout (CI) or wherever PUBMED_SHARED points
SHARED = Path(os.environ.get('PUBMED_SHARED', REPO.parent / 'shared'))
PUBMED_XML = SHARED / 'data' / 'pubmed-xml'
PUBMED_CORPUS = SHARED / 'data' / 'pubmed-corpus'
FIXTURES = REPO / 'tests' / 'fixtures'


def pytest_configure(config):
    # tiktoken must find GPT-2's files offline: use a private copy of the shared cache
    # (tiktoken deletes cache files whose hash mismatches, so never point it at shared/ itself)
    if not os.environ.get('TIKTOKEN_CACHE_DIR') and (SHARED / 'tiktoken-cache').is_dir():
        cache = Path(config.rootpath) / '.pytest_cache' / 'tiktoken'
        if not cache.is_dir():
            shutil.copytree(SHARED / 'tiktoken-cache', cache)
        os.environ['TIKTOKEN_CACHE_DIR'] = str(cache)
    os.environ.setdefault('WANDB_MODE', 'offline')


def need(path):
    """Skip (with the reason) when a piece of ../shared is not there."""
    if not Path(path).exists():
        pytest.skip(f'{path} not present')
    return Path(path)


WORDS = ('patients treated with the drug showed reduced tumour growth in mice while control groups did not '
         'respond to therapy and blood pressure increased after surgery in children with chronic disease').split()


def make_dataset(path, vocab_size=320, n_docs=240, seed=0):
    """A small prepared data folder per the data contract (train.bin, val.bin, meta.pkl) from seeded
    synthetic 'abstracts' with a learnable structure, tokenized by a BPE trained on them."""
    import pickle
    import random

    import numpy as np

    from tokenizer import EOT, encoding_from_spec, token_byte_lengths, train_bpe, vocab_size_of
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        start = rng.randrange(len(WORDS))
        sentences = [' '.join(WORDS[(start + k + j) % len(WORDS)] for j in range(rng.randint(4, 9))).capitalize() + '.'
                     for k in range(rng.randint(2, 5))]
        docs.append(' '.join(sentences))
    spec = train_bpe(docs, vocab_size)
    enc = encoding_from_spec(spec)
    eot = spec['special_tokens'][EOT]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    split = {'train': docs[: n_docs * 9 // 10], 'val': docs[n_docs * 9 // 10:]}
    counts = {}
    for name, part in split.items():
        ids = [t for d in part for t in enc.encode_ordinary(d) + [eot]]
        np.array(ids, dtype=np.uint16).tofile(path / f'{name}.bin')
        counts[name] = len(ids)
    meta = {'vocab_size': vocab_size_of(spec), 'dtype': 'uint16', 'tokenizer': spec, 'eot_token': eot,
            'token_bytes': token_byte_lengths(spec), 'train_tokens': counts['train'], 'val_tokens': counts['val'],
            'train_docs': len(split['train']), 'val_docs': len(split['val']), 'files': [], 'settings': {'synthetic': seed}}
    with open(path / 'meta.pkl', 'wb') as f:
        pickle.dump(meta, f)
    return path


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('data'))
