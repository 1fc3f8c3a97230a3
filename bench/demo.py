"""
The demo's recipe against the one before it, on the same pages, the same wall-clock training budget
and the same held-out pages, scored in bits per byte (the loss that compares across tokenizers).

    python bench/demo.py [--docs=data/dedup] [--budget=0] [--recipes=old,new] [--threads=2]

  old: GPT-2's tokens and the tiny preset as it was (4 layers x 128, block 128, 2,048 tokens a step,
       lr 2e-3, 10 warmup steps, cosine);
  new: a tokenizer trained on the training pages (tokenizer.py) and config/tiny_cpu.py.

The documents are what the README's main command leaves in data/dedup. The held-out pages are the
first tenth of them by bytes, the part tokenizer.py holds out: neither tokenizer nor model sees them.
Each recipe is prepared (prepare.py) from the other nine tenths, timed for a few steps, then trained
for as many steps as fit in --budget seconds (0: the time config/tiny_cpu.py's own max_iters takes),
its cosine schedule compressed or stretched to end there. Then every held-out page is encoded as
prepare.py does (<|endoftext|>, then its tokens), cut into windows of the model's block_size, and
    bits per byte = sum of the targets' losses in nats / ln 2 / the UTF-8 bytes those targets stand for
(end-of-text targets stand for no bytes and are left out of both sums, as nanochat does).
"""

import argparse
import gzip
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from checkpoint import load_model  # noqa: E402
from common import read_documents  # noqa: E402
from tokenizer import token_byte_lengths  # noqa: E402
from train import get_config  # noqa: E402

OLD_PRESET = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.0, batch_size=16, batch_tokens=2048,
                  max_iters=120, learning_rate=2e-3, warmup_iters=10, lr_decay_iters=120, min_lr=2e-4)
NEW_PRESET = ROOT / "config" / "tiny_cpu.py"
COMMON = ["--device=cpu", "--dtype=float32", "--compile=false", "--log_interval=1", "--eval_iters=1"]


def read_docs(folder):
    """The documents as every stage reads them (common.read_documents: lone surrogates become U+FFFD)."""
    stats = Counter()
    return [doc for path in sorted(Path(folder).glob("*.jsonl.gz")) for _, doc in read_documents(path, stats)]


def write_docs(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)


