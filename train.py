"""
Train a GPT on the token files that data/pubmed/prepare.py writes.

    python train.py config/train_pubmed_cpu.py                       # CPU, a few minutes
    python train.py config/train_pubmed.py --compile=False           # one GPU
    torchrun --standalone --nproc_per_node=8 train.py config/train_pubmed.py
    torchrun --standalone --nproc_per_node=8 train.py config/finetune_1b_fsdp.py --init_from=models/llama-3.2-1b
    python train.py config/finetune_1b_fsdp.py --init_from=models/llama-3.2-1b --plan=True   # memory per GPU, then exit
    python train.py --init_from=resume --out_dir=out                 # continue exactly where ckpt.pt stopped

Every module-level value below is a `--key=value` option (configurator.py), and so is every field of
GPTConfig in model.py (--n_layer, --pos, ...). Training stops at the first budget reached: max_iters,
max_tokens, max_seconds. Time budgets count training time only: evaluation and checkpoint writing are
excluded, so runs with different eval settings compare. The learning rate warms up over warmup_iters,
then decays with the progress of the run: the largest fraction used of lr_decay_iters (or max_iters),
max_tokens and max_seconds, so a run bounded by time or tokens still ends its schedule at min_lr
exactly when it stops. Every parameter group (AdamW's and Muon's) follows the same factor of its own
base lr. (Time-driven schedules are not bit-reproducible.)

gradient_accumulation_steps counts micro-batches per optimizer step summed over all processes, so
the same command trains the same way on 1 or 8 GPUs: the global batch of step k is the same set of
windows for any split of (processes x micro-steps per process) (dataloader.TrainLoader).

--parallel=fsdp shards the weights, gradients and optimizer state over the processes (parallel.py) and
writes sharded checkpoints, folders NAME.dcp (checkpoint.py), which resume on any number of processes.
"""
import gc
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import timedelta
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import run_options
from checkpoint import (CheckpointError, check_resumable, first_line, latest_checkpoint, load_checkpoint, load_state,
                        make_checkpoint, model_from_checkpoint, read_fields, save_state)
from common import (DiskFullError, atomic_write, device_peak_flops, die_with_parent, disk_full_message, peak_memory_mb, precision,
                    remove_stale_temporaries, resolve_device)
from configurator import config_from_globals, fail
from dataloader import DataError, TrainLoader, eval_starts, load_meta, open_tokens, read_windows
from loss_eval import evaluate
from model import GPT, GPTConfig
from model_card import data_facts, run_origin
from parallel import STOP_SIGNALS, parallelize, progress_store, stall_report, stop_on_signals, whole_model
from plan import print_run_plan
from tokenizer import TokenizerError, fingerprint, spec_from_hf_folder

# -----------------------------------------------------------------------------------------------
# options
# I/O
out_dir = 'out'                 # the run's folder: checkpoints, metrics.jsonl
init_from = 'scratch'           # 'scratch', 'resume' (from out_dir/ckpt.pt), or an open model to continue pretraining
                                # on data prepared with its tokenizer: a local Hugging Face folder (GPT-2, Llama, Qwen2,
                                # Qwen3, Arcee) or 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' (cache or download)
eval_interval = 2000            # evaluate every this many iterations (0 = only at the start and end)
eval_interval_seconds = 0.0     # and/or whenever this much training time passed since the last eval (0 = off)
eval_iters = 200                # the fixed val set is eval_iters * batch_size windows
log_interval = 1                # log (and read the loss from the device) every this many iterations
eval_only = False               # evaluate the model of init_from (resume: out_dir's checkpoint) once, print it, write nothing
save_latest = True              # write ckpt.pt, the state --init_from=resume continues from, at every evaluation
save_best = True                # write best.pt whenever val loss improves
ckpt_every_tokens = 0           # > 0: also keep snapshots ckpt_<tokens seen>.pt every this many tokens
overwrite = False               # a new run into an out_dir that holds a previous run's files replaces them (else refused)
allow_config_change = False     # resume even with a batch, accumulation, seed or window alignment other than the run's
eval_pubmedqa = False           # at the end, PubMedQA zero-shot with lm-evaluation-harness (pubmedqa.py), into metrics.jsonl
pubmedqa_dir = ''               # its data: '' = $PUBMEDQA_DIR, data/pubmedqa or ../shared/data/pubmedqa
pubmedqa_limit = 0              # only N test questions, spread over the split (0 = all 500)
# wandb
wandb_log = False               # also log to Weights & Biases
wandb_project = 'pubmed-gpt'    # ... into this project
wandb_run_name = 'run'          # ... as this run
# data
data_dir = 'data/pubmed'        # a folder with train.bin, val.bin, meta.pkl
batch_size = 12                 # windows per micro-batch
gradient_accumulation_steps = 40  # micro-batches per step, summed over all processes
align_windows = False           # training windows start where documents start (see window_starts), not every block_size
# model: the fields of GPTConfig (model.py), defaults there (GPT-2 small); on resume the checkpoint's shape is used.
# block_size is the training window: a model from scratch reads as far; an open model with rotary positions keeps
# its own context when that is longer (GPT-2's position table is cut to the window)
# optimizer
optimizer = 'adamw'             # 'adamw', or 'muon' for the blocks' matrices (AdamW for the rest)
learning_rate = 6e-4            # AdamW's peak lr
muon_lr = 0.02                  # Muon's peak lr
muon_momentum = 0.95            # Muon's momentum
weight_decay = 1e-1             # on matrices only (AdamW's decoupled decay; Muon's own)
beta1 = 0.9                     # AdamW's first moment decay
beta2 = 0.95                    # AdamW's second moment decay
grad_clip = 1.0                 # 0 = off
# budgets: the first one reached stops training (0 = no limit)
max_iters = 600000              # optimizer steps
max_tokens = 0                  # training tokens, all processes
max_seconds = 0.0               # training time (evaluation and checkpoints excluded)
# learning-rate schedule: warmup, then cosine (or warmup-stable-decay, or constant) down to min_lr
schedule = 'cosine'             # 'cosine', 'wsd' or 'constant' (no decay)
warmup_iters = 2000             # linear warmup from lr/(warmup_iters+1)
lr_decay_iters = 0              # the decay spans this many iterations (0 = max_iters), or max_tokens / max_seconds
min_lr = 6e-5                   # the floor, as lr of AdamW; every group decays by the same factor
cooldown_frac = 0.2             # wsd: the last fraction of training decays linearly to min_lr
# system
device = 'auto'                 # 'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'                  # 'auto' (bf16 if supported, else fp16 on GPU; fp32 on CPU), 'float32', 'bfloat16', 'float16'
compile = True                  # torch.compile the model (a C++ compiler on CPU; seconds to minutes once)
seed = 1337                     # initial weights, the data order and dropout
peak_flops = 0.0                # FLOP/s of one device for MFU; 0 = known GPU table, else a measured matmul peak (MFU is
                                # 'unknown' once the model computes faster than the peak: it was measured too low)
