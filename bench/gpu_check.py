"""
One run that checks every GPU claim of the project, for a short slot on one GPU (under 8 minutes on an
H100/H200) with only torch, transformers and numpy there (no lm-eval, wandb or rustbpe, no network):

    python bench/gpu_check.py --data_dir=data/gpu-check     # a folder prepare.py made with --tokenizer=gpt2
    python bench/gpu_check.py --quick                       # the same code paths on CPU, tiny shapes (a test runs it)

Prints one JSON line per figure (bench/run.py's format) and a summary line; the first error ends the run
with exit 1, naming the part. The parts:
  recipe     config/train_pubmed.py, shortened, through train.py's own main (bf16 autocast, torch.compile,
             SDPA): compile time, tokens/s, MFU against the bf16 matmul peak measured here, the loss falling
  modes      train_step's steps/s eager vs compiled, bf16 vs fp32, side by side on the recipe's shapes
  fsdp       FSDP2 (fully_shard, bf16 policy) on one process, with and without activation checkpointing:
             peak allocated memory against plan.py's estimate for the same shapes
  continue   continued pretraining of a SmolLM2-135M-shaped Llama (random weights of the real shapes, the same
             cost: the shared GGUF file cannot travel): train.py's step on the import vs transformers' own
             model, trained as the Trainer does (its Trainer where accelerate is installed; eager and with
             torch_compile=True, train.py's step compiled), tokens/s and peak memory at the same batch,
             sequence length, optimizer and precision
  decode     sample.py's KV-cache decoding vs transformers' generate() on the same model, batch 1 and 8
  loss       the chunked loss (model.chunked_cross_entropy) vs the plain one at the real vocabulary
On CPU (--quick) memory is the process's peak RSS, which cannot be reset between parts: those figures
are printed as null there.
"""
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
import torch

from configurator import configure
from run import figure

# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'quick': False,        # every part on CPU with tiny shapes, in under a minute (the tests run it)
    'data_dir': '',        # a data folder prepare.py made with --tokenizer=gpt2 (the recipe part trains on it)
    'parts': 'recipe,modes,fsdp,continue,decode,loss',  # which parts, in this order
    'steps': 0,            # timed steps per setting (0: each part's own default)
}
# yapf: enable
# the shapes of each part: full (a GPU) and quick (CPU, seconds)
RECIPE = {
    'full': dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, batch_size=16),
    'quick': dict(n_layer=2, n_head=2, n_embd=64, block_size=32, batch_size=4)
}
SMOLLM2 = {
    'full': dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True),
    'quick': dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True)
}
CONTINUE = {'full': dict(batch=8, seq=2048, new_tokens=128), 'quick': dict(batch=2, seq=64, new_tokens=8)}


class Timer:
    """Seconds per call of fn: the median of `steps` calls after `warmup`, the device synchronised around each."""

    def __init__(self, device):
        self.sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    def __call__(self, fn, steps, warmup=2):
        times = []
        for i in range(warmup + steps):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def peak_reset(device):
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device):
    """Peak allocated memory since peak_reset (GPU); None on CPU, where the peak resident set cannot be reset."""
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 3) if device.type == 'cuda' else None


