"""
Continued pretraining of an open model on CPU, end to end: a small random-initialised Llama (SmolLM2's
layout) with a Llama 3-style byte-level BPE, saved as a Hugging Face folder (hf_folders.py: no hub here),
is imported; the shared corpus is prepared with its converted tokenizer; config/finetune_pubmed.py trains
it `steps` steps; the checkpoint is exported back, and transformers' val loss on the same windows is
printed beside ours.

    python bench/bench_continue.py                   # ~5 minutes on 2 cores
    python bench/bench_continue.py --steps=100 --files=1

One JSON line per figure: val bpb before and after (the first with the second as baseline), tokens/s,
and transformers' val loss with ours as baseline (their difference is the export's error).
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from configurator import configure  # noqa: E402
from data.pubmed.parse import parse_file  # noqa: E402
from dataloader import eval_starts, load_meta, read_windows  # noqa: E402
from hf_folders import llama_folder  # noqa: E402
from run import figure  # noqa: E402

DEFAULTS = {
    'corpus': str(REPO.parent / 'shared' / 'data' / 'pubmed-corpus'),  # PubMed XML
    'files': 3,              # corpus files to prepare (~2,258 abstracts each)
    'steps': 300,            # optimizer steps of continued pretraining
    'block_size': 128,  # training window
    'batch_size': 16,  # windows per step
    'eval_iters': 10,        # val windows: eval_iters x batch_size
    'learning_rate': 3e-3,   # a random-initialised model: the recipe's 5e-5 is for pretrained weights
    'threads': 1,  # torch threads of each side
}


def run(*args, cwd=REPO, threads=1):
    done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': str(threads)})
    if done.returncode:
        sys.exit(f'{args[0]} failed:\n{done.stderr[-3000:]}')
    return done


def main():
    o = configure(DEFAULTS)
    import transformers
    tmp = Path(tempfile.mkdtemp(prefix='bench-continue-'))
    corpus = tmp / 'corpus'
    corpus.mkdir()
    for path in sorted(Path(o['corpus']).glob('*.xml.gz'))[:o['files']]:
        os.symlink(path, corpus / path.name)
    records = parse_file(sorted(corpus.iterdir())[0])[0]  # the tokenizer's training text: the first file's abstracts
    texts = [r['abstract'] for r in records if r['abstract']]
    folder = llama_folder(tmp / 'llama', texts, vocab_size=2000, max_position_embeddings=o['block_size'])
    data = tmp / 'data'
    run(REPO / 'data' / 'pubmed' / 'prepare.py', f'--input={corpus}', f'--out_dir={data}', f'--tokenizer={folder}')
    out = tmp / 'out'
    run('train.py', 'config/finetune_pubmed.py', f'--init_from={folder}', f'--data_dir={data}', f'--out_dir={out}',
        f"--block_size={o['block_size']}", f"--batch_size={o['batch_size']}", '--gradient_accumulation_steps=1',
        f"--max_iters={o['steps']}", f"--eval_interval={o['steps']}", f"--eval_iters={o['eval_iters']}",
        f"--learning_rate={o['learning_rate']}", f"--min_lr={o['learning_rate'] / 10}", '--warmup_iters=10',
        '--compile=False', '--device=cpu', '--log_interval=10', threads=o['threads'])
    records = [json.loads(line) for line in open(out / 'metrics.jsonl')]
    evals, steps = [r for r in records if r['kind'] == 'eval'], [r for r in records if r['kind'] == 'train']
    note = f"{o['steps']} steps of {o['batch_size']} x {o['block_size']} tokens, {o['files']} corpus file(s)"
    figure('continue_val_bpb_after', round(evals[-1]['val_bpb'], 4), 'bits/byte', baseline=round(evals[0]['val_bpb'], 4),
           ratio=round(evals[-1]['val_bpb'] / evals[0]['val_bpb'], 4), note=note)
    figure('continue_tokens_per_s', round(steps[-1]['tokens'] / steps[-1]['train_seconds']), 'tokens/s', note=note)
    run('export_hf.py', f'--ckpt={out / "ckpt.pt"}', f'--out={tmp / "hf"}')
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp / 'hf').eval()
    meta = load_meta(data)
    val = np.fromfile(data / 'val.bin', dtype=meta['dtype'])
    x, y = read_windows(val, eval_starts(val, o['block_size'], o['eval_iters'] * o['batch_size']), o['block_size'])
    with torch.no_grad():
        logits = hf(torch.from_numpy(x)).logits
    theirs = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten()).item()
    figure('continue_val_loss_transformers', round(theirs, 6), 'nats', baseline=round(evals[-1]['val_loss'], 6),
           difference=abs(theirs - evals[-1]['val_loss']), architecture=type(hf).__name__)


if __name__ == '__main__':
    main()