dist_timeout = 600.0            # seconds a process waits for the others (torchrun) before it stops and names the straggler
parallel = 'ddp'                # 'ddp': each process holds the whole model; 'fsdp': FSDP2 shards it (parallel.py)
activation_checkpointing = False  # recompute each block's activations in backward: far less memory, ~1/3 more compute
cpu_offload = False             # fsdp: keep the sharded weights, gradients and optimizer state in CPU memory
plan = False                    # print the memory per GPU of this run (plan.py) under DDP and FSDP, and exit
fast_dev_run = False            # check the config in seconds before a long job: 2 steps, evaluation, a checkpoint written and
                                # resumed, a sample and an export, in a temporary folder (out_dir is not touched)
plan_gpus = 8                   # ... for this many GPUs (torchrun's world size when run under it)
plan_gpu_gb = 80.0              # ... of this much memory each
# -----------------------------------------------------------------------------------------------


def options(argv=None):
    """This run's options (a namespace): the defaults above and GPTConfig's fields, then config files and --key=value
    from argv (default sys.argv), merged with a resumed run's own and checked (run_options.py)."""
    return run_options.parse(config_from_globals(globals()), argv)


def main(opts, last=True):
    """A training run, phase by phase; the loop is train(). last=False keeps the process group for another run in this
    process (fast_dev_run's resume: initialising one again in a torchrun job can hang on the store's old keys)."""
    if opts.plan:
        return print_run_plan(opts, int(os.environ.get('WORLD_SIZE', opts.plan_gpus)))
    if opts.fast_dev_run:
        return smoke_run(opts)
    procs = start_processes(opts)
    meta, resumed, previous = read_inputs(opts, procs)
    raw_model, facts = build_model(opts, meta, resumed, procs)
    data = open_data(opts, meta, raw_model, procs)
    model = parallelize(raw_model, opts.parallel, procs.device, procs.ptdtype, opts.compile, opts.cpu_offload)
    if opts.parallel == 'fsdp' and procs.distributed:  # FSDP's policy casts the weights to bf16 itself; autocast is DDP's
        procs.autocast = nullcontext()
    optimizers, scaler, state = make_optimizers(opts, raw_model, resumed, data, procs)
    log = open_output(opts, raw_model, data, procs, state, previous)
    signalled = train(opts, model, raw_model, optimizers, scaler, meta, data, procs, state, facts, log)
    finish(opts, model, raw_model, meta, procs, state, log, signalled, last)


