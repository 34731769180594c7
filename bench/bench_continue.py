"""
Continued pretraining of a real open model on CPU, and the Hugging Face Trainer beside it: the shared
SmolLM2-135M-Instruct (../shared/models: a Q4_1 GGUF, turned once into a float32 Hugging Face folder by
hf_folders.smollm2_folder) on the shared corpus prepared with the model's own tokenizer, PubMedQA's 894
labelled PMIDs excluded.

    python bench/bench_continue.py                     # ~40 minutes on 2 cores
    python bench/bench_continue.py --parts=speed --dtypes=bfloat16 --contexts=256

One JSON line per figure (run.py's format):
- speed, for each precision (--dtypes: float32; bfloat16 autocast, ~3x the matmul speed on CPUs with
  avx512_bf16 or AMX) and step shape (--contexts: 4 x 256 tokens, and 1 x 2,048, the recipe's context):
  tokens/s and peak resident memory of train.py (config/finetune_pubmed.py, compiled as the recipe does; its
  compile seconds are reported) against transformers' Trainer (the peer: what a user of the reference setups
  runs instead) in each configuration of --peers (PEERS: eager; torch_compile=True; compiled with train.py's
  allocator setting given to it through the environment), a figure for each, and the ratio against the faster
  of the Trainer's own two. Each side runs in a process of its own, one after the other, on the same windows of
  train.bin in the same order, fused AdamW with the same betas, weight decay, clipping and schedule, the same
  precision and threads. tokens/s counts the steps after the first `warmup` of each side.
- quality: val bpb of PubMed and of general text (the shared WikiText-2 articles and tinyshakespeare, prepared
  with the same tokenizer and replayed at the recipe's share of its --data_mix) before and after `budget_iters`
  optimizer steps of the recipe (block_size 512, 4 x 2 windows a step: stated in the figure), and PubMedQA
  accuracy and macro-F1 before (the model folder) and after (train.py --eval_pubmedqa) on `pubmedqa_limit` test
  questions spread over the split (0 = all 500, ~15 minutes each on 2 cores).
The prepared data and runs stay in --work (bench/results/continue, not in git) for the next run.
"""
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import numpy as np

from common import KEPT_MEMORY_ENV, fail
from configurator import configure
from hf_folders import smollm2_folder
from run import figure

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'shared': str(REPO.parent / 'shared'),  # the shared material: models/smollm2-135m-instruct, data/pubmed-corpus,
                                            # data/pubmedqa, data/general-text
    'work': str(REPO / 'bench' / 'results' / 'continue'),  # prepared data and runs (kept for the next run)
    'parts': 'speed,quality',  # which parts to run
    'dtypes': 'float32,bfloat16',  # precisions of the speed part (both sides alike)
    'contexts': '256,2048',  # speed: tokens per window; 4 windows a step below 2,048, 1 at 2,048
    'steps': 6,              # speed: timed steps of each side
    'warmup': 2,             # speed: untimed steps first (compilation happens here)
    'threads': 2,            # torch threads of each side
    'peers': 'eager,compiled,compiled_kept_memory',  # speed: the Trainer's configurations (PEERS), each measured
    'budget_iters': 40,      # quality: optimizer steps of the recipe (4 x 2 windows of 512 tokens each)
    'learning_rate': 0.0,    # quality: the recipe's peak lr (0 = config/finetune_pubmed.py's)
    'quality_dtype': 'bfloat16',  # quality: train.py's --dtype
    'pubmedqa_limit': 100,   # quality: PubMedQA test questions before and after (0 = all 500)
    'trainer_job': '',       # internal: the Trainer side's job (JSON), run in this process; prints its figures
}
# yapf: enable
SEED = 1337  # train.py's default: the Trainer side reads the same stream of windows
# The Trainer as a user would run it for speed, and once with train.py's allocator setting too (common.
# keep_freed_memory: not a Trainer option; the environment gives it to any process): {name: (label, job, env)}
KEPT = ' '.join(f'{key}={value}' for key, value in KEPT_MEMORY_ENV.items())
PEERS = {
    'eager': ("transformers' Trainer", {}, {}),
    'compiled': ("transformers' Trainer, torch_compile=True", {'compile': True}, {}),
    'compiled_kept_memory': (f"transformers' Trainer, torch_compile=True, freed memory kept ({KEPT}, as train.py sets)",
                             {'compile': True}, KEPT_MEMORY_ENV),
}
USER_PEERS = ('eager', 'compiled')  # what the Trainer itself offers: the headline ratio is against the faster one


