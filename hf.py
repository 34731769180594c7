"""
Hugging Face interchange, both directions: GPT-2 weights in (gpt2_from_pretrained), any exportable
checkpoint out (export) as a directory transformers loads with no custom code (AutoModelForCausalLM,
AutoTokenizer), for lm-evaluation-harness, vLLM and friends. model.py does not know transformers exists.

The export maps the architecture to the standard one that computes exactly the same function:
    pos=learned, norm=layernorm, mlp=gelu                 -> GPT2LMHeadModel (bias=False: zero biases)
    pos=rotary, norm=rmsnorm, mlp=swiglu                  -> LlamaForCausalLM
    pos=rotary, norm=rmsnorm, mlp=swiglu, qk_norm=True    -> Qwen3ForCausalLM (bias=False)
Anything else is refused, naming the switch. Weights go to model.safetensors (float32), the tokenizer
to tokenizer.json (byte-level BPE rebuilt from the checkpoint's tokenizer: the same ids as ours).
The padded vocabulary rows (vocab_size rounded up for fast matmuls) are dropped: they are no tokens.
"""
import json
import os

import torch

from checkpoint import CheckpointError, model_from_checkpoint, tokenizer_of
from model import GPT, GPTConfig
from tokenizer import EOT, vocab_size_of

# Hugging Face's GPT-2 stores these as Conv1D, (in, out): the transpose of nn.Linear's (out, in)
HF_GPT2_TRANSPOSED = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')


def load_hf_gpt2(name_or_dir):
    """transformers' GPT2LMHeadModel: the local cache first, then (unless HF_HUB_OFFLINE) a download."""
    try:
        from transformers import AutoConfig, GPT2LMHeadModel
    except ImportError:
        raise CheckpointError(f'init from {name_or_dir!r} needs transformers: pip install transformers')
    last_error = None
    for local_only in (True, False):
        try:
            config = AutoConfig.from_pretrained(name_or_dir, local_files_only=local_only)
            if config.model_type != 'gpt2':
                raise CheckpointError(f'{name_or_dir}: a {config.model_type!r} model, not GPT-2')
            return GPT2LMHeadModel.from_pretrained(name_or_dir, config=config, local_files_only=local_only)
        except OSError as e:  # not in the cache, no network, or not a model directory
            last_error = e
            if os.path.isdir(name_or_dir):
                break
    raise CheckpointError(f'cannot load GPT-2 weights {name_or_dir!r}: not in the Hugging Face cache and not '
                          f'downloadable here ({str(last_error).splitlines()[0]}). Fetch them once with network '
                          f'access (any from_pretrained call fills the cache), or pass a local GPT-2 directory')


def gpt2_from_pretrained(name_or_dir, block_size=None, dropout=0.0):
    """OpenAI's GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl') or a local Hugging Face GPT-2
    directory as our GPT, through transformers: from its cache (no network) when there, else downloaded
    once. block_size keeps the first positions of the position table. CheckpointError when the weights
    can't be had or are not GPT-2's architecture."""
    hf = load_hf_gpt2(name_or_dir)
    c = hf.config
    unsupported = [(c.activation_function not in ('gelu_new', 'gelu_pytorch_tanh'),
                    f'activation_function={c.activation_function!r}'),
                   (c.scale_attn_by_inverse_layer_idx, 'scale_attn_by_inverse_layer_idx=True'),
                   (c.n_inner not in (None, 4 * c.n_embd), f'n_inner={c.n_inner}')]
    for bad, what in unsupported:
        if bad:
            raise CheckpointError(f'{name_or_dir}: {what} is not the GPT-2 this model.py implements')
    block_size = block_size or c.n_positions
    if block_size > c.n_positions:
        raise CheckpointError(f'block_size={block_size}: {name_or_dir} has only {c.n_positions} positions')
    config = GPTConfig(block_size=block_size, vocab_size=c.vocab_size, n_layer=c.n_layer, n_head=c.n_head,
                       n_embd=c.n_embd, dropout=dropout, tie_embeddings=c.tie_word_embeddings)
    model = GPT(config)
    theirs = hf.state_dict()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            w = theirs[name].t() if name.endswith(HF_GPT2_TRANSPOSED) else theirs[name]
            p.copy_(w[:block_size] if name == 'transformer.wpe.weight' else w)
    return model


