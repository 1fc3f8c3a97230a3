"""
CPU training throughput of train.py against nanoGPT's training loop, same model, batch and dtype.

    python bench/train.py [--steps=60] [--repeats=2] [--preset=config/tiny_cpu.py] [--data=DIR]
    python bench/train.py --mode=mixture|lora [--steps=12] [--repeats=1] [--data=DIR]
    python bench/train.py --mode=lora_table                                   # GPT-2 124M memory, counted
    python bench/train.py --gpu [--steps=40] [--batch_size=64] [--data=DIR]   # GPT-2 124M: tokens/s, MFU

nanoGPT is not a package, so its loop (train.py at karpathy/nanoGPT master: a fresh np.memmap and
torch.randint offsets per batch, loss/accum, backward, clip, AdamW step, zero_grad, dt between steps)
is written out below as faithfully as fits, driving the same model.py GPT with the same AdamW
settings (train.py's parameter groups, so the embedding's own learning rate too) and learning-rate
schedule. Both runs then get the same val loss measurement (train.py's fixed val set). Runs
alternate (ours, nanoGPT, nanoGPT, ours, ...) so that a drifting shared machine hurts both alike;
each run's tokens/s is its median over the steps after the first three, and the best and median run
of each are reported.

Tokens: --data, or else the built-in sample (all its 2,324 pages) tokenized by prepare.py into a
temporary folder, with the tokenizer the preset's vocab_size asks for: for config/tiny_cpu.py
(4,096 tokens) one that tokenizer.py first trains on the sample, as the Quick start does; for
--gpu's 124M preset GPT-2's.

--gpu trains config/gpt2_124m.py (bf16, torch.compile, flash attention through SDPA, the Triton
cross-entropy) on one GPU for --steps steps of 524,288 tokens, and reports the median tokens/s and
MFU of the steps after the first five (compilation and warm-up).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import loader  # noqa: E402
import lora  # noqa: E402
import run_files  # noqa: E402
import train  # noqa: E402
from common import load_shard, write_json, write_shard  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

GPT2_VOCAB_SIZE = 50257  # 50,256 merges + <|endoftext|>


def sample_tokens(preset, tmp):
    """The built-in sample as token shards that the preset's model can read: GPT-2's tokens when its
    vocabulary holds them (config/gpt2_124m.py), else first a tokenizer of the preset's vocab_size
    trained on the sample, as the Quick start does (config/tiny_cpu.py: 4,096 tokens), so each mode
    measures the model the preset really trains."""
    vocab_size = train.get_config([preset])['vocab_size']
    tokenizer = 'gpt2'
    if vocab_size < GPT2_VOCAB_SIZE:
        tokenizer = os.path.join(tmp, 'tokenizer')
        run_stage('tokenizer.py', f'--output={tokenizer}', f'--vocab_size={vocab_size}')
    data_dir = os.path.join(tmp, 'tokens')
    run_stage('prepare.py', f'--output={data_dir}', f'--tokenizer={tokenizer}')
    return data_dir


def run_stage(script, *flags):
    """A pipeline script on the built-in sample, quietly; its own message if it fails."""
    done = subprocess.run([sys.executable, str(ROOT / script), f'--input={ROOT / "data" / "sample"}', *flags],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"bench/train.py: {script} on data/sample failed: {(done.stderr.strip() or done.stdout.strip())[-500:]}")


def ours(config_argv, out_dir, steps):
    train.main(config_argv + [f'--out_dir={out_dir}', f'--max_iters={steps}', f'--eval_interval={steps}',
                              '--log_interval=1'])
    log = [json.loads(line) for line in open(os.path.join(out_dir, 'log.jsonl'))]
    rates = [h['tokens_per_second'] for h in log if 'loss' in h][3:]
    return statistics.median(rates), [h['val_loss'] for h in log if 'val_loss' in h][-1]


CPU_RUN = SimpleNamespace(rank=0, world=1, device='cpu', device_type='cpu', autocast=nullcontext(), log=print)


def nanogpt(config, data_dir, steps):
    """nanoGPT's train.py loop, single process, no GradScaler (float32), eval excluded from timing."""
    data = train.open_run_data(config, CPU_RUN)
    model_args = run_files.load_start(config, data, None, print)['model_args']  # the same model train.py builds
    torch.manual_seed(config['seed'])
    model = GPT(GPTConfig(**model_args)).to('cpu')
    # train.py's parameter groups, not model.configure_optimizers': the same decay split as nanoGPT's,
    # plus the token embedding's own rate (the demo's embedding_lr, 100x the rest), so the losses compare
    optimizer = train.build_optimizer(model, config, CPU_RUN)
    batch_size, block_size = config['batch_size'], config['block_size']
    accumulation = config['batch_tokens'] // (batch_size * block_size)
    train_file = sorted(Path(data_dir).glob('train_*.bin'))[0]

    def get_batch():
        # nanoGPT recreates the memmap every batch to avoid a memory leak; offset skips our shard header
        data = np.memmap(train_file, dtype=np.uint16, mode='r', offset=1024)
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy((data[i:i + block_size]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + block_size]).astype(np.int64)) for i in ix])
        return x, y

    ctx = nullcontext()
    X, Y = get_batch()
    t0 = time.time()
    rates = []
    for iter_num in range(steps):
        lr = train.get_lr(iter_num, config)  # the same warmup + cosine as nanoGPT's get_lr
        for param_group in optimizer.param_groups:
            param_group['lr'] = lr * param_group['lr_scale']
        for micro_step in range(accumulation):
            with ctx:
                logits, loss = model(X, Y)
                loss = loss / accumulation
            X, Y = get_batch()
            loss.backward()
        if config['grad_clip'] != 0.0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config['grad_clip'])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lossf = loss.item() * accumulation  # nanoGPT syncs here on every log_interval=1 step
        t1 = time.time()
        dt, t0 = t1 - t0, t1
        rates.append(config['batch_tokens'] / dt)
    val = train.evaluate(model, data['val_sets'], batch_size, CPU_RUN)[None][0]
    return statistics.median(rates[3:]), val, lossf