def run(*args, threads, log=None, env=None):
    """A command of this repo in its own process, with `threads` torch threads (and `env` added to the environment);
    exits with its error on failure."""
    done = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {}), 'OMP_NUM_THREADS': str(threads)})
    if log:
        Path(log).write_text(done.stdout + done.stderr)
    if done.returncode:
        sys.exit(f'{Path(str(args[0])).name} failed:\n{done.stderr[-3000:]}')
    return done


def prepare(o, folder):
    """The shared corpus with the model's tokenizer, PubMedQA's PMIDs out, and the shared general text (WikiText-2
    cut into articles and paragraphs, tinyshakespeare into passages) with it too: (pubmed, general) folders. Both
    preparers resume: a second run is quick."""
    shared, work = Path(o['shared']) / 'data', Path(o['work'])
    run(REPO / 'data' / 'pubmed' / 'prepare.py', f"--input={shared / 'pubmed-corpus'}", f"--out_dir={work / 'data'}",
        f'--tokenizer={folder}', f"--exclude_pmids={shared / 'pubmedqa'}", threads=o['threads'])
    run(REPO / 'data' / 'text' / 'prepare.py', f"--input={shared / 'general-text'}", f"--out_dir={work / 'general'}",
        f'--tokenizer={folder}', '--separator_regex=\\n(?= )|\\n\\n', '--val_fraction=0.1', threads=o['threads'])
    return work / 'data', work / 'general'


def recipe_mix(data, general):
    """The recipe's --data_mix with this bench's folders: its shares, in its order (PubMed first, general text)."""
    shares = [item.rpartition(':')[2] for item in read_recipe()['data_mix'].split(',')]
    return f'--data_mix={data}:{shares[0]},{general}:{shares[1]}'


def windows_per_step(context):
    return 1 if context >= 2048 else 4


def recipe_args(folder, data, out, block, batch, dtype):
    """train.py on config/finetune_pubmed.py, the model and data of this bench (a folder: PubMed alone; else the
    --data_mix argument), into out."""
    return [
        'train.py', 'config/finetune_pubmed.py', f'--init_from={folder}',
        *(['--data_mix=', f'--data_dir={data}'] if isinstance(data, Path) else [data]), f'--out_dir={out}',
        '--overwrite=True', f'--block_size={block}', f'--batch_size={batch}', f'--dtype={dtype}', '--device=cpu',
        f'--seed={SEED}'
    ]


def ours_speed(o, folder, data, block, batch, dtype):
    """train.py's tokens/s after warmup, first-step seconds (compilation) and peak memory, from its metrics.jsonl."""
    out = Path(o['work']) / f'speed-{dtype}-{block}'
    run(*recipe_args(folder, data, out, block, batch,
                     dtype), '--gradient_accumulation_steps=1', f"--max_iters={o['warmup'] + o['steps']}",
        '--warmup_iters=2', '--eval_interval=0', '--eval_iters=1', '--log_interval=1', '--save_latest=False',
        '--save_best=False', threads=o['threads'], log=out.with_suffix('.log'))
    steps = [json.loads(line) for line in open(out / 'metrics.jsonl')]
    steps = [r for r in steps if r['kind'] == 'train']
    first, last = steps[o['warmup'] - 1], steps[-1]
    rate = (last['tokens'] - first['tokens']) / (last['train_seconds'] - first['train_seconds'])
    step_s = 1 / rate * block * batch
    return rate, last['peak_memory_mb'] / 1024, steps[0]['train_seconds'] - step_s


