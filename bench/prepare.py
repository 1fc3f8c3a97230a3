"""
How close does prepare.py come to tiktoken's own speed, and does its memory stay flat?

    python bench/prepare.py [--copies=40] [--workers=2]

Builds a corpus from the built-in sample (its documents repeated --copies times, each copy made
distinct), then measures, on the same text and the same cores:
  ceiling: tiktoken's encode_ordinary_batch over texts already in memory (no reading, no writing)
  ours:    `python prepare.py` end to end (gunzip, JSON, tokenize, write shards), its peak memory
and repeats ours on a corpus 4x larger to show that peak memory does not grow with the corpus.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tokenizer import load_tokenizer  # noqa: E402


def build_corpus(path, copies):
    with gzip.open(ROOT / "data" / "sample" / "docs.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        for c in range(copies):
            for d in docs:
                f.write(json.dumps({"id": f"{c}-{d['id']}", "text": f"Copy {c}. " + d["text"]}) + "\n")


def read_texts(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def run_ours(corpus_dir, out_dir, workers):
    """Wall time and peak RSS of one prepare.py run. os.wait4 gives the child's own rusage, but Linux
    starts a child's peak at its parent's size, so call this while the bench itself is small."""
    start = time.time()
    child = subprocess.Popen([sys.executable, str(ROOT / "prepare.py"), f"--input={corpus_dir}",
                              f"--output={out_dir}", f"--workers={workers}", "--shard_size=1e7"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.time() - start
    assert status == 0, f"prepare.py failed with status {status}"
    report = json.loads((Path(out_dir) / "report.json").read_text())
    return seconds, report["tokens"], usage.ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--copies", type=int, default=40, help="the sample's documents this many times, each copy distinct")
    p.add_argument("--workers", type=int, default=2, help="prepare.py's --workers")
    args = p.parse_args()
    enc = load_tokenizer("gpt2")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_corpus(tmp / "small" / "corpus.jsonl.gz", args.copies)
        build_corpus(tmp / "large" / "corpus.jsonl.gz", 4 * args.copies)
        seconds, our_tokens, peak_small = run_ours(tmp / "small", tmp / "tok_small", args.workers)
        _, large_tokens, peak_large = run_ours(tmp / "large", tmp / "tok_large", args.workers)
        ours = our_tokens / seconds

        texts = read_texts(tmp / "small" / "corpus.jsonl.gz")
        start = time.time()
        tokens = sum(len(t) + 1 for t in enc.encode_ordinary_batch(texts, num_threads=args.workers))
        ceiling = tokens / (time.time() - start)
        assert our_tokens == tokens, (our_tokens, tokens)

    print(f"corpus: {tokens:,} tokens ({args.copies} copies of the sample), {args.workers} workers")
    print(f"tiktoken encode_ordinary_batch, in memory: {ceiling:12,.0f} tokens/s")
    print(f"prepare.py end to end (wall, with startup): {ours:12,.0f} tokens/s = {ours / ceiling:.0%} of the ceiling")
    print(f"peak memory: {peak_small:.0f} MiB at {tokens:,} tokens, {peak_large:.0f} MiB at {large_tokens:,} tokens")


if __name__ == "__main__":
    main()