def smoke_run(opts):
    """--fast_dev_run=True: the config's whole chain on a few steps, in a temporary folder: train 2 steps (evaluating
    at the start and the end, writing ckpt), resume from that checkpoint for one more, then (rank 0) sample from it and
    export it. One line at the end: good to launch, or what broke."""
    run_id = os.environ.get('TORCHELASTIC_RUN_ID', str(os.getpid()))  # the same folder for every rank of a torchrun
    folder = os.path.join(tempfile.gettempdir(), f'pubmed-gpt-fast-dev-run-{run_id}')
    short = dict(out_dir=folder, overwrite=True, fast_dev_run=False, max_iters=2, max_tokens=0, max_seconds=0.0,
                 eval_interval=0, eval_interval_seconds=0.0, eval_iters=min(opts.eval_iters, 2), ckpt_every_tokens=0,
                 save_latest=True, save_best=False, wandb_log=False, eval_pubmedqa=False)
    t0, phase, done = time.perf_counter(), 'training', []
    try:
        main(SimpleNamespace(**{**vars(opts), **short}), last=False)
        done.append('2 steps and 2 evaluations')
        phase = 'resuming'
        main(SimpleNamespace(**{**vars(opts), **short, 'init_from': 'resume', 'max_iters': 3}))
        path = latest_checkpoint(folder, opts.parallel)
        done.append(f'{os.path.basename(path)} written and resumed')
        if int(os.environ.get('RANK', 0)) != 0:
            return
        phase = 'sampling'
        from hf import ExportError, export
        from tokenizer import encoding_from_spec, eot_id
        checkpoint = load_checkpoint(path)
        model = model_from_checkpoint(checkpoint).eval()
        enc = encoding_from_spec(checkpoint['tokenizer'])
        ids = model.generate(torch.tensor([[eot_id(checkpoint['tokenizer'])]]), 8, temperature=0, n_vocab=enc.n_vocab)
        done.append(f'sampled {enc.decode(ids[0, 1:].tolist())!r}')
        phase = 'exporting'
        try:
            done.append(f"exported as {export(checkpoint, os.path.join(folder, 'hf'))}")
        except ExportError as e:
            done.append(f'does not export ({e})')
    except (CheckpointError, RuntimeError, ValueError, OSError) as e:
        fail(f'fast_dev_run: {phase} broke: {type(e).__name__}: {first_line(e)}')
    finally:
        if int(os.environ.get('RANK', 0)) == 0:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"fast_dev_run: the config is good to launch ({'; '.join(done)}) in {time.perf_counter() - t0:.0f} s; "
          f'{opts.out_dir} was not touched')


# -----------------------------------------------------------------------------------------------
# the phases before the loop

def start_processes(opts):
    """One process per device under torchrun, each with its rank (rank 0 writes every file); the device and its
    precision. Under torchrun, the process groups: the default one (nccl on GPUs), and a host-side one for the
    loop's small agreements (stop flags), so those never wait on a GPU."""
    distributed = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')) if distributed else (0, 0, 1)
    try:
        device = resolve_device(opts.device, local_rank)
    except ValueError as e:
        fail(str(e))
    procs = SimpleNamespace(distributed=distributed, rank=rank, world=world, master=rank == 0, device=device,
                            store=None, host_group=None)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    procs.ptdtype, procs.autocast = precision(device, opts.dtype)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return procs


def read_inputs(opts, procs):
    """The data folder's meta.pkl and, resuming, the checkpoint's fields (all but the weights), both checked; the files
    of a previous run in out_dir, which a new run replaces only with --overwrite=True. Then, under torchrun, the
    processes meet."""
    path = latest_checkpoint(opts.out_dir, opts.parallel)
    try:
        meta = load_meta(opts.data_dir)
        resumed = None
        if opts.init_from == 'resume':
            resumed = SimpleNamespace(path=path, fields=read_fields(path))
            check_resumable(resumed.fields, meta, path, opts.data_dir)
            check_same_data(resumed, meta, opts, procs)
    except (DataError, CheckpointError) as e:
        fail(str(e))
    if opts.init_from == 'resume' and procs.master and not opts.eval_only:
        remove_stale_temporaries(opts.out_dir)  # what a kill during a save left (the checkpoints are whole)
    previous = previous_run(opts.out_dir) if opts.init_from != 'resume' and not opts.eval_only else []
    if previous and not opts.overwrite:
        fail(f"{opts.out_dir} holds a previous run ({', '.join(previous)}): continue it with --init_from=resume, "
             'train into another --out_dir, or pass --overwrite=True to replace it', 2)
    if procs.distributed:
        die_with_parent()  # if torchrun's agent is killed, its workers must not train on as orphans
        timeout = timedelta(seconds=opts.dist_timeout)
        if not dist.is_initialized():  # (a fast_dev_run's resume keeps the group of its first run)
            dist.init_process_group(backend='nccl' if procs.device.type == 'cuda' else 'gloo', timeout=timeout)
        procs.store = progress_store()
        procs.host_group = dist.new_group(backend='gloo', timeout=timeout) if procs.device.type == 'cuda' else None
    return meta, resumed, previous


def check_same_data(resumed, meta, opts, procs):
    """Exit unless a resumed run continues on the token files it trained on (the hashes its checkpoint recorded from
    meta.pkl; older checkpoints did not): a folder prepared again would silently change the val set its losses are
    measured on. --allow_config_change=True continues anyway, with a note."""
    recorded = (resumed.fields.get('data') or {}).get('token_files')
    changed = [name for name in ('train.bin', 'val.bin') if recorded and recorded.get(name) != (meta.get('token_files') or {}).get(name)]
    if not changed:
        return
    what = f"{' and '.join(changed)} in {opts.data_dir} are not the ones the run in {resumed.path} trained on (prepared again?)"
    if not opts.allow_config_change:
        fail(f'{what}: its val loss would be measured on another val set; resume on the data it trained on, or pass '
             '--allow_config_change=True to continue on this data', 2)
    if procs.master:
        print(f'note: {what}: continuing on them (allow_config_change); val losses before and after are not comparable')


