"""
Train a GPT on prepare.py's token shards: on one device, or on many under torchrun (DDP or FSDP2).

    python train.py                                          # GPT-2 124M on data/tokens (the real job)
    python train.py config/tiny_cpu.py                       # a few minutes on a laptop CPU
    torchrun --nproc_per_node=8 train.py config/gpt2_124m.py [--parallel=fsdp]
    python train.py config/tiny_cpu.py --init_from=resume    # continue exactly where it stopped
    python train.py config/tiny_cpu.py --init_from=other/ckpt.pt   # continued pretraining (weights only)

Settings: the defaults below, then config files (Python, exec'd like nanoGPT's), then --key=value
flags. Writes out_dir/ckpt.pt (all it takes to resume exactly), out_dir/log.jsonl (a JSON line per
step and per eval) and out_dir/loss.png. SIGTERM or Ctrl-C: save a checkpoint, then exit.
"""

import argparse
import ast
import dataclasses
import functools
import glob
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext


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
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)

from checkpoint import read_checkpoint
from common import atomic_path, load_shard
from model import GPT, GPTConfig
from tokenizer import same_tokenizer, tokenizer_name

# -----------------------------------------------------------------------------------------------
# default config: GPT-2 124M on data/tokens, as in nanoGPT. Presets in config/ override these.
DEFAULTS = dict(
    # I/O
    out_dir='out',
    data='data/tokens',        # folder of val_*.bin and train_*.bin shards written by prepare.py
    init_from='scratch',       # 'scratch', 'resume' (out_dir/ckpt.pt, exactly), or a checkpoint's path
    eval_interval=2000,        # evaluate, then checkpoint, every this many steps
    eval_iters=200,            # val batches per eval: always the same ones, so evals compare
    log_interval=1,
    always_save_checkpoint=True,  # False: checkpoint at an eval only when the val loss improved
    # data: one optimizer step sees batch_tokens tokens, reached by gradient accumulation
    batch_size=12,             # sequences per forward pass, per process
    block_size=1024,
    batch_tokens=491520,       # 12 * 1024 * 40, nanoGPT's ~0.5M tokens per step
    gradient_accumulation_steps=0,  # nanoGPT's knob (all processes together); if > 0 it sets batch_tokens
    # model (model.py's GPTConfig switches are knobs too: n_kv_head, rope, norm, mlp, loss_impl, ...)
    n_layer=12, n_head=12, n_embd=768, vocab_size=50304, dropout=0.0, bias=False,
    # AdamW
    learning_rate=6e-4, max_iters=600000, weight_decay=1e-1, beta1=0.9, beta2=0.95,
    grad_clip=1.0,             # clip the global gradient norm to this; 0: no clipping
    # learning rate: linear warmup, then 'cosine' down to min_lr at lr_decay_iters, or 'wsd'
    # (warmup-stable-decay): constant, then linear down to min_lr over the last decay_frac of max_iters
    schedule='cosine', warmup_iters=2000, lr_decay_iters=600000, min_lr=6e-5, decay_frac=0.2,
    # system
    device='auto',             # 'auto': cuda, else mps, else cpu
    dtype='auto',              # 'auto': bfloat16 on GPUs that have it, else float32
    compile=True,
    parallel='ddp',            # under torchrun: 'ddp' (replicate the model) or 'fsdp' (shard it)
    seed=1337,
    skip_nonfinite=False,      # a NaN/inf loss skips that step instead of stopping the run
)


def die(message):
    raise SystemExit(f"train.py: error: {message}")


