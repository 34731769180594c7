"""
Tokenizers as plain data. A tokenizer "spec" is a dict of builtins (so it pickles into meta.pkl and
loads from ckpt.pt with torch.load(weights_only=True)), rebuilt into a tiktoken Encoding anywhere,
with no network:

    {'name': 'bpe' | 'gpt2' | <a Hugging Face folder's name>, 'pattern': the split regex,
     'tokens': [bytes of token 0, 1, ...]  (None at the ids of special tokens placed among them),
     'special_tokens': {'<|endoftext|>': id, ...},
     'eot': the special token that ends each document (optional: '<|endoftext|>'),
     'normalizer': 'NFC' (optional: text is NFC-normalised before it is split, as Qwen's tokenizers do),
     'text_tokens': [special tokens that are text (optional: a tokenizer.json's non-special added tokens)]}

A token's id is also its BPE merge rank, as in tiktoken. Byte-level BPE is trained here with rustbpe
(fast, parallel, GPT-4-style split pattern), read from tiktoken's GPT-2 files, or converted from a
Hugging Face tokenizer.json (GPT-2, Llama 3, Qwen, SmolLM2...; spec_from_hf_folder).
"""
import hashlib
import json
import os
import shutil
import unicodedata

import tiktoken

EOT = '<|endoftext|>'
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class TokenizerError(ValueError):
    pass


def use_tiktoken_cache_copy(source, copy):
    """Point tiktoken (TIKTOKEN_CACHE_DIR, for this process and its children) at `copy`, made once from
    `source`, a folder of its downloaded files (e.g. ../shared/tiktoken-cache), unless TIKTOKEN_CACHE_DIR
    is already set or source is missing. A copy, because tiktoken deletes cache files it distrusts."""
    if os.environ.get('TIKTOKEN_CACHE_DIR') or not os.path.isdir(source):
        return
    if not os.path.isdir(copy):  # made aside and renamed: processes starting together (pytest -n) see it whole
        staging = f'{copy}.{os.getpid()}.tmp'
        shutil.copytree(source, staging)
        try:
            os.rename(staging, copy)
        except OSError:  # another process was first
            shutil.rmtree(staging, ignore_errors=True)
    os.environ['TIKTOKEN_CACHE_DIR'] = str(copy)


def train_bpe(texts, vocab_size):
    """Train a byte-level BPE of `vocab_size` tokens (the last one is <|endoftext|>) on an iterable of str."""
    import rustbpe
    if vocab_size < 257 + 1:
        raise ValueError(f'vocab_size={vocab_size} is too small: a byte-level BPE needs at least 258 tokens')
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(texts), vocab_size - 1)
    ranks = sorted(tok.get_mergeable_ranks(), key=lambda pair: pair[1])
    return {
        'name': 'bpe', 'pattern': tok.get_pattern(), 'tokens': [b for b, _ in ranks],
        'special_tokens': {EOT: len(ranks)}
    }


def gpt2_spec():
    """tiktoken's GPT-2 encoding as a spec (needs tiktoken's cache or network once)."""
    enc = tiktoken.get_encoding('gpt2')
    ranks = enc._mergeable_ranks
    tokens = sorted(ranks, key=ranks.get)
    return {'name': 'gpt2', 'pattern': enc._pat_str, 'tokens': tokens, 'special_tokens': {EOT: enc.eot_token}}


class HFEncoding(tiktoken.Encoding):
    """tiktoken with what a Hugging Face tokenizer.json may add: Unicode NFC normalisation first (Qwen's
    normalizer), and added tokens that are text, not control tokens ("special": false), found in the text and
    encoded as their ids, as transformers does."""

    def __init__(self, *, nfc=False, text_tokens=(), **kwargs):
        super().__init__(**kwargs)
        self.nfc, self.text_tokens = nfc, frozenset(text_tokens)

    def encode_ordinary(self, text):
        text = unicodedata.normalize('NFC', text) if self.nfc else text
        if self.text_tokens:  # every other special token is text (a literal <|endoftext|> included)
            return self.encode(text, allowed_special=self.text_tokens, disallowed_special=())
        return super().encode_ordinary(text)

    def encode_ordinary_batch(self, text, *, num_threads=8):
        return [self.encode_ordinary(t) for t in text]


