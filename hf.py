"""
Hugging Face interchange, both directions; model.py does not know transformers exists.

In: from_pretrained() reads a local Hugging Face folder (config.json + weights) of GPT-2, Llama
(Llama 3.x, SmolLM2, TinyLlama...), Qwen2, Qwen3 or Arcee, or OpenAI's GPT-2 by name ('gpt2', ...,
from the Hugging Face cache), into our GPT computing the same function; its tokenizer converts with
tokenizer.spec_from_hf_folder. Out: export() writes a checkpoint as a folder transformers loads with
no custom code (AutoModelForCausalLM, AutoTokenizer), for lm-evaluation-harness, vLLM and friends.

    ours                                                        Hugging Face
    pos=learned  norm=layernorm mlp=gelu                        GPT2LMHeadModel (bias=False: zero biases)
    pos=rotary   norm=rmsnorm   mlp=swiglu                      LlamaForCausalLM
    pos=rotary   norm=rmsnorm   mlp=swiglu  qkv_bias=True       Qwen2ForCausalLM (bias=False)
    pos=rotary   norm=rmsnorm   mlp=swiglu  qk_norm=True        Qwen3ForCausalLM (bias=False)
    pos=rotary   norm=rmsnorm   mlp=relu2                       ArceeForCausalLM (a Llama with a ReLU² MLP)
Grouped-query attention, head size, MLP width, norm eps, rope base and Llama 3's rope scaling carry
over both ways. Anything else (a logit softcap, ReLU² with QK-norm, ...) is refused, naming the switch.
Exported weights are float32 model.safetensors; the vocabulary padding train.py adds is dropped.
"""
import glob
import json
import os

import torch

from checkpoint import CheckpointError, model_from_checkpoint, tokenizer_of
from common import first_line
from model import GPT, GPTConfig
from tokenizer import eot_id, hf_tokenizer, vocab_size_of

LLAMA_FAMILY = {
    'llama': 'LlamaForCausalLM', 'qwen2': 'Qwen2ForCausalLM', 'qwen3': 'Qwen3ForCausalLM', 'arcee': 'ArceeForCausalLM'
}
# the sizes a config.json must give (transformers' defaults are those of some other model)
REQUIRED = {
    'gpt2': ('vocab_size', 'n_embd', 'n_layer', 'n_head'), **{
        t: ('vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size')
        for t in LLAMA_FAMILY
    }
}
# Hugging Face's GPT-2 stores these as Conv1D, (in, out): the transpose of nn.Linear's (out, in)
HF_GPT2_TRANSPOSED = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')


class ModelFolderError(CheckpointError):
    """A Hugging Face model folder (or config) that does not import: a checkpoint of another tool, so callers that
    refuse unusable checkpoints refuse it too."""


class ExportError(Exception):
    """A checkpoint with no standard architecture to export as (or no transformers to write one)."""


# ------------------------------------------------------------------------------------------------
# names: ours <-> Llama family. Our fused matrices are theirs side by side: c_attn = [q; k; v] and,
# for SwiGLU, c_fc = [gate; up].


def llama_names(c):
    """[(our name, [their names], the sizes our tensor splits into along dim 0)] of every weight."""
    names = [('transformer.wte.weight', ['model.embed_tokens.weight'], None),
             ('transformer.ln_f.weight', ['model.norm.weight'], None)]
    if not c.tie_embeddings:
        names.append(('lm_head.weight', ['lm_head.weight'], None))
    q, kv = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
    for i in range(c.n_layer):
        ours, theirs = f'transformer.h.{i}.', f'model.layers.{i}.'
        names += [(ours + 'ln_1.weight', [theirs + 'input_layernorm.weight'], None),
                  (ours + 'ln_2.weight', [theirs + 'post_attention_layernorm.weight'], None)]
        attn_kinds = ('weight', 'bias') if c.bias or c.qkv_bias else ('weight', )
        names += [(f'{ours}attn.c_attn.{k}', [f'{theirs}self_attn.{p}_proj.{k}' for p in 'qkv'], [q, kv, kv])
                  for k in attn_kinds]
        kinds = ('weight', 'bias') if c.bias else ('weight', )
        names += [(f'{ours}attn.c_proj.{k}', [f'{theirs}self_attn.o_proj.{k}'], None) for k in kinds]
        if c.mlp == 'swiglu':
            names += [(f'{ours}mlp.c_fc.{k}', [f'{theirs}mlp.gate_proj.{k}',
                                               f'{theirs}mlp.up_proj.{k}'], [c.mlp_hidden, c.mlp_hidden])
                      for k in kinds]
        else:
            names += [(f'{ours}mlp.c_fc.{k}', [f'{theirs}mlp.up_proj.{k}'], None) for k in kinds]
        names += [(f'{ours}mlp.c_proj.{k}', [f'{theirs}mlp.down_proj.{k}'], None) for k in kinds]
        if c.qk_norm:
            names += [(f'{ours}attn.{n}.weight', [f'{theirs}self_attn.{n}.weight'], None) for n in ('q_norm', 'k_norm')]
    return names