def recipe(o, device, size, timer):
    """config/train_pubmed.py shortened, run by train.py's main as a user runs it."""
    import train
    from common import measure_matmul_peak
    peak = measure_matmul_peak(device, torch.bfloat16 if device.type == 'cuda' else torch.float32)
    figure('matmul_peak_tflops', round(peak / 1e12, 1), 'TFLOP/s',
           dtype='bfloat16' if device.type == 'cuda' else 'float32')
    steps = o['steps'] or (40 if size == 'full' else 6)
    with tempfile.TemporaryDirectory() as out:
        args = [
            'config/train_pubmed.py', f"--data_dir={o['data_dir']}", f'--out_dir={out}', f'--max_iters={steps}',
            '--eval_interval=0', '--eval_iters=4', '--log_interval=1', '--gradient_accumulation_steps=1',
            f'--peak_flops={peak}', '--warmup_iters=5', '--ckpt_every_tokens=0', '--save_best=False',
            *[f'--{k}={v}' for k, v in RECIPE[size].items()], *(['--compile=False'] if size == 'quick' else [])
        ]
        train.main(train.options([os.path.join(_ROOT, args[0]), *args[1:]]))
        records = [json.loads(line) for line in open(os.path.join(out, 'metrics.jsonl'))]
    steps_ = [r for r in records if r['kind'] == 'train']
    evals = [r for r in records if r['kind'] == 'eval']
    steady = steps_[len(steps_) // 2:]
    ms = statistics.median(r['ms_per_iter'] for r in steady)
    figure('recipe_compile_seconds', round((steps_[0]['ms_per_iter'] - ms) / 1000, 1), 's',
           note='the first step (compilation and warm-up) less a steady one')
    figure('recipe_tokens_per_s', round(statistics.median(r['tokens_per_s'] for r in steady)), 'tokens/s',
           batch=RECIPE[size]['batch_size'], block_size=RECIPE[size]['block_size'])
    mfus = [r['mfu'] for r in steady if r['mfu'] is not None]  # None: the rate went above the peak measured at start
    figure('recipe_mfu', round(statistics.median(mfus), 4) if mfus else None, 'fraction of the measured peak')
    figure('recipe_val_loss', round(evals[-1]['val_loss'], 4), 'nats', start=round(evals[0]['val_loss'], 4),
           train_loss_first=round(steps_[0]['loss'], 4), train_loss_last=round(steps_[-1]['loss'], 4))
    if not evals[-1]['val_loss'] < evals[0]['val_loss']:
        raise AssertionError(f"the val loss did not fall: {evals[0]['val_loss']:.4f} -> {evals[-1]['val_loss']:.4f}")


def recipe_model(size, vocab=50304):
    from model import GPT, GPTConfig
    shape = {k: v for k, v in RECIPE[size].items() if k != 'batch_size'}
    torch.manual_seed(0)
    return GPT(
        GPTConfig(vocab_size=vocab if size == 'full' else 512, pos='rotary', norm='rmsnorm', mlp='relu2', bias=False,
                  tie_embeddings=False, zero_init_proj=True, **shape))


def random_batch(model, batch, device):
    shape = (batch, model.config.block_size)
    return [(torch.randint(0, model.config.vocab_size, shape,
                           device=device), torch.randint(0, model.config.vocab_size, shape, device=device))]


def modes(o, device, size, timer):
    """train.py's train_step, eager vs compiled and bf16 vs fp32, same model and batch."""
    import train
    from common import precision
    results = {}
    for compiled in (False, True):
        for dtype in ('float32', 'bfloat16'):  # eager fp32 first: the baseline of the others
            raw = recipe_model(size).to(device)
            optimizers = raw.configure_optimizers(0.0, 1e-3, (0.9, 0.95), device.type)
            # quick: dynamo and autograd traced, nothing compiled to C++ (a cold inductor cache costs ~30 s on CPU;
            # tests/test_model.py compiles with inductor)
            backend = 'aot_eager' if size == 'quick' else 'inductor'
            model = torch.compile(raw, backend=backend) if compiled else raw
            autocast = precision(device, dtype)[1]
            scaler = torch.amp.GradScaler(device.type, enabled=False)
            batches = random_batch(raw, RECIPE[size]['batch_size'], device)
            seconds = timer(lambda: train.train_step(model, optimizers, scaler, batches, autocast, 1.0), o['steps'] or
                            (10 if size == 'full' else 3), warmup=3)
            results[compiled, dtype] = 1 / seconds
            base = results[False, 'float32']
            figure(f"modes_{'compiled' if compiled else 'eager'}_{dtype}_steps_per_s", round(1 / seconds, 2), 'steps/s',
                   baseline=round(base, 2), ratio=round(1 / seconds / base, 3), baseline_is='eager float32')
            model = raw = optimizers = None  # freed before the next setting is built


def fsdp(o, device, size, timer):
    """FSDP2 on one process (a process group of one, so fully_shard wraps every block and the root) against plan.py."""
    import socket

    import torch.distributed as dist

    import plan
    import train
    from parallel import parallelize
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0,
                            world_size=1)
    try:
        batch = max(1, RECIPE[size]['batch_size'] // 2)
        dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
        for checkpointing in (False, True):
            peak_reset(device)
            raw = recipe_model(size)
            raw.activation_checkpointing = checkpointing
            model = parallelize(raw, 'fsdp', device, dtype)
            optimizers = raw.configure_optimizers(0.0, 1e-3, (0.9, 0.95), device.type)
            batches = random_batch(raw, batch, device)
            scaler = torch.amp.GradScaler(device.type, enabled=False)
            seconds = timer(lambda: train.train_step(model, optimizers, scaler, batches, nullcontext(), 1.0),
                            o['steps'] or (5 if size == 'full' else 2), warmup=2)
            estimate = plan.estimate(raw.config, batch, 1, bf16=dtype == torch.bfloat16)['fsdp', checkpointing]['total']
            measured = peak_gb(device)
            figure(f"fsdp{'_ac' if checkpointing else ''}_peak_memory_gb", measured, 'GB',
                   plan_gb=round(estimate / 1e9, 3), ratio=measured and round(measured / (estimate / 1e9), 3),
                   steps_per_s=round(1 / seconds, 2), micro_batch=batch, dtype=str(dtype).removeprefix('torch.'))
            model = raw = optimizers = None  # freed before the next setting is built
    finally:
        dist.destroy_process_group()


def smollm2(size, device):
    """A SmolLM2-135M-shaped Llama with random weights, and our import of it (hf.from_hf_model)."""
    import transformers

    from hf import from_hf_model
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2[size], rope_theta=100000.0))
    ours = from_hf_model(hf)
    return hf.to(device), ours.to(device)