def gpu(args, data_dir, tmp):
    out_dir = os.path.join(tmp, 'gpu')
    train.main([str(ROOT / 'config' / 'gpt2_124m.py'), f'--data={data_dir}', f'--out_dir={out_dir}',
                f'--max_iters={args.steps}', f'--batch_size={args.batch_size}', '--eval_iters=1',
                f'--eval_interval={10 ** 9}'])
    steps = [json.loads(line) for line in open(os.path.join(out_dir, 'log.jsonl'))]
    steps = [h for h in steps if 'loss' in h][5:]
    rate, mfu = statistics.median(h['tokens_per_second'] for h in steps), statistics.median(h['mfu'] or 0 for h in steps)
    print(f"\nGPT-2 124M on {torch.cuda.get_device_name()}, batch {args.batch_size} x 1024, 524,288 tokens per "
          f"step, bf16, compiled: {rate:,.0f} tokens/s, MFU {100 * mfu:.1f}% (median of {len(steps)} steps)")


def split_sources(data_dir, tmp, names=('web', 'code', 'math')):
    """The sample's train tokens cut into 3 source folders (each with the val shard), for a 3-source mixture;
    each with a report.json naming the tokenizer, without which train.py would take them for GPT-2's."""
    val = load_shard(next(Path(data_dir).glob('val_*.bin')))
    train_tokens = np.concatenate([load_shard(p) for p in sorted(Path(data_dir).glob('train_*.bin'))])
    report = loader.read_report(data_dir) or {}
    folders = {}
    for name, part in zip(names, np.array_split(train_tokens, len(names))):
        folders[name] = os.path.join(tmp, name)
        write_shard(os.path.join(folders[name], 'val_000000.bin'), val)
        write_shard(os.path.join(folders[name], 'train_000001.bin'), part)
        if report:
            shards = [dict(name=n, tokens=len(t), max_token=int(t.max())) for n, t in
                      (('val_000000.bin', val), ('train_000001.bin', part))]
            write_json(os.path.join(folders[name], 'report.json'),
                       dict(stage='prepare', complete=True, tokenizer=report.get('tokenizer', 'gpt2'),
                            vocab_size=report.get('vocab_size'), shards=shards))
    return folders


