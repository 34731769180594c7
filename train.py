"""
Train a GPT on the token files that data/pubmed/prepare.py writes.

    python train.py config/train_pubmed_cpu.py                       # CPU, a few minutes
    python train.py config/train_pubmed.py --compile=False           # one GPU
    torchrun --standalone --nproc_per_node=8 train.py config/train_pubmed.py
    torchrun --standalone --nproc_per_node=8 train.py config/finetune_1b_fsdp.py --init_from=models/llama-3.2-1b
    python train.py config/finetune_1b_fsdp.py --init_from=models/llama-3.2-1b --plan=True   # memory per GPU, then exit
    python train.py --init_from=resume --out_dir=out                 # continue exactly where ckpt.pt stopped

Every entry of OPTIONS below is a `--key=value` option (configurator.py), and so is every field of
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
writes sharded checkpoints, folders NAME.dcp (sharded_checkpoint.py), which resume on any number of processes.
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
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import eval_suite
import run_options
from checkpoint import (CheckpointError, check_resumable, latest_checkpoint, load_checkpoint, load_state,
                        make_checkpoint, model_from_checkpoint, read_fields, save_state)
from common import (DTYPES, DiskFullError, atomic_write, device_peak_flops, die_with_parent, disk_full_message,
                    keep_freed_memory, peak_memory_mb, precision, fail, first_line, remove_stale_temporaries,
                    resolve_device)
from configurator import Option, at_least, between, fraction, one_of, positive
from dataloader import DataError, TrainLoader, eval_starts, load_meta, open_tokens, read_windows
from hf import ExportError, export, from_pretrained
from loss_eval import evaluate
from model import GPT
from model_card import run_record
from parallel import STOP_SIGNALS, parallelize, progress_store, stall_report, stop_on_signals, whole_model
from plan import print_run_plan
from tokenizer import (TokenizerError, encoding_from_spec, eot_id, fingerprint, model_tokenizer, reads_gpt2_tokens,
                       same_tokens)

# -----------------------------------------------------------------------------------------------
# options
# yapf: disable (a table: its comments aligned)
OPTIONS = {
    # I/O
    'out_dir': 'out',                  # the run's folder: checkpoints, metrics.jsonl
    'init_from': 'scratch',            # 'scratch', 'resume' (from out_dir/ckpt.pt), or an open model to continue
                                           # pretraining
                                           # on data prepared with its tokenizer: a local Hugging Face folder (GPT-2,
                                           # Llama, Qwen2,
                                           # Qwen3, Arcee) or 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' (cache or
                                           # download)
    'eval_interval': Option(2000, at_least(0)),  # evaluate every this many iterations (0 = only at the start and end)
    'eval_interval_seconds': Option(0.0, at_least(0)),  # and/or whenever this much training time passed since the last
                                                        # eval (0 = off)
    'eval_iters': Option(200, at_least(1)),  # the fixed val set is eval_iters * batch_size windows
    'log_interval': Option(1, at_least(1)),  # log (and read the loss from the device) every this many iterations
    'eval_only': False,                # evaluate the model of init_from (resume: out_dir's checkpoint) once, print it,
                                       # write nothing
    'save_latest': True,               # write ckpt.pt, the state --init_from=resume continues from, at every evaluation
    'save_best': True,                 # write best.pt whenever val loss improves
    'ckpt_every_tokens': Option(0, at_least(0)),  # > 0: also keep snapshots ckpt_<tokens seen>.pt every this many
                                                  # tokens
    'overwrite': False,                # a new run into an out_dir that holds a previous run's files replaces them (else
                                       # refused)
    'allow_config_change': False,      # resume even with a batch, accumulation, seed or window alignment other than the
                                       # run's
    'eval_tasks': '',                  # at the end, the evaluation suite's tasks (eval_suite.py: pubmedqa,
                                       # mmlu_medical, general_bpb, any lm-eval task) with intervals, into metrics.jsonl
    'eval_pubmedqa': False,            # at the end, PubMedQA zero-shot with lm-evaluation-harness: eval_tasks=pubmedqa
    'eval_limit': Option(0, at_least(0)),  # only N questions of each task, spread over it (0 = all)
    'pubmedqa_dir': '',                # PubMedQA's data: '' = $PUBMEDQA_DIR, data/pubmedqa or ../shared/data/pubmedqa
    'mmlu_dir': '',                    # MMLU's CSVs: '' = data/mmlu-medical, ../shared/data/mmlu-medical or the hub
    'general_text': '',                # general_bpb's prepared folder (its val.bin), read with the model's tokenizer
    # wandb
    'wandb_log': False,                # also log to Weights & Biases
    'wandb_project': 'pubmed-gpt',     # ... into this project
    'wandb_run_name': 'run',           # ... as this run
    # data
    'data_dir': 'data/pubmed',         # a folder with train.bin, val.bin, meta.pkl
    'data_mix': '',                    # several such folders with their shares of the training windows, e.g.
                                       # data/pubmed:0.95,data/general:0.05 (0 = evaluated only); '' = data_dir alone
    'best_source': '',                 # the source whose val loss best.pt and the main figures follow ('' = the first)
    'batch_size': Option(12, at_least(1)),  # windows per micro-batch
    'gradient_accumulation_steps': Option(40, at_least(1)),  # micro-batches per step, summed over all processes
    'align_windows': False,            # training windows start where documents start (see window_starts), not every
    # block_size
    # model: the fields of GPTConfig (model.py), defaults there (GPT-2 small); on resume the checkpoint's shape is used.
    # block_size is the training window: a model from scratch reads as far; an open model with rotary positions keeps
    # its own context when that is longer (GPT-2's position table is cut to the window)
    # optimizer
    'optimizer': Option('adamw', one_of('adamw', 'muon')),  # 'adamw', or 'muon' for the blocks' matrices (AdamW for the
                                                            # rest)
    'learning_rate': Option(6e-4, at_least(0)),  # AdamW's peak lr
    'muon_lr': Option(0.02, at_least(0)),  # Muon's peak lr
    'muon_momentum': Option(0.95, fraction),  # Muon's momentum
    'weight_decay': Option(1e-1, at_least(0)),  # on matrices only (AdamW's decoupled decay; Muon's own)
    'beta1': Option(0.9, fraction),    # AdamW's first moment decay
    'beta2': Option(0.95, fraction),   # AdamW's second moment decay
    'grad_clip': Option(1.0, at_least(0)),  # 0 = off
    # budgets: the first one reached stops training (0 = no limit)
    'max_iters': Option(600000, at_least(0)),  # optimizer steps
    'max_tokens': Option(0, at_least(0)),  # training tokens, all processes
    'max_seconds': Option(0.0, at_least(0)),  # training time (evaluation and checkpoints excluded)
    # learning-rate schedule: warmup, then cosine (or warmup-stable-decay, or constant) down to min_lr
    'schedule': Option('cosine', one_of('cosine', 'wsd', 'constant')),  # 'cosine', 'wsd' or 'constant' (no decay)
    'warmup_iters': Option(2000, at_least(0)),  # linear warmup from lr/(warmup_iters+1)
    'lr_decay_iters': Option(0, at_least(0)),  # the decay spans this many iterations (0 = max_iters), or max_tokens /
                                               # max_seconds
    'min_lr': Option(6e-5, at_least(0)),  # the floor, as lr of AdamW; every group decays by the same factor
    'cooldown_frac': Option(0.2, between(0, 1)),  # wsd: the last fraction of training decays linearly to min_lr
    # system
    'device': 'auto',                  # 'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1', 'mps'
    'dtype': Option('auto', one_of(*DTYPES)),  # 'auto' (bf16 if supported, else fp16 on GPU; fp32 on CPU), 'float32',
                                               # 'bfloat16', 'float16'. On a CPU with avx512_bf16 or AMX, bfloat16 is
                                               # 2.3x float32 (dev/LOG.md 2026-12-07): ask for it; auto stays fp32
                                               # there so one command gives the same numbers on every CPU (and CPUs
                                               # without native bf16 run it slower)
    'compile': True,                   # torch.compile the model (a C++ compiler on CPU; seconds to minutes once)
    'seed': Option(1337, at_least(0)),  # initial weights, the data order and dropout
    'peak_flops': Option(0.0, at_least(0)),  # FLOP/s of one device for MFU; 0 = known GPU table, else a measured matmul
                                           # peak (MFU is
                                           # 'unknown' once the model computes faster than the peak: it was measured too
                                           # low)
    'dist_timeout': Option(600.0, positive),  # seconds a process waits for the others (torchrun) before it stops and
                                              # names the straggler
    'parallel': Option('ddp', one_of('ddp', 'fsdp')),  # 'ddp': each process holds the whole model; 'fsdp': FSDP2 shards
                                                       # it (parallel.py)
    'activation_checkpointing': False,   # recompute each block's activations in backward: far less memory, ~1/3 more
                                         # compute
    'cpu_offload': False,              # fsdp: keep the sharded weights, gradients and optimizer state in CPU memory
    'plan': False,                     # print the memory per GPU of this run (plan.py) under DDP and FSDP, and exit
    'fast_dev_run': False,             # check the config in seconds before a long job: 2 steps, evaluation, a
                                           # checkpoint written and
                                           # resumed, a sample and an export, in a temporary folder (out_dir is not
                                           # touched)
    'plan_gpus': Option(8, at_least(1)),  # ... for this many GPUs (torchrun's world size when run under it)
    'plan_gpu_gb': Option(80.0, positive),  # ... of this much memory each
}
# yapf: enable
# -----------------------------------------------------------------------------------------------


def options(argv=None):
    """This run's options (a namespace): the defaults above and GPTConfig's fields, then config files and --key=value
    from argv (default sys.argv), merged with a resumed run's own and checked (run_options.py)."""
    return run_options.parse(OPTIONS, argv)


