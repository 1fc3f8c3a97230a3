"""
Train a GPT on prepare.py's token shards: on one device, or on many under torchrun (DDP or FSDP2).

    python train.py                                          # GPT-2 124M on data/tokens (the real job)
    python train.py config/tiny_cpu.py                       # a few minutes on a laptop CPU
    torchrun --nproc_per_node=8 train.py config/gpt2_124m.py [--parallel=fsdp]
    python train.py config/tiny_cpu.py --init_from=resume    # continue exactly where it stopped
    python train.py config/tiny_cpu.py --init_from=other/ckpt.pt   # continued pretraining (weights only)
    python train.py ... --init_from=other/ckpt.pt --lora_rank=16   # ... training LoRA adapters only
    python train.py ... --data=data/web:0.85,data/code:0.15  # a mixture of shard folders

Settings: configurator.py's table (--help prints it), then config files (Python, exec'd like
nanoGPT's), then --key=value flags; configurator.py checks them too.
Writes out_dir/ckpt.pt (all it takes to resume exactly), out_dir/log.jsonl (a JSON line per step and
per eval) and out_dir/loss.png (run_files.py: those files, and the checks before a resume). SIGTERM or
Ctrl-C: save a checkpoint, then exit.
main() runs the phases in order: config and processes, data (loader.py), model (and lora.py),
optimizer, then the loop of steps, with an eval and a checkpoint every eval_interval steps.
"""

import dataclasses
import functools
import math
import os
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace


def keep_freed_memory():
    """On a CPU each step allocates and frees the same big buffers (the logits alone are tokens x 50k
    floats). glibc returns blocks that large to the OS at once and gets them back zeroed the next step,
    which can cost as much as the math: asking it to keep them, before torch allocates anything, took
    the tiny demo's first 15 steps from 59 s to 42 s on 2 cores. (GPU memory is not malloc's.)"""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows): nothing to do
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)  # big blocks from the heap, not from fresh mappings
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # and freed ones kept there for the next step
    libc.mallopt(M_TOP_PAD, 1 << 30)  # grow the heap in large steps


keep_freed_memory()
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import configurator  # noqa: E402
import loader  # noqa: E402
import lora  # noqa: E402
import run_files  # noqa: E402
from checkpoint import check_device  # noqa: E402
from configurator import CHOICES, SETTINGS  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import load_tokenizer, token_byte_lengths, tokenizer_name  # noqa: E402

# -----------------------------------------------------------------------------------------------
# settings: configurator.py holds the table (name, default, what it does) and the checks


def die(message):
    raise SystemExit(f"train.py: error: {message}")


def get_config(argv):
    """configurator.SETTINGS, then config files, then flags, checked (configurator.py); a switch
    model.py adds is a setting at once."""
    settings = SETTINGS + [(f.name, f.default, "model.py GPTConfig setting") for f in dataclasses.fields(GPTConfig)
                           if f.name not in {k for k, _, _ in SETTINGS}]
    config, flags = configurator.get_config(argv, settings, CHOICES, __doc__.strip().splitlines()[0], die)
    configurator.check(config, die, flags)
    return config


# -----------------------------------------------------------------------------------------------
# phase 1: processes and device. torchrun sets RANK, LOCAL_RANK and WORLD_SIZE


def setup_processes(config):
    run = SimpleNamespace(distributed='RANK' in os.environ)
    run.rank, run.local_rank, run.world = [int(os.environ.get(k, d)) for k, d in
                                           (('RANK', 0), ('LOCAL_RANK', 0), ('WORLD_SIZE', 1))]
    try:  # a typo, or a device this machine lacks: one line, not a traceback once the model is built
        run.device, _ = check_device(config['device'])
    except ValueError as e:
        die(str(e))
    if run.distributed and run.device.startswith('cuda'):
        run.device = f'cuda:{run.local_rank}'
        torch.cuda.set_device(run.device)
    run.own_group = run.distributed and not dist.is_initialized()  # a caller's group is left to the caller
    if run.own_group:
        dist.init_process_group('nccl' if run.device.startswith('cuda') else 'gloo')
    run.master, run.device_type = run.rank == 0, run.device.split(':')[0]
    run.log = functools.partial(print, flush=True) if run.master else (lambda *args: None)
    run.dtype = config['dtype']
    if run.dtype == 'auto':
        run.dtype = 'bfloat16' if run.device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    run.autocast = torch.autocast(run.device_type, dtype=torch.bfloat16) if run.dtype == 'bfloat16' else nullcontext()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return run