def run(*argv, env=None):
    """Run a script; returns the CPU seconds it used (all its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{result.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def flags(settings):
    return [f"--{k}={v}" for k, v in settings.items()]


def train(settings, data, out_dir, env):
    """Run train.py; the wall seconds each training step took (log.jsonl: batch tokens / tokens per
    second), the step records, and the CPU seconds of the whole run."""
    cpu = run("train.py", *settings, f"--data={data}", f"--out_dir={out_dir}", *COMMON, env=env)
    log = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    return [(r["tokens"] / r["step"]) / r["tokens_per_second"] for r in steps], steps, cpu


def windows(stream, block):
    """Non-overlapping windows of block + 1 tokens covering the stream; the last one may be shorter."""
    return [stream[s:s + block + 1] for s in range(0, len(stream) - 1, block)]


@torch.no_grad()
def bits_per_byte(ckpt_path, texts, batch=16):
    """Bits per byte of a checkpoint on texts, each encoded as prepare.py does, in windows of block_size."""
    model, enc, ckpt = load_model(ckpt_path)
    stream = []
    for text in texts:
        stream += [enc.eot_token] + enc.encode_ordinary(text)
    lengths = torch.from_numpy(token_byte_lengths(enc, ckpt["model_args"]["vocab_size"]))
    rows = windows(torch.tensor(stream), ckpt["model_args"]["block_size"])
    nats, n_bytes = 0.0, 0
    for i in range(0, len(rows), batch):
        group = rows[i:i + batch]
        for part in ([group] if len(group[-1]) == len(group[0]) else [group[:-1], group[-1:]]):
            if not part:
                continue
            x, y = torch.stack([r[:-1] for r in part]), torch.stack([r[1:] for r in part])
            logits, _ = model(x, all_logits=True)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none")
            target_bytes = lengths[y.flatten()]
            nats += loss[target_bytes > 0].sum().item()
            n_bytes += int(target_bytes.sum())
    return nats / math.log(2) / n_bytes, n_bytes


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--docs", default="data/dedup", help="the documents: dedup.py's output")
    p.add_argument("--budget", type=float, default=0,
                   help="training seconds for each recipe; 0: what config/tiny_cpu.py's max_iters takes")
    p.add_argument("--recipes", default="old,new")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training (OMP_NUM_THREADS)")
    p.add_argument("--calibration_steps", type=int, default=6, help="steps of the first calibration run")
    p.add_argument("--calibration_cpu", type=float, default=30,
                   help="CPU seconds the calibration's steps must add up to (more steps if they do not)")
    p.add_argument("--by_cpu", action="store_true",
                   help="a budget of CPU seconds instead of wall seconds: fair on a shared machine, where wall "
                        "time depends on what else runs")
    p.add_argument("--new_preset", default=str(NEW_PRESET), help="the new recipe's preset (to try another)")
    p.add_argument("--work", default="", help="folder for the intermediate files (default: a temporary one)")
    args = p.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    docs = read_docs(args.docs)
    if not docs:
        sys.exit(f"no documents in {args.docs}: run the README's main command first (scrape, clean, dedup)")
    sizes = [len(d["text"].encode()) for d in docs]
    held, seen = 0, 0
    while seen < sum(sizes) / 10:  # the first tenth by bytes, as tokenizer.py holds out
        seen += sizes[held]
        held += 1
    val_texts = [d["text"] for d in docs[:held]]
    print(f"{len(docs) - held:,} training pages ({sum(sizes[held:]) / 1e6:.2f} MB), {held:,} held out "
          f"({seen / 1e6:.2f} MB); load {os.getloadavg()[0]:.1f}", flush=True)

    new_config = get_config([args.new_preset])
    recipes = {"old": dict(tokenizer="gpt2", settings=flags(OLD_PRESET), steps=OLD_PRESET["max_iters"],
                           warmup=OLD_PRESET["warmup_iters"]),
               "new": dict(tokenizer="trained", settings=[args.new_preset], steps=new_config["max_iters"],
                           warmup=new_config["warmup_iters"])}
    chosen = [r for r in args.recipes.split(",") if r]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        write_docs(work / "train_docs" / "part.jsonl.gz", docs[held:])
        if "new" in chosen:  # a tokenizer that never saw the held-out pages
            run("tokenizer.py", f"--input={work / 'train_docs'}", f"--output={work / 'tokenizer'}",
                f"--vocab_size={new_config['vocab_size'] if new_config['vocab_size'] <= 65536 else 4096}",
                "--val_bytes=0")
        for name in chosen:
            recipe = recipes[name]
            spec = "gpt2" if recipe["tokenizer"] == "gpt2" else work / "tokenizer"
            run("prepare.py", f"--input={work / 'train_docs'}", f"--output={work / name / 'tokens'}",
                f"--tokenizer={spec}", "--val_tokens=20000")
            # seconds per step: wall from the log; CPU as the difference of a short and a longer run,
            # which cancels start-up, evaluation and saving. The longer run grows until the difference
            # is --calibration_cpu seconds: start-up's CPU varies by a second or more from run to run,
            # which would swamp a few cheap steps (6 steps of the new recipe once measured 0.10 CPU-s a
            # step, a third of the truth)
            extra = args.calibration_steps
            while True:
                cpu = []
                for steps in (2, 2 + extra):
                    dts, _, used = train(recipe["settings"] + [f"--max_iters={steps}", f"--eval_interval={steps}"],
                                         work / name / "tokens", work / name / "calibrate", env)
                    cpu.append(used)
                step_cpu = max(cpu[1] - cpu[0], 1e-3) / extra
                if step_cpu * extra >= 0.8 * args.calibration_cpu or extra >= 2000:
                    break
                extra = min(2000, math.ceil(args.calibration_cpu / step_cpu))
            recipe["step_seconds"] = statistics.median(dts[2:] or dts)
            recipe["step_cpu"] = step_cpu
            print(f"{name}: {recipe['step_seconds']:.2f} s per step, {recipe['step_cpu']:.2f} CPU-s per step", flush=True)
        cost = "step_cpu" if args.by_cpu else "step_seconds"
        budget = args.budget or recipes["new"].get(cost, 0) * recipes["new"]["steps"]
        if not budget:
            sys.exit("--budget is needed when the new recipe is not run")
        results = {}
        for name in chosen:
            recipe = recipes[name]
            steps = max(1, round(budget / recipe[cost]))
            schedule = [f"--max_iters={steps}", f"--lr_decay_iters={steps}", f"--eval_interval={steps}",
                        f"--warmup_iters={min(recipe['warmup'], steps // 5)}"]
            start = time.time()
            dts, log, cpu = train(recipe["settings"] + schedule, work / name / "tokens", work / name / "out", env)
            bpb, n_bytes = bits_per_byte(work / name / "out" / "ckpt.pt", val_texts)
            results[name] = dict(steps=steps, train_seconds=sum(dts), cpu=cpu, wall=time.time() - start, bpb=bpb,
                                 final_loss=statistics.mean(r["loss"] for r in log[-5:]), bytes=n_bytes)
            print(f"{name}: {steps} steps, {sum(dts):.0f} s of training steps ({cpu:.0f} CPU-s for the whole run), "
                  f"held-out {bpb:.3f} bits per byte over {n_bytes:,} bytes", flush=True)
    print(f"\n{'recipe':8}{'steps':>7}{'step s':>8}{'CPU-s/step':>12}{'train s':>9}{'last loss':>11}{'val bits/byte':>15}")
    for name, r in results.items():
        print(f"{name:8}{r['steps']:>7}{recipes[name]['step_seconds']:>8.2f}{recipes[name]['step_cpu']:>12.2f}"
              f"{r['train_seconds']:>9.0f}{r['final_loss']:>11.3f}{r['bpb']:>15.3f}")
    if {"old", "new"} <= set(results):
        print(f"\nnew / old bits per byte: {results['new']['bpb'] / results['old']['bpb']:.3f} (goal <= 0.85) "
              f"at a budget of {budget:.0f} {'CPU-s' if args.by_cpu else 's'}; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