def build_model(opts, meta, resumed, procs):
    """The model, built from the options, a resumed checkpoint's shapes (its weights come once the model is on its
    devices: load_state) or an open model's weights; and the run's facts for the export's model card. Under FSDP on
    several processes only rank 0 initialises or reads weights (parallelize sends each rank its shards): the others,
    like every resumed run, build the model on the meta device: shapes, no memory."""
    torch.manual_seed(opts.seed)  # the same initial weights on every rank (DDP)
    weightless = resumed is not None or (opts.parallel == 'fsdp' and procs.distributed and not procs.master)
    with torch.device('meta') if weightless else nullcontext():
        if opts.init_from == 'scratch':
            model_args = {k: getattr(opts, k) for k in run_options.MODEL_DEFAULTS}
            raw_model = GPT(GPTConfig(**model_args, vocab_size=64 * math.ceil(meta['vocab_size'] / 64)))  # padded: fast matmuls
        elif opts.init_from == 'resume':
            try:
                raw_model = model_from_checkpoint({**resumed.fields, 'model': None})
            except CheckpointError as e:
                fail(f'{resumed.path}: {e}')
        else:  # an open model reads the tokens of its own tokenizer only
            check_tokenizer_of(opts.init_from, meta, opts.data_dir)
            from hf import from_pretrained, shapes_of
            try:
                raw_model = GPT(shapes_of(opts.init_from, opts.block_size or None, opts.dropout)) if weightless else \
                    from_pretrained(opts.init_from, window=opts.block_size or None, dropout=opts.dropout)
            except CheckpointError as e:
                fail(str(e))
        ignored = [f'{k}={getattr(opts, k)!r}' for k in run_options.MODEL_DEFAULTS if k != 'block_size'  # the window
                   and getattr(opts, k) != getattr(raw_model.config, k) and not (k in run_options.DERIVED and not getattr(opts, k))]
        if procs.master and ignored:
            print(f'note: init_from={opts.init_from!r} fixes the architecture; ignoring {", ".join(ignored)}')
    if raw_model.config.vocab_size < meta['vocab_size']:
        fail(f"the model's vocabulary ({raw_model.config.vocab_size}) is smaller than the data's ({meta['vocab_size']})")
    raw_model.activation_checkpointing = opts.activation_checkpointing
    fields = resumed.fields if resumed else {}
    facts = {'origin': run_origin(opts.init_from, fields.get('origin')), 'data': data_facts(meta, opts.data_dir), 'processes': procs.world,
             'precision': f'{str(procs.ptdtype).removeprefix("torch.")} on {procs.device.type}',
             **({'last_eval': fields['last_eval']} if 'last_eval' in fields else {})}
    return raw_model, facts


def open_data(opts, meta, raw_model, procs):
    """This rank's share of every step's windows (the loader) and of the fixed val windows. The training window
    (what a batch holds) and the model's context (how far it reads) are two things: a rotary model continued on
    short windows keeps the context of the model it came from (hf.config_from_hf)."""
    window = opts.block_size or raw_model.config.block_size
    if procs.master and window < raw_model.config.block_size:
        print(f'note: training on windows of {window} tokens of a context of {raw_model.config.block_size} (the model '
              'reads, samples and exports that context)')
    train_tokens, val_tokens = open_tokens(opts.data_dir, 'train', meta), open_tokens(opts.data_dir, 'val', meta)
    if min(len(train_tokens), len(val_tokens)) <= window:
        fail(f'{opts.data_dir}: train.bin and val.bin need more than block_size={window} tokens each')
    try:
        loader = TrainLoader(train_tokens, window, opts.batch_size, opts.gradient_accumulation_steps, opts.seed, procs.rank,
                             procs.world, eot=meta['eot_token'] if opts.align_windows else None)
    except ValueError as e:
        fail(str(e), 2)
    if not len(loader.starts):
        fail(f"{opts.data_dir}: align_windows=True found no <|endoftext|> (id {meta['eot_token']}) in train.bin to align to")
    if procs.master and loader.micro_batch != opts.batch_size:
        print(f'note: each of the {procs.world} processes trains {loader.micro_batch * loader.micro_steps} windows a step, '
              f'in {loader.micro_steps} micro-batch(es) of {loader.micro_batch}: the global batch of batch_size x '
              f'gradient_accumulation_steps = {opts.batch_size * opts.gradient_accumulation_steps} windows, split '
              f'{procs.world} ways')
    val_starts = eval_starts(val_tokens, window, opts.eval_iters * opts.batch_size)  # fewer if val.bin is short
    if opts.parallel == 'fsdp':  # every rank runs the same number of forward passes: FSDP gathers weights for each
        val_starts = val_starts[:len(val_starts) - len(val_starts) % procs.world]
    padding = [0] * (raw_model.config.vocab_size - len(meta['token_bytes']))
    return SimpleNamespace(window=window, loader=loader, val_tokens=val_tokens, val_starts=val_starts[procs.rank::procs.world],
                           token_bytes=torch.tensor(meta['token_bytes'] + padding, device=procs.device),
                           tokens_per_step=opts.batch_size * opts.gradient_accumulation_steps * window)  # all ranks


