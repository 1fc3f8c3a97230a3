"""
Tokenize documents into llm.c-format shards of uint16 tokens, ready for train.py.

    python prepare.py [--input=data/dedup] [--output=data/tokens] [--tokenizer=gpt2]

Each document becomes <|endoftext|> followed by its tokens, and the documents are laid end to end in
one long stream, cut into shards of --shard_size tokens: val_000000.bin first (--val_tokens of them),
then train_000001.bin, train_000002.bin, ... A shard is a 1024-byte header of 256 int32
(magic 20240520, version 1, token count) followed by the tokens, so llm.c and modded-nanogpt read our
shards unchanged, and their published FineWeb shards load here.

The folder says whether it is complete: report.json is written with "complete": false before the
first shard and rewritten last with "complete": true and the shards made (name, tokens, max_token),
so train.py can refuse what a killed run left. Bad input lines go to OUTPUT/bad_input/.
"""

import sys
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from common import (bad_input_path, check_input, fail, list_shards, mark_in_progress, progress, read_documents,
                    remove_stale_temps, report_path, shard_name, stage_arguments, write_json,
                    write_shard)
from crashsafe import make_own_output_folder
from tokenizer import load_tokenizer, tokenizer_spec, training_report

# -----------------------------------------------------------------------------------------------
# tokenizing a stream of documents


