"""
train.py's options as a run uses them: parsed (configurator.py), merged with the resumed run's own, and
checked, so that a mistake a run would only hit later is one line and exit 2 before anything is written.
The options themselves, with their defaults, limits and comments, are train.py's OPTIONS and
GPTConfig's fields (model.py); `python train.py --help` prints them. Also here, what the options make and
more than one command needs: the model's config for any init_from (train.py, plan.py) and a run's optimizers
(train.py, consolidate.py, which rebuilds a sharded run's from the options its checkpoint records).
"""
import dataclasses
import math
import os
from types import SimpleNamespace

import model
from checkpoint import CheckpointError, latest_checkpoint, read_fields
from common import DeviceError, fail, first_line, resolve_device, writable_folder
from configurator import configure
from hf import shapes_of
from model import GPTConfig, padded_vocab
from sharded_checkpoint import sharded_folder

MODEL_SOURCE = model.__file__  # GPTConfig's fields are options too: --help prints their comments from there
MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GPTConfig) if f.name != 'vocab_size'}
RENAMED = {  # old option names (nanoGPT's, or this project's before) that keep working, with a note
    'always_save_checkpoint': (True, 'save_latest', lambda value, opts: value),
    'dataset': ('pubmed', 'data_dir', lambda value, opts: os.path.join('data', value)),
    'decay_lr': (True, 'schedule', lambda value, opts: opts['schedule'] if value else 'constant'),
    'pubmedqa_limit': (0, 'eval_limit', lambda value, opts: value),
}
GPT2_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
DERIVED = ('n_kv_head', 'head_dim', 'mlp_hidden', 'norm_eps', 'rope_scaling')  # 0 / None: worked out by GPTConfig
# resuming: options whose change would not continue the run's data stream exactly, and those never taken from it
EXACT_RESUME_KEYS = ('batch_size', 'gradient_accumulation_steps', 'seed', 'align_windows', 'data_mix')
NOT_RESUMED = ('out_dir', 'init_from', 'eval_only', 'overwrite', 'allow_config_change', 'plan', 'fast_dev_run')


def model_config(opts, vocab_size, resumed=None):
    """The GPTConfig of the run's model for any init_from: scratch (the options, the data's vocabulary padded to a
    multiple of 64: fast matmuls), resume (the checkpoint's model_args, from its fields), or an open model (its
    config.json, for training windows of block_size). CheckpointError when it does not make a model."""
    if opts.init_from == 'scratch':
        return GPTConfig(**{k: getattr(opts, k) for k in MODEL_DEFAULTS}, vocab_size=padded_vocab(vocab_size))
    if opts.init_from == 'resume':
        try:
            return GPTConfig(**resumed['model_args'])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f'checkpoint does not fit this model.py ({type(e).__name__}: {first_line(e)})')
    return shapes_of(opts.init_from, opts.block_size or None, opts.dropout)


def data_sources(opts):
    """[(name, folder, weight)] of the run's data: --data_mix's folders with their shares, or --data_dir alone. A
    source's name is its folder's (its figures are val_bpb/<name>). Exit 2 on a mixture no run can use."""
    if not opts.data_mix:
        return [(os.path.basename(os.path.normpath(opts.data_dir)), opts.data_dir, 1.0)]
    sources = []
    for item in opts.data_mix.split(','):
        folder, colon, weight = item.strip().rpartition(':')
        try:
            share = float(weight)
        except ValueError:
            share = None
        if not colon or not folder or share is None or not math.isfinite(share):
            fail(f"--data_mix: {item.strip()!r} is not FOLDER:WEIGHT (e.g. data/pubmed:0.95,data/general:0.05)", 2)
        if share < 0:
            fail(f'--data_mix: {folder} has a negative weight ({weight}): a share is 0 (evaluated only) or more', 2)
        sources.append((os.path.basename(os.path.normpath(folder)), folder, share))
    problems = [(not any(w > 0 for _, _, w in sources), 'every weight is 0: nothing to train on (0 = evaluated only)')]
    for i, (name, folder, _) in enumerate(sources):
        earlier = sources[:i]
        problems += [(any(os.path.realpath(f) == os.path.realpath(folder)
                          for _, f, _ in earlier), f'{folder} is given twice'),
                     (any(n == name for n, _, _ in earlier),
                      f'two sources are named {name!r} (their folders\' names key their figures): rename one'),
                     (not os.path.isdir(folder), f'{folder}: no such folder'),
                     (os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, 'meta.pkl')),
                      f'{folder}: not a prepared data folder (no meta.pkl): prepare it with data/pubmed/prepare.py or '
                      'data/text/prepare.py')]
    for bad, message in problems:
        if bad:
            fail(f'--data_mix: {message}', 2)
    return sources


def optimizers_of(model, options, device_type):
    """The optimizers a run with these options ({train.py option: value}, a checkpoint's config) trains with."""
    return model.configure_optimizers(options['weight_decay'], options['learning_rate'],
                                      (options['beta1'], options['beta2']), device_type,
                                      optimizer=options.get('optimizer', 'adamw'), muon_lr=options.get('muon_lr', 0.02),
                                      muon_momentum=options.get('muon_momentum', 0.95))