def hf_trainer_seconds(hf, x, steps, timer, device, compiled=False):
    """Seconds per optimizer step of transformers' own training of hf, bf16 on the GPU: its Trainer where accelerate
    is installed (what a user of the reference setups runs; with torch_compile=True if compiled), else the same
    model in a plain AdamW loop."""
    try:
        import accelerate  # noqa: F401 (the Trainer needs it)
        from transformers import Trainer, TrainerCallback, TrainingArguments
    except ImportError:
        optimizer = torch.optim.AdamW(hf.parameters(), lr=1e-5, fused=device.type == 'cuda')
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == 'cuda' else nullcontext()

        def step():
            with autocast:
                loss = hf(input_ids=x, labels=x).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return timer(step, steps), 'transformers model, plain AdamW loop (accelerate not installed)'
    stamps = []

    class Stamp(TrainerCallback):

        def on_step_end(self, args, state, control, **kwargs):
            timer.sync()
            stamps.append(time.perf_counter())

    rows = [{'input_ids': row, 'labels': row} for row in x.cpu()]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=len(rows), max_steps=steps + 2,
                                 learning_rate=1e-5, bf16=device.type == 'cuda', report_to=[], save_strategy='no',
                                 logging_strategy='no', dataloader_num_workers=0, use_cpu=device.type == 'cpu',
                                 optim='adamw_torch_fused', torch_compile=compiled)
        Trainer(model=hf, args=args, train_dataset=rows * (steps + 2), callbacks=[Stamp()]).train()
    peer = "transformers' Trainer, torch_compile=True" if compiled else "transformers' Trainer"
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:])), peer


def continued(o, device, size, timer):
    """train.py's step on the imported model vs transformers' training of the same model: same windows, AdamW, bf16.
    On the GPU both compiled (as the recipe runs train.py) and the Trainer eager too, a figure for each of its
    configurations; quick (CPU) runs both eager (compiling a step takes minutes on CPU)."""
    import train
    from common import precision
    shape = CONTINUE[size]
    hf, ours = smollm2(size, device)
    steps = o['steps'] or (10 if size == 'full' else 2)
    x = torch.randint(0, SMOLLM2[size]['vocab_size'], (shape['batch'], shape['seq'] + 1), device=device)
    peak_reset(device)
    optimizers = ours.configure_optimizers(0.0, 1e-5, (0.9, 0.95), device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    autocast = precision(device, 'bfloat16' if device.type == 'cuda' else 'float32')[1]
    window = [(x[:, :-1].contiguous(), x[:, 1:].contiguous())]
    model = torch.compile(ours) if size == 'full' else ours  # the timer's warmup steps compile it
    ours_s = timer(lambda: train.train_step(model, optimizers, scaler, window, autocast, 1.0), steps)
    ours_gb = peak_gb(device)
    model = optimizers = None
    ours.cpu()
    tokens = shape['batch'] * shape['seq']
    for compiled in (False, True) if size == 'full' else (False, ):
        peak_reset(device)
        theirs_s, peer = hf_trainer_seconds(hf, window[0][0], steps, timer, device, compiled)  # labels shifted inside
        figure('continue_tokens_per_s', round(tokens / ours_s), 'tokens/s', baseline=round(tokens / theirs_s),
               peer=peer, ratio=round(theirs_s / ours_s, 3), batch=shape['batch'], seq=shape['seq'])
        figure('continue_peak_memory_gb', ours_gb, 'GB', baseline=peak_gb(device), peer=peer)


def decode(o, device, size, timer):
    """sample.py's decoding (generate_stream, KV cache) vs transformers' generate(), greedy, same weights and
    precision."""
    from common import precision
    hf, ours = smollm2(size, device)
    hf.eval(), ours.eval()
    autocast = precision(device, 'bfloat16' if device.type == 'cuda' else 'float32')[1]
    new = CONTINUE[size]['new_tokens']
    for batch in (1, 8):
        prompt = torch.randint(0, SMOLLM2[size]['vocab_size'], (batch, 32), device=device)

        def ours_decode():
            with torch.no_grad(), autocast:
                for _ in ours.generate_stream(prompt, new, temperature=0):
                    pass

        def theirs_decode():
            with torch.no_grad(), autocast:
                hf.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)

        ours_s, theirs_s = timer(ours_decode, 3, warmup=1), timer(theirs_decode, 3, warmup=1)
        figure(f'decode_batch{batch}_tokens_per_s', round(batch * new / ours_s), 'tokens/s',
               baseline=round(batch * new / theirs_s), ratio=round(theirs_s / ours_s, 3), new_tokens=new)