def tokenize_batch(enc, texts):
    """<|endoftext|> then the document's tokens, for each text, as one uint16 array."""
    eot = np.array([enc.eot_token], dtype=np.uint16)
    parts = []
    for text in texts:
        # ordinary: '<|endoftext|>' in a page is just text. Each document's list of Python ints (~36
        # bytes a token) becomes 2 bytes a token at once, not after the whole batch: long pages
        # (books, code files) would otherwise hold gigabytes per batch in flight
        parts += [eot, np.array(enc.encode_ordinary(text), dtype=np.uint16)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def token_batches(enc, docs, workers, batch_size=256):
    """Yield the token arrays of batches of documents, in input order. tiktoken's Rust core releases
    the GIL, so threads give real parallelism here without copying texts between processes."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        in_flight = deque()
        batch = []
        for doc in docs:
            batch.append(doc)
            if len(batch) == batch_size:
                in_flight.append(pool.submit(tokenize_batch, enc, batch))
                batch = []
                if len(in_flight) > 2 * workers:  # bounded: never more than a few batches in memory
                    yield in_flight.popleft().result()
        if batch:
            in_flight.append(pool.submit(tokenize_batch, enc, batch))
        while in_flight:
            yield in_flight.popleft().result()


def shard_names(machine):
    """val_000000.bin, then train_000001.bin, train_000002.bin, ...; with several machines each
    writes its own series, e.g. val_m0003_000000.bin, train_m0003_000001.bin, ..."""
    yield f"val_{machine}000000.bin"
    index = 1
    while True:
        yield f"train_{machine}{index:06d}.bin"
        index += 1


def main():
    p = stage_arguments(__doc__.strip().splitlines()[0], "data/dedup", "data/tokens",
                        workers="threads that tokenize (tiktoken releases the GIL)")
    p.add_argument("--tokenizer", default="gpt2",
                   help="gpt2 (shipped, offline), a folder written by tokenizer.py (data/tokenizer), "
                        "a .tiktoken file, or another tiktoken encoding name (downloaded once)")
    p.add_argument("--shard_size", type=float, default=1e8, help="tokens per train shard (llm.c: 1e8)")
    p.add_argument("--val_tokens", type=float, default=1e7,
                   help="tokens in the val shard; a corpus smaller than that gives a tenth of itself")
    args = p.parse_args()
    # checked before anything is written: a crash later would leave a good folder marked incomplete
    if not (1 <= args.shard_size < 2**63 and 1 <= args.val_tokens < 2**63) or args.workers < 1:
        fail("--shard_size and --val_tokens must be at least 1 (and finite), --workers at least 1")
    shard_size = int(args.shard_size)
    val_tokens = int(args.val_tokens)

    try:
        enc = load_tokenizer(args.tokenizer)
    except ValueError as e:
        fail(f"--tokenizer={args.tokenizer}: {e}")
    if enc.n_vocab > 2**16:
        fail(f"--tokenizer={args.tokenizer} has {enc.n_vocab:,} tokens, but shards store uint16 ids "
             f"(at most 65,536 tokens): use a smaller vocabulary such as gpt2")

    # what a trained tokenizer held out, for the checks below; a folder its training left unfinished
    # loads, but nothing says which documents it held out: refused, not used unchecked
    trained = None
    if Path(args.tokenizer).is_dir():
        try:
            trained = training_report(args.tokenizer)
        except ValueError as e:
            fail(f"--tokenizer={args.tokenizer}: {e}")
        if trained is None:
            print(f"note: --tokenizer={args.tokenizer} records no trainer in its config.json (made by hand?): "
                  f"used as it is, without the checks that our val documents were held out of its training",
                  file=sys.stderr)
    # a trained tokenizer held out the val documents of prepare.py on that many machines: on another
    # number, some of our val documents were in its training text (and its bytes-per-token table)
    held_out_for = trained.get("prepare_num_shards", 1) if isinstance(trained, dict) else args.num_shards
    if held_out_for != args.num_shards:
        print(f"warning: {args.tokenizer} held out the val documents of --num_shards={held_out_for}, this run "
              f"has --num_shards={args.num_shards}: part of its val text was the tokenizer's training text "
              f"(train one with tokenizer.py --prepare_num_shards={args.num_shards})", file=sys.stderr)

    inputs = list_shards(args.input, args.shard, args.num_shards)
    every_input = {shard_name(path) for path in list_shards(args.input)}  # all machines' shards
    machine = "" if args.num_shards == 1 else f"m{args.shard:04d}_"
    out_dir = Path(args.output)
    make_own_output_folder(out_dir, inputs, "prepare", "data/tokens")
    # shards of a run with another --num_shards would be mixed with ours, and named so neither run replaces them
    mine = report_path(out_dir, args).name
    others = [r.name for r in sorted([*out_dir.glob("report.json"), *out_dir.glob("report_*_of_*.json")])
              if r.name != mine and (args.num_shards == 1 or r.name == "report.json"
                                     or not r.name.endswith(f"_of_{args.num_shards:05d}.json"))]
    if others:
        fail(f"{out_dir} holds {others[0]} of a run with a different --num_shards: use a fresh --output, "
             f"or delete that run's report*.json and *.bin")
    remove_stale_temps(out_dir, recursive=True)
    print(f"prepare: {len(inputs)} input shards from {args.input}, tokenizer {args.tokenizer} "
          f"({enc.n_vocab:,} tokens), {args.workers} threads -> {out_dir}", file=sys.stderr)

    stats = Counter()

    def documents():
        for path in inputs:
            for _, doc in read_documents(path, stats, set_aside=bad_input_path(out_dir / shard_name(path))):
                stats["documents"] += 1
                stats["bytes"] += len(doc["text"].encode("utf-8"))
                yield doc["text"]

    start = time.time()
    mark_in_progress("prepare", out_dir, args, tokenizer=tokenizer_spec(args.tokenizer))  # before the first shard
    names = shard_names(machine)
    written = []
    pending, pending_tokens = [], 0  # token arrays not yet written, and how many tokens they hold
    capacity = val_tokens  # the first shard written is the val shard

    def flush(count):
        nonlocal pending, pending_tokens, capacity
        stream = np.concatenate(pending)
        name = next(names)
        write_shard(out_dir / name, stream[:count])
        # the largest id, so train.py can check it against the model's vocabulary without reading the shard
        written.append({"name": name, "tokens": int(count), "max_token": int(stream[:count].max())})
        if len(written) == 1:  # the val shard: how many documents start in it (each after an <|endoftext|>)
            stats["val_documents"] = int(np.count_nonzero(stream[:count] == enc.eot_token))
        pending, pending_tokens = [stream[count:]], len(stream) - count
        capacity = shard_size

    bar = progress("prepare", unit="tok")
    for tokens in token_batches(enc, documents(), args.workers):
        pending.append(tokens)
        pending_tokens += len(tokens)
        bar.update(len(tokens))
        while pending_tokens >= capacity:
            flush(capacity)
    if pending_tokens and not written:
        # a corpus smaller than --val_tokens: a tenth of it for validation, the rest for training
        flush(max(1, pending_tokens // 10))
    while pending_tokens:
        flush(min(pending_tokens, capacity))
    bar.close()
    seconds = time.time() - start

    # a rerun over a smaller input must not leave stale shards of an earlier, longer run behind
    keep = {s["name"] for s in written}
    for old in [*out_dir.glob(f"val_{machine}[0-9]*.bin"), *out_dir.glob(f"train_{machine}[0-9]*.bin")]:
        if old.name not in keep:
            old.unlink()
    # and no bad lines of an input file that is gone: they would pass for this run's (the report says
    # none); another machine's, of a file still in the input, are that machine's to replace
    for old in (out_dir / "bad_input").glob("*.jsonl.gz"):
        if old.name not in every_input:
            old.unlink()

    total = sum(s["tokens"] for s in written)

    def counts(prefix):
        return {k[len(prefix):]: v for k, v in sorted(stats.items()) if k.startswith(prefix)}

    report = {"stage": "prepare", "complete": True, "input": args.input, "output": str(out_dir),
              "shard": args.shard, "num_shards": args.num_shards,
              "tokenizer": tokenizer_spec(args.tokenizer), "vocab_size": enc.n_vocab, "eot_token": enc.eot_token,
              "documents": stats["documents"], "bytes": stats["bytes"], "tokens": total,
              "seconds": round(seconds, 2), "tokens_per_second": round(total / max(seconds, 1e-9)),
              "skipped": counts("bad_input:"), "repaired": counts("repaired:"),
              "bad_input": str(out_dir / "bad_input") if counts("bad_input:") else None,
              **check_input(args.input, inputs), "shards": written}
    write_json(report_path(out_dir, args), report)  # last: only now is the folder complete

    print(f"\nprepare done in {seconds:.1f}s: {stats['documents']:,} documents, {total:,} tokens "
          f"({total / max(seconds, 1e-9):,.0f} tokens/s), {len(written)} shards in {out_dir}")
    if report["repaired"]:
        print("  input repaired and kept: " + ", ".join(f"{k}={v:,}" for k, v in report["repaired"].items()))
    if report["skipped"]:
        print("  bad input set aside: " + ", ".join(f"{k}={v:,}" for k, v in report["skipped"].items()))
        print(f"  bad lines, each with its file, line and reason: {report['bad_input']}/")
    # the tokenizer held out the documents of the val shard it expected (its --val_bytes, ~ bytes per
    # token x --val_tokens): with more bytes per token (a large vocabulary) or a larger --val_tokens,
    # the val shard reaches into documents it was trained on, and its loss reads too low
    # (a tokenizer trained on other input held out other documents: nothing to compare)
    same_input = (isinstance(trained, dict)
                  and Path(str(trained.get("input"))).resolve() == Path(args.input).resolve())
    held_out = trained.get("held_out_documents") if same_input and args.num_shards == 1 else None
    if isinstance(held_out, int) and held_out_for == 1 and stats["val_documents"] > held_out:
        print(f"  warning: the val shard holds {stats['val_documents']:,} documents, {args.tokenizer} held out "
              f"only the first {held_out:,}: the rest were in its training text (retrain it with a larger "
              f"--val_bytes, or give a smaller --val_tokens)", file=sys.stderr)
    if not inputs:  # more machines than input files: this one had none, which is not bad input
        print(f"  warning: no tokens written: --shard={args.shard} of --num_shards={args.num_shards} has no "
              f"input file, {args.input} holds {len(every_input)}", file=sys.stderr)
    elif not written:
        print("  warning: no tokens written: the input held no usable documents", file=sys.stderr)


if __name__ == "__main__":
    main()