def get_config(argv):
    """Defaults, then config files in order, then --key=value flags. Unknown keys and wrong types are
    errors: a typo must not silently train with the default."""
    config = dict(DEFAULTS)
    for field in dataclasses.fields(GPTConfig):
        config.setdefault(field.name, field.default)

    def boolean(text):
        if text.lower() not in ('1', 'true', 'yes', '0', 'false', 'no'):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ('1', 'true', 'yes')

    def literal(text):  # for knobs whose default is None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    parser.add_argument('config_files', nargs='*', help='config/PRESET.py files, applied in order')
    for key, default in config.items():
        kind = boolean if type(default) is bool else literal if default is None else type(default)
        parser.add_argument(f'--{key}', type=kind, default=argparse.SUPPRESS, help=f'default: {default}')
    flags = vars(parser.parse_intermixed_args(argv))
    for path in flags.pop('config_files'):
        if not path.endswith('.py') or not os.path.isfile(path):
            die(f"{path}: expected a config file (config/PRESET.py) or a --key=value flag")
        settings = {}
        exec(compile(open(path).read(), path, 'exec'), settings)
        for key, value in settings.items():
            if key.startswith('_') or callable(value) or type(value).__name__ == 'module':
                continue
            if key not in config:
                die(f"{path}: unknown setting {key!r}; the settings are: {', '.join(sorted(config))}")
            default = config[key]
            if type(value) is not type(default) and default is not None \
                    and not (type(default) is float and type(value) is int):
                die(f"{path}: {key} = {value!r} is a {type(value).__name__}, expected {type(default).__name__}")
            config[key] = float(value) if type(default) is float else value
    config.update(flags)
    if config['gradient_accumulation_steps'] > 0:
        config['batch_tokens'] = config['gradient_accumulation_steps'] * config['batch_size'] * config['block_size']
    return config


# -----------------------------------------------------------------------------------------------
# data: the run reads non-overlapping windows of block_size+1 tokens in one fixed, seeded order


def open_data(config):
    """Open and check every shard, and the vocabulary, before any training time is spent."""
    folder = config['data']
    if not os.path.isdir(folder):
        die(f"data folder {folder} does not exist: run prepare.py first, or pass --data=FOLDER")
    val_paths = sorted(glob.glob(os.path.join(folder, 'val_*.bin')))
    train_paths = sorted(glob.glob(os.path.join(folder, 'train_*.bin')))
    if not val_paths or not train_paths:
        die(f"{folder} needs val_*.bin and train_*.bin shards (found {len(val_paths)} and {len(train_paths)})")
    try:
        val, train = [load_shard(p) for p in val_paths], [load_shard(p) for p in train_paths]
    except ValueError as e:
        die(f"corrupt shard: {e}")
    for path, shard in zip(val_paths + train_paths, val + train):
        if len(shard) <= config['block_size']:
            die(f"{path}: {len(shard)} tokens, fewer than block_size + 1 = {config['block_size'] + 1}")
    reports = sorted(glob.glob(os.path.join(folder, 'report*.json')))
    report = json.load(open(reports[0])) if reports else {}
    if not reports:
        print(f"warning: no report.json in {folder}: assuming the gpt2 tokenizer", file=sys.stderr)
    vocab_size = max(report.get('vocab_size', 0), 1 + max(int(s.max()) for s in val))
    return dict(val=val, train=train, tokenizer=report.get('tokenizer', 'gpt2'), vocab_size=vocab_size,
                shards=[[os.path.basename(p), len(s)] for p, s in zip(train_paths, train)])


@functools.lru_cache(maxsize=4)
def epoch_layout(seed, epoch, counts):
    """The shards in this epoch's (seeded) order, and where each one's windows end in it."""
    order = np.random.default_rng([seed, epoch]).permutation(len(counts))
    return order, np.cumsum([counts[s] for s in order])


@functools.lru_cache(maxsize=4)
def window_order(seed, epoch, shard, count):
    return np.random.default_rng([seed, epoch, shard]).permutation(count)