def batch_layout(config, run):
    """(sequences per forward pass, accumulation steps): batch_tokens = forward-pass sequences x block_size
    x accumulation x processes. batch_size is lowered when that is what lets the processes share a step."""
    per_step, remainder = divmod(config['batch_tokens'], config['block_size'])
    if remainder or per_step < 1:
        die(f"--batch_tokens={config['batch_tokens']:,} is not a multiple of --block_size={config['block_size']}")
    if per_step % run.world:
        die(f"a step of {per_step} sequences (--batch_tokens / --block_size) cannot be shared by {run.world} "
            f"processes: set --batch_tokens to a multiple of {config['block_size'] * run.world:,}")
    per_process = per_step // run.world
    micro = max(d for d in range(1, min(config['batch_size'], per_process) + 1) if per_process % d == 0)
    if micro != config['batch_size']:
        run.log(f"note: {micro} sequences per forward pass instead of --batch_size={config['batch_size']}, so "
                f"that {run.world} process(es) share the {per_step} sequences of a step")
    return micro, per_process // micro


# -----------------------------------------------------------------------------------------------
# phase 2: data (loader.py): the sources, the mixture's stages, the fixed val windows


def open_run_data(config, run):
    try:
        data = loader.open_data(config['data'], config['block_size'], config['batch_tokens'],
                                config['sources'], config['stages'])
    except ValueError as e:
        die(str(e))
    for note in (n for s in data['sources'] for n in s['notes']):
        run.log(note)
    try:
        lengths = token_byte_lengths(load_tokenizer(data['tokenizer']), data['vocab_size'])
    except ValueError as e:
        lengths = None
        run.log(f"note: no bits per byte: cannot load the tokenizer {tokenizer_name(data['tokenizer'])} ({e})")
    count = loader.val_window_count(config)
    data['val_sets'] = {}
    for source in data['sources']:
        windows = loader.val_windows(source['val'], config['block_size'], count)
        window_bytes = None if lengths is None else lengths[windows[:, 1:].astype(np.int64)].sum(axis=1)
        data['val_sets'][source['name']] = (windows, window_bytes)
    return data


def to_device(rows, device):
    x, y = (torch.from_numpy(part.astype(np.int64)) for part in (rows[:, :-1], rows[:, 1:]))
    if device.startswith('cuda'):  # pinned memory: the copy overlaps with the GPU's work
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# -----------------------------------------------------------------------------------------------
# phase 3: the model, from where it starts (run_files.load_start: scratch, resume or pretrained weights)


def build_model(config, start, run):
    """(the bare GPT, the model to call: compiled and/or wrapped for DDP, LoRA config or None)."""
    torch.manual_seed(config['seed'])  # the same initial weights (and adapters) in every process
    try:  # RuntimeError: a checkpoint whose weights do not fit its own model_args (a multi-line message)
        gpt = GPT(GPTConfig(**start['model_args']))
        if start['weights'] is not None:
            gpt.load_state_dict(start['weights'])
    except (ValueError, TypeError, RuntimeError) as e:
        die(' '.join(str(e).split(' (got ')[0].split()))
    lora_config = None
    if config['lora_rank'] > 0:
        if config['init_from'] == 'scratch':
            run.log("note: LoRA on a model trained from scratch: the frozen weights are random")
        try:
            lora_config = lora.add_lora(gpt, config['lora_rank'], config['lora_alpha'], config['lora_dropout'],
                                        config['rslora'], config['lora_targets'])
        except ValueError as e:
            die(str(e))
        if start['checkpoint'] is not None:  # resume: the adapters as they were
            gpt.load_state_dict(start['checkpoint']['lora']['adapters'], strict=False)
    gpt.to(run.device)
    model = gpt
    if run.distributed and config['parallel'] == 'fsdp':
        # FSDP2: each block's weights are sharded across the processes and gathered only for its forward
        # and backward, so a process holds 1/world of the weights, gradients and optimizer state
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if run.dtype == 'bfloat16' else MixedPrecisionPolicy()
        for block in gpt.transformer.h:
            fully_shard(block, mp_policy=policy)
        fully_shard(gpt, mp_policy=policy)
    if config['compile']:
        model = torch.compile(model)
    if run.distributed and config['parallel'] == 'ddp':
        # DDP: every process holds the whole model; backward averages the gradients by all-reduce
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[run.local_rank] if run.device_type == 'cuda' else None)
    return gpt, model, lora_config