def loss(o, device, size, timer):
    """The head's loss and its gradients, chunked (what the model computes) vs plain (logits materialised)."""
    import torch.nn.functional as F

    from loss import chunked_cross_entropy, head_rows
    vocab, width = SMOLLM2[size]['vocab_size'], SMOLLM2[size]['hidden_size']
    rows = CONTINUE[size]['batch'] * CONTINUE[size]['seq']
    x = torch.randn(rows, width, device=device, requires_grad=True)
    weight = (torch.randn(vocab, width, device=device) * 0.02).requires_grad_()
    targets = torch.randint(0, vocab, (rows, ), device=device)

    def chunked():
        chunked_cross_entropy(x, weight, targets, rows=head_rows(device.type, vocab)).backward()

    def plain():
        F.cross_entropy((x @ weight.t()).float(), targets).backward()

    found = {}
    for name, fn in (('plain', plain), ('chunked', chunked)):
        peak_reset(device)
        found[name] = timer(fn, 3), peak_gb(device)
    (plain_s, plain_gb), (chunked_s, chunked_gb) = found['plain'], found['chunked']
    figure('loss_chunked_ms', round(1000 * chunked_s, 2), 'ms', baseline=round(1000 * plain_s, 2),
           ratio=round(chunked_s / plain_s, 3), rows=rows, vocab=vocab)
    figure('loss_chunked_peak_memory_gb', chunked_gb, 'GB', baseline=plain_gb)


PARTS = {'recipe': recipe, 'modes': modes, 'fsdp': fsdp, 'continue': continued, 'decode': decode, 'loss': loss}


def main(argv=None):
    argv = [a if a != '--quick' else '--quick=True' for a in (sys.argv[1:] if argv is None else argv)]
    o = configure(OPTIONS, argv)
    parts = [p.strip() for p in o['parts'].split(',') if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"error: --parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    if 'recipe' in parts and not os.path.isfile(os.path.join(o['data_dir'], 'meta.pkl')):
        print(
            f"error: --data_dir={o['data_dir']!r}: the recipe needs a prepared data folder (prepare.py "
            "--tokenizer=gpt2)", file=sys.stderr)
        return 2
    device = torch.device('cuda' if torch.cuda.is_available() and not o['quick'] else 'cpu')
    size = 'quick' if o['quick'] else 'full'
    torch.backends.cuda.matmul.allow_tf32 = True  # as train.py
    torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    figure('device', name, '', torch=torch.__version__, size=size)
    timer, t0, done = Timer(device), time.perf_counter(), []
    for part in parts:
        start = time.perf_counter()
        try:
            PARTS[part](o, device, size, timer)
        except Exception as e:  # loudly: the part, the error, the traceback, exit 1
            import traceback
            traceback.print_exc()
            print(f'error: part {part} failed: {type(e).__name__}: {e}', file=sys.stderr)
            figure('summary', None, '', passed=done, failed=part, seconds=round(time.perf_counter() - t0, 1))
            return 1
        done.append(part)
        figure(f'{part}_seconds', round(time.perf_counter() - start, 1), 's')
    figure('summary', 'ok', '', passed=done, seconds=round(time.perf_counter() - t0, 1), device=name)
    return 0


if __name__ == '__main__':
    sys.exit(main())
