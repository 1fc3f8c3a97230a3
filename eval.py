"""
Measure a model: loss, perplexity and bits per byte on text it has not seen, or multiple-choice
accuracy on HellaSwag.

    python eval.py --ckpt=out/ckpt.pt --data=data/tokens            # train.py's val windows: its val loss
    python eval.py --ckpt=out/ckpt.pt --data=data/tokens --windows=0      # every val token once
    python eval.py --ckpt=out/hf --data=some/docs/                  # an exported (or GPT-2) HF folder, on .jsonl.gz documents
    python eval.py --ckpt=out/ckpt.pt --task=hellaswag --task_file=hellaswag_val.jsonl

Loss is the mean cross-entropy of the next token, in nats; perplexity is e^loss, the number of
equally likely tokens the model is choosing between. Both depend on the tokenizer: a tokenizer with
longer tokens has fewer, harder predictions. Bits per byte does not: the summed loss in bits over
the UTF-8 bytes those tokens stand for (tokenizer.token_byte_lengths; <|endoftext|> stands for none),
so models with different tokenizers compare.

On token shards (prepare.py's, or llm.c's) the default windows are the ones train.py evaluates
(loader.val_windows: as many as the checkpoint's run evaluates per source, spread evenly over the
val shards), scored by the same forward pass, so the loss and bits per byte are train.py's for that
folder. On documents each
one is tokenized as in prepare.py (<|endoftext|> first) and the stream is cut into windows of
block_size + 1 tokens that overlap by one, so every token after the first is predicted once.

HellaSwag (Zellers et al. 2019) gives a context and four endings; the model picks the ending whose
tokens it finds likeliest. As in lm-evaluation-harness: the context is "activity_label: ctx_a
Ctx_b" cleaned of WikiHow's [bracket] marks, each ending is scored as the sum of its tokens'
log-probabilities after the context (context + " " + ending tokenized whole, the context's tokens
taken off the front), acc is how often the best sum is the labelled ending and acc_norm the same
with each sum divided by the ending's length in characters, which removes the bias towards short
endings. (llm.c divides by the number of tokens instead; its numbers differ slightly.) Like every
document in training, the context starts with <|endoftext|>.
"""

import argparse
import gzip
import json
import math
import os
import re
import sys
import time
import zlib
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

import loader
from checkpoint import check_device, load_model
from common import SHARD_SUFFIXES, fail, list_shards, load_shard, progress, read_documents, write_json
from tokenizer import same_tokenizer, token_byte_lengths, tokenizer_name

# -----------------------------------------------------------------------------------------------
# windows of tokens


def document_tokens(paths, enc, stats, max_tokens=0):
    """Token arrays of the documents in these .jsonl(.gz) files, <|endoftext|> before each (prepare.py's stream)."""
    total = 0
    for path in paths:
        texts = [doc["text"] for _, doc in read_documents(path, stats)]
        for tokens in enc.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1):
            stats["documents"] += 1
            total += len(tokens) + 1
            yield np.array([enc.eot_token] + tokens, dtype=np.int64)
            if max_tokens and total >= max_tokens:
                return


def stream_windows(token_arrays, block_size):
    """Cut a stream of token arrays into rows of block_size + 1 that overlap by one token."""
    buffer = np.zeros(0, dtype=np.int64)
    for tokens in token_arrays:
        buffer = np.concatenate([buffer, tokens])
        while len(buffer) >= block_size + 1:
            yield buffer[:block_size + 1]
            buffer = buffer[block_size:]
    if len(buffer) > 1:
        yield buffer


