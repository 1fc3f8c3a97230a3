"""
Time and peak memory of export.py for GPT-2 124M (config/gpt2_124m.py) on the CPU.

    python bench/export.py [--layouts=gpt2,llama] [--formats=hf:f32,gguf:f32,gguf:f16,gguf:q8_0]

Writes a checkpoint as train.py does (random weights, and AdamW's two moment tensors per weight,
so the file is ~1.5 GB of which the model is a third), then runs `python export.py` on it in a fresh
process for each format and reports its wall time and peak resident memory (the kernel's ru_maxrss
of the child, which counts the checkpoint pages it reads through mmap). The goal is a peak of at most
twice the weights (fp32, the tied embedding once). For scale, the same figures are given for a
process that only imports what export.py imports (python, torch, numpy, safetensors, gguf): that
much is there before any work.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAYOUTS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, real_vocab_size=50257,
                 bias=True, dropout=0.0),
    "llama": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, real_vocab_size=50257,
                  bias=False, dropout=0.0, rope=True, norm="rmsnorm", mlp="swiglu", n_kv_head=4),
}


def write_checkpoint(path, model_args):
    import torch
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(**model_args))
    state = model.state_dict()
    # AdamW's state as torch.optim saves it: a step and two moments per parameter
    optimizer = {"state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(p) * 1e-3,
                               "exp_avg_sq": torch.rand_like(p) * 1e-6}
                           for i, p in enumerate(model.parameters())},
                 "param_groups": [{"params": list(range(len(list(model.parameters())))), "lr": 6e-4}]}
    torch.save({"model": state, "optimizer": optimizer, "model_args": model_args, "tokenizer": "gpt2",
                "version": 1, "iter_num": 1000, "config": dict(model_args)}, path)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # wte/lm_head once
    return weights


def run(argv):
    """Wall seconds and peak RSS (bytes) of `python argv...` in a fresh process."""
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.time() - t0
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err}")
    return seconds, usage.ru_maxrss * 1024  # Linux gives kilobytes


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--layouts", default="gpt2,llama")
    p.add_argument("--formats", default="hf:f32,gguf:f32,gguf:f16,gguf:q8_0")
    p.add_argument("--dir", default=None, help="where to write the checkpoint and exports (default: a temp dir)")
    p.add_argument("--write", default=None, help=argparse.SUPPRESS)  # the child that writes a checkpoint
    args = p.parse_args()
    if args.write:
        print(write_checkpoint(args.write, LAYOUTS[args.layouts]))
        return
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_export_"))
    work.mkdir(parents=True, exist_ok=True)
    base_s, base_rss = run(["-c", "import torch, numpy, safetensors, gguf, regex, export"])
    print(f"import only: {base_s:.1f}s, peak {base_rss / 2**20:.0f} MiB")
    rows = []
    for layout in args.layouts.split(","):
        ckpt = work / f"{layout}.pt"
        # in a child process: a child's peak memory starts at its parent's (Linux copies the high-water
        # mark at fork), so this process must never hold the model itself
        weights = int(subprocess.run([sys.executable, __file__, f"--write={ckpt}", f"--layouts={layout}"],
                                     check=True, capture_output=True, text=True).stdout)
        print(f"{layout}: checkpoint {ckpt.stat().st_size / 2**20:.0f} MiB, weights {weights / 2**20:.0f} MiB (fp32)")
        for fmt_dtype in args.formats.split(","):
            fmt, dtype = fmt_dtype.split(":")
            out = work / (f"{layout}-hf" if fmt == "hf" else f"{layout}-{dtype}.gguf")
            seconds, rss = run(["export.py", f"--ckpt={ckpt}", f"--format={fmt}", f"--dtype={dtype}",
                                f"--out={out}", "--force"])
            size = sum(f.stat().st_size for f in out.iterdir()) if out.is_dir() else out.stat().st_size
            rows.append((layout, fmt, dtype, seconds, rss, weights, size))
            print(f"  {fmt} {dtype}: {seconds:.1f}s, peak {rss / 2**20:.0f} MiB = {rss / weights:.2f}x the weights "
                  f"({(rss - base_rss) / weights:.2f}x beyond the imports), output {size / 2**20:.0f} MiB", flush=True)
    print("\n| layout | format | time | peak RSS | / weights | beyond imports / weights | output |")
    print("|---|---|---|---|---|---|---|")
    for layout, fmt, dtype, seconds, rss, weights, size in rows:
        print(f"| {layout} | {fmt} {dtype} | {seconds:.1f} s | {rss / 2**20:.0f} MiB | {rss / weights:.2f}x | "
              f"{(rss - base_rss) / weights:.2f}x | {size / 2**20:.0f} MiB |")
    print(f"(imports alone: peak {base_rss / 2**20:.0f} MiB, {base_s:.1f} s; files in {work})")


if __name__ == "__main__":
    main()