def encoding_from_spec(spec):
    kwargs = dict(name=f"pubmed-{spec['name']}", pat_str=spec['pattern'],
                  mergeable_ranks={b: i
                                   for i, b in enumerate(spec['tokens'])
                                   if b is not None}, special_tokens=dict(spec['special_tokens']))
    if spec.get('normalizer') == 'NFC' or spec.get('text_tokens'):
        return HFEncoding(nfc=spec.get('normalizer') == 'NFC', text_tokens=spec.get('text_tokens', ()), **kwargs)
    return tiktoken.Encoding(**kwargs)


def eot_id(spec):
    """The id that ends each document in train.bin (and stops a sample)."""
    return spec['special_tokens'][spec.get('eot', EOT)]


def vocab_size_of(spec):
    return max(len(spec['tokens']), max(spec['special_tokens'].values(), default=-1) + 1)


def fingerprint(spec):
    """A tokenizer spec in a few words: its name, size and a short hash of its tokens."""
    if not isinstance(spec, dict):
        return 'none stored'
    digest = hashlib.blake2b(
        repr((spec['pattern'], spec['tokens'], sorted(spec['special_tokens'].items()))).encode(),
        digest_size=4).hexdigest()
    return f"{spec['name']}, {vocab_size_of(spec)} tokens, #{digest}"


def token_byte_lengths(spec):
    """UTF-8 byte length of every token id; special tokens count 0 bytes (they are not text)."""
    lengths = [len(b) if b is not None else 0 for b in spec['tokens']]
    return lengths + [0] * (vocab_size_of(spec) - len(lengths))


# ------------------------------------------------------------------------------------------------
# Hugging Face tokenizer.json <-> spec. Byte-level BPE vocabularies are strings of printable stand-ins
# for the 256 byte values (GPT-2's bytes_to_unicode map); merges are pairs of such strings.

GPT2_MODELS = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')  # OpenAI's, by name: they read GPT-2's tokens


def model_tokenizer(model):
    """The spec of the tokenizer a model reads (a Hugging Face folder, or one of GPT2_MODELS): its tokenizer.json's,
    or GPT-2's for OpenAI's GPT-2 (by name, or a folder of one saved without tokenizer files). TokenizerError naming
    what does not convert."""
    return gpt2_spec() if reads_gpt2_tokens(model) else spec_from_hf_folder(model)


def reads_gpt2_tokens(model):
    """Whether a model reads GPT-2's tokens with no tokenizer files of its own: one of GPT2_MODELS, or a GPT-2 of
    OpenAI's vocabulary (50,257) saved with save_pretrained alone. A folder with tokenizer files is judged by them."""
    if model in GPT2_MODELS:
        return True
    if any(os.path.exists(os.path.join(model, name)) for name in ('tokenizer.json', 'vocab.json', 'merges.txt')):
        return False
    try:
        with open(os.path.join(model, 'config.json'), encoding='utf-8') as f:
            config = json.load(f)
    except (OSError, ValueError):
        return False  # the import says what is wrong with it
    return isinstance(config, dict) and config.get('model_type') == 'gpt2' and config.get('vocab_size') == 50257


def same_tokens(spec, other):
    """Whether two specs give the same ids for every text (their names aside)."""
    return {k: v for k, v in spec.items() if k != 'name'} == {k: v for k, v in other.items() if k != 'name'}


