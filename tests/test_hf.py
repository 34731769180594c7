"""Hugging Face interchange: export_hf.py writes directories transformers loads with no custom code and
the same logits and token ids as ours; hf.from_pretrained reads Hugging Face models exactly."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, SHARED, TINY_TEXT, abstracts, fill_disk, make_dataset, need, write_tiny_checkpoint
from checkpoint import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint
from hf import ExportError, export, from_pretrained, target_architecture
from model import GPTConfig
from tokenizer import EOT, encoding_from_spec, hf_tokenizer, token_byte_lengths, train_bpe, vocab_size_of

transformers = pytest.importorskip('transformers')
LLAMA_TINY = dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64)

EXPORTABLE = {  # name: (model args, the class transformers must load)
    'gpt2': ({}, 'GPT2LMHeadModel'),
    'arcee': (dict(pos='rotary', norm='rmsnorm', mlp='relu2', bias=False, tie_embeddings=False), 'ArceeForCausalLM'),
    'qwen2-gqa': (dict(pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False, qkv_bias=True, n_kv_head=1),
                  'Qwen2ForCausalLM'),
    'llama-gqa-scaled': (dict(pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False, n_kv_head=1, head_dim=8,
                              mlp_hidden=40, norm_eps=1e-5, rope_scaling=dict(factor=8.0, low_freq_factor=1.0,
                              high_freq_factor=4.0, original_max_position_embeddings=16)), 'LlamaForCausalLM'),
    'gpt2-nobias-untied': (dict(bias=False, tie_embeddings=False), 'GPT2LMHeadModel'),
    'llama': (dict(pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False, rope_base=500.0), 'LlamaForCausalLM'),
    'llama-bias-untied': (dict(pos='rotary', norm='rmsnorm', mlp='swiglu', tie_embeddings=False), 'LlamaForCausalLM'),
    'qwen3': (dict(pos='rotary', norm='rmsnorm', mlp='swiglu', qk_norm=True, bias=False), 'Qwen3ForCausalLM'),
}

pytestmark = pytest.mark.usefixtures('one_thread')


def checkpoint_of(spec, path, **model_args):
    """A trained tiny model whose vocabulary is padded past the tokenizer's (300 -> 320), saved as train.py does."""
    return write_tiny_checkpoint(path, spec, steps=20, vocab_size=320, **model_args)


def export_cli(ckpt, out):
    return subprocess.run([sys.executable, 'export_hf.py', f'--ckpt={ckpt}', f'--out={out}'], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})


