"""
Speedrun: how soon does the project's recipe reach the val bits per byte that nanoGPT's GPT-2 recipe
reaches in a fixed training-time budget?

    python bench/speedrun.py                                # 600 s each: baseline, then candidate
    python bench/speedrun.py --budget_s=120 --same_tokenizer=True   # candidate recipe on GPT-2 tokens
    python bench/speedrun.py --ablate=True --reuse=True     # + each lever switched off, one at a time
    python bench/speedrun.py --candidate_overrides="--mlp=gelu --n_layer=6"

Trains config/baseline_gpt2_cpu.py (GPT-2 tokens) and then config/train_pubmed_cpu.py (the PubMed
BPE, --vocab_size) with train.py, one after the other, each for budget_s seconds of training time
(evaluation excluded) and evaluated every eval_every_s seconds. Prints every eval point of both
curves, the final bpb of each, and the time the candidate needs to reach the baseline's final bpb
(linear interpolation between eval points: on a convex curve that overestimates the time, never
underestimates it) as one JSON line each, then plots the curves (matplotlib, if installed).

Fair across tokenizers: bits per byte divide the summed loss by the UTF-8 bytes of the predicted
tokens, and every run evaluates its whole val.bin (eval_iters is set past the number of windows).
The train/val split is a pure function of the PMID, so both val.bin files hold the same 106
documents of the shared corpus, only tokenized differently; each run scores all of them except the
last < block_size tokens (the tail that does not fill a window) and the first token of each window.

The data is prepared once per tokenizer under data_root (prepare.py's per-file cache makes this
cheap), from ../shared/data/pubmed-corpus unless --input says otherwise. Runs go to
out_root/<run name>/ (train.py's log.txt, metrics.jsonl and run.json); --reuse=True skips a run
whose finished metrics were produced by the same command, e.g. the baseline of an earlier run.
"""
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from common import fail
from configurator import configure
from tokenizer import use_tiktoken_cache_copy
from run import figure

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'budget_s': 600.0,          # training seconds per run (evaluation not counted)
    'eval_every_s': 15.0,       # evaluate the candidate(s) every this many training seconds
    'baseline_eval_every_s': 60.0,  # and the baseline (only its final bpb matters; its GPT-2 head makes evals slow)
    'baseline': 'config/baseline_gpt2_cpu.py',  # the reference recipe (GPT-2 tokens)
    'candidate': 'config/train_pubmed_cpu.py',  # the recipe measured against it
    'vocab_size': 8192,         # the candidate's PubMed BPE
    'same_tokenizer': False,    # train the candidate on the baseline's GPT-2 tokens instead
    'candidate_overrides': '',  # extra train.py options for the candidate (and its ablations), e.g. "--mlp=gelu"
    'ablate': False,            # also train the candidate with each lever of ABLATIONS switched off
    'ablate_budget_s': 0.0,     # training seconds per ablation run (0 = budget_s)
    'levers': '',               # with ablate: only the ABLATIONS whose names contain one of these comma-separated words
    'input': str(REPO.parent / 'shared' / 'data' / 'pubmed-corpus'),  # PubMed XML for prepare.py
    'data_root': str(REPO / 'bench' / 'results' / 'speedrun-data'),  # prepared data, one folder per tokenizer
    'out_root': str(REPO / 'bench' / 'results' / 'speedrun'),  # each run's folder goes here
    'threads': 0,               # torch threads per run (OMP_NUM_THREADS; 0 = torch's default, all cores)
    'reuse': False,             # keep a finished run made by the same command instead of training again
    'plot': 'auto',             # PNG in out_root: 'auto' = speedrun[_same_tokenizer][_ablate].png, '' = none
}
# yapf: enable
# One lever of the candidate switched at a time: (name, train.py override or None, data: None = the candidate's).
ABLATIONS = (
    ('rotary->learned_pos', '--pos=learned', None),
    ('rmsnorm->layernorm', '--norm=layernorm', None),
    ('qk_norm->off', '--qk_norm=False', None),
    ('relu2->gelu', '--mlp=gelu', None),
    ('relu2->swiglu', '--mlp=swiglu', None),
    ('untied->tied_head', '--tie_embeddings=True', None),
    ('zero_init_proj->off', '--zero_init_proj=False', None),
    ('no_softcap->softcap_15', '--logit_softcap=15', None),
    ('muon->adamw', '--optimizer=adamw', None),
    ('wsd->cosine', '--schedule=cosine', None),
    ('bpe_8k->bpe_16k', None, 'bpe16384'),
    ('fixed_windows->doc_aligned', '--align_windows=True', None),
    ('eager->compile', '--compile=True', None),
)