def bytes_to_unicode():
    """GPT-2's map from the 256 byte values to printable characters: byte-level BPE vocabularies are strings of
    these."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def split_pattern(pre_tokenizer):
    """The one regex tiktoken splits text with, for the pre-tokenizers byte-level BPE tokenizers use;
    TokenizerError naming any other."""
    steps = pre_tokenizer.get('pretokenizers', [pre_tokenizer]) if pre_tokenizer else []
    kinds = [s['type'] for s in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == 'ByteLevel' else None
    if byte_level is None or byte_level.get('add_prefix_space'):
        raise TokenizerError(f"pre-tokenizer {kinds or None}: not byte-level BPE without a prefix space")
    if kinds == ['ByteLevel'] and byte_level.get('use_regex', True):
        return GPT2_PATTERN  # GPT-2
    if kinds == ['Split', 'ByteLevel'] and not byte_level.get('use_regex', True) \
            and steps[0].get('behavior') == 'Isolated' \
            and not steps[0].get('invert') and 'Regex' in steps[0]['pattern']:
        return steps[0]['pattern']['Regex']  # Llama 3, Qwen
    if kinds == ['Digits', 'ByteLevel'] and steps[0].get('individual_digits') and byte_level.get('use_regex', True):
        # SmolLM2: every digit is a piece of its own, then GPT-2's regex on the rest; a run of spaces before
        # a digit ends where that piece ends, so "not followed by a non-space" must also accept a digit
        return GPT2_PATTERN.replace(r' ?\p{N}+', r'\p{N}').replace(r'\s+(?!\S)', r'\s+(?![^\s\p{N}])')
    raise TokenizerError(f'pre-tokenizer {kinds}: not one this project can run with tiktoken')


def spec_from_hf_folder(folder):
    """The spec of a Hugging Face folder's tokenizer.json (byte-level BPE: GPT-2, Llama 3, Qwen, SmolLM2...),
    with the same ids as transformers' AutoTokenizer; TokenizerError naming what does not convert."""
    path = os.path.join(folder, 'tokenizer.json')
    if not os.path.isfile(path):
        has = lambda name: os.path.isfile(os.path.join(folder, name))
        kind = 'a SentencePiece model (tokenizer.model)' if has('tokenizer.model') else \
            'vocab.json and merges.txt: save it once with transformers to get one' \
            if has('vocab.json') else 'none'
        raise TokenizerError(f'{folder}: no tokenizer.json (found {kind}): only byte-level BPE tokenizers convert')
    try:
        with open(path, encoding='utf-8') as f:
            tj = json.load(f)
        spec = spec_from_tokenizer_json(tj, path)
        config_path = os.path.join(folder, 'tokenizer_config.json')
        config = {}
        if os.path.isfile(config_path):
            with open(config_path, encoding='utf-8') as f:
                config = json.load(f)
        eos = config.get('eos_token')
    except TokenizerError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # truncated or not the tokenizers library's layout
        raise TokenizerError(f'{folder}: its tokenizer files do not read as a byte-level BPE ({type(e).__name__}: {e})')
    eos = eos.get('content') if isinstance(eos, dict) else eos
    if eos not in spec['special_tokens'] or eos in spec.get('text_tokens', ()):
        raise TokenizerError(f'{folder}: no eos_token among its special tokens to end documents with')
    return {'name': os.path.basename(os.path.normpath(folder)), **spec, 'eot': eos}