def to_llama_names(sd, c):
    out = {}
    for ours, theirs, sizes in llama_names(c):
        out.update(zip(theirs, sd[ours].split(sizes) if sizes else [sd[ours]]))
    return out


def from_llama_names(sd, c):
    return {ours: torch.cat([sd[t] for t in theirs]) for ours, theirs, _ in llama_names(c)}


def to_gpt2_names(sd):
    """Ours -> GPT2LMHeadModel: the same names, Conv1D weights transposed, zeros for the biases of the
    blocks' and final norm's layers when we have none (bias=False): GPT-2 always has them."""
    hf = {}
    for key, w in sd.items():
        hf[key] = w.t() if key.endswith(HF_GPT2_TRANSPOSED) else w
        bias = key.removesuffix('weight') + 'bias'
        if key.startswith(('transformer.h.', 'transformer.ln_f.')) and key.endswith('.weight') and bias not in sd:
            hf[bias] = torch.zeros(w.size(0))
    return hf


# ------------------------------------------------------------------------------------------------
# in


def raw_config(folder):
    """A model folder's config.json as a dict with a model_type, or ModelFolderError saying what it is instead."""
    path = os.path.join(folder, 'config.json')
    try:
        with open(path, encoding='utf-8') as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelFolderError(f'{path}: not readable JSON ({type(e).__name__}: {first_line(e)})')
    if not isinstance(raw, dict) or not isinstance(raw.get('model_type'), str):
        raise ModelFolderError(f'{path}: not a Hugging Face model config (a JSON object with a model_type)')
    return raw


def read_hf_config(name_or_dir, local_only=True):
    """transformers' config of a local folder (its config.json checked first) or hub name. ModelFolderError for a
    config that is not one; OSError when it is not to be had (not in the cache, no network)."""
    try:
        from transformers import AutoConfig
    except ImportError:
        raise ModelFolderError(f'init from {name_or_dir!r} needs transformers: pip install transformers')
    if os.path.isdir(name_or_dir):
        raw = raw_config(name_or_dir)
        missing = [k for k in REQUIRED.get(raw['model_type'], ()) if k not in raw]
        if missing:  # transformers would fill in its defaults (another model's sizes)
            raise ModelFolderError(f"{os.path.join(name_or_dir, 'config.json')}: has no {', '.join(missing)}")
    try:
        config = AutoConfig.from_pretrained(name_or_dir, local_files_only=local_only)
    except OSError:
        raise
    except Exception as e:
        raise ModelFolderError(f'{name_or_dir}: its config does not load in transformers ({type(e).__name__}: '
                               f'{first_line(e)})')
    if config.model_type not in ('gpt2', *LLAMA_FAMILY):
        raise ModelFolderError(f"{name_or_dir}: a {config.model_type!r} model; this project imports GPT-2, "
                               f"{', '.join(LLAMA_FAMILY.values())}")
    return config