class ExportError(Exception):
    pass


def target_architecture(c):
    """'gpt2', 'llama' or 'qwen3' for a GPTConfig, or ExportError naming the switch that has no equivalent."""
    if c.logit_softcap:
        raise ExportError(f'logit_softcap={c.logit_softcap} has no standard Hugging Face equivalent '
                          f'(GPT-2, Llama and Qwen3 do not cap logits)')
    if c.pos == 'learned':
        target, needs = 'gpt2', {'norm': 'layernorm', 'mlp': 'gelu', 'qk_norm': False}
    elif c.qk_norm:
        target, needs = 'qwen3', {'norm': 'rmsnorm', 'mlp': 'swiglu', 'bias': False}
    else:
        target, needs = 'llama', {'norm': 'rmsnorm', 'mlp': 'swiglu'}
    for key, value in needs.items():
        if getattr(c, key) != value:
            raise ExportError(f'{key}={getattr(c, key)!r} has no standard Hugging Face equivalent with pos={c.pos!r}'
                              f'{" and qk_norm=True" if target == "qwen3" else ""}: the closest architecture, '
                              f'{target}, needs {key}={value!r}')
    return target


def hf_config(c, target, n_vocab, eot, mlp_hidden):
    import transformers
    common = dict(vocab_size=n_vocab, tie_word_embeddings=c.tie_embeddings, bos_token_id=eot, eos_token_id=eot)
    if target == 'gpt2':
        return transformers.GPT2Config(n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
                                       activation_function='gelu_new', layer_norm_epsilon=1e-5, resid_pdrop=0.0,
                                       embd_pdrop=0.0, attn_pdrop=0.0, **common)
    llama_like = dict(hidden_size=c.n_embd, num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
                      num_key_value_heads=c.n_head, head_dim=c.head_dim, intermediate_size=mlp_hidden,
                      hidden_act='silu', max_position_embeddings=c.block_size, rms_norm_eps=1e-6,
                      rope_theta=c.rope_base, attention_bias=c.bias, **common)
    if target == 'llama':
        return transformers.LlamaConfig(mlp_bias=c.bias, **llama_like)
    return transformers.Qwen3Config(**llama_like)


def gpt2_state_dict(sd):
    """Ours -> GPT2LMHeadModel: the same names, Conv1D weights transposed, zeros for the biases of the
    blocks' and final norm's layers when we have none (bias=False): GPT-2 always has them."""
    hf = {}
    for key, w in sd.items():
        hf[key] = w.t() if key.endswith(HF_GPT2_TRANSPOSED) else w
        bias = key.removesuffix('weight') + 'bias'
        if key.startswith(('transformer.h.', 'transformer.ln_f.')) and key.endswith('.weight') and bias not in sd:
            hf[bias] = torch.zeros(w.size(0))
    return hf


def llama_state_dict(sd, c):
    """Ours -> Llama / Qwen3 names: c_attn splits into q, k, v; c_fc into gate and up (in that order)."""
    hf = {'model.embed_tokens.weight': sd['transformer.wte.weight'], 'model.norm.weight': sd['transformer.ln_f.weight'],
           'lm_head.weight': sd['lm_head.weight']}
    for i in range(c.n_layer):
        ours, theirs = f'transformer.h.{i}.', f'model.layers.{i}.'
        hf[theirs + 'input_layernorm.weight'] = sd[ours + 'ln_1.weight']
        hf[theirs + 'post_attention_layernorm.weight'] = sd[ours + 'ln_2.weight']
        for kind in ('weight', 'bias') if c.bias else ('weight',):
            q, k, v = sd[f'{ours}attn.c_attn.{kind}'].split(c.n_embd)
            gate, up = sd[f'{ours}mlp.c_fc.{kind}'].chunk(2)
            hf.update({f'{theirs}self_attn.q_proj.{kind}': q, f'{theirs}self_attn.k_proj.{kind}': k,
                        f'{theirs}self_attn.v_proj.{kind}': v, f'{theirs}self_attn.o_proj.{kind}': sd[f'{ours}attn.c_proj.{kind}'],
                        f'{theirs}mlp.gate_proj.{kind}': gate, f'{theirs}mlp.up_proj.{kind}': up,
                        f'{theirs}mlp.down_proj.{kind}': sd[f'{ours}mlp.c_proj.{kind}']})
        if c.qk_norm:
            hf[theirs + 'self_attn.q_norm.weight'] = sd[ours + 'attn.q_norm.weight']
            hf[theirs + 'self_attn.k_norm.weight'] = sd[ours + 'attn.k_norm.weight']
    return hf