# yapf: disable (a table: its comments aligned)
@dataclass
class Source:
    """One prepared data folder of the run: --data_dir, or each of --data_mix's."""
    name: str                      # its folder's name: the key of its figures (val_bpb/<name>)
    folder: str                    # the folder
    weight: float = 1.0            # its share of the training windows (0: evaluated only)
    meta: dict = None              # its meta.pkl
    val_tokens: object = None      # its val.bin, memory-mapped
    val_starts: list = None        # this rank's share of its fixed val windows


@dataclass
class Run:
    """Everything a training run holds, declared once: the phase of main() that fills each part is named above it;
    the loop (train) advances the progress part, which every checkpoint records."""
    # start_processes: the processes and the device
    distributed: bool = False      # under torchrun
    rank: int = 0                  # this process's rank: rank 0 (master) writes every file
    world: int = 1                 # processes in the run
    device: torch.device = None    # this process's device
    ptdtype: torch.dtype = None    # the precision the model computes in
    autocast: object = None        # its autocast context (none under FSDP on several processes: its policy casts)
    store: object = None           # torchrun's key-value store: each rank's progress, for a stall's report
    host_group: object = None      # on GPUs, a gloo group for the loop's small agreements (no wait on a device)
    # read_inputs: what the run starts from
    sources: list = None           # the data folders (Source): one, or a mixture's; all read one tokenizer
    meta: dict = None              # the first's meta.pkl (the tokenizer, its bytes per token: every source's)
    followed: int = 0              # the source best.pt and the main val figures follow (--best_source)
    resumed: str = None            # the checkpoint resumed from (init_from=resume)
    fields: dict = field(default_factory=dict)  # its every key but the weights
    previous: list = field(default_factory=list)  # a previous run's files in out_dir: --overwrite=True replaces them
    # build_model
    raw_model: GPT = None          # the model itself (its state_dict is what checkpoints hold)
    record: dict = None            # what the model card says of the run (checkpoint.RECORD_KEYS)
    suite: object = None           # the evaluation suite the run ends with (eval_suite.plan_suite: checked now)
    # open_data
    window: int = 0                # tokens per training window (the model may read a longer context)
    loader: TrainLoader = None     # this rank's share of every step's windows, and the data position
    token_bytes: torch.Tensor = None  # UTF-8 bytes of each token id, on the device: bits per byte
    tokens_per_step: int = 0       # tokens of one optimizer step, all processes
    # parallelize and make_optimizers
    model: torch.nn.Module = None  # what a step runs: raw_model compiled, in DDP, or sharded by FSDP
    optimizers: list = None        # AdamW (and Muon)
    scaler: object = None          # fp16's gradient scaler (off otherwise)
    # progress: set by a resume, advanced by the loop, written into every checkpoint
    iter_num: int = 0              # optimizer steps done
    train_seconds: float = 0.0     # training time so far (evaluation and checkpoints excluded)
    best_val_loss: float = math.inf
    tokens_seen: int = 0           # training tokens so far, all processes
    # open_output
    metrics: str = ''              # out_dir/metrics.jsonl
    wandb: object = None           # the wandb run, if logging there
    flops_per_token: float = 0.0   # the model's training FLOPs per token: MFU's numerator
    peak: float = None             # FLOP/s of one device: MFU's denominator (None once known to be wrong)

    @property
    def master(self):
        return self.rank == 0