@torch.no_grad()
def score(model, rows, batch_size, byte_lengths, device, autocast, total=None):
    """Summed loss (nats), target tokens and target bytes over rows of up to block_size + 1 tokens,
    batch_size rows per forward pass. Short rows are padded; their missing targets are ignored (-1)."""
    nats = torch.zeros((), dtype=torch.float64, device=device)
    n_tokens = n_bytes = 0
    vocab = model.config.vocab_size
    bar = progress("scoring", unit="tok", total=total)
    batch = []

    def run(batch):
        nonlocal nats, n_tokens, n_bytes
        width = max(len(r) for r in batch)
        x = np.zeros((len(batch), width - 1), dtype=np.int64)
        y = np.full((len(batch), width - 1), -1, dtype=np.int64)
        for i, r in enumerate(batch):
            x[i, :len(r) - 1], y[i, :len(r) - 1] = r[:-1], r[1:]
        if max(x.max(), y.max()) >= vocab:
            raise ValueError(f"token id {max(x.max(), y.max())} in the data is outside the model's vocabulary "
                             f"of {vocab}: tokens of another tokenizer?")
        targets = y[y >= 0]
        xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        with autocast:
            _, loss = model(xt, yt)  # the mean over the targets, as train.py's eval computes it
        nats += loss.double() * len(targets)  # no host sync: the sum stays on the device
        n_tokens += len(targets)
        n_bytes += int(byte_lengths[targets].sum())
        bar.update(len(targets))

    try:  # closed on an error too, so that the error starts a line of its own, not the bar's
        for row in rows:
            batch.append(row)
            if len(batch) == batch_size:
                run(batch)
                batch = []
        if batch:
            run(batch)
    finally:
        bar.close()
    return nats.item(), n_tokens, n_bytes


def loss_report(nats, n_tokens, n_bytes):
    loss = nats / max(n_tokens, 1)
    return dict(loss=loss, perplexity=math.exp(min(loss, 50)), bits_per_byte=nats / math.log(2) / max(n_bytes, 1),
                tokens=n_tokens, bytes=n_bytes)


def open_token_data(path, split):
    """Shard paths and arrays at `path` (a folder's {split}_*.bin, or one .bin file), and the tokenizer
    its prepare.py report names (None when it has none). A folder whose report says prepare.py did not
    finish is refused, as train.py refuses it."""
    path = Path(path)
    paths = sorted(path.glob(f"{split}_*.bin")) if path.is_dir() else [path]
    if not paths:
        raise ValueError(f"{path}: no {split}_*.bin shards")
    report = loader.read_report(str(path if path.is_dir() else path.parent))
    if report is not None and report.get("complete") is False:
        raise ValueError(f"{path}: report.json says prepare.py did not finish (killed?): rerun prepare.py")
    return paths, [load_shard(p) for p in paths], (report or {}).get("tokenizer")


def is_documents(path):
    path = Path(path)
    if path.is_dir():
        return any(p.name.endswith(SHARD_SUFFIXES) for p in path.iterdir())
    return path.name.endswith(SHARD_SUFFIXES)


# -----------------------------------------------------------------------------------------------
# HellaSwag


def preprocess(text):
    """lm-evaluation-harness's clean-up of HellaSwag text: WikiHow's ' [title]' becomes '. ', other
    [bracketed] marks go, double spaces become one."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def read_hellaswag(path):
    """[(context, endings, label)] from a HellaSwag .jsonl file (the published format: activity_label,
    ctx_a, ctx_b, endings, label), every line checked before any scoring."""
    examples = []
    try:
        # split at newlines only: str.splitlines also splits at U+2028, U+0085 and the like, which a
        # JSON string may hold raw (the harness's json loader keeps them); each shifted the line count
        data = Path(path).read_bytes()
        data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data  # .jsonl.gz, as the stages'
        lines = data.decode("utf-8-sig").split("\n")  # -sig: a byte-order mark, as the harness reads
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as e:  # EOFError, zlib: a damaged .gz
        raise ValueError(f"{path}: cannot read it ({e})") from None
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: expected a JSON object, found {type(doc).__name__}")
        for key in ("activity_label", "ctx_a", "ctx_b"):
            if not isinstance(doc.get(key), str):
                raise ValueError(f"{where}: expected a string {key!r}, found {doc.get(key)!r:.60}")
        endings = doc.get("endings")
        if not (isinstance(endings, list) and len(endings) >= 2 and all(isinstance(e, str) and e.strip() for e in endings)):
            raise ValueError(f"{where}: expected 'endings', a list of at least two non-empty strings")
        try:
            label = int(doc.get("label"))
        except (TypeError, ValueError):
            label = -1
        if not 0 <= label < len(endings):
            raise ValueError(f"{where}: expected 'label', the index of the right ending (0 to {len(endings) - 1}), "
                             f"found {doc.get('label')!r}")
        context = preprocess(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())
        examples.append((context, [preprocess(e) for e in endings], label))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


@torch.no_grad()
def choice_logprobs(model, enc, context, endings, device, autocast):
    """Sum of the log-probabilities of each ending's tokens after the context, split as
    lm-evaluation-harness does: context + ' ' + ending is tokenized whole and the ending's tokens are
    what follows the context's own tokens; at most block_size + 1 tokens, cut from the left."""
    context_tokens = [enc.eot_token] + enc.encode_ordinary(context)
    sequences = []
    for ending in endings:
        whole = [enc.eot_token] + enc.encode_ordinary(context + " " + ending)
        sequences.append((whole[-(model.config.block_size + 1):], len(whole) - len(context_tokens)))
    width = max(len(s) for s, _ in sequences) - 1
    x = torch.tensor([s[:-1] + [enc.eot_token] * (width + 1 - len(s)) for s, _ in sequences], device=device)
    with autocast:
        logits, _ = model(x, all_logits=True)
    n_valid = model.config.real_vocab_size or model.config.vocab_size
    logprobs = torch.log_softmax(logits[..., :n_valid].float(), dim=-1)
    sums = []
    for i, (s, n) in enumerate(sequences):
        end, n = len(s) - 1, min(n, len(s) - 1)  # the last n inputs predict the ending's n tokens
        targets = torch.tensor(s[-n:], device=device)
        sums.append(logprobs[i, end - n:end].gather(1, targets[:, None]).sum().item())
    return sums