def make_optimizers(opts, raw_model, resumed, data, procs):
    """The optimizers and fp16's gradient scaler; resuming, their state, the weights and the run's progress (iteration,
    training time, best val loss, data position, every rank's random state) from the checkpoint."""
    optimizers = raw_model.configure_optimizers(opts.weight_decay, opts.learning_rate, (opts.beta1, opts.beta2),
                                                procs.device.type, optimizer=opts.optimizer, muon_lr=opts.muon_lr,
                                                muon_momentum=opts.muon_momentum)
    scaler = torch.amp.GradScaler(procs.device.type, enabled=procs.ptdtype == torch.float16)
    state = SimpleNamespace(iter_num=0, train_seconds=0.0, best_val_loss=float('inf'))
    torch.manual_seed(opts.seed + procs.rank)  # dropout differs across ranks
    if resumed is None:
        return optimizers, scaler, state
    fields = resumed.fields
    if fields['config'].get('optimizer', 'adamw') != opts.optimizer:
        fail(f"{resumed.path} was trained with optimizer={fields['config']['optimizer']!r}: resume with the same optimizer")
    base_lrs = [[g['base_lr'] for g in opt.param_groups] for opt in optimizers]  # this run's options count
    try:
        load_state(resumed.path, raw_model, optimizers)
        if 'scaler' in fields:
            scaler.load_state_dict(fields['scaler'])
    except CheckpointError as e:
        fail(str(e))
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        fail(f'{resumed.path}: its gradient scaler does not fit ({type(e).__name__}: {first_line(e)})')
    for opt, bases in zip(optimizers, base_lrs):
        for group, base in zip(opt.param_groups, bases):
            group['base_lr'] = base
    state.iter_num, state.train_seconds, state.best_val_loss = fields['iter_num'], fields['train_seconds'], fields['best_val_loss']
    data.loader.load_state_dict(fields['loader'])
    if len(fields['rng']) == procs.world:  # on another number of processes only dropout's stream differs
        set_rng_state(fields['rng'][procs.rank], procs.device)
    return optimizers, scaler, state


