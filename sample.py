"""
Sample text from a trained model, streaming each token to the terminal as it is generated.

    python sample.py --ckpt=out/ckpt.pt --prompt="The PostgreSQL planner"
    python sample.py --ckpt=out/ckpt.pt --num_samples=3 --temperature=0.8 --top_k=200
    python sample.py --ckpt=out/ckpt.pt --temperature=0      # greedy: always the likeliest token
    python sample.py --ckpt=out/hf --prompt="Hello"           # a Hugging Face folder (export.py's, or GPT-2)

A language model only ever predicts the next token. Generating text is a loop: run the model on the
tokens so far, turn its scores for the next token into probabilities, draw one, append it, repeat.
The knobs shape the draw: temperature divides the scores (below 1 sharpens, 0 is greedy argmax),
top_k keeps only the k likeliest tokens, top_p keeps the smallest set holding probability p
("nucleus" sampling). model.generate keeps a KV cache, the attention keys and values of the tokens
already seen, so each step runs the model on one new token instead of on the whole sequence.

Every training document starts with the end-of-text token, so a prompt is given that token first:
the model continues it as the opening of a new document. A sample ends at max_new_tokens or when
the model emits end-of-text (the document is over). The text goes to stdout, everything else to
stderr, so `python sample.py ... > out.txt` keeps only the samples.
"""
import argparse
import codecs
import math
import os
import sys
import time
from contextlib import nullcontext

import torch

from checkpoint import check_device, load_model
from common import fail
from tokenizer import tokenizer_name

# Dividing the scores by a temperature this small overflows float32 (1e-40 is not even a normal
# float32), and softmax then gives NaN; long before that the draw is the argmax anyway: at 1e-4 a gap
# of 0.01 between two scores already makes the likelier one e^100 times likelier.
GREEDY_BELOW = 1e-4


def stream_sample(model, enc, prompt, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                  use_cache=True, write=None):
    """Generate one sample after `prompt`; call write(text) as text comes; return the new tokens.

    Tokens are decoded through an incremental UTF-8 decoder: a character of several bytes (é, 日, an
    emoji) is often split over two tokens, and printing each token's bytes on its own would show
    broken characters."""
    device = next(model.parameters()).device
    idx = torch.tensor([[enc.eot_token] + enc.encode(prompt, allowed_special="all")],
                       dtype=torch.long, device=device)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    new_tokens = []
    for next_token in model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k,
                                     top_p=top_p, use_cache=use_cache):
        token = next_token.item()
        if token == enc.eot_token:  # the model ended the document
            break
        new_tokens.append(token)
        if write and token >= enc.n_vocab:
            # vocab_size is padded past the tokenizer's (50257 -> 50304, for faster matmuls); an
            # untrained model can still draw one of those ids, which stand for no text at all
            write("\ufffd")
        elif write:
            write(decoder.decode(enc.decode_single_token_bytes(token)))
    if write:
        write(decoder.decode(b"", final=True))
    return new_tokens


def get_args(argv=None):
    # the defaults shown: a top-k cut of 200 and a temperature of 0.8 apply unless changed
    p = argparse.ArgumentParser(description="Sample text from a model trained by train.py.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", default="out/ckpt.pt",
                   help="checkpoint written by train.py, or a Hugging Face folder (GPT-2 family, or export.py's)")
    p.add_argument("--prompt", "--start", default="",
                   help="text the samples continue (default: '%(default)s', a fresh document)")
    p.add_argument("--prompt_file", default=None, help="read the prompt from this file instead")
    p.add_argument("--num_samples", type=int, default=3, help="samples, one after another")
    p.add_argument("--max_new_tokens", type=int, default=200,
                   help="tokens per sample at most (a sample also ends at <|endoftext|>)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help=f"0 = greedy (as is anything below {GREEDY_BELOW:g})")
    p.add_argument("--top_k", type=int, default=200, help="0 = no top-k cut")
    p.add_argument("--top_p", type=float, default=1.0, help="1.0 = no nucleus cut")
    p.add_argument("--seed", type=int, default=1337, help="the same seed gives the same text")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), or e.g. cuda:1")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto = bfloat16 on a GPU that has it, else float32")
    p.add_argument("--no_cache", action="store_true", help="recompute all positions every step")
    args = p.parse_args(argv)
    # name the flag that is wrong, with its value: one message for all of them showed only the
    # temperature's value, so --top_p=0 read 'need a finite --temperature >= 0 (got 0.8), ...'
    bad = [f"--{name}={getattr(args, name)} (expected {expected})" for name, ok, expected in (
        ("temperature", math.isfinite(args.temperature) and args.temperature >= 0, "a finite number >= 0"),
        ("top_k", args.top_k >= 0, "0 or more"), ("top_p", 0 < args.top_p <= 1, "0 < top_p <= 1"),
        ("num_samples", args.num_samples >= 1, "1 or more"),
        ("max_new_tokens", args.max_new_tokens >= 1, "1 or more")) if not ok]
    if bad:
        fail(", ".join(bad))
    if args.temperature < GREEDY_BELOW:
        args.temperature = 0.0
    return args


def main(argv=None):
    args = get_args(argv)
    prompt = args.prompt
    if args.prompt_file:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                prompt = f.read()
        except (OSError, UnicodeDecodeError) as e:
            fail(f"--prompt_file={args.prompt_file}: {e}")
    try:  # a typo, or a device this machine lacks: one line, not a traceback from inside torch
        device, device_type = check_device(args.device)
    except ValueError as e:
        fail(str(e))
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device_type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    # mixed precision as in training: matmuls in bf16/fp16, the weights stay fp32
    autocast = (nullcontext() if dtype == "float32" else
                torch.autocast(device_type=device_type, dtype=getattr(torch, dtype)))

    try:
        model, enc, ckpt = load_model(args.ckpt, device)
    except ValueError as e:
        fail(str(e))
    step = ckpt.get("step", ckpt.get("iter_num", "?"))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"loaded {args.ckpt}: {model.size_text()}, step {step}, "
        f"tokenizer {tokenizer_name(ckpt['tokenizer'])}, on {device} in {dtype}")

    torch.manual_seed(args.seed)  # seeds the CPU and every GPU generator
    def write(text):
        try:
            print(text, end="", flush=True)
        except BrokenPipeError:  # `sample.py | head` closed stdout: stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no 2nd error at exit
            sys.exit(1)
    total_tokens, t0 = 0, time.time()
    for i in range(args.num_samples):
        write(prompt)
        with torch.no_grad(), autocast:
            tokens = stream_sample(model, enc, prompt, args.max_new_tokens, args.temperature,
                                   args.top_k or None, args.top_p if args.top_p < 1 else None,
                                   use_cache=not args.no_cache, write=write)
        total_tokens += len(tokens)
        write("\n---------------\n")
    dt = time.time() - t0
    log(f"{args.num_samples} sample(s), {total_tokens} tokens in {dt:.1f}s "
        f"({total_tokens / max(dt, 1e-9):.1f} tokens/s)")


if __name__ == "__main__":
    main()