def get_batch(shards, first, count, block_size, seed, device):
    """Sequences first .. first+count-1 of the run's order, as (inputs, targets). Each epoch visits the
    shards in a seeded order and each shard's windows in a seeded order: the order depends on the seed
    and the data alone, not on the number of processes, so position `first` is all a resume needs."""
    counts = tuple((len(s) - 1) // block_size for s in shards)
    rows = []
    for g in range(first, first + count):
        epoch, i = divmod(g, sum(counts))
        order, ends = epoch_layout(seed, epoch, counts)
        k = int(np.searchsorted(ends, i, side='right'))
        window = window_order(seed, epoch, int(order[k]), counts[order[k]])[i - (ends[k - 1] if k else 0)]
        rows.append(shards[order[k]][window * block_size:(window + 1) * block_size + 1])
    return to_device(np.stack(rows), device)


def val_batch(val, index, config, device):
    """Batch `index` of the fixed val set: eval_iters * batch_size windows spread evenly over the val shards."""
    starts = np.array([len(s) - config['block_size'] - 1 for s in val]).cumsum()  # window starts per shard
    where = np.linspace(0, starts[-1] - 1, config['eval_iters'] * config['batch_size']).astype(np.int64)
    rows = []
    for w in where[index * config['batch_size']:(index + 1) * config['batch_size']]:
        shard = int(np.searchsorted(starts, w, side='right'))
        offset = w - (starts[shard - 1] if shard else 0)
        rows.append(val[shard][offset:offset + config['block_size'] + 1])
    return to_device(np.stack(rows), device)


def to_device(rows, device):
    x, y = (torch.from_numpy(part.astype(np.int64)) for part in (rows[:, :-1], rows[:, 1:]))
    if device.startswith('cuda'):  # pinned memory: the copy overlaps with the GPU's work
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# -----------------------------------------------------------------------------------------------
# learning rate, evaluation, checkpoints, the loss plot


def get_lr(step, config):
    lr, min_lr, warmup = config['learning_rate'], config['min_lr'], config['warmup_iters']
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if config['schedule'] == 'wsd':
        decay_start = config['max_iters'] * (1 - config['decay_frac'])
        if step < decay_start:
            return lr
        return lr + (min_lr - lr) * (step - decay_start) / max(config['max_iters'] - decay_start, 1)
    if step > config['lr_decay_iters']:
        return min_lr
    progress = (step - warmup) / max(config['lr_decay_iters'] - warmup, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


@torch.no_grad()
def evaluate(model, data, config, autocast, device, rank, world):
    """Mean loss over the fixed val batches, shared among the processes. Each process runs the same
    number of forward passes (FSDP gathers weights inside each one): surplus passes get weight 0."""
    model.eval()
    total = torch.zeros(2, device=device)
    for i in range(rank, math.ceil(config['eval_iters'] / world) * world, world):
        x, y = val_batch(data['val'], i % config['eval_iters'], config, device)
        with autocast:
            _, loss = model(x, y)
        weight = float(i < config['eval_iters'])
        total += torch.stack([loss.float() * weight, torch.tensor(weight, device=device)])
    if world > 1:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def save_checkpoint(path, model, optimizer, state, rank, world):
    """Gather the full state on rank 0 and write it atomically (temp file, fsync, rename): a crash while
    writing leaves the previous checkpoint whole. Every process must call this: FSDP gathers shards."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    # plain names ('transformer.h.0.attn...', no 'module.' or '_orig_mod.'): it loads into a bare GPT
    model_state = get_model_state_dict(model, options=options)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=options)
    rng = dict(cpu=torch.get_rng_state(), **({'cuda': torch.cuda.get_rng_state()} if torch.cuda.is_available() else {}))
    rngs = [rng] * world
    if world > 1:
        dist.all_gather_object(rngs, rng)  # each process's dropout stream
    if rank == 0:
        checkpoint = dict(version=1, model=model_state, optimizer=optimizer_state,
                          rng={k: [r[k] for r in rngs] for k in rng}, **state)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
    if world > 1:
        dist.barrier()


def load_checkpoint(path):
    try:  # mmap: the processes of one machine share the pages
        return read_checkpoint(path, mmap=True)
    except ValueError as e:
        die(str(e))


def plot(history, path):
    """Train and val loss against tokens seen, as a PNG beside the log. Without matplotlib there is no
    picture; and no plotting trouble may ever stop a training run."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 5))
        for key, label, style in (('loss', 'train', '-'), ('val_loss', 'val', 'o-')):
            points = [(h['tokens'], h[key]) for h in history if key in h]
            if points:
                ax.plot(*zip(*points), style, label=label, markersize=3)
        ax.set(xlabel='tokens', ylabel='loss (nats per token)', title=os.path.dirname(path))
        ax.grid(alpha=0.3)
        ax.legend()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format='png')
        plt.close(fig)
    except ImportError:
        pass
    except Exception as e:
        print(f"warning: could not draw {path}: {e}", file=sys.stderr)


# -----------------------------------------------------------------------------------------------


def check_start(config, data, ckpt_path, log):
    """The checkpoint to start from (or None) and the model's arguments, after checking that the
    checkpoint, the data and the model agree."""
    if config['real_vocab_size'] is None and data['vocab_size'] < config['vocab_size']:
        config['real_vocab_size'] = data['vocab_size']  # the padding ids are left out of the loss
    model_args = {f.name: config[f.name] for f in dataclasses.fields(GPTConfig)}
    checkpoint = None
    if config['init_from'] == 'resume':
        checkpoint = load_checkpoint(ckpt_path)
        old = checkpoint['config']
        changed = [f"{k}={old.get(k)} (now {config[k]})" for k in [*model_args, 'seed', 'batch_tokens']
                   if old.get(k) != config[k]]
        if changed:
            die(f"{ckpt_path} was trained with other settings: {', '.join(changed)}; resume with the same "
                f"config and flags, or start a new run from its weights with --init_from={ckpt_path}")
        if checkpoint['data_state']['shards'] != data['shards']:
            die(f"the train shards in {config['data']} changed since {ckpt_path} was saved, so its data "
                f"position means nothing; start a new run from its weights with --init_from={ckpt_path}")
        for key in sorted(k for k in config if k in old and old[k] != config[k] and k != 'init_from'):
            log(f"note: {key} was {old[key]} in the checkpoint, now {config[key]}")
    elif config['init_from'] != 'scratch':  # continued pretraining: the architecture is the checkpoint's
        checkpoint = load_checkpoint(config['init_from'])
        model_args = {**checkpoint['model_args'], 'dropout': config['dropout']}
        config.update(model_args)
    if checkpoint is not None and not same_tokenizer(checkpoint['tokenizer'], data['tokenizer']):
        die(f"the checkpoint was trained with the {tokenizer_name(checkpoint['tokenizer'])} tokenizer, but "
            f"{config['data']} holds {tokenizer_name(data['tokenizer'])} tokens")
    if data['vocab_size'] > model_args['vocab_size']:
        die(f"the data in {config['data']} has a vocabulary of {data['vocab_size']:,} tokens, more than the "
            f"model's vocab_size={model_args['vocab_size']:,}")
    return checkpoint, model_args


def main(argv):
    config = get_config(argv)
    # --- processes and device: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
    distributed = 'RANK' in os.environ
    rank, local_rank, world = [int(os.environ.get(k, d)) for k, d in (('RANK', 0), ('LOCAL_RANK', 0), ('WORLD_SIZE', 1))]
    device = config['device']
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    if distributed and device.startswith('cuda'):
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    if distributed:
        dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
    master, device_type = rank == 0, device.split(':')[0]
    log = functools.partial(print, flush=True) if master else (lambda *args: None)
    dtype = config['dtype']
    if dtype == 'auto':
        dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    if dtype not in ('float32', 'bfloat16'):
        die(f"--dtype={dtype}: use float32 or bfloat16 (float16 would need loss scaling)")
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if dtype == 'bfloat16' else nullcontext()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if config['parallel'] not in ('ddp', 'fsdp') or config['schedule'] not in ('cosine', 'wsd'):
        die("--parallel must be ddp or fsdp, and --schedule cosine or wsd")

    # --- data, checkpoint and model checks: all before any training time is spent
    data = open_data(config)
    ckpt_path = os.path.join(config['out_dir'], 'ckpt.pt')
    checkpoint, model_args = check_start(config, data, ckpt_path, log)
    # batch_tokens = batch_size * block_size * accumulation steps * processes
    accumulation, remainder = divmod(config['batch_tokens'], config['batch_size'] * config['block_size'] * world)
    if remainder or accumulation < 1:
        die(f"batch_tokens={config['batch_tokens']:,} is not a multiple of batch_size * block_size * processes "
            f"= {config['batch_size'] * config['block_size'] * world:,}")
    torch.manual_seed(config['seed'])  # the same initial weights in every process
    gpt = GPT(GPTConfig(**model_args))
    if checkpoint is not None:
        gpt.load_state_dict(checkpoint['model'])
    gpt.to(device)
    model = gpt
    if distributed and config['parallel'] == 'fsdp':
        # FSDP2: each block's weights are sharded across the processes and gathered only for its forward
        # and backward, so a process holds 1/world of the weights, gradients and optimizer state
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if dtype == 'bfloat16' else MixedPrecisionPolicy()
        for block in gpt.transformer.h:
            fully_shard(block, mp_policy=policy)
        fully_shard(gpt, mp_policy=policy)
    if config['compile']:
        model = torch.compile(model)
    if distributed and config['parallel'] == 'ddp':
        # DDP: every process holds the whole model; backward averages the gradients by all-reduce
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device_type == 'cuda' else None)
    optimizer = gpt.configure_optimizers(config['weight_decay'], config['learning_rate'],
                                         (config['beta1'], config['beta2']), device_type)
    step, next_sequence, best_val_loss = 0, 0, float('inf')
    torch.manual_seed(config['seed'] + rank)  # dropout: a different stream in each process
    if config['init_from'] == 'resume':
        set_optimizer_state_dict(model, optimizer, checkpoint['optimizer'], options=StateDictOptions(full_state_dict=True))
        step, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
        next_sequence = checkpoint['data_state']['next_sequence']
        if len(checkpoint['rng']['cpu']) == world:  # as many processes as before: each continues its stream
            torch.set_rng_state(checkpoint['rng']['cpu'][rank])
            if 'cuda' in checkpoint['rng'] and device_type == 'cuda':
                torch.cuda.set_rng_state(checkpoint['rng']['cuda'][rank])
    start_step = step
    del checkpoint

    # --- logs: a resumed run drops log lines from after its checkpoint (a crash may have left some)
    os.makedirs(config['out_dir'], exist_ok=True)
    log_path, plot_path = os.path.join(config['out_dir'], 'log.jsonl'), os.path.join(config['out_dir'], 'loss.png')
    history = []
    if master and config['init_from'] == 'resume' and os.path.exists(log_path):
        history = [h for h in map(json.loads, open(log_path)) if h['step'] <= step]
    if master:
        with open(log_path, 'w') as f:
            f.writelines(json.dumps(h) + '\n' for h in history)
        if config['init_from'] != 'resume' and os.path.exists(ckpt_path):
            log(f"note: the first save replaces {ckpt_path} (--init_from=resume would continue it)")

    def write_log(record):
        history.append(record)
        with open(log_path, 'a') as f:
            f.write(json.dumps(record) + '\n')

    stop_signal = []  # when SIGTERM or SIGINT came: finish the step, save, exit

    def request_stop(signum, frame):
        # torchrun and cluster schedulers pass a signal on, so it often arrives twice: a repeat is
        # ignored, except Ctrl-C pressed again a few seconds later, which stops at once
        if signum == signal.SIGINT and stop_signal and time.time() - stop_signal[0] > 3:
            raise KeyboardInterrupt
        stop_signal.append(time.time())
    previous_handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}

    log(f"training {gpt.get_num_params() / 1e6:.2f}M parameters on {world} x {device}, {dtype}"
        f"{', ' + config['parallel'] if distributed else ''}{', compiled' if config['compile'] else ''}; "
        f"{sum(n for _, n in data['shards']):,} train tokens in {len(data['shards'])} shards, tokenizer "
        f"{tokenizer_name(data['tokenizer'])}\n{config['batch_tokens']:,} tokens per step = {config['batch_size']} sequences "
        f"x {config['block_size']} tokens x {accumulation} accumulation steps x {world} processes; "
        f"steps {step} to {config['max_iters']}")

    def state():  # what a checkpoint holds besides the weights, optimizer and RNG states
        return dict(model_args=model_args, config=config, tokenizer=data['tokenizer'], iter_num=step,
                    best_val_loss=best_val_loss, data_state=dict(next_sequence=next_sequence, shards=data['shards']))

    sequences_per_step = config['batch_tokens'] // config['block_size']

    def micro_batch(step_start, micro):  # this process's slice of a step's global batch
        first = step_start + (micro * world + rank) * config['batch_size']
        return get_batch(data['train'], first, config['batch_size'], config['block_size'], config['seed'], device)

    x, y = micro_batch(next_sequence, 0)
    step_time, skipped = None, 0
    while True:
        # stop together: a signal may reach the processes at slightly different moments
        flag = torch.tensor([float(bool(stop_signal))], device=device)
        if world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop, finished, saved = flag.item() > 0, step >= config['max_iters'], False
        if (step % config['eval_interval'] == 0 or finished) and (step > start_step or step == 0):
            val_loss = evaluate(model, data, config, autocast, device, rank, world)
            improved, best_val_loss = val_loss < best_val_loss, min(best_val_loss, val_loss)
            log(f"step {step}: val loss {val_loss:.4f}, perplexity {math.exp(min(val_loss, 50)):.2f}")
            if master:
                write_log(dict(step=step, tokens=step * config['batch_tokens'], val_loss=val_loss,
                               val_ppl=math.exp(min(val_loss, 50))))
                plot(history, plot_path)
            if step > start_step and (improved or config['always_save_checkpoint']):
                save_checkpoint(ckpt_path, model, optimizer, state(), rank, world)
                saved = True
                log(f"saved {ckpt_path}")
        if stop and step > start_step and not saved:  # preempted: save where we are, to resume from
            save_checkpoint(ckpt_path, model, optimizer, state(), rank, world)
            log(f"stopped by a signal: saved {ckpt_path} at step {step}")
        if stop or finished:
            break

        # --- one optimizer step: gradients accumulate over micro-batches and are averaged across
        # processes on the last one only (no communication on the others)
        t0 = time.time()
        lr = get_lr(step, config)
        for group in optimizer.param_groups:
            group['lr'] = lr
        loss_sum = torch.zeros((), device=device)
        for micro in range(accumulation):
            last = micro == accumulation - 1
            if distributed and config['parallel'] == 'ddp':
                model.require_backward_grad_sync = last
            elif distributed:
                gpt.set_requires_gradient_sync(last)
            with autocast:
                _, loss = model(x, y)
            loss = loss / accumulation  # the mean over the step: every micro-batch has as many tokens
            loss_sum += loss.detach()
            # fetch the next micro-batch (the next step's first after the last) while the GPU computes
            x, y = micro_batch(next_sequence + sequences_per_step * last, (micro + 1) % accumulation)
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config['grad_clip'] or float('inf'))
        if hasattr(grad_norm, 'full_tensor'):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        if world > 1:
            dist.all_reduce(loss_sum)
            loss_sum /= world
        loss_value, norm_value = loss_sum.item(), grad_norm.item()  # the same in every process
        if math.isfinite(loss_value) and math.isfinite(norm_value):
            optimizer.step()
        elif config['skip_nonfinite']:
            log(f"step {step}: loss {loss_value}, gradient norm {norm_value}: step skipped")
            skipped += 1
        else:
            die(f"step {step}: loss {loss_value}, gradient norm {norm_value}: training diverged. Nothing "
                f"was saved after this; the last checkpoint ({ckpt_path}) is intact. Lower --learning_rate or "
                f"raise --warmup_iters and resume, or pass --skip_nonfinite=true")
        optimizer.zero_grad(set_to_none=True)
        step += 1
        next_sequence += sequences_per_step

        # --- logging (dt includes the .item() above, which waits for the GPU: it is the true step time)
        dt = time.time() - t0
        step_time = dt if step_time is None or step - start_step <= 2 else 0.9 * step_time + 0.1 * dt
        if master and (step % config['log_interval'] == 0 or step == config['max_iters']):
            tokens_per_second = config['batch_tokens'] / dt
            mfu = gpt.estimate_mfu(tokens_per_second / world, device)
            eta = step_time * (config['max_iters'] - step)
            log(f"step {step}/{config['max_iters']} | loss {loss_value:.4f} | lr {lr:.2e} | norm {norm_value:.2f}"
                f" | {tokens_per_second:,.0f} tok/s | mfu {f'{100 * mfu:.1f}%' if mfu else 'unknown'}"
                f" | eta {eta // 3600:.0f}h{eta % 3600 / 60:02.0f}m")
            write_log(dict(step=step, tokens=step * config['batch_tokens'], loss=loss_value, lr=lr,
                           grad_norm=norm_value, tokens_per_second=tokens_per_second, mfu=mfu, time=time.time()))

    if master:
        plot(history, plot_path)
        log(f"done at step {step}: best val loss {best_val_loss:.4f}" +
            (f", {skipped} steps skipped" if skipped else '') + f"; {ckpt_path}, {log_path}, {plot_path}")
    for signum, handler in previous_handlers.items():
        signal.signal(signum, handler)
    if distributed:
        dist.destroy_process_group()
    return history


if __name__ == '__main__':
    main(sys.argv[1:])
