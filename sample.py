"""
Generate text from a trained checkpoint. Everything needed is in the checkpoint (weights, model
arguments, tokenizer): no data directory, no network.

    python sample.py --prompt="Metformin is" --num_samples=3 --max_new_tokens=200
    python sample.py --ckpt=out/best.pt --prompt=FILE:abstract.txt --temperature=0

The first sample streams to stdout as it is generated; all samples are generated as one batch.
The same seed gives the same output.
"""
import codecs
import sys

import torch

from checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, model_from_checkpoint, tokenizer_of
from common import DTYPES, DeviceError, fail, precision, resolve_device
from configurator import Option, at_least, configure, one_of
from tokenizer import encoding_from_spec, eot_id


def greedy_or_not_tiny(v):
    return None if v == 0 or v >= 1e-4 else 'must be 0 (greedy) or at least 1e-4 (below, logits / temperature overflow)'


def in_unit_interval(v):
    return None if 0 < v <= 1 else 'must be in (0, 1]'


# yapf: disable (a table: its comments aligned)
OPTIONS = {
    'out_dir': 'out',             # the run whose ckpt.pt (or ckpt.dcp) to sample, unless --ckpt
    'ckpt': '',                   # checkpoint file (or sharded folder NAME.dcp); '' = out_dir's ckpt.pt or ckpt.dcp
    'prompt': '',                 # the text to continue, or FILE:path.txt; '' = start from <|endoftext|> (the start of
                                  # a document)
    'num_samples': Option(1, at_least(1)),  # samples, generated as one batch (the first streams)
    'max_new_tokens': Option(200, at_least(0)),  # tokens to generate after the prompt
    'temperature': Option(0.8, greedy_or_not_tiny),  # 0 = greedy
    'top_k': Option(200, at_least(0)),  # sample among the k likeliest tokens; 0 = all
    'top_p': Option(1.0, in_unit_interval),  # nucleus: the smallest set of tokens reaching this probability; 1.0 = off
    'seed': 1337,                 # the same seed gives the same samples
    'device': 'auto',             # 'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1', 'mps'
    'dtype': Option('auto', one_of(*DTYPES)),  # 'auto' (bf16 if supported, else fp16 on GPU; fp32 elsewhere),
                                               # 'float32',
                                               # 'bfloat16', 'float16'
    'stop_at_eot': True,          # a sample ends at <|endoftext|>
}
# yapf: enable
SEPARATOR = '\n' + '-' * 40 + '\n'


def read_prompt(text):
    if not text.startswith('FILE:'):
        return text
    try:
        with open(text[5:], encoding='utf-8') as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        fail(f'cannot read the prompt file {text[5:]}: {e}', 2)


def main():
    c = configure(OPTIONS)
    path = c['ckpt'] or latest_checkpoint(c['out_dir'])
    try:
        dev = resolve_device(c['device'])
    except DeviceError as e:
        fail(str(e), 2)
    autocast = precision(dev, c['dtype'])[1]
    try:
        checkpoint = load_checkpoint(path)  # on the CPU: only the weights go to the device, once
        spec = tokenizer_of(checkpoint, path)
        enc, eot = encoding_from_spec(spec), eot_id(spec)
        model = model_from_checkpoint(checkpoint)
    except CheckpointError as e:
        fail(str(e))
    model.eval().to(dev)
    block = model.config.block_size

    text = read_prompt(c['prompt'])
    ids = enc.encode_ordinary(text) if text else [eot]  # '<|endoftext|>' typed in a prompt is text, as in train.bin
    if len(ids) > block:
        print(f'note: the prompt is {len(ids)} tokens, the context {block}: keeping its last {block}', file=sys.stderr)
        ids = ids[-block:]
        text = enc.decode(ids)
    if len(ids) + c['max_new_tokens'] > block:
        print(
            f'note: generating past the context of {block} tokens: the window slides by half a context '
            f'once it is full', file=sys.stderr)

    generator = torch.Generator(dev).manual_seed(c['seed'])
    x = torch.tensor([ids] * c['num_samples'], dtype=torch.long, device=dev)
    stream = model.generate_stream(x, c['max_new_tokens'], temperature=c['temperature'], top_k=c['top_k'] or None,
                                   top_p=c['top_p'], generator=generator, n_vocab=enc.n_vocab)
    generated, done = [], torch.zeros(c['num_samples'], dtype=torch.bool, device=dev)
    first = codecs.getincrementaldecoder('utf-8')(errors='replace')  # tokens may split a UTF-8 character
    sys.stdout.write(text)
    with autocast:
        for token in stream:
            generated.append(token)
            if c['stop_at_eot']:
                done |= token[:, 0] == eot
            if not done[0]:
                sys.stdout.write(first.decode(enc.decode_single_token_bytes(token[0, 0].item())))
                sys.stdout.flush()
            if done.all():
                break
    sys.stdout.write(first.decode(b'', final=True))
    rows = torch.cat(generated, dim=1).tolist() if generated else [[] for _ in range(c['num_samples'])]
    for row in rows[1:]:
        if c['stop_at_eot'] and eot in row:
            row = row[:row.index(eot)]
        sys.stdout.write(SEPARATOR + text + enc.decode(row))
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
