import io
import json
import pickle
import re

import pytest
import torch

from conftest import abstracts, fuzzed
from hf_folders import STYLES, hf_tokenizer_folder
from tokenizer import (EOT, TokenizerError, encoding_from_spec, eot_id, spec_from_hf_folder, token_byte_lengths,
                       train_bpe, vocab_size_of)

TEXTS = [
    'Metformin lowers blood glucose in patients with type 2 diabetes.',
    'The protein kinase phosphorylates the receptor in vitro.'
] * 50


def test_bpe_round_trips_and_reserves_eot_as_last_id():
    spec = train_bpe(TEXTS, 300)
    enc = encoding_from_spec(spec)
    assert vocab_size_of(spec) == 300 and enc.n_vocab == 300 and enc.eot_token == 299
    ids = enc.encode_ordinary(TEXTS[0])
    assert enc.decode(ids) == TEXTS[0] and len(ids) < len(TEXTS[0].encode())
    assert enc.encode(EOT, allowed_special='all') == [299]


def test_spec_survives_pickle_and_weights_only_torch_load(tmp_path):
    spec = train_bpe(TEXTS, 280)
    torch.save({'tokenizer': spec}, tmp_path / 'ck.pt')
    loaded = torch.load(tmp_path / 'ck.pt', weights_only=True)['tokenizer']
    assert loaded == spec == pickle.loads(pickle.dumps(spec))


def test_gpt2_spec_matches_tiktoken_and_byte_lengths(gpt2):
    spec = gpt2
    enc = encoding_from_spec(spec)
    assert enc.n_vocab == 50257 and enc.encode('Hello world') == [15496, 995]
    lengths = token_byte_lengths(spec)
    assert lengths[15496] == 5 and lengths[995] == 6 and lengths[50256] == 0


# ------------------------------------------------------------------------------------------------
# Hugging Face byte-level BPE tokenizers -> specs, in the layouts of the families people adapt


@pytest.mark.parametrize('style', list(STYLES))
def test_hf_tokenizers_convert_to_specs_with_the_same_ids(style, tmp_path):
    from transformers import AutoTokenizer
    texts = abstracts(600)
    folder = hf_tokenizer_folder(tmp_path / style, style, texts[:300])
    spec = spec_from_hf_folder(folder)
    enc, tok = encoding_from_spec(spec), AutoTokenizer.from_pretrained(folder)
    checked = texts[300:] + fuzzed(300)
    assert len(texts[300:]) == 300
    for text in checked:
        assert enc.encode_ordinary(text) == tok(text, add_special_tokens=False)['input_ids'], text
    assert eot_id(spec) == tok.eos_token_id and spec['special_tokens'] == {
        t: tok.convert_tokens_to_ids(t)
        for t in STYLES[style][2] + STYLES[style][3]
    }
    assert vocab_size_of(spec) == len(tok) and token_byte_lengths(spec)[eot_id(spec)] == 0
    assert (spec.get('normalizer') == 'NFC') == STYLES[style][1]
    restored = torch.load(io.BytesIO(_saved(spec)), weights_only=True)  # plain data: it goes into checkpoints
    assert restored == spec


def _saved(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_tokenizers_that_are_not_byte_level_bpe_are_refused_by_name(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    unigram = Tokenizer(models.Unigram([('a', -1.0), ('b', -2.0)]))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    (tmp_path / 'sp').mkdir()
    unigram.save(str(tmp_path / 'sp' / 'tokenizer.json'))
    with pytest.raises(TokenizerError, match='a Unigram model .*only byte-level BPE tokenizers convert'):
        spec_from_hf_folder(tmp_path / 'sp')
    (tmp_path / 'llama2').mkdir()
    (tmp_path / 'llama2' / 'tokenizer.model').write_bytes(b'sentencepiece')
    with pytest.raises(TokenizerError, match=r'no tokenizer.json \(found a SentencePiece model'):
        spec_from_hf_folder(tmp_path / 'llama2')


def test_added_tokens_that_are_text_encode_as_autotokenizer_does_and_export_back(tmp_path):
    """A tokenizer.json's non-special added tokens are found in the text first, as transformers does (not split
    by BPE as ordinary text), and the export keeps them so; special ones stay text in our data (<|endoftext|>)."""
    from transformers import AutoTokenizer

    from tokenizer import hf_tokenizer
    folder = hf_tokenizer_folder(tmp_path / 'added', 'llama3', TEXTS, vocab_size=400)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_tokens(['patients', 'blood glucose'])  # as a lab adds domain words to a vocabulary
    tok.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    spec = spec_from_hf_folder(folder)
    enc, exported = encoding_from_spec(spec), hf_tokenizer(spec, 64)
    texts = [
        'Of 12 patients, 3 had high blood glucose.', 'outpatients:patients\npatients', 'blood glucoses', 'patient',
        *[f'{a}patients{b}' for a, b in zip(fuzzed(100), fuzzed(100, seed=1))]
    ]
    assert tok('I', add_special_tokens=False)['input_ids'] != tok('patients', add_special_tokens=False)['input_ids']
    for text in texts:
        ours = enc.encode_ordinary(text)
        assert ours == tok(text, add_special_tokens=False)['input_ids'], text
        assert ours == exported(text, add_special_tokens=False)['input_ids'], text
    assert enc.encode_ordinary('patients') == [tok.convert_tokens_to_ids('patients')]
    assert spec['text_tokens'] == ['blood glucose', 'patients'] and eot_id(spec) == tok.eos_token_id

    tj = json.loads((folder / 'tokenizer.json').read_text())
    for added in tj['added_tokens']:
        added['lstrip'] = added['lstrip'] or added['content'] == 'patients'
    (folder / 'tokenizer.json').write_text(json.dumps(tj))
    with pytest.raises(TokenizerError, match="the added token 'patients' strips spaces or matches whole words only"):
        spec_from_hf_folder(folder)


def test_tokenizer_files_that_do_not_read_are_one_line_in_prepare_and_train(tmp_path, tiny_data, capsys):
    import train
    from conftest import FIXTURES, run_prepare
    folder = hf_tokenizer_folder(tmp_path / 'tok', 'gpt2', TEXTS, vocab_size=400)
    (folder / 'config.json').write_text('{"model_type": "llama"}')  # what train.py --init_from asks of a folder first
    good = (folder / 'tokenizer.json').read_text()
    tj = json.loads(good)
    tj['model']['vocab']['€uro'] = len(tj['model']['vocab']) + 10
    cases = {
        'truncated': (good[:len(good) // 2], 'do not read as a byte-level BPE (JSONDecodeError'),
        'outside the byte map': (json.dumps(tj),
                                 "the vocabulary entry '€uro' has '€', which is no byte of a byte-level BPE")
    }
    for name, (text, message) in cases.items():
        (folder / 'tokenizer.json').write_text(text)
        with pytest.raises(TokenizerError, match=re.escape(message)):
            spec_from_hf_folder(folder)
        r = run_prepare(f'--input={FIXTURES}', f'--out_dir={tmp_path / "out"}', f'--tokenizer={folder}')
        assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1, r.stderr
        with pytest.raises(SystemExit) as e:
            train.main(
                train.options([f'--init_from={folder}', f'--data_dir={tiny_data}', f'--out_dir={tmp_path / "run"}']))
        err = capsys.readouterr().err
        assert e.value.code == 1 and message in err and err.count('\n') == 1, err