def hellaswag(model, enc, examples, device, autocast):
    """acc, acc_norm and each example's log-probabilities."""
    correct = correct_norm = 0
    results = []
    bar = progress("hellaswag", unit="example", total=len(examples))
    for context, endings, label in examples:
        sums = choice_logprobs(model, enc, context, endings, device, autocast)
        correct += int(np.argmax(sums) == label)
        correct_norm += int(np.argmax(np.array(sums) / [len(e) for e in endings]) == label)
        results.append(sums)
        bar.update(1)
    bar.close()
    return dict(acc=correct / len(examples), acc_norm=correct_norm / len(examples), examples=len(examples)), results


# -----------------------------------------------------------------------------------------------


def get_args(argv=None):
    # the docstring's first paragraph: its first line alone stops mid-sentence
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", default="out/ckpt.pt", help="train.py checkpoint, or a Hugging Face folder")
    p.add_argument("--data", default=None, help="token shards (a folder of {split}_*.bin, or one .bin) "
                   "or documents (a .jsonl[.gz] file or folder); default data/tokens without --task")
    p.add_argument("--split", default="val", help="which shards of a token folder: val or train")
    p.add_argument("--task", default=None, choices=["hellaswag"], help="a multiple-choice task instead of --data")
    p.add_argument("--task_file", default=None, help="the task's .jsonl file (HellaSwag's published format)")
    p.add_argument("--windows", type=int, default=None,
                   help="token shards: how many of train.py's val windows (default: as many as the checkpoint's "
                        "run evaluates, else 2400); 0 = all of them, every val token once")
    p.add_argument("--batch_size", type=int, default=None, help="windows per forward pass (default: the checkpoint's, else 12)")
    p.add_argument("--max_tokens", type=int, default=0, help="documents: stop after about this many tokens (0 = all)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), or e.g. cuda:1")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="auto = bfloat16 on a GPU that has it, else float32 (as train.py)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--report", default=None, help="also write the JSON report to this file")
    args = p.parse_args(argv)
    if args.task and not args.task_file:
        fail("--task=hellaswag needs --task_file=FILE.jsonl (HellaSwag's hellaswag_val.jsonl, say)")
    if args.task and args.data:
        fail("give --data or --task, not both")
    if (args.windows or 0) < 0 or (args.batch_size is not None and args.batch_size < 1):
        fail("need --windows >= 0 and --batch_size >= 1")
    if args.report and os.path.isdir(args.report):  # else an IsADirectoryError after the scoring
        fail(f"--report={args.report} is a folder; expected a file name "
             f"(say {Path(args.report) / 'eval.json'})")
    return args


