"""
Hugging Face folders built here, standing in for downloads (no hub on this machine): byte-level BPE tokenizers in
the layouts of the families people adapt, trained with the tokenizers library; a random-initialised Llama beside
one; and the real SmolLM2-135M-Instruct, from the GGUF file in ../shared (smollm2_folder). Used by the tests and
bench/bench_continue.py.
"""

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_PATTERN = LLAMA3_PATTERN.replace(r'\p{N}{1,3}', r'\p{N}')
STYLES = {  # name: (pre-tokenizer steps, NFC, special tokens trained in front, special tokens appended, eos)
    'gpt2': ([('ByteLevel', True)], False, [], ['<|endoftext|>'], '<|endoftext|>'),
    'llama3': ([('Split', LLAMA3_PATTERN), ('ByteLevel', False)], False, [], ['<|begin_of_text|>', '<|end_of_text|>'],
               '<|end_of_text|>'),
    'qwen': ([('Split', QWEN_PATTERN), ('ByteLevel', False)], True, [], ['<|endoftext|>', '<|im_start|>', '<|im_end|>'],
             '<|endoftext|>'),
    'smollm2': ([('Digits', None), ('ByteLevel', True)], False, ['<|endoftext|>', '<|im_start|>', '<|im_end|>'], [],
                '<|endoftext|>'),
}


def hf_tokenizer_folder(path, style, texts, vocab_size=1200):
    """A byte-level BPE tokenizer of the style trained with the tokenizers library, saved as transformers does."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    steps, nfc, front, back, eos = STYLES[style]
    made = {
        'ByteLevel': lambda arg: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=arg),
        'Split': lambda arg: pre_tokenizers.Split(Regex(arg), behavior='isolated'),
        'Digits': lambda arg: pre_tokenizers.Digits(individual_digits=True)
    }
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([made[kind](arg) for kind, arg in steps])
    tok.decoder = decoders.ByteLevel()
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=front, show_progress=False,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(back)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos).save_pretrained(path)
    return path


def llama_folder(path, texts, vocab_size=1200, **config):
    """A random-initialised Llama (SmolLM2's layout: tied head, grouped-query attention) with a Llama 3-style
    tokenizer trained on texts, saved as a Hugging Face folder."""
    import torch
    import transformers
    hf_tokenizer_folder(path, 'llama3', texts, vocab_size)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    args = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
                eos_token_id=tok.eos_token_id, rms_norm_eps=1e-5)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**args, **config})).save_pretrained(path)
    return path


SMOLLM2_GGUF = 'SmolLM2-135M-Instruct.Q4_1.gguf'


def smollm2_folder(shared, cache=None):
    """The shared SmolLM2-135M-Instruct (a Q4_1 GGUF in shared/models/smollm2-135m-instruct) as a float32 Hugging
    Face folder, converted once and cached outside git: ~/.cache/pubmed-gpt (or $PUBMED_GPT_CACHE), keyed by the
    GGUF's size and time. Concurrent callers (pytest-xdist workers) wait on a lock instead of converting twice.
    None when the GGUF is not there."""
    from pathlib import Path
    gguf = Path(shared) / 'models' / 'smollm2-135m-instruct' / SMOLLM2_GGUF
    if not gguf.exists():
        return None
    import os
    import tempfile
    root = Path(cache or os.environ.get('PUBMED_GPT_CACHE') or Path.home() / '.cache' / 'pubmed-gpt')
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home (some CI runners): the temp folder, converted once per machine boot
        root = Path(tempfile.gettempdir()) / 'pubmed-gpt'
        root.mkdir(parents=True, exist_ok=True)
    stat = gguf.stat()
    folder = root / f'smollm2-135m-instruct-f32-{stat.st_size}-{int(stat.st_mtime)}'
    if (folder / 'model.safetensors').exists():
        return folder
    from filelock import FileLock
    with FileLock(str(folder) + '.lock'):
        if not (folder / 'model.safetensors').exists():
            _convert_gguf(gguf, folder)
    return folder


def _convert_gguf(gguf, folder):
    """transformers dequantizes the GGUF to float32 (the weights keep the 4-bit rounding) but marks the model
    quantized and refuses to save it, so the state dict moves into a plain LlamaForCausalLM that saves."""
    import shutil
    import torch
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    config.__dict__.pop('quantization_config', None)
    model = transformers.LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    part = folder.with_name(folder.name + '.part')
    shutil.rmtree(part, ignore_errors=True)
    model.save_pretrained(part)
    tok.save_pretrained(part)
    part.rename(folder)
