"""
Train a GPT on the token memmaps that data/pubmed/prepare.py writes.

    python train.py config/train_pubmed_cpu.py                       # CPU, a few minutes
    python train.py config/train_pubmed.py --compile=False           # one GPU
    torchrun --standalone --nproc_per_node=8 train.py config/train_pubmed.py
    python train.py --init_from=resume --out_dir=out                 # continue exactly where ckpt.pt stopped

Every module-level value below is a `--key=value` option (see configurator.py). Training stops at
the first budget reached: max_iters, max_tokens, max_seconds. Time budgets count training time only:
evaluation and checkpoint writing are excluded, so runs with different eval settings compare.
The learning rate warms up over warmup_iters, then decays with the progress of the run: the largest
fraction used of lr_decay_iters (or max_iters), max_tokens and max_seconds, so a run bounded by time
or tokens still ends its schedule at min_lr exactly when it stops. Every parameter group (AdamW's and
Muon's) follows the same factor of its own base lr. (Time-driven schedules are not bit-reproducible.)

gradient_accumulation_steps counts micro-batches per optimizer step summed over all processes, so
the same command trains the same way on 1 or 8 GPUs: the global batch of step k is the same set of
windows for any split of (processes x micro-steps per process).
"""
import dataclasses
import functools
import gc
import json
import math
import os
import pickle
import random
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import config_from_globals, configure, fail
from model import GPT, CheckpointError, GPTConfig, load_checkpoint, model_from_checkpoint, precision, save_checkpoint

# I/O
out_dir = 'out'
init_from = 'scratch'           # 'scratch', 'resume' (from out_dir/ckpt.pt), or GPT-2's weights for continued
                                # pretraining on --tokenizer=gpt2 data: 'gpt2', 'gpt2-medium', 'gpt2-large',
                                # 'gpt2-xl' (Hugging Face cache or download) or a local Hugging Face GPT-2 directory
eval_interval = 2000            # evaluate every this many iterations (0 = only at the start and end)
eval_interval_seconds = 0.0     # and/or whenever this much training time passed since the last eval (0 = off)
eval_iters = 200                # the fixed val set is eval_iters * batch_size windows
log_interval = 1
eval_only = False               # evaluate once and exit
always_save_checkpoint = True   # write ckpt.pt at every evaluation (False: never write ckpt.pt)
save_best = True                # write best.pt whenever val loss improves
ckpt_every_tokens = 0           # > 0: also keep snapshots ckpt_<tokens seen>.pt every this many tokens
# wandb
wandb_log = False
wandb_project = 'pubmed-gpt'
wandb_run_name = 'run'
# data
dataset = 'pubmed'              # data/<dataset>/ holds train.bin, val.bin, meta.pkl
data_dir = ''                   # any folder with those files; wins over dataset when set
batch_size = 12                 # windows per micro-batch
block_size = 1024
gradient_accumulation_steps = 40  # micro-batches per step, summed over all processes
align_windows = False           # training windows start where documents start (see window_starts), not every block_size
# model (GPTConfig; on resume the checkpoint's values are used)
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = True
pos = 'learned'
norm = 'layernorm'
mlp = 'gelu'
qk_norm = False
tie_embeddings = True
logit_softcap = 0.0
zero_init_proj = False
# optimizer
optimizer = 'adamw'             # 'adamw', or 'muon' for the blocks' matrices (AdamW for the rest)
learning_rate = 6e-4            # AdamW's peak lr
muon_lr = 0.02                  # Muon's peak lr
muon_momentum = 0.95
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0                 # 0 = off
# budgets: the first one reached stops training (0 = no limit)
max_iters = 600000
max_tokens = 0
max_seconds = 0.0
# learning-rate schedule: warmup, then cosine (or warmup-stable-decay) down to min_lr
decay_lr = True
schedule = 'cosine'             # 'cosine' or 'wsd'
warmup_iters = 2000
lr_decay_iters = 0              # the decay spans this many iterations (0 = max_iters), or max_tokens / max_seconds
min_lr = 6e-5                   # the floor, as lr of AdamW; every group decays by the same factor
cooldown_frac = 0.2             # wsd: the last fraction of training decays linearly to min_lr
# system
device = 'auto'                 # 'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'                  # 'auto' (bf16 if supported, else fp16 on GPU; fp32 on CPU), 'float32', 'bfloat16', 'float16'
compile = True
seed = 1337
peak_flops = 0.0                # FLOP/s of one device for MFU; 0 = known GPU table, else a measured matmul peak