def main(argv=None):
    args = get_args(argv)
    t0 = time.time()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:  # a typo, or a device this machine lacks: one line, not a traceback from inside torch
        args.device, device_type = check_device(args.device)
    except ValueError as e:
        fail(str(e))
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device_type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=torch.bfloat16)
    try:
        examples = read_hellaswag(args.task_file) if args.task else None  # a bad line fails before loading
        model, enc, ckpt = load_model(args.ckpt, args.device)
    except ValueError as e:
        fail(str(e))
    config = ckpt.get("config", {})
    log(f"loaded {args.ckpt}: {model.size_text()}, tokenizer "
        f"{tokenizer_name(ckpt['tokenizer'])}, on {args.device} in {dtype}")
    scorer = torch.compile(model) if args.compile else model
    report = dict(ckpt=str(args.ckpt), device=args.device, dtype=dtype)
    t_score = time.time()

    if args.task:
        scores, _ = hellaswag(scorer, enc, examples, args.device, autocast)
        report.update(task=args.task, task_file=args.task_file, **scores)
        summary = f"{args.task}: acc {scores['acc']:.4f}, acc_norm {scores['acc_norm']:.4f} on {scores['examples']} examples"
    else:
        data = args.data or "data/tokens"
        block_size = model.config.block_size
        batch_size = args.batch_size or config.get("batch_size", 12)
        byte_lengths = token_byte_lengths(enc, model.config.vocab_size)
        try:
            if is_documents(data):
                stats = Counter()
                tokens = document_tokens(list_shards(data), enc, stats, args.max_tokens)
                nats, n_tokens, n_bytes = score(scorer, stream_windows(tokens, block_size), batch_size,
                                                byte_lengths, args.device, autocast, total=args.max_tokens or None)
                report.update(data=str(data), kind="documents", documents=stats["documents"],
                              bad_lines=sum(v for k, v in stats.items() if k.startswith("bad_input")))
            else:
                paths, shards, tokenizer = open_token_data(data, args.split)
                if tokenizer is not None and not same_tokenizer(tokenizer, ckpt["tokenizer"]):
                    raise ValueError(f"{data} holds {tokenizer_name(tokenizer)} tokens, but the model was trained "
                                     f"with {tokenizer_name(ckpt['tokenizer'])}")
                # a shard too short for one window adds none, as in train.py (prepare's last train
                # shard can be that short); a split with no window at all is an error
                if not (shards := [s for s in shards if len(s) > block_size]):
                    raise ValueError(f"{paths[0]}: fewer tokens than block_size + 1 = {block_size + 1}")
                count = args.windows
                if count is None:  # the run's own val set: train.py's val loss
                    count = loader.val_window_count(config) if {"eval_iters", "batch_tokens"} <= config.keys() else 2400
                windows = loader.val_windows(shards, block_size, count or sys.maxsize)
                nats, n_tokens, n_bytes = score(scorer, windows.astype(np.int64), batch_size, byte_lengths,
                                                args.device, autocast, total=len(windows) * block_size)
                report.update(data=str(data), kind="token shards", shards=[p.name for p in paths],
                              windows=len(windows), window_selection="all" if count == 0 else "train.py val windows")
        except ValueError as e:
            fail(str(e))
        if n_tokens == 0:  # else loss 0 and perplexity 1: a perfect score on nothing
            fail(f"{data}: no tokens to score ({report.get('documents', 0)} documents, "
                 f"{report.get('bad_lines', 0)} bad lines)")
        report.update(loss_report(nats, n_tokens, n_bytes), block_size=block_size, batch_size=batch_size)
        summary = (f"loss {report['loss']:.4f}, perplexity {report['perplexity']:.2f}, bits per byte "
                   f"{report['bits_per_byte']:.4f} on {n_tokens:,} tokens ({n_bytes:,} bytes)")
    report["seconds"] = time.time() - t0  # all of it, loading included
    if "tokens" in report:  # the scoring alone
        report["tokens_per_second"] = report["tokens"] / max(time.time() - t_score, 1e-9)
    print(json.dumps(report, indent=2))
    if args.report:
        write_json(args.report, report)
    log(f"{summary}, in {report['seconds']:.1f}s")
    return report


if __name__ == "__main__":
    main()
