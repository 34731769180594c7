import pickle

import torch

from tokenizer import EOT, encoding_from_spec, token_byte_lengths, train_bpe, vocab_size_of

TEXTS = ['Metformin lowers blood glucose in patients with type 2 diabetes.',
         'The protein kinase phosphorylates the receptor in vitro.'] * 50


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
