"""
A GPT language model in one file.

The defaults are GPT-2 (learned positions, LayerNorm, GELU MLP, tied head). Switches turn on the
modern variants measured in the speedrun: rotary positions, RMSNorm, SwiGLU or ReLU² MLP, QK-norm,
untied head, logit softcap, zero-initialised output projections. Attention goes through
F.scaled_dot_product_attention (flash attention on GPUs), except in compiled training on CPU at short
windows (causal_attention's plain matmuls, faster there). Generation uses a preallocated KV cache.

The model only: nothing here reads or writes files or knows of other libraries. Checkpoints are
checkpoint.py's, Hugging Face weights hf.py's, devices and precision common.py's.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from loss import chunked_cross_entropy, head_rows
from muon import Muon


# yapf: disable (a table: its comments aligned)
@dataclass
class GPTConfig:
    block_size: int = 1024         # the context: the most positions the model reads (position or rope tables, KV cache)
    vocab_size: int = 50304        # the data's, padded to a multiple of 64 (train.py); not an option
    n_layer: int = 12              # transformer blocks
    n_head: int = 12               # attention heads (query heads)
    n_embd: int = 768              # the residual stream's width
    dropout: float = 0.0           # in training only (0 for pretraining at this scale)
    bias: bool = True              # biases in Linear and LayerNorm layers, as GPT-2
    pos: str = 'learned'           # 'learned' (GPT-2) or 'rotary'
    norm: str = 'layernorm'        # 'layernorm' or 'rmsnorm'
    mlp: str = 'gelu'              # 'gelu' (GPT-2), 'swiglu' or 'relu2'
    qk_norm: bool = False          # RMSNorm on queries and keys, per head
    tie_embeddings: bool = True    # lm_head shares the token embedding matrix
    logit_softcap: float = 0.0     # 0 = off, else logits = c * tanh(logits / c)
    zero_init_proj: bool = False   # output projections start at zero: every block starts as identity
    rope_base: float = 10000.0     # rotary: the base of the angles' frequencies
    # the switches open models need (hf.py imports Llama, Qwen2, Qwen3); 0 / None = derived as noted
    n_kv_head: int = 0             # key/value heads, fewer than n_head for grouped-query attention; 0 = n_head
    head_dim: int = 0              # size of each head; 0 = n_embd // n_head
    mlp_hidden: int = 0            # MLP width; 0 = 4 * n_embd, or 64 * ceil(8 * n_embd / 3 / 64) for swiglu
    qkv_bias: bool = False         # biases on the query, key and value projections only (Qwen2)
    norm_eps: float = 0.0          # 0 = 1e-5 for layernorm (GPT-2), 1e-6 for rmsnorm
    rope_scaling: Optional[dict] = None  # Llama 3.1+'s: {factor, low_freq_factor, high_freq_factor,
    # original_max_position_embeddings}

    def __post_init__(self):
        """ValueError naming the first field that cannot make a model; then the derived fields are filled in."""
        choices = {'pos': ('learned', 'rotary'), 'norm': ('layernorm', 'rmsnorm'), 'mlp': ('gelu', 'swiglu', 'relu2')}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r}: expected one of {', '.join(allowed)}")
        for key in ('block_size', 'vocab_size', 'n_layer', 'n_head', 'n_embd'):
            if getattr(self, key) < 1:
                raise ValueError(f'{key}={getattr(self, key)}: must be at least 1')
        problems = [(not self.head_dim and self.n_embd % self.n_head, f'n_embd={self.n_embd} must be a multiple of '
                                                                      f'n_head={self.n_head}'),
                    (min(self.n_kv_head, self.head_dim, self.mlp_hidden, self.norm_eps) < 0,
                     'n_kv_head, head_dim, mlp_hidden and norm_eps must be 0 (derived) or more'),
                    (self.n_head % (self.n_kv_head or self.n_head),
                     f'n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}'),
                    (self.pos == 'rotary' and (self.head_dim or self.n_embd // self.n_head) % 2, 'pos=rotary needs an '
                                                                                                 'even '
                     f'head size, and n_embd / n_head = {self.n_embd} / {self.n_head} = {self.n_embd // self.n_head} '
                     'is odd'),
                    (not 0 <= self.dropout < 1, f'dropout={self.dropout}: must be in [0, 1)'),
                    (self.logit_softcap < 0, f'logit_softcap={self.logit_softcap}: must be 0 (off) or more'),
                    (self.rope_base <= 0, f'rope_base={self.rope_base}: must be positive')]
        for bad, message in problems:
            if bad:
                raise ValueError(message)
        self.n_kv_head = self.n_kv_head or self.n_head
        self.head_dim = self.head_dim or self.n_embd // self.n_head
        # swiglu has two input matrices: 2/3 the width keeps the parameter count of GELU's
        swiglu_width = 64 * math.ceil(8 * self.n_embd / 3 / 64)
        self.mlp_hidden = self.mlp_hidden or (swiglu_width if self.mlp == 'swiglu' else 4 * self.n_embd)
        self.norm_eps = self.norm_eps or (1e-5 if self.norm == 'layernorm' else 1e-6)


def padded_vocab(vocab_size):
    """A vocabulary padded to a multiple of 64 rows: the head's matmuls run faster (the extra rows are no tokens)."""
    return 64 * math.ceil(vocab_size / 64)