# -----------------------------------------------------------------------------------------------
# phase 4: the optimizer and the learning rate


def build_optimizer(gpt, config, run):
    """AdamW over the trainable parameters: weight decay on matrices and embeddings, not on biases and
    norm gains; the token embedding (tied or not) at embedding_lr, or with LoRA its adapter at
    lora_embedding_lr. Not at embedding_lr: a rate fit for the table (the demo's 0.2, 100x the rest)
    is not one for A and B, dense matrices that every token goes through; on them it made a LoRA run
    of the demo diverge (val loss 5.44 -> 16.7 in 40 steps, where at learning_rate it fell)."""
    wte = gpt.transformer.wte
    if config['lora_rank']:  # the embedding's adapter: lm_head's when tied (one matrix), else its own
        lookup = gpt.lm_head if gpt.config.tie_embeddings else wte
        embedding, rate = {id(getattr(lookup, n, None)) for n in ('lora_A', 'lora_B')}, config['lora_embedding_lr']
    else:
        embedding, rate = {id(wte.weight)}, config['embedding_lr']
    trainable = [p for p in gpt.parameters() if p.requires_grad]
    scale = rate / config['learning_rate'] if rate else 1.0
    groups = [dict(params=[p for p in trainable if p.dim() >= 2 and id(p) not in embedding], weight_decay=config['weight_decay'], lr_scale=1.0),
              dict(params=[p for p in trainable if p.dim() < 2], weight_decay=0.0, lr_scale=1.0),
              dict(params=[p for p in trainable if id(p) in embedding], weight_decay=config['weight_decay'], lr_scale=scale)]
    fused = dict(fused=True) if run.device_type == 'cuda' else {}
    return torch.optim.AdamW([g for g in groups if g['params']], lr=config['learning_rate'],
                             betas=(config['beta1'], config['beta2']), **fused)


def get_lr(step, config, decay_start=None):
    """decay_start: where wsd's decay begins (default: the last decay_frac of max_iters)."""
    lr, min_lr, warmup = config['learning_rate'], config['min_lr'], config['warmup_iters']
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if config['schedule'] == 'wsd':
        if decay_start is None:
            decay_start = config['max_iters'] * (1 - config['decay_frac'])
        if step < decay_start:
            return lr
        return lr + (min_lr - lr) * (step - decay_start) / max(config['max_iters'] - decay_start, 1)
    if step > config['lr_decay_iters']:
        return min_lr
    progress = (step - warmup) / max(config['lr_decay_iters'] - warmup, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


# -----------------------------------------------------------------------------------------------
# phase 5: the training loop


def train_step(model, gpt, optimizer, batch, fetch, accumulation, lr, config, run):
    """One optimizer step: gradients accumulate over the micro-batches and are averaged across processes
    on the last one only (no communication on the others). fetch(m) loads micro-batch m (m ==
    accumulation: the next step's first) while the device computes. The step is taken only if the
    loss and gradient norm are finite. Returns (loss, gradient norm, the next batch)."""
    for group in optimizer.param_groups:
        group['lr'] = lr * group['lr_scale']
    loss_sum = torch.zeros((), device=run.device)
    for micro in range(accumulation):
        last = micro == accumulation - 1
        if run.distributed and config['parallel'] == 'ddp':
            model.require_backward_grad_sync = last
        elif run.distributed:
            gpt.set_requires_gradient_sync(last)
        with run.autocast:
            _, loss = model(*batch)
        loss = loss / accumulation  # the mean over the step: every micro-batch has as many tokens
        loss_sum += loss.detach()
        batch = fetch(micro + 1)
        loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config['grad_clip'] or float('inf'))
    if hasattr(grad_norm, 'full_tensor'):  # a DTensor under FSDP
        grad_norm = grad_norm.full_tensor()
    if run.world > 1:
        dist.all_reduce(loss_sum)
        loss_sum /= run.world
    loss_value, norm_value = loss_sum.item(), grad_norm.item()  # the same in every process
    if math.isfinite(loss_value) and math.isfinite(norm_value):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_value, norm_value, batch