# yapf: enable


def main(opts, last=True):
    """A training run, phase by phase; the loop is train(). last=False keeps the process group for another run in this
    process (fast_dev_run's resume: initialising one again in a torchrun job can hang on the store's old keys)."""
    if opts.plan:
        return print_run_plan(opts, int(os.environ.get('WORLD_SIZE', opts.plan_gpus)))
    if opts.fast_dev_run:
        return smoke_run(opts)
    run = start_processes(opts)
    read_inputs(opts, run)
    build_model(opts, run)
    open_data(opts, run)
    run.model = parallelize(run.raw_model, opts.parallel, run.device, run.ptdtype, opts.compile, opts.cpu_offload)
    make_optimizers(opts, run)
    open_output(opts, run)
    signalled = train(opts, run)
    finish(opts, run, signalled, last)


def smoke_run(opts):
    """--fast_dev_run=True: the config's whole chain on a few steps, in a temporary folder: train 2 steps (evaluating
    at the start and the end, writing ckpt), resume from that checkpoint for one more, then (rank 0) sample from it and
    export it. One line at the end: good to launch, or what broke."""
    run_id = os.environ.get('TORCHELASTIC_RUN_ID', str(os.getpid()))  # the same folder for every rank of a torchrun
    folder = os.path.join(tempfile.gettempdir(), f'pubmed-gpt-fast-dev-run-{run_id}')
    short = dict(out_dir=folder, overwrite=True, fast_dev_run=False, max_iters=2, max_tokens=0, max_seconds=0.0,
                 eval_interval=0, eval_interval_seconds=0.0, eval_iters=min(opts.eval_iters, 2), ckpt_every_tokens=0,
                 save_latest=True, save_best=False, wandb_log=False, eval_tasks='', eval_pubmedqa=False)
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
    rank, local_rank, world = (int(os.environ[k])
                               for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')) if distributed else (0, 0, 1)
    try:
        device = resolve_device(opts.device, local_rank)
    except ValueError as e:
        fail(str(e))
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    else:  # a quarter of a CPU step is otherwise spent faulting in the memory the step before freed
        keep_freed_memory()
    ptdtype, autocast = precision(device, opts.dtype)
    if opts.parallel == 'fsdp' and distributed:  # FSDP's policy casts the weights to bf16 itself; autocast is DDP's
        autocast = nullcontext()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return Run(distributed=distributed, rank=rank, world=world, device=device, ptdtype=ptdtype, autocast=autocast)


def read_inputs(opts, run):
    """The data folder's meta.pkl and, resuming, the checkpoint's fields (all but the weights), both checked; the files
    of a previous run in out_dir, which a new run replaces only with --overwrite=True. Then, under torchrun, the
    processes meet."""
    run.sources = [Source(name, folder, weight) for name, folder, weight in run_options.data_sources(opts)]
    names = [s.name for s in run.sources]
    run.followed = names.index(opts.best_source) if opts.best_source else 0
    try:
        for source in run.sources:
            source.meta = load_meta(source.folder)
        run.meta = run.sources[0].meta
        check_one_tokenizer(run.sources)
        if opts.init_from == 'resume':
            run.resumed = latest_checkpoint(opts.out_dir, opts.parallel)
            run.fields = read_fields(run.resumed)
            check_resumable(run.fields, run.meta, run.resumed, run.sources[0].folder)
            check_same_data(opts, run)
    except (DataError, CheckpointError) as e:
        fail(str(e))
    if opts.init_from == 'resume' and run.master and not opts.eval_only:
        remove_stale_temporaries(opts.out_dir)  # what a kill during a save left (the checkpoints are whole)
    run.previous = previous_run(opts.out_dir) if opts.init_from != 'resume' and not opts.eval_only else []
    if run.previous and not opts.overwrite:
        fail(
            f"{opts.out_dir} holds a previous run ({', '.join(run.previous)}): continue it with --init_from=resume, "
            'train into another --out_dir, or pass --overwrite=True to replace it', 2)
    if run.distributed:
        die_with_parent()  # if torchrun's agent is killed, its workers must not train on as orphans
        timeout = timedelta(seconds=opts.dist_timeout)
        if not dist.is_initialized():  # (a fast_dev_run's resume keeps the group of its first run)
            dist.init_process_group(backend='nccl' if run.device.type == 'cuda' else 'gloo', timeout=timeout)
        run.store = progress_store()
        run.host_group = dist.new_group(backend='gloo', timeout=timeout) if run.device.type == 'cuda' else None


def check_same_data(opts, run):
    """Exit unless a resumed run continues on the token files it trained on (the hashes its checkpoint recorded from
    meta.pkl; older checkpoints did not): a folder prepared again would silently change the val set its losses are
    measured on. --allow_config_change=True continues anyway, with a note."""
    data = run.fields.get('data') or {}
    recorded = [m.get('token_files') for m in data.get('mix') or [data]]  # (older checkpoints: one source, or none)
    changed = []
    for source, before in zip(run.sources, recorded):
        now = source.meta.get('token_files') or {}
        files = [f for f in ('train.bin', 'val.bin') if before and before.get(f) != now.get(f)]
        changed += [f"{' and '.join(files)} in {source.folder}"] if files else []
    if not changed:
        return
    what = f"{'; '.join(changed)}: not the token files the run in {run.resumed} trained on (prepared again?)"
    if not opts.allow_config_change:
        fail(
            f'{what}: its val loss would be measured on another val set; resume on the data it trained on, or pass '
            '--allow_config_change=True to continue on this data', 2)
    if run.master:
        print(f'note: {what}: continuing on them (allow_config_change); val losses before and after are not comparable')


def build_model(opts, run):
    """The model of init_from (run_options.model_config: its shapes), with its weights: the options' random ones, or an
    open model's (a resumed run's come once the model is on its devices: load_state); and the run's record for the
    export's model card. Under FSDP on several processes only rank 0 initialises or reads weights (parallelize sends
    each rank its shards): the others, like every resumed run, build the model on the meta device: shapes, no memory."""
    if opts.init_from not in ('scratch', 'resume'):  # an open model reads the tokens of its own tokenizer only
        check_model_tokenizer(opts.init_from, run.meta, opts.data_dir)
    torch.manual_seed(opts.seed)  # the same initial weights on every rank (DDP)
    weightless = run.resumed is not None or (opts.parallel == 'fsdp' and run.distributed and not run.master)
    try:
        with torch.device('meta') if weightless else nullcontext():
            if opts.init_from in ('scratch', 'resume') or weightless:
                run.raw_model = GPT(run_options.model_config(opts, run.meta['vocab_size'], run.fields))
            else:
                run.raw_model = from_pretrained(opts.init_from, window=opts.block_size or None, dropout=opts.dropout)
    except CheckpointError as e:
        fail(f'{run.resumed}: {e}' if run.resumed else str(e))
    ignored = [
        f'{k}={getattr(opts, k)!r}' for k in run_options.MODEL_DEFAULTS if k != 'block_size'  # the window
        and getattr(opts, k) != getattr(run.raw_model.config, k) and
        not (k in run_options.DERIVED and not getattr(opts, k))
    ]
    if run.master and ignored:
        print(f'note: init_from={opts.init_from!r} fixes the architecture; ignoring {", ".join(ignored)}')
    if run.raw_model.config.vocab_size < run.meta['vocab_size']:
        fail(f"the model's vocabulary ({run.raw_model.config.vocab_size}) is smaller than the data's "
             f"({run.meta['vocab_size']})")
    run.raw_model.activation_checkpointing = opts.activation_checkpointing
    computed = f'{str(run.ptdtype).removeprefix("torch.")} on {run.device.type}'
    run.record = run_record(opts.init_from, run.fields, run.sources, run.world, computed)
    run.suite = plan_eval_suite(opts, run) if run.master else None


def check_model_tokenizer(init_from, meta, data_dir):
    """Exit unless the data is tokenized with the tokenizer of the model init_from names."""
    try:
        theirs = model_tokenizer(init_from)
    except (TokenizerError, OSError) as e:  # (GPT-2's tiktoken files, with no network)
        fail(f'init_from={init_from!r}: {e}')
    if not same_tokens(theirs, meta['tokenizer']):
        how = 'gpt2' if reads_gpt2_tokens(init_from) else init_from
        fail(f"init_from={init_from!r} reads its own tokenizer's tokens, but {data_dir} is tokenized with "
             f"{fingerprint(meta['tokenizer'])}: prepare it with --tokenizer={how}")


def open_data(opts, run):
    """This rank's share of every step's windows (the loader: of one source, or drawn from a mixture's in proportion
    to their weights) and of each source's fixed val windows. The training window (what a batch holds) and the model's
    context (how far it reads) are two things: a rotary model continued on short windows keeps the context of the
    model it came from (hf.config_from_hf)."""
    context = run.raw_model.config.block_size
    run.window = window = opts.block_size or context
    if run.master and window < context:
        print(f'note: training on windows of {window} tokens of a context of {context} (the model reads, samples and '
              'exports that context)')
    trained = [s for s in run.sources if s.weight > 0]
    train_tokens = [open_tokens(s.folder, 'train', s.meta) for s in trained]
    for source in run.sources:
        source.val_tokens = open_tokens(source.folder, 'val', source.meta)
        if len(source.val_tokens) <= window or (source.weight > 0 and
                                                len(open_tokens(source.folder, 'train', source.meta)) <= window):
            fail(f'{source.folder}: train.bin and val.bin need more than block_size={window} tokens each')
    eot = run.meta['eot_token'] if opts.align_windows else None
    weights = [round(s.weight * 10**6) for s in trained] if opts.data_mix else None  # integers: the mix is exact
    try:
        run.loader = TrainLoader(train_tokens if weights else train_tokens[0], window, opts.batch_size,
                                 opts.gradient_accumulation_steps, opts.seed, run.rank, run.world, eot, weights)
    except ValueError as e:
        fail(str(e), 2)
    for source, starts in zip(trained, run.loader.starts_of):
        if not len(starts):
            fail(f"{source.folder}: align_windows=True found no <|endoftext|> (id {eot}) in train.bin to align to")
    if run.master and run.loader.micro_batch != opts.batch_size:
        windows = opts.batch_size * opts.gradient_accumulation_steps
        print(f'note: each of the {run.world} processes trains {run.loader.micro_batch * run.loader.micro_steps} '
              f'windows a step, in {run.loader.micro_steps} micro-batch(es) of {run.loader.micro_batch}: the global '
              f'batch of batch_size x gradient_accumulation_steps = {windows} windows, split {run.world} ways')
    for source in run.sources:
        val_starts = eval_starts(source.val_tokens, window, opts.eval_iters * opts.batch_size)  # fewer if it is short
        if opts.parallel == 'fsdp':  # every rank runs the same number of forward passes: FSDP gathers weights for each
            val_starts = val_starts[:len(val_starts) - len(val_starts) % run.world]
        source.val_starts = val_starts[run.rank::run.world]
    padding = [0] * (run.raw_model.config.vocab_size - len(run.meta['token_bytes']))
    run.token_bytes = torch.tensor(run.meta['token_bytes'] + padding, device=run.device)
    run.tokens_per_step = opts.batch_size * opts.gradient_accumulation_steps * window  # all ranks


def check_one_tokenizer(sources):
    """DataError unless every source is tokenized as the first is: a model reads one tokenizer's ids."""
    first = sources[0]
    for source in sources[1:]:
        if not same_tokens(source.meta['tokenizer'], first.meta['tokenizer']):
            raise DataError(f"{source.folder} is tokenized with {fingerprint(source.meta['tokenizer'])}, "
                            f"{first.folder} with {fingerprint(first.meta['tokenizer'])}: a mixture's sources read one "
                            f'tokenizer (prepare it again with --tokenizer={first.folder})')


def make_optimizers(opts, run):
    """The optimizers (run_options.optimizers_of) and fp16's gradient scaler; resuming, their state, the weights and
    the run's progress (iteration, training time, best val loss, data position, every rank's random state) from the
    checkpoint."""
    run.optimizers = run_options.optimizers_of(run.raw_model, vars(opts), run.device.type)
    run.scaler = torch.amp.GradScaler(run.device.type, enabled=run.ptdtype == torch.float16)
    torch.manual_seed(opts.seed + run.rank)  # dropout differs across ranks
    if run.resumed is None:
        return
    fields = run.fields
    if fields['config'].get('optimizer', 'adamw') != opts.optimizer:
        fail(f"{run.resumed} was trained with optimizer={fields['config']['optimizer']!r}: resume with the same "
             "optimizer")
    base_lrs = [[g['base_lr'] for g in opt.param_groups] for opt in run.optimizers]  # this run's options count
    try:
        load_state(run.resumed, run.raw_model, run.optimizers)
        if 'scaler' in fields:
            run.scaler.load_state_dict(fields['scaler'])
    except CheckpointError as e:
        fail(str(e))
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        fail(f'{run.resumed}: its gradient scaler does not fit ({type(e).__name__}: {first_line(e)})')
    for opt, bases in zip(run.optimizers, base_lrs):
        for group, base in zip(opt.param_groups, bases):
            group['base_lr'] = base
    run.iter_num, run.train_seconds, run.best_val_loss = fields['iter_num'], fields['train_seconds'], fields[
        'best_val_loss']
    run.loader.load_state_dict(fields['loader'])
    run.tokens_seen = run.loader.windows_seen * run.window
    if len(fields['rng']) == run.world:  # on another number of processes only dropout's stream differs
        set_rng_state(fields['rng'][run.rank], run.device)


def open_output(opts, run):
    """out_dir, touched only now that every option, the data and the model have been checked: metrics.jsonl (a
    resumed run's records after its checkpoint are dropped: it logs them again), wandb, the start-up line. MFU is model
    FLOPs per second over the peak of all devices."""
    run.metrics = os.path.join(opts.out_dir, 'metrics.jsonl')
    run.flops_per_token = run.raw_model.flops_per_token(run.window)
    run.peak = opts.peak_flops or device_peak_flops(run.device, run.ptdtype)
    if run.master and not opts.eval_only:  # evaluating a run leaves its files as they are
        os.makedirs(opts.out_dir, exist_ok=True)
        if opts.init_from == 'resume':
            keep_metrics_until(run.metrics, run.iter_num)
        else:
            for name in run.previous:  # only with --overwrite=True (checked before)
                path = os.path.join(opts.out_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            open(run.metrics, 'w').close()
        if opts.wandb_log:
            import wandb
            run.wandb = wandb.init(project=opts.wandb_project, name=opts.wandb_run_name, config=vars(opts),
                                   dir=opts.out_dir)
    if run.master:
        print(f'{run.raw_model.num_params() / 1e6:.2f}M parameters, {run.tokens_per_step:,} tokens per step on '
              f'{run.world} '
              f'process(es), device {run.device}, {str(run.ptdtype).removeprefix("torch.")}, peak '
              f'{run.peak / 1e12:.3f} TFLOP/s per device')


# -----------------------------------------------------------------------------------------------
# the loop


def train(opts, run):
    """Evaluate, checkpoint and step until the first budget or a stop signal; returns whether a signal stopped it."""
    min_ratio = opts.min_lr / opts.learning_rate if opts.learning_rate else 0.0
    first_iter, last_eval_seconds = run.iter_num, run.train_seconds
    stop_on_signals()  # from now on a stop signal checkpoints first; before, it stops the process at once
    log_seconds, log_iters, batches = 0.0, 0, None
    while True:
        if run.distributed:
            run.store.set(f'pubmed-gpt/iter/{run.rank}', str(run.iter_num))
        progress = max(run.iter_num / max(1, opts.lr_decay_iters or opts.max_iters),
                       run.tokens_seen / opts.max_tokens if opts.max_tokens else 0.0,
                       run.train_seconds / opts.max_seconds if opts.max_seconds else 0.0)
        # rank 0's clock decides time budgets for everyone; a stop signal to any process stops them all. The flags
        # are agreed on the host (gloo): no process waits for its device here
        flags = torch.tensor([
            run.master and run.train_seconds >= opts.max_seconds > 0, run.master and
            run.train_seconds - last_eval_seconds >= opts.eval_interval_seconds > 0,
            bool(STOP_SIGNALS)
        ], dtype=torch.float32)
        if run.distributed:
            dist.all_reduce(flags, group=run.host_group)
        out_of_time, eval_due, signalled = (bool(f) for f in flags.tolist())
        done = (out_of_time or signalled or run.iter_num >= opts.max_iters or
                (opts.max_tokens and run.tokens_seen >= opts.max_tokens) or opts.eval_only)

        # evaluate at the start, on schedule and at the end (a resumed run's start was its predecessor's end)
        resumed_here = opts.init_from == 'resume' and run.iter_num == first_iter and not opts.eval_only
        scheduled = opts.eval_interval and run.iter_num % opts.eval_interval == 0
        if (done or eval_due or scheduled or run.iter_num == first_iter) and not resumed_here:
            evaluate_and_checkpoint(opts, run)
            last_eval_seconds = run.train_seconds
        if done:
            return signalled

        # one optimizer step: the device runs it while the host reads the next one's batches; the host waits for the
        # device only when it logs (so time is measured between logs: the wait lands in the logging step)
        mult = lr_multiplier(run.iter_num, progress, opts.warmup_iters, opts.schedule, min_ratio, opts.cooldown_frac)
        for opt in run.optimizers:
            for group in opt.param_groups:
                group['lr'] = group['base_lr'] * mult
        t0 = time.perf_counter()
        batches = batches or next_step_batches(run.loader, run.device)
        loss = train_step(run.model, run.optimizers, run.scaler, batches, run.autocast, opts.grad_clip)
        run.loader.advance()
        batches = next_step_batches(run.loader, run.device)
        run.iter_num += 1
        run.tokens_seen = run.loader.windows_seen * run.window
        logging = run.iter_num % opts.log_interval == 0
        lossf = mean_over_ranks(loss) if logging else None
        dt = time.perf_counter() - t0
        run.train_seconds += dt
        log_seconds, log_iters = log_seconds + dt, log_iters + 1
        if logging:
            log_step(opts, run, lossf, opts.learning_rate * mult, log_seconds, log_iters)
            log_seconds, log_iters = 0.0, 0
        every = opts.ckpt_every_tokens
        if every and run.tokens_seen // every > (run.tokens_seen - run.tokens_per_step) // every:
            save_training([f'ckpt_{run.tokens_seen:012d}'], opts, run)


def log_step(opts, run, lossf, lr, seconds, iters):
    """The training line and record of the steps since the last one (rank 0): loss, lr, speed, MFU, memory. A loss that
    is not finite stops the run, its checkpoints untouched."""
    if not math.isfinite(lossf):
        fail(f'training loss is {lossf} at iter {run.iter_num}: stopping; the checkpoints in {opts.out_dir} are '
             'untouched (try a lower learning_rate, grad_clip=1.0 or dtype=float32)')
    tokens_per_s = run.tokens_per_step * iters / seconds
    mfu, ms = utilization(run, tokens_per_s), 1000 * seconds / iters
    if run.master:
        memory = peak_memory_mb(run.device)
        epochs = {
            f'epochs/{s.name}': round(e, 4)
            for s, e in zip([s for s in run.sources if s.weight > 0], run.loader.epochs())
        } if opts.data_mix else {}
        record(
            run, {
                'kind': 'train', 'iter': run.iter_num, 'tokens': run.tokens_seen, 'train_seconds': round(
                    run.train_seconds, 3), 'loss': lossf, 'lr': lr, 'ms_per_iter': ms, 'tokens_per_s': tokens_per_s,
                'mfu': mfu, 'peak_memory_mb': round(memory, 1), **epochs
            })
        seen = ', '.join(f"{k.split('/', 1)[1]} {v:.2f}" for k, v in epochs.items())
        print(f'iter {run.iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {ms:.1f} ms/iter, {tokens_per_s:,.0f} tok/s, '
              f"mfu {'unknown' if mfu is None else f'{100 * mfu:.1f}%'}, peak memory {memory:,.0f} MB" +
              (f', epochs: {seen}' if seen else ''))


def utilization(run, tokens_per_s):
    """MFU: the model's FLOPs per second over the peak of all devices, or None once the peak is known to be wrong.
    A measured CPU peak is only as good as the moment it was measured in (a busy machine gives a low one): a rate
    above it proves it too low, and from then on the run says MFU is unknown rather than print over 100%."""
    if run.peak is None:
        return None
    mfu = run.flops_per_token * tokens_per_s / (run.peak * run.world)
    if mfu <= 1:
        return mfu
    if run.master:
        print(
            f'note: the model computes {run.flops_per_token * tokens_per_s / run.world / 1e12:.3f} TFLOP/s per device, '
            f'above the peak of {run.peak / 1e12:.3f} it was to be compared with (measured at start on a busy machine, '
            'or '
            '--peak_flops too low): MFU is unknown for this run; give the device\'s real peak with --peak_flops')
    run.peak = None
    return None


def evaluate_and_checkpoint(opts, run):
    """Val loss, perplexity and bits per byte on each source's fixed val windows, recorded (or, with eval_only, printed
    whole): the followed source's as val_loss, val_ppl, val_bpb, and with a mixture every source's as val_bpb/<name>
    too; then best (if the followed source's val loss improved) and ckpt. A non-finite val loss stops the run, its
    checkpoints untouched."""
    figures = [
        evaluate(run.model, val_batches(s.val_tokens, s.val_starts, opts.batch_size, run.window, run.device),
                 run.token_bytes, run.autocast) for s in run.sources
    ]
    ev = figures[run.followed]
    per_source = {f'{k}/{s.name}': f[k] for s, f in zip(run.sources, figures) for k in f} if opts.data_mix else {}
    if run.master:
        rec = {
            'kind': 'eval', 'iter': run.iter_num, 'tokens': run.tokens_seen,
            'train_seconds': round(run.train_seconds, 3), **ev, **per_source
        }
        others = ''.join(f"; {s.name}: loss {f['val_loss']:.4f}, bpb {f['val_bpb']:.4f}"
                         for i, (s, f) in enumerate(zip(run.sources, figures)) if i != run.followed)
        print(f"eval iter {run.iter_num}: val loss {ev['val_loss']:.4f}, ppl {ev['val_ppl']:.2f}, bpb "
              f"{ev['val_bpb']:.4f}" + (f' ({run.sources[run.followed].name}){others}' if opts.data_mix else ''))
        if opts.eval_only:  # the whole record on stdout; the run's metrics.jsonl is left as it is
            print(json.dumps(rec))
        else:
            record(run, rec)
    if not math.isfinite(ev['val_loss']):
        fail(f'val loss is {ev["val_loss"]} at iter {run.iter_num}: stopping; the checkpoints in {opts.out_dir} are '
             'untouched')
    figures_of = lambda f: {k: f[k] for k in ('val_loss', 'val_ppl', 'val_bpb')}
    last = {'iter': run.iter_num, **figures_of(ev)}
    if opts.data_mix:
        last['sources'] = {s.name: figures_of(f) for s, f in zip(run.sources, figures)}
    run.record['last_eval'] = last
    if run.iter_num == 0:  # before any step: the model the run started from (a resumed run carries its own)
        run.record['first_eval'] = last
    improved = ev['val_loss'] < run.best_val_loss
    run.best_val_loss = min(run.best_val_loss, ev['val_loss'])
    if not opts.eval_only and run.iter_num > 0 and (opts.save_latest or (improved and opts.save_best)):
        # best first: a kill between the two leaves ckpt behind it, and the resumed run writes best again
        names = [name for name, wanted in (('best', improved and opts.save_best), ('ckpt', opts.save_latest)) if wanted]
        save_training(names, opts, run)


def finish(opts, run, signalled, last=True):
    """The evaluation suite if asked, wandb closed, the process group freed (if last); a stopping signal's exit code
    (128 + signal)."""
    suite_wanted = eval_task_names(opts) and not opts.eval_only and not signalled
    whole = whole_model(run.raw_model) if suite_wanted else None  # under FSDP: gathered from every rank, onto rank 0
    if run.master and suite_wanted:
        evaluate_suite(whole.to(run.device), opts, run)
    if run.wandb is not None:
        run.wandb.finish()
    if run.distributed:  # DDP's reducer (or FSDP's state) holds on to the process group: free it first, or gloo aborts
        dist.barrier()
        run.model = None
        gc.collect()
        if last:
            dist.destroy_process_group()
    if signalled:
        name = STOP_SIGNALS[0] if STOP_SIGNALS else 'SIGTERM'  # (to another process)
        if run.master:
            written = opts.save_latest and run.iter_num
            print(f'stopped by {name} at iter {run.iter_num}' +
                  (f': {latest_checkpoint(opts.out_dir, opts.parallel)} '
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
                loss = model(x, y)
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


def save_training(names, opts, run):
    """Write the checkpoints `names` ('best', 'ckpt', ...) of the run so far to out_dir, in the run's format
    (checkpoint.save_state: NAME.pt, or under FSDP the folder NAME.dcp). A collective under torchrun (every rank's
    RNG state goes in). Exits rather than checkpoint a blown-up model, or on a full disk."""
    paths = [os.path.join(opts.out_dir, name + ('.dcp' if opts.parallel == 'fsdp' else '.pt')) for name in names]
    try:
        save_state(paths, run.raw_model, run.optimizers, run.meta['tokenizer'], run.meta['token_bytes'],
                   tokens_seen=run.tokens_seen, config=vars(opts), rng=rng_states(run.device),
                   loader=run.loader.state_dict(),
                   **({'scaler': run.scaler.state_dict()} if run.scaler.is_enabled() else {}), iter_num=run.iter_num,
                   train_seconds=run.train_seconds, best_val_loss=run.best_val_loss, **run.record)
    except CheckpointError as e:
        fail(f'{e} after iter {run.iter_num}: stopping without writing it; the checkpoints in {opts.out_dir} are '
             'untouched '
             '(try a lower learning_rate, grad_clip=1.0 or dtype=float32)')
    except DiskFullError as e:
        fail(f'{e} (at iter {run.iter_num})')


def previous_run(out_dir):
    """The files of a previous run in out_dir, which a new run would replace."""
    if not os.path.isdir(out_dir):
        return []
    names = sorted(os.listdir(out_dir))
    return [
        n for n in names
        if n.removesuffix('.pt').removesuffix('.dcp') in ('ckpt', 'best') or (n.startswith('ckpt_') and n.endswith(
            ('.pt', '.dcp'))) or (n == 'metrics.jsonl' and os.path.getsize(os.path.join(out_dir, n)))
    ]


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


def eval_task_names(opts):
    """The suite's tasks of the run: --eval_tasks, and pubmedqa with --eval_pubmedqa=True."""
    names = [n.strip() for n in opts.eval_tasks.split(',') if n.strip()]
    return ','.join(names + (['pubmedqa'] if opts.eval_pubmedqa and 'pubmedqa' not in names else []))


def plan_eval_suite(opts, run):
    """The evaluation suite the run ends with, built and checked once the model is (task names, local files, hub
    data, general text read with the run's tokenizer and the model's context), not after hours of training: exit 2
    naming what is wrong."""
    tasks = eval_task_names(opts)
    if not tasks or opts.eval_only:
        return None
    settings = eval_suite.Settings(tasks=tasks, pubmedqa_dir=opts.pubmedqa_dir, mmlu_dir=opts.mmlu_dir,
                                   general_text=opts.general_text, limit=opts.eval_limit, device=str(run.device))
    try:
        suite = eval_suite.plan_suite(settings)
        eval_suite.check_text_tokens(suite, [('this run', run.meta['tokenizer'], run.raw_model.config.block_size)])
    except eval_suite.SuiteError as e:
        fail(f"eval_tasks={tasks}: {str(e).removeprefix('--tasks: ')}", 2)
    return suite


def evaluate_suite(model, opts, run):
    """The suite on the model as it is: its table printed, one 'eval_task' record per task in metrics.jsonl (and
    PubMedQA's figures as the 'pubmedqa' record the model card reads)."""
    checkpoint = make_checkpoint(model, run.meta['tokenizer'], run.meta['token_bytes'])
    try:
        report = eval_suite.evaluate_checkpoint(checkpoint, run.suite)
    except (ExportError, eval_suite.SuiteError) as e:
        fail(f'eval_tasks: {e} (the checkpoints are written)')
    print(eval_suite.markdown_table(report), end='')
    for r in report['records']:
        record(run, {'kind': 'eval_task', 'iter': run.iter_num, 'tokens': run.tokens_seen, **r})
    pubmedqa_figures = eval_suite.pubmedqa_result(report)
    if pubmedqa_figures:
        record(run, {'kind': 'pubmedqa', 'iter': run.iter_num, 'tokens': run.tokens_seen, **pubmedqa_figures})


def record(run, rec):
    """One line of metrics.jsonl (and a wandb log): rank 0 only."""
    try:
        with open(run.metrics, 'a') as f:
            f.write(json.dumps(rec) + '\n')
    except OSError as e:
        fail(disk_full_message(run.metrics, e) or f'{run.metrics}: cannot write ({e.strerror})')
    if run.wandb is not None:
        run.wandb.log({k: v for k, v in rec.items() if k != 'kind'}, step=rec['iter'])


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