@pytest.mark.parametrize('name', list(EXPORTABLE))
def test_export_then_load_gives_our_logits_and_token_ids(name, spec, tmp_path):
    args, cls = EXPORTABLE[name]
    model = checkpoint_of(spec, tmp_path / 'ckpt.pt', **args)
    export(load_checkpoint(tmp_path / 'ckpt.pt'), tmp_path / 'hf')
    assert (tmp_path / 'hf' / 'model.safetensors').is_file()
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf').eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf')
    assert type(hf).__name__ == cls and hf.config.vocab_size == vocab_size_of(spec) == 300
    text = 'Aspirin reduces the risk of myocardial infarction in older adults. Metformin lowers'
    ids = encoding_from_spec(spec).encode_ordinary(text)
    assert tok(text)['input_ids'] == ids and tok.eos_token_id == 299
    x = torch.tensor([ids[:32]])
    ours = model(x, all_logits=True)
    with torch.no_grad():
        theirs = hf(x).logits
    torch.testing.assert_close(theirs, ours[..., :300], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_export_cli_writes_a_directory_and_refuses_relu2_with_qk_norm_naming_the_switch(spec, tmp_path):
    checkpoint_of(spec, tmp_path / 'ok.pt', pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False)
    checkpoint_of(spec, tmp_path / 'no.pt', pos='rotary', norm='rmsnorm', mlp='relu2', qk_norm=True, bias=False)
    ok, refused = export_cli(tmp_path / 'ok.pt', tmp_path / 'hf'), export_cli(tmp_path / 'no.pt', tmp_path / 'no')
    assert ok.returncode == 0 and 'llama' in ok.stdout, ok.stderr
    config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    assert config['architectures'] == ['LlamaForCausalLM'] and config['rms_norm_eps'] == 1e-6
    assert json.loads(
        (tmp_path / 'hf' / 'tokenizer_config.json').read_text())['tokenizer_class'] == 'PreTrainedTokenizerFast'
    assert refused.returncode == 1 and refused.stderr.count('\n') == 1
    assert "qk_norm=True has no standard Hugging Face equivalent with pos='rotary' and mlp='relu2'" in refused.stderr
    assert not (tmp_path / 'no').exists()


@pytest.mark.parametrize('args, switch', [
    (dict(logit_softcap=30.0), 'logit_softcap=30.0'),
    (dict(norm='rmsnorm'), "norm='rmsnorm'"),
    (dict(mlp='swiglu'), "mlp='swiglu'"),
    (dict(qk_norm=True), 'qk_norm=True'),
    (dict(pos='rotary'), "norm='layernorm'"),
    (dict(pos='rotary', norm='rmsnorm'), "mlp='gelu'"),
    (dict(pos='rotary', norm='rmsnorm', mlp='swiglu', qk_norm=True, bias=True), 'bias=True'),
])
def test_combinations_without_a_standard_equivalent_are_refused_by_name(args, switch):
    with pytest.raises(ExportError, match=re.escape(switch)):
        target_architecture(GPTConfig(n_layer=1, n_head=2, n_embd=32, **args))


@pytest.mark.parametrize('which', ['bpe', 'gpt2'])
def test_exported_tokenizer_gives_tiktokens_ids_on_real_abstracts(which, request):
    texts = abstracts(600)
    spec = train_bpe(texts[:300], 2000) if which == 'bpe' else request.getfixturevalue('gpt2')
    enc, tok = encoding_from_spec(spec), hf_tokenizer(spec, 1024)
    held_out = texts[300:] + ['<|endoftext|> a “quoted” naïve 1234567 test\n\n\tend  ']
    for text in held_out:  # a literal <|endoftext|> is text, as prepare.py writes it into train.bin
        ids = enc.encode_ordinary(text)
        assert tok(text)['input_ids'] == ids, text
        assert tok.decode(ids) == text
    assert tok.eos_token_id == tok.bos_token_id == tok.convert_tokens_to_ids(EOT) == spec['special_tokens'][EOT]
    assert len(tok(EOT)['input_ids']) > 1


@pytest.mark.parametrize('tied', [True, False])
def test_gpt2_import_gives_transformers_own_logits(tmp_path, tied):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=300,
                                     tie_word_embeddings=tied)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # every weight random, biases and norms too, so a wrong mapping shows
        for p in hf.parameters():
            p.normal_(0.0, 0.1)
    hf.save_pretrained(tmp_path)
    model = from_pretrained(str(tmp_path))
    assert model.config.tie_embeddings == tied and model.config.block_size == 64
    x = torch.randint(300, (2, 64))
    with torch.no_grad():
        theirs = hf(x).logits
    ours = model(x, all_logits=True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_import_refuses_a_family_or_an_option_model_py_does_not_compute_by_name(tmp_path):
    torch.manual_seed(0)
    transformers.MistralForCausalLM(transformers.MistralConfig(**LLAMA_TINY)).save_pretrained(tmp_path / 'mistral')
    with pytest.raises(CheckpointError, match="a 'mistral' model; this project imports GPT-2, LlamaForCausalLM"):
        from_pretrained(str(tmp_path / 'mistral'))
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**LLAMA_TINY, 'hidden_act': 'gelu'})).save_pretrained(
        tmp_path / 'gelu')
    with pytest.raises(CheckpointError, match="llama: hidden_act='gelu' is not something model.py computes"):
        from_pretrained(str(tmp_path / 'gelu'))