def open_output(opts, raw_model, data, procs, state, previous):
    """out_dir, touched only now that every option, the data and the model have been checked: metrics.jsonl (a
    resumed run's records after its checkpoint are dropped: it logs them again), wandb, the start-up line. MFU is model
    FLOPs per second over the peak of all devices."""
    log = SimpleNamespace(metrics=os.path.join(opts.out_dir, 'metrics.jsonl'), wandb=None,
                          flops_per_token=raw_model.flops_per_token(data.window),
                          peak=opts.peak_flops or device_peak_flops(procs.device, procs.ptdtype))
    if procs.master and not opts.eval_only:  # evaluating a run leaves its files as they are
        os.makedirs(opts.out_dir, exist_ok=True)
        if opts.init_from == 'resume':
            keep_metrics_until(log.metrics, state.iter_num)
        else:
            for name in previous:  # only with --overwrite=True (checked before)
                path = os.path.join(opts.out_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            open(log.metrics, 'w').close()
        if opts.wandb_log:
            import wandb
            log.wandb = wandb.init(project=opts.wandb_project, name=opts.wandb_run_name, config=vars(opts), dir=opts.out_dir)
    if procs.master:
        print(f'{raw_model.num_params() / 1e6:.2f}M parameters, {data.tokens_per_step:,} tokens per step on {procs.world} '
              f'process(es), device {procs.device}, {str(procs.ptdtype).removeprefix("torch.")}, peak '
              f'{log.peak / 1e12:.3f} TFLOP/s per device')
    return log


# -----------------------------------------------------------------------------------------------
# the loop

def train(opts, model, raw_model, optimizers, scaler, meta, data, procs, state, facts, log):
    """Evaluate, checkpoint and step until the first budget or a stop signal; returns whether a signal stopped it."""
    loader, window, dev = data.loader, data.window, procs.device
    min_ratio = opts.min_lr / opts.learning_rate if opts.learning_rate else 0.0
    first_iter, last_eval_seconds = state.iter_num, state.train_seconds
    stop_on_signals()  # from now on a stop signal checkpoints first; before, it stops the process at once
    log_seconds, log_iters, batches = 0.0, 0, None
    while True:
        if procs.distributed:
            procs.store.set(f'pubmed-gpt/iter/{procs.rank}', str(state.iter_num))
        state.tokens_seen = tokens_seen = loader.windows_seen * window
        progress = max(state.iter_num / max(1, opts.lr_decay_iters or opts.max_iters),
                       tokens_seen / opts.max_tokens if opts.max_tokens else 0.0,
                       state.train_seconds / opts.max_seconds if opts.max_seconds else 0.0)
        # rank 0's clock decides time budgets for everyone; a stop signal to any process stops them all. The flags
        # are agreed on the host (gloo): no process waits for its device here
        flags = torch.tensor([procs.master and state.train_seconds >= opts.max_seconds > 0,
                              procs.master and state.train_seconds - last_eval_seconds >= opts.eval_interval_seconds > 0,
                              bool(STOP_SIGNALS)], dtype=torch.float32)
        if procs.distributed:
            dist.all_reduce(flags, group=procs.host_group)
        out_of_time, eval_due, signalled = (bool(f) for f in flags.tolist())
        done = (out_of_time or signalled or state.iter_num >= opts.max_iters
                or (opts.max_tokens and tokens_seen >= opts.max_tokens) or opts.eval_only)

        # evaluate at the start, on schedule and at the end (a resumed run's start was its predecessor's end)
        resumed_here = opts.init_from == 'resume' and state.iter_num == first_iter and not opts.eval_only
        scheduled = opts.eval_interval and state.iter_num % opts.eval_interval == 0
        if (done or eval_due or scheduled or state.iter_num == first_iter) and not resumed_here:
            evaluate_and_checkpoint(opts, model, raw_model, optimizers, scaler, meta, data, procs, state, facts, log)
            last_eval_seconds = state.train_seconds
        if done:
            return signalled

        # one optimizer step: the device runs it while the host reads the next one's batches; the host waits for the
        # device only when it logs (so time is measured between logs: the wait lands in the logging step)
        mult = lr_multiplier(state.iter_num, progress, opts.warmup_iters, opts.schedule, min_ratio, opts.cooldown_frac)
        for opt in optimizers:
            for group in opt.param_groups:
                group['lr'] = group['base_lr'] * mult
        t0 = time.perf_counter()
        loss = train_step(model, optimizers, scaler, batches or next_step_batches(loader, dev), procs.autocast, opts.grad_clip)
        loader.advance()
        batches = next_step_batches(loader, dev)
        state.iter_num += 1
        state.tokens_seen = tokens_seen = loader.windows_seen * window
        logging = state.iter_num % opts.log_interval == 0
        lossf = mean_over_ranks(loss) if logging else None
        dt = time.perf_counter() - t0
        state.train_seconds += dt
        log_seconds, log_iters = log_seconds + dt, log_iters + 1
        if logging:
            if not math.isfinite(lossf):
                fail(f'training loss is {lossf} at iter {state.iter_num}: stopping; the checkpoints in {opts.out_dir} are '
                     'untouched (try a lower learning_rate, grad_clip=1.0 or dtype=float32)')
            tokens_per_s = data.tokens_per_step * log_iters / log_seconds
            mfu = utilization(log, tokens_per_s, procs)
            ms, lr = 1000 * log_seconds / log_iters, opts.learning_rate * mult
            if procs.master:
                memory = peak_memory_mb(dev)
                record(log, {'kind': 'train', 'iter': state.iter_num, 'tokens': tokens_seen, 'train_seconds': round(state.train_seconds, 3),
                             'loss': lossf, 'lr': lr, 'ms_per_iter': ms, 'tokens_per_s': tokens_per_s, 'mfu': mfu,
                             'peak_memory_mb': round(memory, 1)})
                print(f'iter {state.iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {ms:.1f} ms/iter, {tokens_per_s:,.0f} tok/s, '
                      f"mfu {'unknown' if mfu is None else f'{100 * mfu:.1f}%'}, peak memory {memory:,.0f} MB")
            log_seconds, log_iters = 0.0, 0
        every = opts.ckpt_every_tokens
        if every and tokens_seen // every > (tokens_seen - data.tokens_per_step) // every:
            save_training([f'ckpt_{tokens_seen:012d}'], opts, raw_model, optimizers, scaler, meta, data, procs, state, facts)


def utilization(log, tokens_per_s, procs):
    """MFU: the model's FLOPs per second over the peak of all devices, or None once the peak is known to be wrong.
    A measured CPU peak is only as good as the moment it was measured in (a busy machine gives a low one): a rate
    above it proves it too low, and from then on the run says MFU is unknown rather than print over 100%."""
    if log.peak is None:
        return None
    mfu = log.flops_per_token * tokens_per_s / (log.peak * procs.world)
    if mfu <= 1:
        return mfu
    if procs.master:
        print(f'note: the model computes {log.flops_per_token * tokens_per_s / procs.world / 1e12:.3f} TFLOP/s per device, '
              f'above the peak of {log.peak / 1e12:.3f} it was to be compared with (measured at start on a busy machine, or '
              '--peak_flops too low): MFU is unknown for this run; give the device\'s real peak with --peak_flops')
    log.peak = None
    return None


def evaluate_and_checkpoint(opts, model, raw_model, optimizers, scaler, meta, data, procs, state, facts, log):
    """Val loss, perplexity and bits per byte on the fixed val windows, recorded (or, with eval_only, printed whole);
    then best (if improved) and ckpt. A non-finite val loss stops the run, its checkpoints untouched."""
    batches = val_batches(data.val_tokens, data.val_starts, opts.batch_size, data.window, procs.device)
    ev = evaluate(model, batches, data.token_bytes, procs.autocast)
    if procs.master:
        rec = {'kind': 'eval', 'iter': state.iter_num, 'tokens': data.loader.windows_seen * data.window,
               'train_seconds': round(state.train_seconds, 3), **ev}
        print(f"eval iter {state.iter_num}: val loss {ev['val_loss']:.4f}, ppl {ev['val_ppl']:.2f}, bpb {ev['val_bpb']:.4f}")
        if opts.eval_only:  # the whole record on stdout; the run's metrics.jsonl is left as it is
            print(json.dumps(rec))
        else:
            record(log, rec)
    if not math.isfinite(ev['val_loss']):
        fail(f'val loss is {ev["val_loss"]} at iter {state.iter_num}: stopping; the checkpoints in {opts.out_dir} are untouched')
    facts['last_eval'] = {'iter': state.iter_num, **{k: ev[k] for k in ('val_loss', 'val_ppl', 'val_bpb')}}
    improved = ev['val_loss'] < state.best_val_loss
    state.best_val_loss = min(state.best_val_loss, ev['val_loss'])
    if not opts.eval_only and state.iter_num > 0 and (opts.save_latest or (improved and opts.save_best)):
        # best first: a kill between the two leaves ckpt behind it, and the resumed run writes best again
        names = [name for name, wanted in (('best', improved and opts.save_best), ('ckpt', opts.save_latest)) if wanted]
        save_training(names, opts, raw_model, optimizers, scaler, meta, data, procs, state, facts)


def finish(opts, model, raw_model, meta, procs, state, log, signalled, last=True):
    """PubMedQA if asked, wandb closed, the process group freed (if last); a stopping signal's exit code (128 + signal)."""
    pubmedqa_wanted = opts.eval_pubmedqa and not opts.eval_only and not signalled
    whole = whole_model(raw_model) if pubmedqa_wanted else None  # under FSDP: gathered from every rank, onto rank 0
    if procs.master and pubmedqa_wanted:
        result = evaluate_pubmedqa(whole.to(procs.device), meta, opts, procs.device)
        record(log, {'kind': 'pubmedqa', 'iter': state.iter_num, 'tokens': state.tokens_seen,
                     **{k: v for k, v in result.items() if k not in ('items', 'pubmedqa_dir')}})
    if log.wandb is not None:
        log.wandb.finish()
    if procs.distributed:  # DDP's reducer (or FSDP's state) holds on to the process group: free it first, or gloo aborts
        dist.barrier()
        del model
        gc.collect()
        if last:
            dist.destroy_process_group()
    if signalled:
        name = STOP_SIGNALS[0] if STOP_SIGNALS else 'SIGTERM'  # (to another process)
        if procs.master:
            written = opts.save_latest and state.iter_num
            print(f'stopped by {name} at iter {state.iter_num}' + (f': {latest_checkpoint(opts.out_dir, opts.parallel)} '
                  'written; continue with --init_from=resume' if written else ''))
        sys.exit(128 + signal.Signals[name])


# -----------------------------------------------------------------------------------------------
# pieces of the loop

def lr_multiplier(it, progress, warmup_iters, schedule, min_ratio, cooldown_frac):
    """Factor applied to every group's base lr: linear warmup over warmup_iters, then cosine (or
    constant, then a linear cooldown, for 'wsd'; or constant) from 1 down to min_ratio as progress goes 0 -> 1."""
    if it < warmup_iters:
        return (it + 1) / (warmup_iters + 1)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == 'constant':
        return 1.0
    if schedule == 'wsd':
        start = 1.0 - cooldown_frac
        if progress <= start:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * (progress - start) / max(cooldown_frac, 1e-12)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_step(model, optimizers, scaler, batches, autocast, grad_clip=0.0):
    """One optimizer step over this rank's micro-batches [(x, y)]: gradients accumulate over them (under
    DDP they are averaged across ranks on the last one only), are clipped to a global norm, and every
    optimizer steps. Returns this rank's mean loss as a tensor on the device: reading it (.item(), or
    mean_over_ranks) waits for the device, so the loop does that only when it logs."""
    ddp = isinstance(model, DDP)
    loss_sum = torch.zeros((), device=batches[0][0].device)
    for i, (x, y) in enumerate(batches):
        with model.no_sync() if ddp and i < len(batches) - 1 else nullcontext():
            with autocast:
                _, loss = model(x, y)
            loss = loss / len(batches)
            scaler.scale(loss).backward()
        loss_sum += loss.detach()
    if grad_clip:
        for opt in optimizers:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return loss_sum


def mean_over_ranks(loss):
    """A loss tensor averaged over the processes, as a float: waits for the device (and the other processes)."""
    if dist.is_initialized():
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= dist.get_world_size()
    return loss.item()


def next_step_batches(loader, device):
    """This rank's batches of the loader's next step on the device, the loader not moved: read while the device
    still computes the step before (to_device's copies from pinned memory do not wait for it)."""
    return [to_device(x, y, device) for x, y in loader.read_step()]


def to_device(x, y, device):
    """numpy (x, y) -> tensors on the device (through pinned memory to a GPU, so the copy overlaps)."""
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    if device.type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def val_batches(tokens, starts, batch_size, block, device):
    for i in range(0, len(starts), batch_size):
        yield to_device(*read_windows(tokens, starts[i:i + batch_size], block), device)


def rng_states(device):
    """Every rank's random state (dropout draws from it), gathered: a collective, called on every rank."""
    state = {'torch': torch.get_rng_state()}
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    if not dist.is_initialized():
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def set_rng_state(state, device):
    torch.set_rng_state(state['torch'])
    if device.type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)