def read(defaults, argv=None, given=None):
    """{key: value}: `defaults` (train.py's) and GPTConfig's fields, then config files and --key=value from argv
    (default sys.argv), each within its own limits; not yet merged with a resumed run nor checked against others."""
    return configure({**defaults, **MODEL_DEFAULTS}, argv, RENAMED, given, sources=[MODEL_SOURCE])


def parse(defaults, argv=None):
    """The run's options (a namespace): read(), then on resume the checkpoint's run fills in what argv does not set.
    Checked: exit 2 on a value no run can use."""
    given = set()
    opts = read(defaults, argv, given)
    if opts['data_mix'] and 'data_dir' in given:  # (a config's mixture would silently win over --data_dir)
        fail(
            f"--data_dir={opts['data_dir']} is not read when data_mix names the data (data_mix={opts['data_mix']}, "
            "a config's or yours): name the folder in --data_mix, or pass --data_mix= to train on data_dir alone", 2)
    if opts['init_from'] == 'resume':
        opts = with_resumed_run(opts, given)
    opts = SimpleNamespace(**opts)
    check(opts)
    return opts


def with_resumed_run(opts, given):
    """The options of the run out_dir's checkpoint continues: its own, except where argv says otherwise (noted). A
    change that breaks the exact continuation of its data stream is refused unless allow_config_change."""
    path = latest_checkpoint(opts['out_dir'], opts['parallel'] if 'parallel' in given else None)
    if not os.path.exists(sharded_folder(path)):  # train.py says there is none
        return opts
    try:
        stored = read_fields(path).get('config')
    except CheckpointError as e:
        fail(str(e))
    if not isinstance(stored, dict):
        fail(f'{path}: no run options (config) in it: not a checkpoint to resume from')
    kept = {k: v for k, v in stored.items() if k in opts and k not in NOT_RESUMED}
    changed = sorted(k for k in kept if k in given and opts[k] != kept[k])
    breaking = [k for k in changed if k in EXACT_RESUME_KEYS]
    if breaking and not opts['allow_config_change']:
        fail(
            f"{', '.join(f'--{k}={opts[k]!r}' for k in breaking)}: the run in {opts['out_dir']} has "
            f"{', '.join(f'{k}={kept[k]!r}' for k in breaking)}; resuming with another would not continue its data "
            'stream exactly (leave it out, or pass --allow_config_change=True)', 2)
    for k in changed:
        if k in MODEL_DEFAULTS:
            print(f"note: ignoring --{k}={opts[k]!r}: resuming keeps the checkpoint's model ({k}={kept[k]!r})")
        else:
            print(f'note: resuming with {k}={opts[k]!r} (the run had {kept[k]!r})')
    return {**opts, **{k: v for k, v in kept.items() if k not in given or k in MODEL_DEFAULTS}}


def check(opts):
    """Exit 2 with one line on the first option no run can use, where options meet: each option's own limits are
    checked where it is declared (train.py's OPTIONS, GPTConfig)."""
    o = vars(opts)
    if opts.init_from not in ('scratch', 'resume', *GPT2_NAMES):
        if not os.path.isdir(opts.init_from):
            fail(
                f"init_from={opts.init_from!r}: expected scratch, resume, {', '.join(GPT2_NAMES)} "
                f"or a Hugging Face model folder", 2)
        if not os.path.isfile(os.path.join(opts.init_from, 'config.json')):
            fail(f"init_from={opts.init_from!r}: not a Hugging Face model folder (it has no config.json)", 2)
    if opts.fast_dev_run and (opts.init_from == 'resume' or opts.eval_only):
        fail('fast_dev_run=True checks a config before its run: not with init_from=resume or eval_only', 2)
    if opts.eval_only and opts.init_from == 'scratch':
        fail('eval_only=True evaluates an existing model: --init_from=resume (the run in out_dir) or a model folder', 2)
    if opts.block_size == 0 and opts.init_from == 'scratch':
        fail("block_size=0 (the model's own context) needs an open model to come from: --init_from=FOLDER", 2)
    try:
        GPTConfig(**{k: o[k] for k in MODEL_DEFAULTS if k != 'block_size'}, block_size=max(1, opts.block_size))
        resolve_device(opts.device)
    except (ValueError, DeviceError) as e:
        fail(str(e), 2)
    names = [name for name, _, _ in data_sources(opts)]
    if opts.best_source and opts.best_source not in names:
        fail(f"best_source={opts.best_source!r}: not a source of the run ({', '.join(names)})", 2)
    problems = [(opts.parallel == 'fsdp' and opts.dtype == 'float16', 'dtype=float16 with parallel=fsdp: use bfloat16 '
                 '(float16 needs a gradient scaler, which is wired for DDP only)'),
                (opts.cpu_offload and opts.parallel != 'fsdp', 'cpu_offload=True: only with parallel=fsdp'),
                (os.path.exists(opts.out_dir) and
                 not os.path.isdir(opts.out_dir), f'out_dir={opts.out_dir}: is a file'),
                (not writable_folder(opts.out_dir), f'out_dir={opts.out_dir}: cannot create or write to it')]
    for bad, message in problems:
        if bad:
            fail(message, 2)
