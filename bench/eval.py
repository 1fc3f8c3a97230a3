"""
eval.py's scoring speed against train.py's own evaluation: same model, same val windows, same device.

    python bench/eval.py [--repeats=3] [--n_layer=4 --n_embd=256 --block_size=256 --batch_size=8 --eval_iters=8]
    python bench/eval.py --device=cuda --n_layer=12 --n_embd=768 --block_size=1024 --batch_size=64 --eval_iters=20

The val shard is the built-in sample tokenized with GPT-2 (every document, <|endoftext|> first, as
prepare.py does). train.py's evaluate() runs its fixed val windows; eval.py's score() runs the same
windows (loader.val_windows) and also counts the bytes behind each target for bits per byte. Runs
alternate (train, eval, eval, train, ...) so that a drifting shared machine hurts both alike; the
median tokens/s of each is reported, with both losses (they must agree to float rounding).
"""

import argparse
import gzip
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import eval as evaluate  # noqa: E402
import loader  # noqa: E402
import train  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import load_tokenizer, token_byte_lengths  # noqa: E402


def sample_tokens(enc):
    with gzip.open(ROOT / "data" / "sample" / "docs.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return np.concatenate([[enc.eot_token] + t for t in enc.encode_ordinary_batch(texts)]).astype(np.uint16)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=256)
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--eval_iters", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = args.device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    enc = load_tokenizer("gpt2")
    val = sample_tokens(enc)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size,
                          vocab_size=50304, real_vocab_size=50257)).to(device).eval()
    windows = loader.val_windows([val], args.block_size, args.eval_iters * args.batch_size)
    n_tokens = windows.shape[0] * args.block_size
    byte_lengths = token_byte_lengths(enc, 50304)
    window_bytes = byte_lengths[windows[:, 1:].astype(np.int64)].sum(axis=1)  # as train.py's val set
    run = SimpleNamespace(device=device, device_type=device.split(":")[0], rank=0, world=1, autocast=autocast)
    print(f"{model.get_num_params() / 1e6:.1f}M parameters, {len(val):,} val tokens, {args.eval_iters} x "
          f"{args.batch_size} windows of {args.block_size} on {device}, torch threads {torch.get_num_threads()}")

    def ours():  # what eval.py runs on token shards
        nats, count, _ = evaluate.score(model, windows.astype(np.int64), args.batch_size, byte_lengths, device,
                                        autocast)
        assert count == n_tokens
        return nats / count

    def reference():
        loss, _ = train.evaluate(model, {"val": (windows, window_bytes)}, args.batch_size, run)[None]
        model.eval()  # train.py's evaluate() leaves the model in training mode
        return loss

    rates, losses = {"train.py evaluate()": [], "eval.py score()": []}, {}
    ours(), reference()  # warm-up: first calls allocate
    for i in range(args.repeats):
        order = [("train.py evaluate()", reference), ("eval.py score()", ours)]
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            sync(device)
            t0 = time.perf_counter()
            losses[name] = fn()
            sync(device)
            rates[name].append(n_tokens / (time.perf_counter() - t0))
    for name in rates:
        print(f"{name}: {statistics.median(rates[name]):,.0f} tokens/s median "
              f"({', '.join(f'{r:,.0f}' for r in rates[name])}), loss {losses[name]:.6f}")
    ratio = statistics.median(rates["eval.py score()"]) / statistics.median(rates["train.py evaluate()"])
    print(f"eval.py / train.py: {ratio:.2f}x tokens/s; loss difference "
          f"{abs(losses['eval.py score()'] - losses['train.py evaluate()']):.2e}")


if __name__ == "__main__":
    main()