def loading_seconds(config, steps):
    """Seconds per step of train.py's data path alone: the step's plan (mixture sampler), reading its
    windows and making the input and target tensors, for every micro-batch of a step."""
    data = train.open_run_data(config, CPU_RUN)
    micro, accumulation = train.batch_layout(config, CPU_RUN)
    per_step, positions = config['batch_tokens'] // config['block_size'], np.zeros(len(data['sources']), np.int64)
    start = time.perf_counter()
    for step in range(steps):
        sources, index, positions = loader.plan_step(data, config['seed'], step, per_step, positions)
        for m in range(accumulation):
            rows = slice(m * micro, (m + 1) * micro)
            train.to_device(loader.read_windows(data, sources[rows], index[rows], config['block_size'], config['seed']), 'cpu')
    return (time.perf_counter() - start) / steps


def mixture(args, data_dir, tmp):
    folders = split_sources(data_dir, tmp)
    mix = ','.join(f'{folder}:{w}' for folder, w in zip(folders.values(), (0.6, 0.3, 0.1)))
    results = {}
    for r in range(args.repeats):
        for name, spec in (('one folder', data_dir), ('3-source mixture', mix))[::1 if r % 2 == 0 else -1]:
            argv = [args.preset, f'--data={spec}', '--eval_iters=1']
            rate, _ = ours(argv, os.path.join(tmp, f'mix{r}{len(name)}'), args.steps)
            config = train.get_config(argv)
            load = loading_seconds(config, 200)
            results.setdefault(name, []).append((config['batch_tokens'] / rate, load))
    print(f"\nData loading on the CPU demo model ({args.preset}), {args.steps} training steps per run, best of {args.repeats}:")
    for name, runs in results.items():
        step, load = min(s for s, _ in runs), min(l for _, l in runs)
        print(f"  {name:17s} step {1000 * step:7.1f} ms, data path {1000 * load:6.3f} ms per step = {100 * load / step:.3f}% of the step")


def run_child(argv):
    """train.main(argv) in a fresh process: (median step seconds, peak resident memory in MB)."""
    code = ("import resource, sys, json; sys.path.insert(0, %r); import train; train.main(%r); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)" % (str(ROOT), argv))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    out_dir = next(a.split('=', 1)[1] for a in argv if a.startswith('--out_dir='))
    log = [json.loads(line) for line in open(os.path.join(out_dir, 'log.jsonl'))]
    steps = [h for h in log if 'loss' in h][3:]
    step = statistics.median(1 / h['tokens_per_second'] for h in steps) * train.get_config(argv)['batch_tokens']
    return step, int(out.split('MAXRSS')[-1]) / 1024


def lora_cpu(args, data_dir, tmp):
    base_dir = os.path.join(tmp, 'base')
    run_child([args.preset, f'--data={data_dir}', f'--out_dir={base_dir}', '--max_iters=5', '--eval_iters=1'])
    results = {}
    for r in range(args.repeats):
        runs = [('full training', []), ('LoRA r=16', ['--lora_rank=16'])]
        for name, extra in runs[::1 if r % 2 == 0 else -1]:
            argv = [args.preset, f'--data={data_dir}', f'--out_dir={os.path.join(tmp, f"lora{r}{len(name)}")}',
                    f'--init_from={base_dir}/ckpt.pt', f'--max_iters={args.steps}', f'--eval_interval={args.steps}',
                    '--eval_iters=1', *extra]
            results.setdefault(name, []).append(run_child(argv))
    print(f"\nLoRA vs full training on the CPU demo model ({args.preset}), {args.steps} steps, best of {args.repeats}:")
    for name, runs in results.items():
        print(f"  {name:14s} step {1000 * min(s for s, _ in runs):7.1f} ms, peak memory {min(m for _, m in runs):6.0f} MB")