def bytes_to_unicode():
    """GPT-2's map from the 256 byte values to printable characters: byte-level BPE vocabularies are strings of these."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def merges_from_ranks(tokens):
    """BPE merges in rank order. A token's merge is found by running BPE on its bytes with the lower-ranked
    tokens only: it ends in exactly the two parts tiktoken joins last."""
    ranks = {b: i for i, b in enumerate(tokens)}
    merges = []
    for rank, token in enumerate(tokens):
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(ranks.get(parts[j] + parts[j + 1], rank), j) for j in range(len(parts) - 1)]
            best, j = min(pairs)
            if best >= rank:
                break
            parts[j:j + 2] = [parts[j] + parts[j + 1]]
        if len(token) > 1:
            assert len(parts) == 2, f'token {rank} ({token!r}) is not the merge of two lower-ranked tokens'
            merges.append(tuple(parts))
    return merges


def hf_tokenizer(spec, max_length):
    """A transformers fast tokenizer equal to tiktoken on the spec: same split regex, same BPE, same ids.
    A literal '<|endoftext|>' in text is text, as in train.bin (prepare.py encodes documents as ordinary
    text): split_special_tokens keeps transformers from reading it as the end-of-text id, which only the
    code that joins documents puts in (bos/eos_token_id still name it)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    byte_char = bytes_to_unicode()
    as_str = lambda b: ''.join(byte_char[x] for x in b)
    vocab = {as_str(b): i for i, b in enumerate(spec['tokens'])}
    vocab.update(spec['special_tokens'])
    merges = [(as_str(a), as_str(b)) for a, b in merges_from_ranks(spec['tokens'])]
    # ignore_merges: a piece that is itself a token is that token, as in tiktoken
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(spec['pattern']), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec['special_tokens']])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                   model_max_length=max_length, clean_up_tokenization_spaces=False,
                                   split_special_tokens=True)


def export(checkpoint, out_dir):
    """Write the HF model directory for a loaded checkpoint; ExportError when it has no standard equivalent
    (or transformers is not installed)."""
    try:
        import transformers
    except ImportError:
        raise ExportError('export_hf.py needs transformers: pip install transformers')
    spec = tokenizer_of(checkpoint, 'the checkpoint')
    model = model_from_checkpoint(checkpoint)
    c = model.config
    target = target_architecture(c)
    n_vocab = vocab_size_of(spec)
    eot = spec['special_tokens'][EOT]
    sd = {k: v.float() for k, v in model.state_dict().items()}
    for key in ('transformer.wte.weight', 'lm_head.weight'):
        sd[key] = sd[key][:n_vocab]
    mlp_hidden = sd['transformer.h.0.mlp.c_proj.weight'].size(1)
    config = hf_config(c, target, n_vocab, eot, mlp_hidden)
    cls = {'gpt2': transformers.GPT2LMHeadModel, 'llama': transformers.LlamaForCausalLM,
           'qwen3': transformers.Qwen3ForCausalLM}[target]
    hf = cls(config)
    weights = gpt2_state_dict(sd) if target == 'gpt2' else llama_state_dict(sd, c)
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not (c.tie_embeddings and k == 'lm_head.weight')]
    assert not missing and not unexpected, f'weight names do not line up: missing {missing}, unexpected {unexpected}'
    hf.save_pretrained(out_dir, safe_serialization=True)
    hf_tokenizer(spec, c.block_size).save_pretrained(out_dir)
    config_path = os.path.join(out_dir, 'tokenizer_config.json')
    with open(config_path) as f:
        tokenizer_config = json.load(f)
    tokenizer_config['tokenizer_class'] = 'PreTrainedTokenizerFast'  # the name transformers 4 and 5 both know
    with open(config_path, 'w') as f:
        json.dump(tokenizer_config, f, indent=2)
    return target