def spec_from_tokenizer_json(tj, path):
    """The spec (but name and eot) of a loaded tokenizer.json."""
    model = tj.get('model') or {}
    if model.get('type') != 'BPE' or (tj.get('decoder') or {}).get('type') != 'ByteLevel':
        raise TokenizerError(
            f"{path}: a {model.get('type')} model with a {(tj.get('decoder') or {}).get('type')} decoder "
            '(SentencePiece-style): only byte-level BPE tokenizers convert')
    normalizer = tj.get('normalizer')
    if normalizer and normalizer.get('type') != 'NFC':
        raise TokenizerError(f"{path}: normalizer {normalizer.get('type')}: only none or NFC convert")
    pattern = split_pattern(tj.get('pre_tokenizer'))
    char_byte = {c: b for b, c in bytes_to_unicode().items()}
    added = tj.get('added_tokens', [])
    special = {t['content']: t['id'] for t in added}
    # added tokens that are text: transformers finds them in the text first; tiktoken does the same for its specials,
    # but only plainly (not stripping spaces around them, nor only as whole words)
    text_tokens = sorted(t['content'] for t in added if not t.get('special'))
    odd = [
        t['content'] for t in added
        if not t.get('special') and (t.get('lstrip') or t.get('rstrip') or t.get('single_word'))
    ]
    if odd:
        raise TokenizerError(
            f'{path}: the added token {odd[0]!r} strips spaces or matches whole words only: not something '
            'tiktoken can run')
    size = max([*model['vocab'].values(), *special.values()]) + 1
    tokens = [None] * size
    for text, i in model['vocab'].items():
        if text in special:
            continue
        outside = [c for c in text if c not in char_byte]
        if outside:
            raise TokenizerError(
                f'{path}: the vocabulary entry {text!r} has {outside[0]!r}, which is no byte of a byte-level BPE')
        tokens[i] = bytes(char_byte[c] for c in text)
    missing = [i for i, t in enumerate(tokens) if t is None and i not in special.values()]
    if missing:
        raise TokenizerError(f'{path}: ids {missing[:5]} are neither tokens nor added tokens')
    merged = [''.join(m.split(' ', 1) if isinstance(m, str) else m) for m in model.get('merges', [])]
    merge_ids = [model['vocab'][m] for m in merged]
    if merge_ids != sorted(merge_ids):
        raise TokenizerError(f'{path}: its merges are not in the order of their ids, which tiktoken needs')
    spec = {'pattern': pattern, 'tokens': tokens, 'special_tokens': special}
    if text_tokens:
        spec['text_tokens'] = text_tokens
    if normalizer:
        spec['normalizer'] = 'NFC'
    return spec


def merges_from_ranks(tokens):
    """BPE merges in rank order. A token's merge is found by running BPE on its bytes with the lower-ranked
    tokens only: it ends in exactly the two parts tiktoken joins last."""
    ranks = {b: i for i, b in enumerate(tokens) if b is not None}
    merges = []
    for rank, token in enumerate(tokens):
        if token is None or len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(ranks.get(parts[j] + parts[j + 1], rank), j) for j in range(len(parts) - 1)]
            best, j = min(pairs)
            if best >= rank:
                break
            parts[j:j + 2] = [parts[j] + parts[j + 1]]
        assert len(parts) == 2, f'token {rank} ({token!r}) is not the merge of two lower-ranked tokens'
        merges.append(tuple(parts))
    return merges


def hf_tokenizer(spec, max_length):
    """A transformers fast tokenizer equal to tiktoken on the spec: same split regex, same BPE, same ids.
    A literal '<|endoftext|>' in text is text, as in train.bin (prepare.py encodes documents as ordinary
    text): split_special_tokens keeps transformers from reading it as the end-of-text id, which only the
    code that joins documents puts in (bos/eos_token_id still name it)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    byte_char = bytes_to_unicode()
    as_str = lambda b: ''.join(byte_char[x] for x in b)
    vocab = {as_str(b): i for i, b in enumerate(spec['tokens']) if b is not None}
    vocab.update(spec['special_tokens'])
    merges = [(as_str(a), as_str(b)) for a, b in merges_from_ranks(spec['tokens'])]
    # ignore_merges: a piece that is itself a token is that token, as in tiktoken
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    if spec.get('normalizer') == 'NFC':
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(spec['pattern']), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    ])
    tok.decoder = decoders.ByteLevel()
    text_tokens = spec.get('text_tokens', [])  # in the vocabulary above already: these keep their ids
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in spec['special_tokens'] if t not in text_tokens])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in text_tokens])
    eot = spec.get('eot', EOT)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot,
                                   model_max_length=max_length, clean_up_tokenization_spaces=False,
                                   split_special_tokens=True)
