"""
Tokenizers as plain data. A tokenizer "spec" is a dict of builtins (so it pickles into meta.pkl and
loads from ckpt.pt with torch.load(weights_only=True)), rebuilt into a tiktoken Encoding anywhere,
with no network:

    {'name': 'bpe' | 'gpt2', 'pattern': regex, 'tokens': [bytes of token 0, 1, ...],
     'special_tokens': {'<|endoftext|>': id}}

BPE is trained with rustbpe (fast, parallel, GPT-4-style split pattern) and run with tiktoken.
"""
import os
import shutil

import tiktoken

EOT = '<|endoftext|>'


def use_tiktoken_cache_copy(source, copy):
    """Point tiktoken (TIKTOKEN_CACHE_DIR, for this process and its children) at `copy`, made once from
    `source`, a folder of its downloaded files (e.g. ../shared/tiktoken-cache), unless TIKTOKEN_CACHE_DIR
    is already set or source is missing. A copy, because tiktoken deletes cache files it distrusts."""
    if os.environ.get('TIKTOKEN_CACHE_DIR') or not os.path.isdir(source):
        return
    if not os.path.isdir(copy):
        shutil.copytree(source, copy)
    os.environ['TIKTOKEN_CACHE_DIR'] = str(copy)


def train_bpe(texts, vocab_size):
    """Train a byte-level BPE of `vocab_size` tokens (the last one is <|endoftext|>) on an iterable of str."""
    import rustbpe
    if vocab_size < 257 + 1:
        raise ValueError(f'vocab_size={vocab_size} is too small: a byte-level BPE needs at least 258 tokens')
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(texts), vocab_size - 1)
    ranks = sorted(tok.get_mergeable_ranks(), key=lambda pair: pair[1])
    return {'name': 'bpe', 'pattern': tok.get_pattern(), 'tokens': [b for b, _ in ranks],
            'special_tokens': {EOT: len(ranks)}}


def gpt2_spec():
    """tiktoken's GPT-2 encoding as a spec (needs tiktoken's cache or network once)."""
    enc = tiktoken.get_encoding('gpt2')
    ranks = enc._mergeable_ranks
    tokens = sorted(ranks, key=ranks.get)
    return {'name': 'gpt2', 'pattern': enc._pat_str, 'tokens': tokens, 'special_tokens': {EOT: enc.eot_token}}


def encoding_from_spec(spec):
    return tiktoken.Encoding(name=f"pubmed-{spec['name']}", pat_str=spec['pattern'],
                             mergeable_ranks={b: i for i, b in enumerate(spec['tokens'])},
                             special_tokens=dict(spec['special_tokens']))


def vocab_size_of(spec):
    return len(spec['tokens']) + len(spec['special_tokens'])


def token_byte_lengths(spec):
    """UTF-8 byte length of every token id; special tokens count 0 bytes (they are not text)."""
    return [len(b) for b in spec['tokens']] + [0] * len(spec['special_tokens'])