@pytest.mark.slow
def test_train_init_from_gpt2_weights_and_its_clear_errors(tmp_path, tiny_data, gpt2):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64))
    hf.save_pretrained(tmp_path / 'gpt2-local')
    # a GPT-2 architecture with a vocabulary of its own (vocab.json, merges.txt; no tokenizer.json): not GPT-2's tokens
    transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=64,
                                vocab_size=60000)).save_pretrained(tmp_path / 'own-vocab')
    (tmp_path / 'own-vocab' / 'vocab.json').write_text('{}')
    (tmp_path / 'own-vocab' / 'merges.txt').write_text('#version: 0.2\n')
    data = make_dataset(tmp_path / 'data', spec=gpt2)  # as prepare.py --tokenizer=gpt2 writes it
    train = [
        sys.executable, 'train.py', f'--data_dir={data}', '--block_size=32', '--batch_size=2',
        '--gradient_accumulation_steps=1', '--max_iters=1', '--eval_iters=1', '--learning_rate=1e-9', '--min_lr=1e-10',
        '--compile=False', '--device=cpu'
    ]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf-home')}
    runs = {
        'local': [f'--init_from={tmp_path / "gpt2-local"}', f'--out_dir={tmp_path / "out"}'],
        'offline': ['--init_from=gpt2', f'--out_dir={tmp_path / "out2"}'], 'bpe-data': [
            f'--init_from={tmp_path / "gpt2-local"}', f'--out_dir={tmp_path / "out3"}', f'--data_dir={tiny_data}'
        ], 'own-vocab': [f'--init_from={tmp_path / "own-vocab"}', f'--out_dir={tmp_path / "out4"}']
    }
    procs = {
        k: subprocess.Popen(train + args, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for k, args in runs.items()
    }
    done = {k: p.communicate(timeout=600) + (p.returncode, ) for k, p in procs.items()}

    out, err, code = done['local']
    assert code == 0, err
    assert 'ignoring n_layer=12, n_head=12, n_embd=768' in out
    ckpt = load_checkpoint(tmp_path / 'out' / 'ckpt.pt')  # one step at lr 1e-9: GPT-2's weights, 32 positions
    assert ckpt['model_args']['block_size'] == 32 and ckpt['model_args']['n_layer'] == 2
    theirs = hf.state_dict()
    same = lambda ours, hf: torch.testing.assert_close(ours, hf, atol=1e-6, rtol=0)
    same(ckpt['model']['transformer.wpe.weight'], theirs['transformer.wpe.weight'][:32])
    same(ckpt['model']['transformer.h.1.attn.c_attn.weight'], theirs['transformer.h.1.attn.c_attn.weight'].t())

    out, err, code = done['offline']
    assert code == 1 and err.count('\n') == 1
    assert "error: cannot load 'gpt2': not in the Hugging Face cache" in err

    out, err, code = done['bpe-data']
    assert code == 1 and err.count('\n') == 1
    assert "reads its own tokenizer's tokens, but" in err and 'prepare it with --tokenizer=gpt2' in err

    out, err, code = done['own-vocab']  # as prepare.py --tokenizer=FOLDER refuses it
    assert code == 1 and err.count('\n') == 1 and 'no tokenizer.json (found vocab.json and merges.txt' in err, err
    assert not (tmp_path / 'out4').exists()


@pytest.mark.slow
def test_export_refuses_a_folder_with_files_replaces_it_on_request_and_writes_one_permission(spec, tmp_path):
    checkpoint_of(spec, tmp_path / 'ckpt.pt', pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False)
    out = tmp_path / 'hf'
    out.mkdir()
    (out / 'pytorch_model.bin').write_bytes(b'stale weights of another model')
    (out / 'model.safetensors.index.json').write_text('{}')
    refused = export_cli(tmp_path / 'ckpt.pt', out)
    assert refused.returncode == 2 and refused.stderr.count('\n') == 1 and '--overwrite=True' in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ['model.safetensors.index.json', 'pytorch_model.bin']
    r = subprocess.run(
        [sys.executable, 'export_hf.py', f'--ckpt={tmp_path / "ckpt.pt"}', f'--out={out}', '--overwrite=True'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        'README.md', 'config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json',
        'tokenizer_config.json'
    ]
    assert len({(out / n).stat().st_mode for n in names}) == 1
    assert not list(tmp_path.glob('*.tmp'))
    for arg, message in (('--out=', '--out is empty'), (f'--out={tmp_path / "ckpt.pt"}', 'is a file, not a folder')):
        r = subprocess.run([sys.executable, 'export_hf.py', f'--ckpt={tmp_path / "ckpt.pt"}', arg], cwd=REPO,
                           capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1


def test_an_export_onto_a_full_disk_is_one_line_and_keeps_the_export_before(spec, tmp_path, tmpfs):
    checkpoint_of(spec, tmp_path / 'ckpt.pt', pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False)
    disk = tmpfs(tmp_path / 'disk', size='2m')
    assert export_cli(tmp_path / 'ckpt.pt', disk / 'hf').returncode == 0
    before = {p.name: p.read_bytes() for p in (disk / 'hf').iterdir()}
    gone = subprocess.Popen(['true'])
    gone.wait()
    (disk / f'hf.{gone.pid}.tmp').mkdir()  # what an export killed mid-write left
    (disk / f'hf.{gone.pid}.tmp' / 'model.safetensors').write_bytes(b'x' * 4096)
    fill_disk(disk, leave=8192)
    r = subprocess.run(
        [sys.executable, 'export_hf.py', f'--ckpt={tmp_path / "ckpt.pt"}', f'--out={disk / "hf"}', '--overwrite=True'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.count('error:') == 1 and 'Traceback' not in r.stderr, r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith(f'error: {disk / "hf"}/') and 'the disk is full (' in last and last.endswith(
        '; nothing was replaced')
    assert {p.name: p.read_bytes()
            for p in (disk / 'hf').iterdir()} == before and sorted(os.listdir(disk)) == ['filler', 'hf']


@pytest.mark.slow
def test_export_overwrite_never_deletes_the_checkpoint_the_current_folder_or_the_repository(spec, tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    checkpoint_of(spec, run / 'ckpt.pt', pos='rotary', norm='rmsnorm', mlp='swiglu', bias=False)
    (run / 'metrics.jsonl').write_text('{}\n')
    old_export = tmp_path / 'exports' / 'v1'
    old_export.mkdir(parents=True)
    (old_export / 'pytorch_model.bin').write_bytes(b'stale')
    work = tmp_path / 'work'  # the current folder
    work.mkdir()
    (work / 'notes.txt').write_text('mine')
    (work / 'link').symlink_to(old_export)
    cases = {
        str(run): 'is or holds the checkpoint to export',
        str(tmp_path): 'is or holds the checkpoint to export', '.': 'is or holds the current folder',
        str(REPO): 'is or holds the repository', 'link': None
    }
    procs = [
        subprocess.Popen([
            sys.executable,
            str(REPO / 'export_hf.py'), f'--ckpt={run / "ckpt.pt"}', f'--out={out}', '--overwrite=True'
        ], cwd=work, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'}) for out in cases
    ]
    for proc, (out, message) in zip(procs, cases.items()):
        code, err = proc.wait(timeout=300), proc.stderr.read()
        if message:
            assert code == 2 and err.count('\n') == 1 and message in err, (out, err)
        else:  # a symlink: the folder it points to is replaced, the link stays
            assert code == 0, err
    assert sorted(p.name for p in run.iterdir()) == ['ckpt.pt', 'metrics.jsonl'] and (work / 'notes.txt').is_file()
    assert (work / 'link').is_symlink() and (work / 'link' / 'config.json').is_file()
    assert not (old_export /
                'pytorch_model.bin').exists() and not list(tmp_path.rglob('*.tmp')) + list(tmp_path.rglob('*.old'))


FAMILIES = {  # the open families people adapt, tiny and random: every switch the mapping has to get right
    'llama-gqa-llama3-rope': ('LlamaForCausalLM', dict(LLAMA_TINY, tie_word_embeddings=False, rms_norm_eps=1e-5,
        rope_parameters=dict(rope_type='llama3', rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=16))),
    'llama-tied-biases': ('LlamaForCausalLM', dict(LLAMA_TINY, attention_bias=True, mlp_bias=True)),
    'qwen2-qkv-bias': ('Qwen2ForCausalLM', dict(LLAMA_TINY, rms_norm_eps=1e-6)),
    'qwen3-qk-norm-head-dim': ('Qwen3ForCausalLM', dict(LLAMA_TINY, head_dim=16, tie_word_embeddings=True)),
    'arcee-relu2': ('ArceeForCausalLM', dict(LLAMA_TINY, hidden_act='relu2')),
}


def random_hf(cls_name, config_args, path=None):
    """A transformers model with every weight random (norms and biases too, so a wrong mapping shows), saved to path."""
    torch.manual_seed(0)
    cls = getattr(transformers, cls_name)
    hf = cls(cls.config_class(**config_args)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.2)
    if path:
        hf.save_pretrained(path)
    return hf


@pytest.mark.parametrize('family', list(FAMILIES))
def test_import_computes_transformers_function_and_greedy_tokens_and_exports_back(family, tmp_path, spec):
    cls_name, config_args = FAMILIES[family]
    hf = random_hf(cls_name, config_args, tmp_path / 'hf')
    model = from_pretrained(str(tmp_path / 'hf')).eval()
    x = torch.randint(300, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(x).logits
    ours = model(x, all_logits=True)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    hf64, model64 = hf.double(), model.double()  # greedy in float64: no near-tie is decided by rounding
    prompt = x[:1, :8]
    theirs = hf64.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=0)
    assert model64.generate(prompt, 24, temperature=0).tolist() == theirs.tolist()
    # export(import(hf)) loads in transformers, the same class, the same function
    save_checkpoint(make_checkpoint(model.float(), spec, token_byte_lengths(spec)), tmp_path / 'ckpt.pt')
    export(load_checkpoint(tmp_path / 'ckpt.pt'), tmp_path / 'back')
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'back').eval()
    assert type(back).__name__ == cls_name
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, hf.float()(x).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize('name', [n for n in EXPORTABLE if n != 'gpt2'])
def test_import_of_an_export_is_the_same_model(name, spec, tmp_path):
    args, _ = EXPORTABLE[name]
    model = checkpoint_of(spec, tmp_path / 'ckpt.pt', **args)
    export(load_checkpoint(tmp_path / 'ckpt.pt'), tmp_path / 'hf')
    again = from_pretrained(str(tmp_path / 'hf'))
    x = torch.randint(300, (2, 32))
    torch.testing.assert_close(again(x, all_logits=True), model(x, all_logits=True)[..., :300], atol=1e-5, rtol=0)


PUBLISHED = {  # the config.json of each published model, at random weights: the mapping at full size
    'SmolLM2-135M': ('LlamaForCausalLM', dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                     num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                     rms_norm_eps=1e-5, rope_parameters=dict(rope_type='default', rope_theta=100000.0),
                     tie_word_embeddings=True)),
    'Qwen3-0.6B': ('Qwen3ForCausalLM', dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                   num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                   max_position_embeddings=40960, rms_norm_eps=1e-6,
                   rope_parameters=dict(rope_type='default', rope_theta=1000000.0), tie_word_embeddings=True)),
    'Llama-3.2-1B': ('LlamaForCausalLM', dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                     num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                     max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
                     rope_parameters=dict(rope_type='llama3', rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0, original_max_position_embeddings=8192))),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', list(PUBLISHED))
def test_published_shapes_map_exactly(name):
    """Every weight at its published shape; the two larger keep 2 of their layers (each layer maps alike, and
    transformers' random initialisation of the whole of Llama-3.2-1B takes a minute of a 2-core CI)."""
    from hf import from_hf_model
    cls_name, config_args = PUBLISHED[name]
    torch.manual_seed(0)
    cls = getattr(transformers, cls_name)
    layers = config_args['num_hidden_layers'] if name == 'SmolLM2-135M' else 2
    hf = cls(cls.config_class(**{**config_args, 'num_hidden_layers': layers})).eval()  # transformers' random init
    model = from_hf_model(hf, window=512).eval()  # training windows of 512 keep the published context
    assert model.config.block_size == config_args['max_position_embeddings']
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hf.parameters())
    x = torch.randint(config_args['vocab_size'], (1, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(x).logits
        ours = model(x, all_logits=True)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    del hf, model


@pytest.mark.parametrize('config',
                         sorted(p.name for p in (REPO / 'config').glob('*.py') if not p.name.startswith('finetune_')))
def test_every_shipped_recipe_exports_to_a_standard_architecture(config, spec, tmp_path):
    """Each config's switches at a tiny size (the architecture, not the size, decides the export); the finetune_*
    configs keep the architecture of the model they import."""
    import train
    import run_options
    options = train.options([str(REPO / 'config' / config)])
    args = {k: getattr(options, k) for k in run_options.MODEL_DEFAULTS}
    args.update(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=320)
    model = checkpoint_of(spec, tmp_path / 'ckpt.pt', **{k: v for k, v in args.items() if k != 'vocab_size'})
    target = export(load_checkpoint(tmp_path / 'ckpt.pt'), tmp_path / 'hf')
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf').eval()
    assert (config, target) in {('baseline_gpt2_cpu.py', 'gpt2'), ('train_pubmed_cpu.py', 'arcee'),
                                ('train_pubmed.py', 'arcee')}
    x = torch.randint(300, (1, 32))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x, all_logits=True)[..., :300], atol=1e-4, rtol=0)


def broken_folder(tmp_path, name, change_config=None, change_weights=None, **config):
    """A tiny random Llama folder (its own tokenizer) whose config.json or weights are then changed."""
    from safetensors.torch import load_file, save_file

    from hf_folders import llama_folder
    folder = llama_folder(tmp_path / name, [TINY_TEXT], vocab_size=400, **config)
    if change_weights:
        weights = load_file(folder / 'model.safetensors')
        change_weights(weights)
        save_file(weights, folder / 'model.safetensors', metadata={'format': 'pt'})
    if change_config:
        raw = json.loads((folder / 'config.json').read_text())
        (folder / 'config.json').write_text(json.dumps(change_config(raw)))
    return folder


def test_a_model_folder_is_imported_only_as_it_is_refused_naming_what_is_wrong(tmp_path, capsys):
    """Weights that do not match the config (never trained from random values), weight files outside the folder,
    config fields that change the function and are not computed, and configs that make no model: one line each."""
    import train
    from hf import shapes_of
    from tokenizer import spec_from_hf_folder
    put = lambda key, value: lambda c: {**c, key: value}
    drop = lambda *keys: lambda weights: [weights.pop(k) for k in keys]
    weights = {
        'missing tensor': (dict(change_weights=drop('model.layers.1.mlp.up_proj.weight')),
                           'missing: model.layers.1.mlp.up_proj.weight'),
        'untied without its head': (dict(change_weights=drop('lm_head.weight'),
                                         tie_word_embeddings=False), 'missing: lm_head.weight'),
        'unexpected tensor': (dict(change_weights=lambda w: w.update({'model.extra.weight': torch.ones(3)})),
                              'unexpected: model.extra.weight'),
        'wrong shape': (dict(change_weights=lambda w: w.update({'model.norm.weight': torch.ones(16)})),
                        'of another shape: model.norm.weight (16 in the file, 64 by config.json)'),
        'index outside': (dict(change_config=lambda c: c),
                          'lists weight files outside the model folder (../../x.safetensors)'),
    }
    configs = {
        'no vocab_size': (lambda c: {k: v
                                     for k, v in c.items() if k != 'vocab_size'}, 'has no vocab_size'),
        'vocab 10^12': (put('vocab_size', 10**12), 'vocab_size=1000000000000 is not a size'),
        'vocab a string': (put(
            'vocab_size', '600'
        ), "does not load in transformers (StrictDataclassFieldValidationError: Validation error for field 'vocab_size'"
                           ),
        'negative width': (put('hidden_size', -64), 'hidden_size=-64 is not a size'),
        'no layers': (put('num_hidden_layers', 0), 'num_hidden_layers=0 is not a size'),
        'kv heads': (put('num_key_value_heads', 3), 'n_head=4 must be a multiple of n_kv_head=3'),
        'head_dim 0': (put('head_dim', 0), 'head_dim=0 is not a size'),
        'no model_type': (lambda c: {k: v
                                     for k, v in c.items() if k != 'model_type'}, 'not a Hugging Face model config'),
        'a list': (lambda c: [c], 'not a Hugging Face model config'),
        'sliding qwen2': (
            lambda c:
            {**c, 'model_type': 'qwen2', 'use_sliding_window': True, 'sliding_window': 8, 'max_window_layers': 0},
            'use_sliding_window=True is not something model.py computes'),
        'gpt2 unscaled': (lambda c: {
            'model_type': 'gpt2', 'vocab_size': 400, 'n_embd': 32, 'n_layer': 1, 'n_head': 2,
            'scale_attn_weights': False
        }, 'scale_attn_weights=False is not something model.py computes'),
    }
    for name, (kwargs, message) in weights.items():
        folder = broken_folder(tmp_path, name.replace(' ', '_'), **kwargs)
        if name == 'index outside':
            (folder / 'model.safetensors').rename(tmp_path / 'x.safetensors')
            (folder / 'model.safetensors.index.json').write_text(
                json.dumps({'metadata': {}, 'weight_map': {k: '../../x.safetensors'
                                                           for k in ('model.norm.weight', )}}))
        with pytest.raises(CheckpointError, match=re.escape(message)):
            from_pretrained(str(folder))
    folder = broken_folder(tmp_path, 'config')
    good = json.loads((folder / 'config.json').read_text())
    for name, (change, message) in configs.items():
        (folder / 'config.json').write_text(json.dumps(change(good)))
        for read in (shapes_of, from_pretrained):  # train.py --plan=True reads the shapes alone
            with pytest.raises(CheckpointError, match=re.escape(message)):
                read(str(folder))
    (folder / 'config.json').write_text('{"model_type": "llama", ')
    with pytest.raises(CheckpointError, match='config.json: not readable'):
        shapes_of(str(folder))
    # through train.py: the tokenizer matches, the weights do not (exit 1, one line, nothing written)
    missing = tmp_path / 'missing_tensor'
    data = make_dataset(tmp_path / 'data', spec=spec_from_hf_folder(missing))
    for model, args, message in ((missing, [], 'missing: model.layers.1.mlp.up_proj.weight'),
                                 (tmp_path / 'wrong_shape', [],
                                  weights['wrong shape'][1]), (folder, ['--plan=True'], 'config.json: not readable')):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            train.main(
                train.options([
                    f'--init_from={model}', f'--data_dir={data}', f'--out_dir={tmp_path / "out"}', '--block_size=32',
                    '--compile=False', *args
                ]))
        err = capsys.readouterr().err
        last = err.splitlines()[-1]  # after transformers' progress bar of the weights it read
        assert e.value.code == 1 and err.count('error:') == 1 and last.startswith('error: ') and message in last, err
    assert not (tmp_path / 'out').exists()
    # and through the other command that reads a model folder, pubmedqa.py --hf
    r = subprocess.run([
        sys.executable, 'pubmedqa.py', f'--hf={tmp_path / "wrong_shape"}', '--limit=2',
        f"--pubmedqa={need(SHARED / 'data' / 'pubmedqa')}"
    ], cwd=REPO, capture_output=True, text=True, timeout=300)
    last = r.stderr.splitlines()[-1]
    assert r.returncode == 1 and r.stderr.count('error:') == 1 and last.startswith(
        'error: ') and weights['wrong shape'][1] in last