def trainer_speed(o, folder, data, block, batch, dtype, peer):
    """The Trainer side (this script with --trainer_job, in its own process) in the configuration PEERS[peer]: tokens/s
    after warmup, peak memory."""
    _, options, env = PEERS[peer]
    job = dict(folder=str(folder), data=str(data), block_size=block, batch_size=batch, dtype=dtype, steps=o['steps'],
               warmup=o['warmup'], **options)
    done = run(__file__, f'--trainer_job={json.dumps(job)}', threads=o['threads'], env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result['tokens_per_s'], result['peak_memory_gb']


def read_recipe():
    """config/finetune_pubmed.py's options ({key: value}), as train.py reads them before it checks them against a
    model and data (its --data_mix names folders of the user's)."""
    import run_options
    import train
    return run_options.read(train.OPTIONS, ['config/finetune_pubmed.py'])


def trainer_side(job):
    """transformers' Trainer on the windows train.py reads first (TrainLoader, the same seed), in that order: AdamW
    (fused) with the recipe's betas, decay, clipping, warmup and cosine schedule; bf16 autocast when asked, as
    train.py's --dtype=bfloat16; torch_compile=True when the job says compile. Prints {tokens_per_s, peak_memory_gb}
    as the last line."""
    import tempfile

    import torch
    import transformers
    from torch.utils.data import SequentialSampler

    from dataloader import TrainLoader, load_meta
    o = json.loads(job)
    recipe = SimpleNamespace(**read_recipe())
    block, batch, total = o['block_size'], o['batch_size'], o['warmup'] + o['steps']
    tokens = np.memmap(Path(o['data']) / 'train.bin', dtype=load_meta(o['data'])['dtype'], mode='r')
    loader, rows = TrainLoader(tokens, block, batch, 1, SEED), []
    for _ in range(total):
        [(x, y)] = loader.read_step()
        loader.advance()
        # shift_labels: the loss of exactly train.py's targets (labels alone would be shifted inside, one fewer)
        rows += [{'input_ids': torch.from_numpy(a), 'labels': torch.from_numpy(b), 'shift_labels': torch.from_numpy(b)}
                 for a, b in zip(x, y)]
    stamps = []

    class Stamp(transformers.TrainerCallback):

        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    class InOrder(transformers.Trainer):  # the windows in train.py's order (the Trainer shuffles by default)

        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    model = transformers.AutoModelForCausalLM.from_pretrained(o['folder'], dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(output_dir=out, per_device_train_batch_size=batch,
                                              gradient_accumulation_steps=1, max_steps=total,
                                              learning_rate=recipe.learning_rate, lr_scheduler_type='cosine',
                                              warmup_steps=2, weight_decay=recipe.weight_decay, adam_beta1=recipe.beta1,
                                              adam_beta2=recipe.beta2, max_grad_norm=recipe.grad_clip,
                                              optim='adamw_torch_fused', bf16=o['dtype'] == 'bfloat16', use_cpu=True,
                                              seed=SEED, report_to=[], save_strategy='no', logging_strategy='no',
                                              dataloader_num_workers=0, torch_compile=o.get('compile', False))
        InOrder(model=model, args=args, train_dataset=rows, callbacks=[Stamp()]).train()
    seconds = stamps[-1] - stamps[o['warmup'] - 1]
    print(
        json.dumps({
            'tokens_per_s': o['steps'] * batch * block / seconds,
            'peak_memory_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        }))


def speed(o, folder, data):
    """train.py against each of the Trainer's configurations in --peers: a figure per peer, its ratio, and the ratio
    against the faster of the Trainer's own configurations (eager or compiled)."""
    peers = o['peers'].split(',')
    for block in (int(c) for c in o['contexts'].split(',')):
        batch = windows_per_step(block)
        for dtype in o['dtypes'].split(','):
            ours, ours_gb, compile_s = ours_speed(o, folder, data, block, batch, dtype)
            shape = dict(dtype=dtype, batch=batch, block_size=block, threads=o['threads'], timed_steps=o['steps'],
                         model='SmolLM2-135M-Instruct')
            theirs = {}
            for peer in peers:
                rate, gb = theirs[peer] = trainer_speed(o, folder, data, block, batch, dtype, peer)
                figure('continue_tokens_per_s', round(ours, 1), 'tokens/s', baseline=round(rate, 1),
                       ratio=round(ours / rate, 3), compile_seconds=round(compile_s, 1), peer=PEERS[peer][0], **shape)
                figure('continue_peak_memory_gb', round(ours_gb, 2), 'GB', baseline=round(gb, 2),
                       ratio=round(ours_gb / gb, 3), peer=PEERS[peer][0], **shape)
            offered = [p for p in USER_PEERS if p in theirs]
            if offered:
                fastest = max(offered, key=lambda p: theirs[p][0])
                figure('continue_speedup_vs_fastest_trainer', round(ours / theirs[fastest][0], 3), 'x',
                       peer=PEERS[fastest][0], memory_ratio=round(ours_gb / theirs[fastest][1], 3), **shape)


def quality(o, folder, data, general):
    """PubMed and general-text val bpb, and PubMedQA, before and after budget_iters steps of the recipe (its mixture
    of the two)."""
    work, limit = Path(o['work']), o['pubmedqa_limit']
    pubmedqa_dir = Path(o['shared']) / 'data' / 'pubmedqa'
    before = work / f'pubmedqa_before_{limit}.json'
    if not before.exists():  # the model folder does not change: measured once
        run('pubmedqa.py', f'--hf={folder}', f'--limit={limit}', f'--pubmedqa={pubmedqa_dir}', f'--out_json={before}',
            threads=o['threads'])
    before = json.loads(before.read_text())
    out = work / 'quality'
    lr = o['learning_rate'] or None  # None: the recipe's
    mix = recipe_mix(data, general)
    run(*recipe_args(folder, mix, out, 512, 4,
                     o['quality_dtype']), '--gradient_accumulation_steps=2', f"--max_iters={o['budget_iters']}",
        '--warmup_iters=10', '--eval_interval=0', '--eval_iters=18', '--log_interval=5', '--save_best=False',
        '--eval_pubmedqa=True', f'--eval_limit={limit}', f'--pubmedqa_dir={pubmedqa_dir}',
        *([f'--learning_rate={lr}', f'--min_lr={lr / 10}'] if lr else []), threads=o['threads'],
        log=work / 'quality.log')
    records = [json.loads(line) for line in open(out / 'metrics.jsonl')]
    evals = [r for r in records if r['kind'] == 'eval']
    after = next(r for r in records if r['kind'] == 'pubmedqa')
    budget = (
        f"{o['budget_iters']} steps of 8 x 512 tokens ({evals[-1]['tokens']:,} tokens, "
        f"{evals[-1]['train_seconds']:.0f} s "
        f"of training), config/finetune_pubmed.py, lr {lr or read_recipe()['learning_rate']}, {o['quality_dtype']}, "
        f"{mix.replace(str(data.parent) + os.sep, '')}")
    for name, key in (('val_bpb', f'val_bpb/{data.name}'), ('general_bpb', f'val_bpb/{general.name}')):
        before_bpb, after_bpb = evals[0][key], evals[-1][key]
        figure(f'continue_{name}_after', round(after_bpb, 4), 'bits/byte', baseline=round(before_bpb, 4),
               ratio=round(after_bpb / before_bpb, 4), budget=budget)
    for key in ('accuracy', 'macro_f1'):
        figure(f'continue_pubmedqa_{key}_after', round(after[key], 4), key, baseline=round(before[key], 4),
               questions=after['questions'], budget=budget)


def main():
    o = configure(OPTIONS)
    if o['trainer_job']:
        return trainer_side(o['trainer_job'])
    for peer in o['peers'].split(','):  # before minutes of preparing
        if peer not in PEERS:
            fail(f"--peers: {peer!r} is not one of {', '.join(PEERS)}", 2)
    folder = smollm2_folder(o['shared'])
    if folder is None:
        fail(
            f"{o['shared']}/models/smollm2-135m-instruct holds no SmolLM2 GGUF: put ../shared beside the checkout "
            'or give --shared', 2)
    data, general = prepare(o, folder)
    parts = o['parts'].split(',')
    if 'speed' in parts:
        speed(o, folder, data)
    if 'quality' in parts:
        quality(o, folder, data, general)


if __name__ == '__main__':
    main()