def is_gpt2_folder_without_tokenizer(folder):
    """A GPT-2 of OpenAI's vocabulary saved with save_pretrained alone (no tokenizer files of its own): it reads
    GPT-2's tokens. A folder with tokenizer files is judged by them, as prepare.py --tokenizer=FOLDER does."""
    if any(os.path.exists(os.path.join(folder, name)) for name in ('tokenizer.json', 'vocab.json', 'merges.txt')):
        return False
    from hf import raw_config
    try:
        config = raw_config(folder)
    except CheckpointError:
        return False  # the import says what is wrong with it
    return config['model_type'] == 'gpt2' and config.get('vocab_size') == 50257


def check_tokenizer_of(init_from, meta, data_dir):
    """Exit unless the data is tokenized with the tokenizer of the model init_from names."""
    ours = meta['tokenizer']
    if init_from in run_options.GPT2_NAMES or is_gpt2_folder_without_tokenizer(init_from):
        same, how = ours['name'] == 'gpt2' and meta['vocab_size'] == 50257, '--tokenizer=gpt2'
    else:
        try:
            theirs = spec_from_hf_folder(init_from)
        except TokenizerError as e:
            fail(f'init_from={init_from!r}: {e}')
        same = {k: v for k, v in theirs.items() if k != 'name'} == {k: v for k, v in ours.items() if k != 'name'}
        how = f'--tokenizer={init_from}'
    if not same:
        fail(f"init_from={init_from!r} reads its own tokenizer's tokens, but {data_dir} is tokenized with "
             f"{fingerprint(ours)}: prepare it with {how}")


