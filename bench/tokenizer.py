"""
Tokenizer training: rustbpe (what tokenizer.py uses) against Hugging Face tokenizers' BpeTrainer, on
the same text, the same cores and the same vocabulary size, in one run.

    python bench/tokenizer.py [--input=data/sample/docs.jsonl.gz] [--vocab_size=4096] [--threads=2] [--rounds=3]

Both get GPT-4's split pattern, byte-level tokens (all 256 bytes in the base alphabet) and
<|endoftext|> as the one special token, and the same texts already in memory, so what is timed is
training alone. The rounds alternate (rustbpe, HF, rustbpe, HF, ...) so a change in the machine's
load hits both; the best round of each is reported. It prints:
  - training throughput, MB of text per second (wall clock) and CPU seconds;
  - bytes per token of each tokenizer on held-out documents (the first tenth, as tokenizer.py holds
    out), with GPT-2's for reference, and how many of their tokens the two vocabularies share.
tokenizers is NOT a dependency of the project: pip install tokenizers.
"""

import argparse
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def read_texts(path):
    paths = sorted(Path(path).glob("*.jsonl.gz")) if Path(path).is_dir() else [Path(path)]
    stats = Counter()  # lone surrogates become U+FFFD in read_documents, as in every stage
    return [doc["text"] for p in paths for _, doc in read_documents(p, stats)]


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_rustbpe(texts, vocab_size):
    return tokenizer.load_tokenizer(tokenizer.train_bpe(iter(texts), vocab_size))


def train_hf(texts, vocab_size):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tokenizer.GPT4_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[tokenizer.ENDOFTEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(texts, trainer)
    return hf


def hf_token_bytes(hf):
    """The vocabulary of a byte-level HF tokenizer as raw bytes. It stores each byte as a printable
    stand-in character (GPT-2's bytes_to_unicode): printable Latin-1 bytes as themselves, the other
    68 as the characters from U+0100 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    byte_of = {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}
    return {bytes(byte_of[c] for c in token) for token in hf.get_vocab() if token != tokenizer.ENDOFTEXT}


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--input", default=str(ROOT / "data" / "sample" / "docs.jsonl.gz"),
                   help="a .jsonl.gz file or a folder of them (e.g. data/dedup)")
    p.add_argument("--vocab_size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2, help="threads for both trainers (rayon, in both)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    # both trainers are Rust + rayon: one pool each, sized by these, read when the pool starts
    os.environ["RAYON_NUM_THREADS"] = os.environ["RAYON_RS_NUM_CPUS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"

    texts = read_texts(args.input)
    sizes = [len(t.encode("utf-8")) for t in texts]
    cut, held = sum(sizes) / 10, 0
    while held < len(texts) and sum(sizes[:held]) < cut:
        held += 1
    val, train = texts[:held], texts[held:]
    train_mb = sum(sizes[held:]) / 1e6
    print(f"{len(train):,} training documents ({train_mb:.2f} MB), {len(val):,} held out "
          f"({sum(sizes[:held]) / 1e6:.2f} MB); vocab {args.vocab_size:,}, {args.threads} threads; "
          f"load {os.getloadavg()[0]:.1f}")

    results = {"rustbpe": [], "hf": []}
    trained = {}
    for round_ in range(args.rounds):
        for name, train_fn in (("rustbpe", train_rustbpe), ("hf", train_hf)):
            wall, cpu = time.perf_counter(), cpu_seconds()
            trained[name] = train_fn(train, args.vocab_size)
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            results[name].append((wall, cpu))
            print(f"  round {round_ + 1} {name:8}: {wall:6.2f} s wall, {cpu:6.2f} s CPU, {train_mb / wall:6.2f} MB/s")

    ours, hf = trained["rustbpe"], trained["hf"]
    gpt2 = tokenizer.load_tokenizer("gpt2")
    val_bytes = sum(sizes[:held])
    counts = {"rustbpe": sum(len(t) for t in ours.encode_ordinary_batch(val)),
              "hf": sum(len(e.ids) for e in hf.encode_batch(val)),
              "gpt2": sum(len(t) for t in gpt2.encode_ordinary_batch(val))}
    assert all(hf.decode(e.ids) == t for e, t in zip(hf.encode_batch(val[:50]), val[:50]))
    ours_tokens = {ours.decode_single_token_bytes(i) for i in range(ours.n_vocab) if i != ours.eot_token}
    shared = len(ours_tokens & hf_token_bytes(hf))

    best = {name: min(r) for name, r in results.items()}
    print(f"\n{'':10}{'best wall s':>12}{'CPU s':>8}{'MB/s':>8}{'held-out bytes/token':>22}")
    for name in ("rustbpe", "hf"):
        wall, cpu = best[name]
        print(f"{name:10}{wall:>12.2f}{cpu:>8.2f}{train_mb / wall:>8.2f}{val_bytes / counts[name]:>22.3f}")
    print(f"{'gpt2':10}{'':>28}{val_bytes / counts['gpt2']:>22.3f}  (50,257 tokens, for reference)")
    speed = best["hf"][0] / best["rustbpe"][0]
    compression = (val_bytes / counts["rustbpe"]) / (val_bytes / counts["hf"]) - 1
    print(f"\nrustbpe trains {speed:.2f}x as fast as HF BpeTrainer (goal >= 1x); its bytes/token is "
          f"{compression:+.2%} of HF's (goal within 1%); {shared:,} of {len(ours_tokens):,} tokens in both")


import tokenizer  # noqa: E402  (after sys.path is set)
from common import read_documents  # noqa: E402

if __name__ == "__main__":
    main()