def lora_table():
    """Trainable parameters and AdamW state of GPT-2 124M, full and LoRA, counted on the meta device."""
    config = train.get_config([str(ROOT / 'config' / 'gpt2_124m.py')])
    args = {f: config[f] for f in GPTConfig.__dataclass_fields__}
    print("\nGPT-2 124M (config/gpt2_124m.py): what trains, and AdamW's state (two float32 moments per trained number)")
    for name, rank, targets in (('full', 0, ''), ('LoRA r=16, all', 16, 'all'), ('LoRA r=16, no lm_head', 16, 'c_attn,c_proj,c_fc'),
                                ('LoRA r=256, all', 256, 'all'), ('LoRA r=256, no lm_head', 256, 'c_attn,c_proj,c_fc')):
        with torch.device('meta'):
            model = GPT(GPTConfig(**args))
            if rank:
                lora.add_lora(model, rank, 2 * rank, targets=targets)
        total = sum(p.numel() for n, p in model.named_parameters() if not lora.is_adapter(n))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"  {name:22s} {trainable:>12,} trainable ({100 * trainable / total:5.2f}% of {total:,}), "
              f"AdamW state {8 * trainable / 2**20:8.1f} MiB, gradients {4 * trainable / 2**20:7.1f} MiB")


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split('\n\n')[0])
    p.add_argument('--steps', type=int, default=60)
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--preset', default=str(ROOT / 'config' / 'tiny_cpu.py'))
    p.add_argument('--data', default=None, help='token shards (default: the built-in sample, tokenized now)')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    p.add_argument('--gpu', action='store_true', help='GPT-2 124M on one GPU instead of the CPU comparison')
    p.add_argument('--batch_size', type=int, default=64, help='with --gpu: sequences per forward pass')
    p.add_argument('--mode', default='nanogpt', choices=['nanogpt', 'mixture', 'lora', 'lora_table'],
                   help='nanogpt: tokens/s vs the nanoGPT loop; mixture: data-loading share of the step, one folder vs '
                        '3 sources; lora: LoRA r=16 step time and peak memory vs full; lora_table: 124M memory counts')
    args = p.parse_args()
    if args.mode == 'lora_table':
        return lora_table()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or sample_tokens(str(ROOT / 'config' / 'gpt2_124m.py') if args.gpu else args.preset, tmp)
        if args.gpu:
            return gpu(args, data_dir, tmp)
        if args.mode != 'nanogpt':
            return {'mixture': mixture, 'lora': lora_cpu}[args.mode](args, data_dir, tmp)
        argv = [args.preset, f'--data={data_dir}', f'--lr_decay_iters={args.steps}',
                f'--warmup_iters={max(1, args.steps // 10)}']
        config = train.get_config(argv + [f'--max_iters={args.steps}'])
        results = {'train.py': [], 'nanoGPT loop': []}
        for r in range(args.repeats):  # alternate which goes first: a busy machine drifts
            runs = [('train.py', lambda: ours(argv, os.path.join(tmp, f'out{r}'), args.steps)),
                    ('nanoGPT loop', lambda: nanogpt(config, data_dir, args.steps)[:2])]
            for name, run in runs[::1 if r % 2 == 0 else -1]:
                results[name].append(run())
    model = f"{config['n_layer']}x{config['n_embd']}, block {config['block_size']}, batch {config['batch_size']}"
    print(f"\nCPU training, {model}, float32, {args.steps} steps, {torch.get_num_threads()} threads "
          f"(best of {args.repeats}):")
    for name, runs in results.items():
        rates = sorted(r for r, _ in runs)
        print(f"  {name:13s} best {rates[-1]:7,.0f} tokens/s, median {statistics.median(rates):7,.0f}; "
              f"val loss after {args.steps} steps: {', '.join(f'{v:.4f}' for _, v in runs)}")
    ratio = max(r for r, _ in results['train.py']) / max(r for r, _ in results['nanoGPT loop'])
    print(f"  train.py / nanoGPT loop: {ratio:.2f}x tokens/s")


if __name__ == '__main__':
    main()