MODEL_KEYS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'dropout', 'bias', 'pos', 'norm', 'mlp', 'qk_norm',
              'tie_embeddings', 'logit_softcap', 'zero_init_proj')
GPT2_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
CHOICES = {'optimizer': ('adamw', 'muon'), 'schedule': ('cosine', 'wsd'),
           'dtype': ('auto', 'float32', 'bfloat16', 'float16')}
# dense bf16/fp16 tensor-core peaks (FLOP/s); the first name contained in torch.cuda.get_device_name() wins
GPU_PEAK_FLOPS = (('H100 NVL', 835e12), ('H100 PCIe', 756e12), ('H100', 989e12), ('H200', 989e12),
                  ('B200', 2250e12), ('A100', 312e12), ('A800', 312e12), ('L40S', 362e12), ('L4', 121e12),
                  ('A10G', 70e12), ('A10', 125e12), ('V100', 125e12), ('T4', 65e12),
                  ('RTX 4090', 165e12), ('RTX 3090', 71e12))


# ---------------------------------------------------------------------------------------------
# data: windows of block_size + 1 tokens, visited in a seeded random order per epoch

def open_tokens(data_dir, split, dtype):
    return np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=dtype, mode='r')


def window_starts(tokens, block, eot=None):
    """Offsets of the windows: every block tokens (non-overlapping); or, given the <|endoftext|> id that
    ends each document, aligned to documents: a window at the <|endoftext|> before each document (so the
    first target is its first token) and every block tokens after it that is still inside the document."""
    last = len(tokens) - block - 1  # a window reads block + 1 tokens
    if eot is None:
        return np.arange(0, last + 1, block)
    chunk = 1 << 26  # scan a large memmap piece by piece
    ends = np.concatenate([np.flatnonzero(tokens[i:i + chunk] == eot) + i for i in range(0, len(tokens), chunk)])
    origins = np.concatenate(([0], ends))[:-1]  # the <|endoftext|> before each document (0 for the first)
    counts = np.maximum(1, -(-(ends - origins) // block))  # windows per document: ceil(length / block)
    nth = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # 0, 1, .. within each document
    starts = np.repeat(origins, counts) + nth * block
    return starts[starts <= last]


@functools.lru_cache(maxsize=2)  # the current epoch's order (and the next one's at the boundary)
def epoch_order(seed, epoch, n_windows):
    return np.random.default_rng([seed, epoch]).permutation(n_windows)


def window_ids(first, count, n_windows, seed):
    """Windows at positions first .. first+count-1 of the stream of per-epoch permutations."""
    positions = np.arange(first, first + count)
    epochs = positions // n_windows
    ids = np.empty(count, dtype=np.int64)
    for epoch in np.unique(epochs):
        order = epoch_order(seed, int(epoch), n_windows)
        mask = epochs == epoch
        ids[mask] = order[positions[mask] % n_windows]
    return ids


def read_windows(tokens, starts, block):
    """(x, y) int64 tensors of shape (len(starts), block) from the windows at these offsets."""
    rows = np.stack([tokens[s: s + block + 1] for s in starts]).astype(np.int64)
    rows = torch.from_numpy(rows)
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def eval_window_ids(n_windows, count):
    """The fixed val set: `count` windows spread evenly over val.bin."""
    count = min(count, n_windows)
    return np.unique(np.linspace(0, n_windows - 1, count).round().astype(np.int64))


# ---------------------------------------------------------------------------------------------
# schedule and metrics

def lr_multiplier(it, progress, warmup_iters, schedule, min_ratio, cooldown_frac, decay_lr=True):
    """Factor applied to every group's base lr: linear warmup over warmup_iters, then cosine (or
    constant, then a linear cooldown, for 'wsd') from 1 down to min_ratio as progress goes 0 -> 1."""
    if it < warmup_iters:
        return (it + 1) / (warmup_iters + 1)
    if not decay_lr:
        return 1.0
    progress = min(max(progress, 0.0), 1.0)
    if schedule == 'wsd':
        start = 1.0 - cooldown_frac
        if progress <= start:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * (progress - start) / max(cooldown_frac, 1e-12)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def loss_sums(nats, targets, token_bytes):
    """(sum of nats, token count, sum of nats over byte-carrying targets, their bytes) of per-token losses."""
    nbytes = token_bytes[targets.view(-1)]
    counted = nbytes > 0
    return torch.stack([nats.sum(), torch.tensor(float(nats.numel()), device=nats.device),
                        nats[counted].sum(), nbytes.sum().to(nats.dtype)])


def bits_per_byte(nats_on_text, text_bytes):
    return nats_on_text / (math.log(2) * text_bytes)


def measure_matmul_peak(device, dtype, seconds=0.5):
    """FLOP/s of a square matmul on this device, as the MFU denominator where no table applies.
    The fastest of repeated runs: on a shared machine the other processes only ever slow it down. On CPU
    n=512 (1.4 ms on 2 cores) so some runs see every core free: a busy machine rarely lets a 1024 matmul
    (~25 ms) have all of them, and then the "peak" falls below one core's rate and inflates MFU."""
    n = 512 if device.type == 'cpu' else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    a @ b
    sync()
    best, start = float('inf'), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def device_peak_flops(device, ptdtype):
    if device.type == 'cuda' and ptdtype in (torch.bfloat16, torch.float16):
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS:
            if key in name:
                return flops
    return measure_matmul_peak(device, ptdtype)


# ---------------------------------------------------------------------------------------------
# random states as plain data (weights_only checkpoints)

def rng_state(device):
    np_state = np.random.get_state(legacy=False)
    state = {'torch': torch.get_rng_state(),
             'numpy': {'key': torch.from_numpy(np_state['state']['key'].astype(np.int64)), 'pos': int(np_state['state']['pos']),
                       'has_gauss': int(np_state['has_gauss']), 'gauss': float(np_state['gauss'])},
             'python': [list(x) if isinstance(x, tuple) else x for x in random.getstate()]}
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state['torch'])
    s = state['numpy']
    np.random.set_state({'bit_generator': 'MT19937', 'state': {'key': s['key'].numpy().astype(np.uint32), 'pos': s['pos']},
                         'has_gauss': s['has_gauss'], 'gauss': s['gauss']})
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    if device.type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)