def check_weight_files(folder):
    """ModelFolderError unless the weight files a folder's index lists are files of the folder itself."""
    for index in sorted(glob.glob(os.path.join(folder, '*.index.json'))):
        try:
            with open(index, encoding='utf-8') as f:
                files = set(json.load(f)['weight_map'].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFolderError(f'{index}: not a readable weight index ({type(e).__name__}: {first_line(e)})')
        outside = sorted(
            str(n) for n in files if not isinstance(n, str) or n != os.path.basename(n) or n in ('', '.', '..'))
        if outside:
            raise ModelFolderError(f'{index}: lists weight files outside the model folder ({", ".join(outside[:3])}): '
                                   'only files inside it are read')


def load_hf_model(name_or_dir):
    """transformers' model of a local folder or hub name: the local cache first, then (unless
    HF_HUB_OFFLINE) a download. ModelFolderError when it cannot be had, is of another family, or its weights do not
    match its config (missing, unexpected or of another shape: never trained from a random initialisation)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    last_error = None
    for local_only in (True, False):
        try:
            config = read_hf_config(name_or_dir, local_only)
            config_from_hf(config)  # before transformers allocates anything for it
            if os.path.isdir(name_or_dir):
                check_weight_files(name_or_dir)
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # its loading report: said below in one line
            try:
                # mismatched sizes are reported (below, by name and shape) rather than raised as "see the report above"
                model, info = AutoModelForCausalLM.from_pretrained(name_or_dir, config=config,
                                                                   local_files_only=local_only, dtype=torch.float32,
                                                                   output_loading_info=True,
                                                                   ignore_mismatched_sizes=True)
            finally:
                hf_logging.set_verbosity(verbosity)
        except OSError as e:  # not in the cache, no network, or not a model directory
            last_error = e
            if os.path.isdir(name_or_dir):
                break
            continue
        except (RuntimeError, ValueError) as e:  # e.g. a tensor of another shape than the config's
            raise ModelFolderError(f'{name_or_dir}: its weights do not load ({type(e).__name__}: {first_line(e)})')
        info['mismatched_keys'] = [
            f'{name} ({shape_text(file)} in the file, {shape_text(config)} by config.json)'
            for name, file, config in info.get('mismatched_keys') or []
        ]
        problems = [
            f'{what} {", ".join(sorted(info[key])[:3])}' +
            (f' and {len(info[key]) - 3} more' if len(info[key]) > 3 else '')
            for key, what in (('missing_keys', 'missing:'), ('unexpected_keys', 'unexpected:'),
                              ('mismatched_keys', 'of another shape:')) if info.get(key)
        ]
        if problems:
            raise ModelFolderError(f"{name_or_dir}: its weights do not match its config.json ({'; '.join(problems)}): "
                                   'refused rather than trained from random values')
        return model
    raise ModelFolderError(
        f'cannot load {name_or_dir!r}: not in the Hugging Face cache and not downloadable here '
        f'({first_line(last_error)}). Fetch it once with network access (any from_pretrained '
        f'call fills the cache, or huggingface-cli download NAME --local-dir DIR), or pass a local folder')


def shape_text(shape):
    return ' x '.join(map(str, shape))


def positive_int(c, key, limit=2**31):
    value = getattr(c, key, None)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
        raise ModelFolderError(f'{c.model_type}: {key}={value!r} is not a size (a whole number from 1 to {limit:,})')
    return value


def config_from_hf(c, window=None, dropout=0.0):
    """Our GPTConfig for a transformers config, to train on windows of `window` tokens (None: the model's positions);
    ModelFolderError naming what does not map. Every field of these families' configs that changes the function is
    either carried over or refused here. The context (GPTConfig.block_size) of a rotary model is its positions, or
    the window if that is longer; GPT-2's position table is cut to the window (its table is its context)."""
    if c.model_type == 'gpt2':
        sizes = {key: positive_int(c, key) for key in ('vocab_size', 'n_positions', 'n_layer', 'n_head', 'n_embd')}
        unsupported = [(c.activation_function
                        not in ('gelu_new', 'gelu_pytorch_tanh'), f'activation_function={c.activation_function!r}'),
                       (not c.scale_attn_weights, 'scale_attn_weights=False'),
                       (c.scale_attn_by_inverse_layer_idx, 'scale_attn_by_inverse_layer_idx=True'),
                       (getattr(c, 'add_cross_attention', False), 'add_cross_attention=True'),
                       (c.n_inner not in (None, 4 * c.n_embd), f'n_inner={c.n_inner}')]
        positions, args = sizes['n_positions'], dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                                                     norm_eps=c.layer_norm_epsilon)
    else:
        sizes = {
            key: positive_int(c, key)
            for key in ('vocab_size', 'max_position_embeddings', 'num_hidden_layers', 'num_attention_heads',
                        'hidden_size', 'intermediate_size')
        }
        rope = dict(getattr(c, 'rope_parameters', None) or {})
        attention_bias, mlp_bias = getattr(c, 'attention_bias', False), getattr(c, 'mlp_bias', False)
        act = 'relu2' if c.model_type == 'arcee' else 'silu'
        sliding = [t for t in getattr(c, 'layer_types', None) or [] if t != 'full_attention']
        unsupported = [(c.hidden_act != act, f'hidden_act={c.hidden_act!r}'),
                       (rope.get('rope_type', 'default')
                        not in ('default', 'llama3'), f"rope_type={rope.get('rope_type')!r}"),
                       (rope.get('partial_rotary_factor', 1.0)
                        != 1.0, f"partial_rotary_factor={rope.get('partial_rotary_factor')}"),
                       (getattr(c, 'use_sliding_window', False), 'use_sliding_window=True'),
                       (sliding, f'layer_types with {sliding[:1]} layers'),
                       (getattr(c, 'pretraining_tp', 1) != 1, f'pretraining_tp={getattr(c, "pretraining_tp", 1)}'),
                       (c.model_type != 'qwen2' and
                        attention_bias != mlp_bias, f'attention_bias={attention_bias} with mlp_bias={mlp_bias}')]
        llama3 = ('factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings')
        scaling = {k: rope[k] for k in llama3} \
            if rope.get('rope_type') == 'llama3' else None
        positions = sizes['max_position_embeddings']
        kv_heads = positive_int(c,
                                'num_key_value_heads') if c.num_key_value_heads is not None else c.num_attention_heads
        head_dim = positive_int(c, 'head_dim') if getattr(c, 'head_dim',
                                                          None) is not None else c.hidden_size // c.num_attention_heads
        args = dict(n_layer=c.num_hidden_layers, n_head=c.num_attention_heads, n_embd=c.hidden_size, n_kv_head=kv_heads,
                    head_dim=head_dim, mlp_hidden=c.intermediate_size, pos='rotary', norm='rmsnorm',
                    mlp='relu2' if c.model_type == 'arcee' else 'swiglu', qk_norm=c.model_type == 'qwen3',
                    qkv_bias=c.model_type == 'qwen2', bias=attention_bias and c.model_type != 'qwen2',
                    norm_eps=c.rms_norm_eps, rope_base=float(rope.get('rope_theta',
                                                                      getattr(c, 'rope_theta',
                                                                              10000.0))), rope_scaling=scaling)
    for bad, what in unsupported:
        if bad:
            raise ModelFolderError(f'{c.model_type}: {what} is not something model.py computes')
    if c.model_type == 'gpt2':  # learned positions: the table is the context, cut to the training window
        if window and window > positions:
            raise ModelFolderError(f'block_size={window}: the model has only {positions} positions')
        context = window or positions
    else:  # rotary: the training window is a choice of the run; the model reads as far as it did (or further)
        context = max(positions, window or 0)
    try:
        return GPTConfig(block_size=context, vocab_size=sizes['vocab_size'], dropout=dropout,
                         tie_embeddings=bool(c.tie_word_embeddings), **args)
    except (ValueError, TypeError) as e:
        raise ModelFolderError(f'{c.model_type}: its config does not make a model ({first_line(e)})')


def from_pretrained(name_or_dir, window=None, dropout=0.0):
    """Our GPT with the weights of a Hugging Face model (see the table above), to train on windows of `window`
    tokens (config_from_hf: what that does to the context). ModelFolderError when it can't be had or does not map."""
    return from_hf_model(load_hf_model(name_or_dir), window, dropout)


def from_hf_model(hf, window=None, dropout=0.0):
    """Our GPT computing what a loaded transformers model computes (see from_pretrained)."""
    config = config_from_hf(hf.config, window, dropout)
    with torch.device('meta'):  # no random initialisation of weights that are overwritten next (minutes for 8B)
        model = GPT(config)
    model.materialize('cpu')
    theirs = {k: v for k, v in hf.state_dict().items() if not k.endswith('.attn.bias')}  # old GPT-2 mask buffers
    if config.pos == 'learned':
        ours = {k: theirs[k].t() if k.endswith(HF_GPT2_TRANSPOSED) else theirs[k] for k in model.state_dict()}
        ours['transformer.wpe.weight'] = ours['transformer.wpe.weight'][:config.block_size]
    else:
        ours = from_llama_names(theirs, config)
        if config.tie_embeddings:
            ours['lm_head.weight'] = ours['transformer.wte.weight']
    model.load_state_dict(ours)
    return model


def shapes_of(name_or_dir, window=None, dropout=0.0):
    """The GPTConfig of a Hugging Face model from its config.json alone (no weights read)."""
    try:
        return config_from_hf(read_hf_config(name_or_dir), window, dropout)
    except OSError as e:
        raise ModelFolderError(f'cannot read the config of {name_or_dir!r} ({first_line(e)})')


# ------------------------------------------------------------------------------------------------
# out


def target_architecture(c):
    """The model_type of the standard architecture computing what a GPTConfig does, or ExportError naming
    the switch that has none."""
    if c.logit_softcap:
        raise ExportError(f'logit_softcap={c.logit_softcap} has no standard Hugging Face equivalent '
                          f'(GPT-2, Llama, Qwen and Arcee do not cap logits)')
    if c.pos == 'learned':
        target = 'gpt2'
        needs = {
            'norm': 'layernorm', 'mlp': 'gelu', 'qk_norm': False, 'qkv_bias': False, 'n_kv_head': c.n_head,
            'head_dim': c.n_embd // c.n_head, 'mlp_hidden': 4 * c.n_embd, 'norm_eps': 1e-5, 'rope_scaling': None
        }
    elif c.mlp == 'relu2':
        target, needs = 'arcee', {'norm': 'rmsnorm', 'qk_norm': False, 'qkv_bias': False}
    elif c.qk_norm:
        target, needs = 'qwen3', {'norm': 'rmsnorm', 'mlp': 'swiglu', 'bias': False, 'qkv_bias': False}
    elif c.qkv_bias:
        target, needs = 'qwen2', {'norm': 'rmsnorm', 'mlp': 'swiglu', 'bias': False}
    else:
        target, needs = 'llama', {'norm': 'rmsnorm', 'mlp': 'swiglu'}
    for key, value in needs.items():
        if getattr(c, key) != value:
            raise ExportError(f'{key}={getattr(c, key)!r} has no standard Hugging Face equivalent with pos={c.pos!r}'
                              f' and mlp={c.mlp!r}: the closest architecture, {target}, needs {key}={value!r}')
    return target


def hf_config(c, target, n_vocab, eot):
    import transformers
    common = dict(vocab_size=n_vocab, tie_word_embeddings=c.tie_embeddings, bos_token_id=eot, eos_token_id=eot)
    if target == 'gpt2':
        return transformers.GPT2Config(n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
                                       activation_function='gelu_new', layer_norm_epsilon=c.norm_eps, resid_pdrop=0.0,
                                       embd_pdrop=0.0, attn_pdrop=0.0, **common)
    rope = {'rope_type': 'llama3', **c.rope_scaling} if c.rope_scaling else {'rope_type': 'default'}
    llama_like = dict(hidden_size=c.n_embd, num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
                      num_key_value_heads=c.n_kv_head, head_dim=c.head_dim, intermediate_size=c.mlp_hidden,
                      max_position_embeddings=c.block_size, rms_norm_eps=c.norm_eps,
                      rope_parameters={**rope, 'rope_theta': c.rope_base}, **common)
    if target == 'llama':
        return transformers.LlamaConfig(hidden_act='silu', attention_bias=c.bias, mlp_bias=c.bias, **llama_like)
    if target == 'arcee':
        return transformers.ArceeConfig(hidden_act='relu2', attention_bias=c.bias, mlp_bias=c.bias, **llama_like)
    if target == 'qwen2':
        return transformers.Qwen2Config(hidden_act='silu', **llama_like)
    return transformers.Qwen3Config(hidden_act='silu', attention_bias=False, **llama_like)


def export(checkpoint, out_dir):
    """Write the HF model directory for a loaded checkpoint; ExportError when it has no standard equivalent
    (or transformers is not installed). Returns the architecture's model_type."""
    try:
        import transformers
    except ImportError:
        raise ExportError('export_hf.py needs transformers: pip install transformers')
    spec = tokenizer_of(checkpoint, 'the checkpoint')
    model = model_from_checkpoint(checkpoint)
    c = model.config
    target = target_architecture(c)
    n_vocab = vocab_size_of(spec)
    sd = {k: v.float() for k, v in model.state_dict().items()}
    for key in ('transformer.wte.weight', 'lm_head.weight'):
        sd[key] = sd[key][:n_vocab]
    hf = getattr(transformers, LLAMA_FAMILY.get(target, 'GPT2LMHeadModel'))(hf_config(c, target, n_vocab, eot_id(spec)))
    weights = to_gpt2_names(sd) if target == 'gpt2' else to_llama_names(sd, c)
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