def loop(gpt, model, optimizer, lora_config, data, config, run, p, micro, accumulation, paths):
    history, write_log = run_files.open_log(config, p.step, paths, run, p.run_id)
    stop_signal, restore_signals = run_files.catch_stop_signals()
    per_step, block, seed = config['batch_tokens'] // config['block_size'], config['block_size'], config['seed']
    decay_start = data['stages'][-1][0] if len(data['stages']) > 1 else None  # wsd: decay the final stage

    def fetch(plan, m):  # this process's slice of a step's sequences
        sources, index, _ = plan
        slots = slice((m * run.world + run.rank) * micro, (m * run.world + run.rank + 1) * micro)
        return to_device(loader.read_windows(data, sources[slots], index[slots], block, seed), run.device)
    plan = loader.plan_step(data, seed, p.step, per_step, p.positions)
    batch, step_time, skipped = fetch(plan, 0), None, 0
    while True:
        # stop together: a signal may reach the processes at slightly different moments
        flag = torch.tensor([float(bool(stop_signal))], device=run.device)
        if run.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop, finished, saved = flag.item() > 0, p.step >= config['max_iters'], False
        if (p.step % config['eval_interval'] == 0 or finished) and (p.step > p.start_step or p.step == 0):
            saved = eval_and_save(model, optimizer, lora_config, data, config, run, p, micro, paths, write_log, history)
        if stop and p.step > p.start_step and not saved:  # preempted: save where we are, to resume from
            if p.last_good:
                state = run_files.checkpoint_state(config, data, p)
                run_files.save_checkpoint(paths, model, optimizer, state, lora_config, run)
                p.saved_step = p.step
            run.log("stopped by a signal: " + (f"saved {paths.ckpt} at step {p.step}" if p.last_good else
                                                "not saved: the last eval was refused (see above)"))
        if stop or finished:
            break

        t0, lr = time.time(), get_lr(p.step, config, decay_start)
        next_plan = loader.plan_step(data, seed, p.step + 1, per_step, plan[2])
        loss, norm, batch = train_step(model, gpt, optimizer, batch, lambda m: fetch(plan, m) if m < accumulation
                                       else fetch(next_plan, 0), accumulation, lr, config, run)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            if not config['skip_nonfinite']:
                die(f"step {p.step}: loss {loss}, gradient norm {norm}: training diverged. Nothing was saved "
                    f"after this; the last checkpoint ({paths.ckpt}) is intact. Lower --learning_rate or raise "
                    f"--warmup_iters and resume, or pass --skip_nonfinite=true")
            run.log(f"step {p.step}: loss {loss}, gradient norm {norm}: step skipped")
            skipped += 1
        for i, source in enumerate(data['sources']):  # a source read to its end starts over
            per_epoch = sum(source['windows'])
            if plan[2][i] // per_epoch > p.positions[i] // per_epoch:
                run.log(f"source {source['name']}: epoch {plan[2][i] // per_epoch} read to its end at step "
                        f"{p.step}; wrapping around to epoch {plan[2][i] // per_epoch + 1}")
        p.step, p.positions, plan = p.step + 1, plan[2], next_plan
        # dt includes the .item() in train_step, which waits for the GPU: the true step time
        dt = time.time() - t0
        step_time = dt if step_time is None or p.step - p.start_step <= 2 else 0.9 * step_time + 0.1 * dt
        if run.master and (p.step % config['log_interval'] == 0 or p.step == config['max_iters']):
            log_step(gpt, data, config, run, p, loss, lr, norm, dt, step_time, write_log)
    restore_signals()
    return history, skipped


def log_step(gpt, data, config, run, p, loss, lr, norm, dt, step_time, write_log):
    tokens_per_second = config['batch_tokens'] / dt
    mfu = gpt.estimate_mfu(tokens_per_second / run.world, run.device)
    minutes = round(step_time * (config['max_iters'] - p.step) / 60)  # 59.8 min: 1h00m, not 0h60m
    run.log(f"step {p.step}/{config['max_iters']} | loss {loss:.4f} | lr {lr:.2e} | norm {norm:.2f}"
            f" | {tokens_per_second:,.0f} tok/s | mfu {f'{100 * mfu:.1f}%' if mfu else 'unknown'}"
            f" | eta {minutes // 60}h{minutes % 60:02d}m")
    record = dict(step=p.step, tokens=p.step * config['batch_tokens'], loss=loss, lr=lr, grad_norm=norm,
                  tokens_per_second=tokens_per_second, mfu=mfu, time=time.time())
    if len(data['sources']) > 1:  # tokens read from each source so far
        record['source_tokens'] = {s['name']: int(k) * config['block_size'] for s, k in zip(data['sources'], p.positions)}
    write_log(record)