def prepared(o, tokenizer):
    """The folder with train.bin/val.bin/meta.pkl for 'gpt2' or 'bpe'; prepares it when missing."""
    name = 'gpt2' if tokenizer == 'gpt2' else f"bpe{o['vocab_size']}"
    folder = Path(o['data_root']) / name
    if (folder / 'meta.pkl').exists():
        return folder
    if not Path(o['input']).exists():
        fail(f"{folder} is not prepared and --input={o['input']} does not exist: point --input at PubMed XML "
             f"(e.g. ../shared/data/pubmed-corpus) or --data_root at prepared data")
    if tokenizer == 'gpt2':  # GPT-2's files offline, from the shared folder the default --input lies in
        use_tiktoken_cache_copy(
            Path(o['input']).parent.parent / 'tiktoken-cache',
            Path(o['data_root']) / 'tiktoken-cache')
    args = [f"--input={o['input']}", f'--out_dir={folder}', f'--tokenizer={tokenizer}']
    if tokenizer == 'bpe':
        args.append(f"--vocab_size={o['vocab_size']}")
    print(f'preparing {folder} ...', file=sys.stderr, flush=True)
    if subprocess.run([sys.executable, str(REPO / 'data' / 'pubmed' / 'prepare.py'), *args]).returncode:
        fail(f'prepare.py failed for {folder}')
    return folder


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def train(o, name, config, data_dir, budget_s, overrides=(), eval_every_s=None):
    """Run train.py for budget_s training seconds; returns its metrics records."""
    out_dir = Path(o['out_root']) / name
    cmd = [
        sys.executable, 'train.py', config, f'--data_dir={data_dir}', f'--out_dir={out_dir}',
        f'--max_seconds={budget_s}', '--max_iters=1000000000', '--max_tokens=0', '--lr_decay_iters=0',
        '--eval_interval=0', f"--eval_interval_seconds={eval_every_s or o['eval_every_s']}", '--eval_iters=1000000',
        '--log_interval=50', '--save_latest=False', '--save_best=False', '--ckpt_every_tokens=0', '--wandb_log=False',
        '--init_from=scratch', '--overwrite=True', *overrides
    ]
    stamp, metrics = out_dir / 'run.json', out_dir / 'metrics.jsonl'
    run = {'cmd': cmd[1:], 'threads': o['threads']}
    if o['reuse'] and stamp.exists() and metrics.exists() and json.loads(stamp.read_text()) == run:
        records = read_metrics(metrics)
        if records and records[-1].get('kind') == 'eval' and records[-1]['train_seconds'] >= budget_s:
            print(f'{name}: reusing {metrics}', file=sys.stderr, flush=True)
            return records
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    print(f'{name}: training {budget_s:g} s ({shlex.join(cmd[1:])})', file=sys.stderr, flush=True)
    t0 = time.time()
    env = dict(os.environ, **({'OMP_NUM_THREADS': str(o['threads'])} if o['threads'] else {}))
    with open(out_dir / 'log.txt', 'w') as log:
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        tail = (out_dir / 'log.txt').read_text().splitlines()[-15:]
        fail(f'{name}: train.py exited with {code}; the end of {out_dir / "log.txt"}:\n' + '\n'.join(tail))
    stamp.write_text(json.dumps(run))
    print(f'{name}: done in {time.time() - t0:.0f} s of wall clock', file=sys.stderr, flush=True)
    return read_metrics(metrics)


def curve(records):
    """[(train seconds, val bpb)] of the eval records."""
    return [(r['train_seconds'], r['val_bpb']) for r in records if r['kind'] == 'eval']


def time_to_reach(points, target):
    """First training time at which the curve is at or below target (linear between eval points), or None."""
    if points and points[0][1] <= target:
        return points[0][0]
    for (t0, b0), (t1, b1) in zip(points, points[1:]):
        if b1 <= target:
            return t0 + (t1 - t0) * (b0 - target) / (b0 - b1)
    return None


def report(name, records):
    """Print the run's curve, final bpb and throughput; returns its curve."""
    points = curve(records)
    for (t, bpb), r in zip(points, (r for r in records if r['kind'] == 'eval')):
        figure(f'{name}_val_bpb', round(bpb, 5), 'bits/byte', train_seconds=t, iter=r['iter'], tokens=r['tokens'])
    steps = [r for r in records if r['kind'] == 'train']
    if steps:
        last = steps[-1]
        figure(f'{name}_tokens_per_s', round(last['tokens'] / last['train_seconds']), 'tokens/s', iters=last['iter'],
               tokens=last['tokens'])
    return points


