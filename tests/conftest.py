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