# -----------------------------------------------------------------------------------------------
# phase 6: evaluation, then a checkpoint (run_files.py writes it, and the log and the plot)


@torch.no_grad()
def evaluate(model, val_sets, batch_size, run):
    """{source: (val loss in nats per token, bits per byte or None)} and the same over all sources, on
    the fixed val windows. The processes share the batches; each runs the same number of forward passes
    (FSDP gathers weights inside each one): surplus passes count for nothing."""
    model.eval()
    totals = {}
    for name, (windows, window_bytes) in val_sets.items():
        batches = math.ceil(len(windows) / batch_size)
        total = torch.zeros(3, dtype=torch.float32 if run.device_type == 'mps' else torch.float64, device=run.device)
        for b in range(run.rank, math.ceil(batches / run.world) * run.world, run.world):
            rows = slice((b % batches) * batch_size, (b % batches + 1) * batch_size)
            x, y = to_device(windows[rows], run.device)
            with run.autocast:
                _, loss = model(x, y)
            if b < batches:  # nats, target tokens, their UTF-8 bytes
                total[0] += loss.to(total.dtype) * y.numel()
                total[1] += y.numel()
                total[2] += 0 if window_bytes is None else int(window_bytes[rows].sum())
        if run.world > 1:
            dist.all_reduce(total)
        totals[name] = total.tolist()
    model.train()
    totals[None] = [sum(t[i] for t in totals.values()) for i in range(3)]  # all sources together
    return {name: (nats / tokens, nats / math.log(2) / nbytes if nbytes else None)
            for name, (nats, tokens, nbytes) in totals.items()}


def eval_and_save(model, optimizer, lora_config, data, config, run, p, micro, paths, write_log, history):
    """Evaluate on every source's val windows, log it, and checkpoint unless the model is worse than
    the one the run started from (a diverged run keeps its last good checkpoint). True if it saved."""
    results = evaluate(model, data['val_sets'], micro, run)
    val_loss, val_bpb = results[None]
    if p.initial is None:  # the model the run starts from
        p.initial = val_loss
    improved, refusal = val_loss < p.best, run_files.save_refusal(val_loss, p.initial, p.best)
    run.log(f"step {p.step}: val loss {val_loss:.4f}" + (f", {val_bpb:.4f} bits per byte" if val_bpb else '') +
            f", perplexity {math.exp(min(val_loss, 50)):.2f}")
    record = dict(step=p.step, tokens=p.step * config['batch_tokens'], val_loss=val_loss,
                  val_ppl=math.exp(min(val_loss, 50)), val_bpb=val_bpb)
    if len(data['sources']) > 1:
        for name, (loss, bpb) in results.items():
            if name is not None:
                run.log(f"  {name}: val loss {loss:.4f}" + (f", {bpb:.4f} bits per byte" if bpb else ''))
        record.update(val_loss_by_source={n: r[0] for n, r in results.items() if n is not None},
                      val_bpb_by_source={n: r[1] for n, r in results.items() if n is not None})
    if run.master:
        write_log(record)
        run_files.plot(history, paths.plot)
    p.last_good = refusal is None
    if refusal is None:
        p.best = min(p.best, val_loss)
    if p.step == p.start_step or not (improved or config['always_save_checkpoint']):
        return False
    if refusal is not None:
        p.refused += 1
        kept = (f"it keeps the last good checkpoint (step {p.saved_step})" if p.saved_step is not None else
                "it keeps the last good checkpoint" if os.path.exists(paths.ckpt) else "there is none yet")
        run.log(f"not saving {paths.ckpt}: {refusal}; {kept}")
        return False
    state = run_files.checkpoint_state(config, data, p)
    run_files.save_checkpoint(paths, model, optimizer, state, lora_config, run)
    p.saved_step = p.step
    run.log(f"saved {paths.ckpt}")
    return True