def rope_frequencies(config):
    """The rotary angle per position step of each pair of a head's dimensions; with Llama 3's scaling, the
    low frequencies are divided by `factor` and the middle ones blended (as transformers computes them)."""
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, hd, 2).float() / hd))
    if not config.rope_scaling:
        return inv_freq
    r = config.rope_scaling
    factor, low, high = r['factor'], r['low_freq_factor'], r['high_freq_factor']
    old = r['original_max_position_embeddings']
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


class Norm(nn.Module):
    def __init__(self, dim, kind, bias, eps):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias and kind == 'layernorm' else None

    def forward(self, x):
        if self.kind == 'rmsnorm':
            return F.rms_norm(x, self.weight.shape, self.weight, eps=self.eps)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


# On CPU, ATen's flash-attention backward takes about six times its forward. At a short window a layer's whole
# (T x T) score matrix is small and plain matmuls (AMX or avx512_bf16 ones under bf16 autocast) beat the flash
# kernel's tiles: the compiled SmolLM2 step at 4 x 256 (bf16, 2 cores) is 1.1x faster. Autograd keeps each layer's
# probabilities (B x n_head x T x T, 6 bytes each: 14 MB a layer there) where flash attention keeps O(T); at 1 x 2,048
# that would be 226 MB a layer and the flash kernel is faster anyway (dev/LOG.md 2026-12-07). Hence training on CPU
# at windows up to SHORT_WINDOW only, and compiled only: inductor fuses the mask and the softmax, while eager they are
# separate passes and SDPA is faster (5% a step on config/train_pubmed_cpu.py's model).
SHORT_WINDOW = 256