def save_training(names, opts, raw_model, optimizers, scaler, meta, data, procs, state, facts):
    """Write the checkpoints `names` ('best', 'ckpt', ...) of the run so far to out_dir, in the run's format
    (checkpoint.save_state: NAME.pt, or under FSDP the folder NAME.dcp). A collective under torchrun (every rank's
    RNG state goes in). Exits rather than checkpoint a blown-up model."""
    paths = [os.path.join(opts.out_dir, name + ('.dcp' if opts.parallel == 'fsdp' else '.pt')) for name in names]
    try:
        save_state(paths, raw_model, optimizers, meta['tokenizer'], meta['token_bytes'],
                   tokens_seen=data.loader.windows_seen * data.window, config=vars(opts), rng=rng_states(procs.device),
                   loader=data.loader.state_dict(), **({'scaler': scaler.state_dict()} if scaler.is_enabled() else {}),
                   iter_num=state.iter_num, train_seconds=state.train_seconds, best_val_loss=state.best_val_loss, **facts)
    except CheckpointError as e:
        fail(f'{e} after iter {state.iter_num}: stopping without writing it; the checkpoints in {opts.out_dir} are untouched '
             '(try a lower learning_rate, grad_clip=1.0 or dtype=float32)')
    except DiskFullError as e:
        fail(f'{e} (at iter {state.iter_num})')


def previous_run(out_dir):
    """The files of a previous run in out_dir, which a new run would replace."""
    if not os.path.isdir(out_dir):
        return []
    names = sorted(os.listdir(out_dir))
    return [n for n in names if n.removesuffix('.pt').removesuffix('.dcp') in ('ckpt', 'best')
            or (n.startswith('ckpt_') and n.endswith(('.pt', '.dcp')))
            or (n == 'metrics.jsonl' and os.path.getsize(os.path.join(out_dir, n)))]


def keep_metrics_until(path, iter_num):
    """Drop the records after iter_num (and a last line cut short by a kill) from metrics.jsonl: a resumed
    run logs those iterations again, so each is in the file once."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)['iter'] <= iter_num:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass
    if kept != lines:
        with atomic_write(path, 'w') as f:
            f.writelines(kept)


def evaluate_pubmedqa(model, meta, opts, device):
    """pubmedqa.py's figures for the model as it is (exported to a temporary folder), printed."""
    import pubmedqa
    from hf import ExportError
    try:
        result = pubmedqa.evaluate_checkpoint(make_checkpoint(model, meta['tokenizer'], meta['token_bytes']),
                                              pubmedqa_dir=opts.pubmedqa_dir or None, limit=opts.pubmedqa_limit, device=str(device))
    except (ExportError, FileNotFoundError) as e:
        fail(f'eval_pubmedqa: {e} (the checkpoints are written)')
    print(pubmedqa.summary(result))
    return result


def record(log, rec):
    """One line of metrics.jsonl (and a wandb log): rank 0 only."""
    try:
        with open(log.metrics, 'a') as f:
            f.write(json.dumps(rec) + '\n')
    except OSError as e:
        fail(disk_full_message(log.metrics, e) or f'{log.metrics}: cannot write ({e.strerror})')
    if log.wandb is not None:
        log.wandb.log({k: v for k, v in rec.items() if k != 'kind'}, step=rec['iter'])


if __name__ == '__main__':
    opts = options()
    try:
        main(opts)
    except DiskFullError as e:  # (a save says at which iteration: save_training)
        fail(str(e))
    except RuntimeError as e:  # under torchrun: a collective that waited dist_timeout for a stalled process
        if 'RANK' not in os.environ or 'timed out' not in str(e).lower():
            raise
        fail(stall_report(e, opts.dist_timeout))