# ---------------------------------------------------------------------------------------------

def check_config(config):
    """Mistakes that a run would only hit later: one line, exit 2, before anything is written."""
    for key, allowed in CHOICES.items():
        if config[key] not in allowed:
            fail(f"{key}={config[key]!r}: expected one of {', '.join(allowed)}", 2)
    if config['init_from'] not in ('scratch', 'resume', *GPT2_NAMES) and not os.path.isdir(config['init_from']):
        fail(f"init_from={config['init_from']!r}: expected scratch, resume, {', '.join(GPT2_NAMES)} "
             f"or a Hugging Face GPT-2 directory", 2)
    try:
        GPTConfig(**{k: config[k] for k in MODEL_KEYS})
    except ValueError as e:
        fail(str(e), 2)
    for key in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_iters', 'log_interval'):
        if config[key] < 1:
            fail(f'{key}={config[key]}: must be at least 1', 2)


def load_meta(data_dir):
    """meta.pkl of a prepared data folder, or exit naming the missing file and how to make it."""
    make = ('python data/pubmed/prepare.py' if os.path.abspath(data_dir) == os.path.abspath('data/pubmed')
            else f'python data/pubmed/prepare.py --out_dir={data_dir}')
    for name in ('train.bin', 'val.bin', 'meta.pkl'):
        path = os.path.join(data_dir, name)
        if not os.path.isfile(path):
            fail(f'{path} not found: prepare the data first with `{make}` (or point --data_dir at a prepared folder)')
    with open(os.path.join(data_dir, 'meta.pkl'), 'rb') as f:
        return pickle.load(f)