def compare(name, points, target, base_seconds):
    """Print the time `name` needs to reach target bpb, and its ratio to base_seconds, as a JSON figure."""
    t = time_to_reach(points, target)
    figure(f'{name}_seconds_to_baseline_bpb', None if t is None else round(t, 1), 's', baseline=round(base_seconds, 1),
           ratio=None if t is None else round(t / base_seconds, 3), target_bpb=round(target, 5),
           note=None if t is not None else f'not reached in {points[-1][0]:.0f} s (final bpb {points[-1][1]:.4f})')


def plot(path, curves, target, threads):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('note: matplotlib is not installed: no plot', file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, points in curves.items():
        main = name in ('baseline', 'candidate', 'candidate_gpt2')
        ax.plot(*zip(*points), label=name, linewidth=2.2 if main else 1.0, alpha=1.0 if main else 0.7,
                marker='o' if main else None, markersize=3)
    ax.axhline(target, color='grey', linestyle='--', linewidth=1, label='baseline final')
    lo = min(b for points in curves.values() for _, b in points)
    ax.set_ylim(lo - 0.05, max(target + 0.8, lo + 0.5))
    ax.set_xlabel(f"training seconds ({f'{threads} thread(s), ' if threads else ''}evaluation excluded)")
    ax.set_ylabel('val bits per byte')
    ax.set_title('PubMed speedrun: val bpb vs training time')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'plot: {path}', file=sys.stderr)


def main(argv=None):
    o = configure(OPTIONS, argv)
    if min(o['budget_s'], o['eval_every_s'], o['baseline_eval_every_s']) <= 0:
        fail('--budget_s, --eval_every_s and --baseline_eval_every_s must be positive', 2)
    words = [w for w in o['levers'].split(',') if w]
    unknown = [w for w in words if not any(w in lever for lever, _, _ in ABLATIONS)]
    if unknown:
        fail(
            f"--levers: no lever named like {', '.join(unknown)} (levers: "
            f"{', '.join(name for name, _, _ in ABLATIONS)})", 2)
    for key in ('baseline', 'candidate'):
        if not (REPO / o[key]).is_file():
            fail(f"--{key}={o[key]}: no such config file (relative to {REPO})", 2)
    cand_overrides = shlex.split(o['candidate_overrides'])
    gpt2 = prepared(o, 'gpt2')
    bpe = gpt2 if o['same_tokenizer'] else prepared(o, 'bpe')
    budget = o['budget_s']

    base = train(o, 'baseline', o['baseline'], gpt2, budget, eval_every_s=o['baseline_eval_every_s'])
    cand_name = 'candidate_gpt2' if o['same_tokenizer'] else 'candidate'
    cand = train(o, cand_name, o['candidate'], bpe, budget, cand_overrides)
    curves = {'baseline': report('baseline', base), cand_name: report(cand_name, cand)}
    target, base_seconds = curves['baseline'][-1][1], curves['baseline'][-1][0]
    figure('baseline_final_val_bpb', round(target, 5), 'bits/byte', train_seconds=base_seconds)
    final = curves[cand_name][-1][1]
    figure(f'{cand_name}_final_val_bpb', round(final, 5), 'bits/byte', baseline=round(target, 5),
           ratio=round(final / target, 4))
    compare(cand_name, curves[cand_name], target, base_seconds)

    if o['ablate']:
        ablate_budget = o['ablate_budget_s'] or budget
        reference = final
        if ablate_budget != budget:  # compare ablations with the candidate at the same budget
            reference = curve(
                train(o, f'{cand_name}@{ablate_budget:g}s', o['candidate'], bpe, ablate_budget, cand_overrides))[-1][1]
        for lever, override, data in ABLATIONS:
            if words and not any(w in lever for w in words):
                continue
            name = f'ablate[{lever}]'
            folder = prepared(dict(o, vocab_size=int(data[3:])), 'bpe') if data else bpe
            points = curve(
                train(o, name, o['candidate'], folder, ablate_budget,
                      cand_overrides + ([override] if override else [])))
            curves[name] = points
            t = time_to_reach(points, target)
            figure(f'{name}_final_val_bpb', round(points[-1][1], 5), 'bits/byte', baseline=round(reference, 5),
                   ratio=round(points[-1][1] / reference, 4), budget_s=ablate_budget, change=override or f'data={data}',
                   seconds_to_baseline_bpb=None if t is None else round(t, 1))
    if o['plot']:
        auto = 'speedrun' + '_same_tokenizer' * o['same_tokenizer'] + '_ablate' * o['ablate'] + '.png'
        plot(Path(o['out_root']) / (auto if o['plot'] == 'auto' else o['plot']), curves, target, o['threads'])


if __name__ == '__main__':
    main()