def describe(gpt, data, config, run, micro, accumulation, step):
    trainable = sum(q.numel() for q in gpt.parameters() if q.requires_grad)
    run.log(f"training {gpt.size_text()}" +
            (f", of which only the {trainable / 1e6:.2f}M in LoRA adapters train" if config['lora_rank'] else '') +
            f" on {run.world} x {run.device}, {run.dtype}{', ' + config['parallel'] if run.distributed else ''}"
            f"{', compiled' if config['compile'] else ''}; tokenizer {tokenizer_name(data['tokenizer'])}")
    for s in data['sources']:
        run.log(f"  source {s['name']}: {s['folder']}, {sum(n for _, n in s['shards']):,} train tokens in "
                f"{len(s['shards'])} shards")
    end = config['max_iters']
    if len(data['sources']) > 1:
        for first, weights in data['stages']:
            shares = ', '.join(f"{s['name']} {100 * w:.1f}%" for s, w in zip(data['sources'], weights) if w)
            run.log(f"  from step {first}: {shares}" + (f" (after --max_iters={end}: not in this run)" if first >= end else ''))
    run.log(f"{config['batch_tokens']:,} tokens per step = {micro} sequences x {config['block_size']} tokens x "
            f"{accumulation} accumulation steps x {run.world} processes; steps {step} to {end}"
            + (" (none to train: raise --max_iters to continue)" if step >= end else ''))
    # legitimate (a run to be extended), but a short test of a long recipe does not anneal: say so
    late = data['stages'][-1][0] if config['schedule'] == 'wsd' and len(data['stages']) > 1 else None
    if (late or 0) >= end or (config['schedule'] == 'cosine' and config['lr_decay_iters'] > end):
        where = f"over the final stage, from step {late}" if late else f"until --lr_decay_iters={config['lr_decay_iters']}"
        run.log(f"note: the learning rate decays {where}, after --max_iters={end}: this run ends at a rate of "
                f"{get_lr(end - 1, config, late):.2e}, not at --min_lr={config['min_lr']:.2e}")


def main(argv):
    started = time.time()
    config = get_config(argv)  # phase 1: settings, processes, device
    run = setup_processes(config)
    data = open_run_data(config, run)  # phase 2: data, checked before any training time is spent
    paths = SimpleNamespace(**{k: os.path.join(config['out_dir'], f) for k, f in
                               (('ckpt', 'ckpt.pt'), ('log', 'log.jsonl'), ('plot', 'loss.png'))})
    try:  # phase 3: the model
        start = run_files.load_start(config, data, paths.ckpt, run.log)
    except ValueError as e:
        die(str(e))
    if config['block_size'] != data['block_size']:  # pretrained weights bring their own context length
        data = open_run_data(config, run)
    micro, accumulation = batch_layout(config, run)
    gpt, model, lora_config = build_model(config, start, run)
    optimizer = build_optimizer(gpt, config, run)  # phase 4: the optimizer
    torch.manual_seed(config['seed'] + run.rank)  # dropout: a different stream in each process
    try:
        p = run_files.restore(start, model, optimizer, data, config, run, paths.ckpt)
    except ValueError as e:
        die(str(e))
    del start
    describe(gpt, data, config, run, micro, accumulation, p.step)
    history, skipped = loop(gpt, model, optimizer, lora_config, data, config, run, p, micro, accumulation, paths)
    if run.master:
        if history and 'val_loss' not in history[-1]:  # else the last eval drew it
            run_files.plot(history, paths.plot)
        elapsed = round(time.time() - started)  # whole seconds first: 179.7 s read "2m60s"
        # every eval refused, or --max_iters=0: no checkpoint of this run (it said 'from step None')
        saved = (f"{paths.ckpt} is from step {p.saved_step}" if p.saved_step is not None
                 else "no checkpoint saved")
        run.log(f"done at step {p.step} in {elapsed // 60}m{elapsed % 60:02d}s: best val loss {p.best:.4f}" +
                (f", {skipped} steps skipped" if skipped else '') +
                (f"; {p.refused} eval(s) worse than the start not saved" if p.refused else '') +
                f"; {saved}; {paths.log}, {paths.plot}")
    if run.own_group:
        dist.destroy_process_group()
    return history


if __name__ == '__main__':
    main(sys.argv[1:])