def main():
    ddp = int(os.environ.get('RANK', -1)) != -1
    if ddp:
        rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
    else:
        rank, local_rank, world = 0, 0, 1
    master = rank == 0
    if gradient_accumulation_steps % world:
        fail(f'gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the {world} processes', 2)
    accum = gradient_accumulation_steps // world  # micro-steps on this process
    folder = data_dir or os.path.join('data', dataset)
    meta = load_meta(folder)
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    ckpt = None
    if init_from == 'resume':
        try:
            ckpt = load_checkpoint(ckpt_path)
        except CheckpointError as e:
            fail(str(e))

    dev = device
    if dev == 'auto':
        dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    if ddp and dev.startswith('cuda'):
        dev = f'cuda:{local_rank}'
    dev = torch.device(dev)
    if dev.type == 'cuda':
        torch.cuda.set_device(dev)
    if ddp:
        dist.init_process_group(backend='nccl' if dev.type == 'cuda' else 'gloo')
    ptdtype, autocast = precision(dev, dtype)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    config = config_from_globals(globals())
    if master:
        os.makedirs(out_dir, exist_ok=True)

    # model: init_from = 'scratch' builds it from the config, 'resume' from ckpt.pt, else from GPT-2's weights
    torch.manual_seed(seed)  # the same initial weights on every rank
    if init_from == 'scratch':
        model_args = {k: config[k] for k in MODEL_KEYS}
        model_args['vocab_size'] = 64 * math.ceil(meta['vocab_size'] / 64)  # rounded up for fast matmuls
        gpt = GPT(GPTConfig(**model_args))
    elif init_from == 'resume':
        model_args = ckpt['model_args']
        gpt = model_from_checkpoint(ckpt)
    else:  # GPT-2's weights read GPT-2's tokens only
        if meta['tokenizer']['name'] != 'gpt2' or meta['vocab_size'] != 50257:
            fail(f"init_from={init_from!r} needs data tokenized with GPT-2's tokenizer, but {folder} has a "
                 f"{meta['tokenizer']['name']!r} tokenizer of {meta['vocab_size']} tokens: prepare it with --tokenizer=gpt2")
        try:
            gpt = GPT.from_pretrained(init_from, block_size=block_size, dropout=dropout)
        except CheckpointError as e:
            fail(str(e))
        model_args = dataclasses.asdict(gpt.config)
        ignored = [f'{k}={config[k]!r}' for k in MODEL_KEYS if config[k] != model_args[k]]
        if master and ignored:
            print(f'note: init_from={init_from!r} fixes the architecture; ignoring {", ".join(ignored)}')
    if model_args['vocab_size'] < meta['vocab_size']:
        fail(f"the model's vocabulary ({model_args['vocab_size']}) is smaller than the data's ({meta['vocab_size']})")
    gpt.to(dev)
    block = model_args['block_size']

    optimizers = gpt.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), dev.type,
                                          optimizer=optimizer, muon_lr=muon_lr, muon_momentum=muon_momentum)
    scaler = torch.amp.GradScaler(dev.type, enabled=ptdtype == torch.float16)
    iter_num, tokens_seen, train_seconds, best_val_loss, windows_seen = 0, 0, 0.0, float('inf'), 0
    torch.manual_seed(seed + rank)  # dropout differs across ranks
    if ckpt is not None:
        if len(ckpt['optimizer']) != len(optimizers):
            fail(f"{ckpt_path} was trained with optimizer={ckpt['config']['optimizer']!r}: resume with the same optimizer")
        for opt, state in zip(optimizers, ckpt['optimizer']):
            base_lrs = [g['base_lr'] for g in opt.param_groups]
            opt.load_state_dict(state)
            for g, base in zip(opt.param_groups, base_lrs):  # the lr of this run's config counts
                g['base_lr'] = base
        if 'scaler' in ckpt:
            scaler.load_state_dict(ckpt['scaler'])
        iter_num, tokens_seen, best_val_loss = ckpt['iter_num'], ckpt['tokens_seen'], ckpt['best_val_loss']
        train_seconds, windows_seen = ckpt['train_seconds'], ckpt['loader']['windows_seen']
        rngs = ckpt['rng']
        if len(rngs) == world:
            set_rng_state(rngs[rank], dev)
        ckpt = None  # free memory

    model = torch.compile(gpt) if compile else gpt
    if ddp:
        model = DDP(model, device_ids=[local_rank] if dev.type == 'cuda' else None)

    # data
    train_tokens, val_tokens = open_tokens(folder, 'train', meta['dtype']), open_tokens(folder, 'val', meta['dtype'])
    if min(len(train_tokens), len(val_tokens)) <= block:
        fail(f'{folder}: train.bin and val.bin need more than block_size={block} tokens each')
    train_starts = window_starts(train_tokens, block, meta['eot_token'] if align_windows else None)
    if not len(train_starts):
        fail(f"{folder}: align_windows=True found no <|endoftext|> (id {meta['eot_token']}) in train.bin to align to")
    val_starts = window_starts(val_tokens, block)  # the same fixed val windows whatever align_windows says
    val_starts = val_starts[eval_window_ids(len(val_starts), eval_iters * batch_size)][rank::world]
    token_bytes = torch.tensor(meta['token_bytes'] + [0] * (model_args['vocab_size'] - len(meta['token_bytes'])), device=dev)
    micro_windows = batch_size * gradient_accumulation_steps  # windows per optimizer step, all ranks
    tokens_per_step = micro_windows * block

    def to_device(x, y):
        if dev.type == 'cuda':
            return x.pin_memory().to(dev, non_blocking=True), y.pin_memory().to(dev, non_blocking=True)
        return x.to(dev), y.to(dev)

    def train_batch(micro):
        """Micro-step `micro` of this rank in the current step: micro-batches are dealt to ranks in turn."""
        first = windows_seen + (micro * world + rank) * batch_size
        ids = window_ids(first, batch_size, len(train_starts), seed)
        return to_device(*read_windows(train_tokens, train_starts[ids], block))

    @torch.no_grad()
    def evaluate():
        model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=dev)
        for i in range(0, len(val_starts), batch_size):
            x, y = to_device(*read_windows(val_tokens, val_starts[i:i + batch_size], block))
            with autocast:
                _, nats = model(x, y, reduction='none')
            sums += loss_sums(nats.double(), y, token_bytes)
        if ddp:
            dist.all_reduce(sums)
        model.train()
        nats, count, nats_on_text, text_bytes = sums.tolist()
        val_loss = nats / count
        return {'val_loss': val_loss, 'val_ppl': math.exp(min(val_loss, 700)), 'val_bpb': bits_per_byte(nats_on_text, text_bytes)}

    # MFU: model FLOPs per second over the peak of all devices
    flops_per_token = gpt.flops_per_token(block)
    peak = peak_flops or device_peak_flops(dev, ptdtype)

    metrics_path = os.path.join(out_dir, 'metrics.jsonl')
    if master and init_from != 'resume' and not eval_only:
        if os.path.exists(ckpt_path):
            print(f'note: starting a new run in {out_dir}: its ckpt.pt will be overwritten at the first evaluation')
        open(metrics_path, 'w').close()
    run = None
    if master and wandb_log:
        import wandb
        run = wandb.init(project=wandb_project, name=wandb_run_name, config=config, dir=out_dir)

    def record(rec):
        if not master:
            return
        with open(metrics_path, 'a') as f:
            f.write(json.dumps(rec) + '\n')
        if run is not None:
            run.log({k: v for k, v in rec.items() if k != 'kind'}, step=rec['iter'])

    def checkpoint():
        """The checkpoint dict; called on every rank (the RNG states are gathered), written by rank 0."""
        rngs = [rng_state(dev)]
        if ddp:
            mine, rngs = rngs[0], [None] * world
            dist.all_gather_object(rngs, mine)
        ckpt = {'model': gpt.state_dict(), 'model_args': model_args, 'optimizer': [o.state_dict() for o in optimizers],
                'iter_num': iter_num, 'tokens_seen': tokens_seen, 'train_seconds': train_seconds,
                'best_val_loss': best_val_loss, 'config': config, 'rng': rngs,
                'loader': {'windows_seen': windows_seen, 'seed': seed, 'block_size': block, 'align_windows': align_windows},
                'tokenizer': meta['tokenizer'], 'token_bytes': meta['token_bytes']}
        if scaler.is_enabled():
            ckpt['scaler'] = scaler.state_dict()
        return ckpt

    def save(name, ckpt):
        if master:
            save_checkpoint(ckpt, os.path.join(out_dir, name))

    if master:
        print(f'{gpt.num_params() / 1e6:.2f}M parameters, {tokens_per_step:,} tokens per step on {world} process(es), '
              f'device {dev}, {str(ptdtype).removeprefix("torch.")}, peak {peak / 1e12:.3f} TFLOP/s per device')

    min_ratio = min_lr / learning_rate if learning_rate else 0.0
    first_iter, last_eval_seconds = iter_num, train_seconds
    log_seconds, log_iters = 0.0, 0
    while True:
        progress = iter_num / max(1, lr_decay_iters or max_iters)
        if max_tokens:
            progress = max(progress, tokens_seen / max_tokens)
        if max_seconds:
            progress = max(progress, train_seconds / max_seconds)
        # rank 0's clock decides time budgets for everyone
        flags = torch.tensor([train_seconds >= max_seconds > 0,
                              train_seconds - last_eval_seconds >= eval_interval_seconds > 0], dtype=torch.float32)
        if ddp:
            flags = flags.to(dev) if master else torch.zeros(2, device=dev)
            dist.all_reduce(flags)
        out_of_time, eval_due = (bool(f) for f in flags.tolist())
        done = out_of_time or iter_num >= max_iters or (max_tokens and tokens_seen >= max_tokens) or eval_only
        resumed_here = init_from == 'resume' and iter_num == first_iter and not eval_only
        if (done or eval_due or (eval_interval and iter_num % eval_interval == 0) or iter_num == first_iter) and not resumed_here:
            ev = evaluate()
            last_eval_seconds = train_seconds
            rec = {'kind': 'eval', 'iter': iter_num, 'tokens': tokens_seen, 'train_seconds': round(train_seconds, 3), **ev}
            record(rec)
            if master:
                print(f"eval iter {iter_num}: val loss {ev['val_loss']:.4f}, ppl {ev['val_ppl']:.2f}, bpb {ev['val_bpb']:.4f}")
            if not math.isfinite(ev['val_loss']):
                fail(f'val loss is {ev["val_loss"]} at iter {iter_num}: stopping; the checkpoints in {out_dir} are untouched')
            improved = ev['val_loss'] < best_val_loss
            best_val_loss = min(best_val_loss, ev['val_loss'])
            if not eval_only and iter_num > 0 and (always_save_checkpoint or (improved and save_best)):
                state = checkpoint()
                if always_save_checkpoint:
                    save('ckpt.pt', state)
                if improved and save_best:
                    save('best.pt', state)
        if done:
            break

        mult = lr_multiplier(iter_num, progress, warmup_iters, schedule, min_ratio, cooldown_frac, decay_lr)
        for opt in optimizers:
            for group in opt.param_groups:
                group['lr'] = group['base_lr'] * mult
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=dev)
        for micro in range(accum):
            x, y = train_batch(micro)
            sync = model.no_sync() if ddp and micro < accum - 1 else nullcontext()
            with sync:
                with autocast:
                    _, loss = model(x, y)
                loss = loss / accum
                scaler.scale(loss).backward()
            loss_sum += loss.detach()
        if grad_clip:
            for opt in optimizers:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(gpt.parameters(), grad_clip)
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if ddp:
            dist.all_reduce(loss_sum)
            loss_sum /= world
        lossf = loss_sum.item()
        dt = time.perf_counter() - t0
        iter_num += 1
        windows_seen += micro_windows
        tokens_seen += tokens_per_step
        train_seconds += dt
        log_seconds, log_iters = log_seconds + dt, log_iters + 1
        if not math.isfinite(lossf):
            fail(f'training loss is {lossf} at iter {iter_num}: stopping; the checkpoints in {out_dir} are untouched '
                 f'(try a lower learning_rate, grad_clip=1.0 or dtype=float32)')
        if iter_num % log_interval == 0:
            tokens_per_s = tokens_per_step * log_iters / log_seconds
            mfu = flops_per_token * tokens_per_s / (peak * world)
            record({'kind': 'train', 'iter': iter_num, 'tokens': tokens_seen, 'train_seconds': round(train_seconds, 3),
                    'loss': lossf, 'lr': learning_rate * mult, 'ms_per_iter': 1000 * log_seconds / log_iters,
                    'tokens_per_s': tokens_per_s, 'mfu': mfu})
            if master:
                print(f'iter {iter_num}: loss {lossf:.4f}, lr {learning_rate * mult:.2e}, {1000 * log_seconds / log_iters:.1f} ms/iter, '
                      f'{tokens_per_s:,.0f} tok/s, mfu {100 * mfu:.1f}%')
            log_seconds, log_iters = 0.0, 0
        if ckpt_every_tokens and tokens_seen // ckpt_every_tokens > (tokens_seen - tokens_per_step) // ckpt_every_tokens:
            save(f'ckpt_{tokens_seen:012d}.pt', checkpoint())

    if run is not None:
        run.finish()
    if ddp:  # DDP's reducer holds on to the process group: free it first, or gloo sometimes aborts at exit
        dist.barrier()
        del model
        gc.collect()
        dist.destroy_process_group()


if __name__ == '__main__':
    globals().update(configure(config_from_globals(globals())))
    check_config(globals())
    main()