def causal_attention(q, k, v):
    """F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True) as plain matmuls and a softmax."""
    groups = q.size(1) // k.size(1)
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    T = q.size(2)
    scores = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(q.size(-1)))
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(future, float('-inf')).softmax(dim=-1).to(v.dtype) @ v


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.dropout = config.dropout
        # queries, keys and values in one matmul; with grouped-query attention n_head / n_kv_head query heads share a
        # key/value head
        self.sizes = (self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim)
        self.c_attn = nn.Linear(config.n_embd, sum(self.sizes), bias=config.bias or config.qkv_bias)
        self.c_proj = nn.Linear(self.sizes[0], config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        if config.qk_norm:
            self.q_norm = Norm(self.head_dim, 'rmsnorm', False, config.norm_eps)
            self.k_norm = Norm(self.head_dim, 'rmsnorm', False, config.norm_eps)
        self.qk_norm = config.qk_norm

    def forward(self, x, rope, cache=None, layer=0):
        B, T, _ = x.size()
        q, k, v = self.c_attn(x).split(self.sizes, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k, v = (t.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2) for t in (k, v))  # (B, n_kv, T, hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if cache is not None:  # a prefill starts from an empty cache, so the causal mask stays right
            k, v = cache.update(layer, k, v)
        dropout = self.dropout if self.training else 0.0
        if (x.device.type == 'cpu' and T <= SHORT_WINDOW and torch.compiler.is_compiling() and torch.is_grad_enabled()
                and cache is None and not dropout):
            y = causal_attention(q, k, v)  # compiled CPU training at a short window: faster than SDPA's backward
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=T > 1,
                                               enable_gqa=self.n_kv_head != self.n_head)
        y = y.transpose(1, 2).contiguous().view(B, T, self.sizes[0])
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.kind, hidden = config.mlp, config.mlp_hidden
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.kind == 'swiglu' else hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.c_fc(x)
        if self.kind == 'gelu':
            x = F.gelu(x, approximate='tanh')  # GPT-2's GELU ('gelu_new'): pretrained weights load exactly
        elif self.kind == 'relu2':
            x = F.relu(x).square()
        else:
            gate, up = x.chunk(2, dim=-1)
            x = F.silu(gate) * up
        return self.dropout(self.c_proj(x))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = Norm(config.n_embd, config.norm, config.bias, config.norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = Norm(config.n_embd, config.norm, config.bias, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, rope, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), rope, cache, layer)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """Keys and values of every layer, preallocated for `length` positions (default and at most block_size; in the
    dtype of the first keys written, so autocast works). The prompt is prefilled once, then each token appends one."""

    def __init__(self, config, batch_size, device, length=None):
        length = min(length or config.block_size, config.block_size)
        self.shape = (config.n_layer, batch_size, config.n_kv_head, length, config.head_dim)
        self.device, self.k, self.v = device, None, None
        self.pos = 0  # positions filled so far (the position of the next token)

    def update(self, layer, k, v):
        """Store k, v (B, nh, T, hd) at the next T positions; the keys and values of all positions so far."""
        if self.k is None:
            self.k = torch.zeros(self.shape, device=self.device, dtype=k.dtype)
            self.v = torch.zeros(self.shape, device=self.device, dtype=v.dtype)
        T = k.size(2)
        assert T == 1 or self.pos == 0, 'several tokens only as a prefill into an empty cache (causal mask)'
        assert self.pos + T <= self.k.size(3), f'the cache holds {self.k.size(3)} positions'
        end = self.pos + T
        self.k[layer, :, :, self.pos:end], self.v[layer, :, :, self.pos:end] = k, v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=Norm(config.n_embd, config.norm, config.bias, config.norm_eps),
        ))
        if config.pos == 'learned':
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        else:
            self.set_rope_tables()
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight
        self.activation_checkpointing = False  # train.py's switch: recompute each block's activations in backward
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):  # GPT-2's scaled init of residual projections
                std = 0.02 / math.sqrt(2 * config.n_layer)
                nn.init.zeros_(p) if config.zero_init_proj else nn.init.normal_(p, 0.0, std)

    def materialize(self, device):
        """Storage on `device` for a model built on the meta device (shapes only, no memory): its weights are garbage
        until loaded; the head is tied again (to_empty gives each module its own tensor) and the rotary tables computed.
        Sharded by FSDP, each process gets storage for its shards only."""
        self.to_empty(device=device)
        if self.config.tie_embeddings and self.transformer.wte.weight is not self.lm_head.weight:
            self.transformer.wte.weight = self.lm_head.weight
        if self.config.pos == 'rotary':
            self.set_rope_tables()
        return self

    def set_rope_tables(self):
        """cos and sin of every position's rotary angles, computed once: a decode step only slices them.
        (Called again by materialize(), where they were placeholders.)"""
        device = self.rope_cos.device if hasattr(self, 'rope_cos') and self.rope_cos.device.type != 'meta' else None
        angles = torch.outer(torch.arange(self.config.block_size, dtype=torch.float32), rope_frequencies(self.config))
        angles = torch.cat((angles, angles), dim=-1).to(device)
        self.register_buffer('rope_cos', angles.cos(), persistent=False)
        self.register_buffer('rope_sin', angles.sin(), persistent=False)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        """Parameters; non_embedding leaves out the position table (and an untied token table)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.config.pos == 'learned':
            n -= self.transformer.wpe.weight.numel()
        if non_embedding and not self.config.tie_embeddings:
            n -= self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token: 6 per matmul weight (forward + backward) plus attention scores."""
        c, T = self.config, seq_len or self.config.block_size
        return 6 * self.num_params() + 12 * c.n_layer * c.n_head * c.head_dim * T

    def forward(self, idx, targets=None, cache=None, reduction='mean', all_logits=False):
        """The logits (B, 1, vocab) of the last position, or of every one with all_logits; given targets, the loss
        instead, alone: cross-entropy with ignore_index=-1 (reduction 'mean', 'sum' or 'none' per token), computed
        by loss.py without ever building the (B, T, vocab) logits. nanochat's convention: `logits = model(x)`,
        `loss = model(x, y)` (nanoGPT's `logits, loss = model(x, y)` fails loudly: there are no logits to give)."""
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        x = self.transformer.wte(idx)
        rope = None
        assert start + T <= self.config.block_size, f'{start + T} positions exceed the context {self.config.block_size}'
        if self.config.pos == 'learned':
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))
        else:
            rope = self.rope_cos[start:start + T].to(x.dtype), self.rope_sin[start:start + T].to(x.dtype)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            if self.activation_checkpointing and torch.is_grad_enabled():  # keep only each block's input; dropout
                x = checkpoint(block, x, rope, use_reentrant=False)          # draws the same masks again
            else:
                x = block(x, rope, cache, i)
        x = self.transformer.ln_f(x)
        if cache is not None:
            cache.pos += T
        if targets is not None:
            rows = head_rows(x.device.type, self.config.vocab_size)
            return chunked_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets.view(-1),
                                         self.config.logit_softcap, reduction, rows)
        logits = self.lm_head(x if all_logits else x[:, -1:, :]).float()
        if self.config.logit_softcap:
            logits = self.config.logit_softcap * torch.tanh(logits / self.config.logit_softcap)
        return logits

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type,
                             optimizer='adamw', muon_lr=0.02, muon_momentum=0.95):
        """AdamW with weight decay on matrices only; with optimizer='muon', the hidden matrices of the
        blocks go to Muon instead and AdamW keeps embeddings, head, norms and biases. A list of optimizers."""
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        hidden = {n for n, p in params.items() if p.dim() == 2 and n.startswith('transformer.h.')}
        use_muon = optimizer == 'muon'
        if optimizer not in ('adamw', 'muon'):
            raise ValueError(f"optimizer={optimizer!r}: expected 'adamw' or 'muon'")
        adam_names = [n for n in params if not (use_muon and n in hidden)]
        decay = [params[n] for n in adam_names if params[n].dim() >= 2]
        no_decay = [params[n] for n in adam_names if params[n].dim() < 2]
        groups = [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]
        optimizers = [torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type in ('cuda', 'cpu'))]
        if use_muon:
            optimizers.append(Muon([params[n] for n in params if n in hidden], lr=muon_lr,
                                   momentum=muon_momentum, weight_decay=weight_decay))
        for opt in optimizers:  # train.py scales every group's lr from its base lr
            for group in opt.param_groups:
                group['base_lr'] = group['lr']
        return optimizers

    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                        use_cache=True, generator=None, n_vocab=None):
        """Yield the next token (B, 1) max_new_tokens times. The model sees a window of at most block_size
        tokens: a longer prompt keeps its last block_size; once the window is full it slides by half a
        block (the last block_size // 2 tokens are re-read, once), so the cache keeps paying off past
        block_size and the plain path (use_cache=False, full recompute each step) sees exactly the same
        tokens, for learned and rotary positions alike. n_vocab: sample only ids below it (the rows a
        vocabulary padded for fast matmuls adds are no tokens)."""
        block = self.config.block_size
        start = max(0, idx.size(1) - block)  # first token of the window
        cache = None
        for _ in range(max_new_tokens):
            if idx.size(1) - start > block:
                start, cache = idx.size(1) - max(1, block // 2), None
            if not use_cache:
                logits = self(idx[:, start:])
            elif cache is None:
                # no more positions than this window will reach (an 8k-context model sampling 200 tokens)
                cache = KVCache(self.config, idx.size(0), idx.device, idx.size(1) - start + max_new_tokens)
                logits = self(idx[:, start:], cache=cache)
            else:
                logits = self(idx[:, -1:], cache=cache)
            next_token = sample_next(logits[:, -1, :n_vocab], temperature, top_k, top_p, generator)
            idx = torch.cat((idx, next_token), dim=1)
            yield next_token

    def generate(self, idx, max_new_tokens, **kwargs):
        """The prompt followed by max_new_tokens generated tokens (see generate_stream)."""
        return torch.cat([idx, *self.generate_stream(idx, max_new_tokens, **kwargs)], dim=1)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One token per row from logits (B, vocab): greedy at temperature 0, else top-k / nucleus sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float('-inf'))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
