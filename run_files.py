"""
What a training run keeps on disk, and where it starts from: train.py's files.

    load_start(config, data, ckpt_path)   scratch, resume (out_dir/ckpt.pt) or pretrained weights, checked
                                          against the settings and the data before any step is spent
    checkpoint_state / save_checkpoint    ckpt.pt: weights, optimizer, RNG streams, data position, config,
                                          tokenizer; gathered from every process and written atomically
    save_refusal                          why a diverged run must not overwrite its last good checkpoint
    restore                               a resumed run continues exactly: step, optimizer, data, RNG
    open_log / settle_log / plot          log.jsonl (a JSON line per step and per eval) and loss.png,
                                          always those of the ckpt.pt beside them
    catch_stop_signals                    a preempted run (SIGTERM, Ctrl-C) saves before it exits

Everything here raises ValueError with a one-line reason for train.py to print.
"""

import dataclasses
import glob
import json
import math
import os
import signal
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)

import lora
from checkpoint import load_pretrained, read_checkpoint
from common import atomic_path, remove_stale_temps
from model import GPTConfig
from tokenizer import same_tokenizer, tokenizer_name

# -----------------------------------------------------------------------------------------------
# where the model starts


def load_start(config, data, ckpt_path, log):
    """dict(checkpoint (resume only), weights, model_args, tokenizer, started_from) once the start, the
    data and the model agree. A run from pretrained weights takes their architecture (block_size
    included) into config."""
    if config['real_vocab_size'] is None and data['vocab_size'] < config['vocab_size']:
        config['real_vocab_size'] = data['vocab_size']  # the padding ids are left out of the loss
    model_args = {f.name: config[f.name] for f in dataclasses.fields(GPTConfig)}
    start = dict(checkpoint=None, weights=None, model_args=model_args, started_from='scratch')
    if config['init_from'] == 'resume':
        checkpoint = read_checkpoint(ckpt_path, mmap=True)  # mmap: the processes of one machine share the pages
        if 'config' not in checkpoint:  # weights saved by another script: nothing to resume from
            raise ValueError(f"{ckpt_path} holds weights but not a train.py run to resume (no config); "
                             f"start from its weights with --init_from={ckpt_path}")
        old, keys = checkpoint['config'], ['seed', 'batch_tokens', 'lora_rank', 'lora_alpha', 'rslora', 'lora_targets']
        start['started_from'] = checkpoint.get('started_from', 'scratch')
        if start['started_from'] == 'scratch':
            keys += list(model_args)
        else:  # a continued run: the architecture is the checkpoint's, as when it started
            model_args = {**checkpoint['model_args'], 'dropout': config['dropout']}
            config.update(model_args)
        def same(key, a, b):  # 'c_fc,c_attn' and 'c_attn,c_fc' are one set of targets (none without LoRA)
            if key == 'lora_targets' and a != b:
                return not config['lora_rank'] or set(lora.parse_targets(a)) == set(lora.parse_targets(b))
            return a == b
        changed = [f"{k}={old.get(k)} (now {config[k]})" for k in keys if not same(k, old.get(k, config[k]), config[k])]
        if changed:
            raise ValueError(f"{ckpt_path} was trained with other settings: {', '.join(changed)}; resume with "
                             f"the same config and flags, or start a new run from its weights with "
                             f"--init_from={ckpt_path}")
        for key in sorted(k for k in config if k in old and old[k] != config[k] and k != 'init_from'):
            log(f"note: {key} was {old[key]} in the checkpoint, now {config[key]}")
        start.update(checkpoint=checkpoint, weights=checkpoint['model'], tokenizer=checkpoint['tokenizer'],
                     model_args=model_args)
    elif config['init_from'] != 'scratch':  # continued pretraining: the architecture is the checkpoint's
        pretrained = load_pretrained(config['init_from'])  # our checkpoint (LoRA merged) or a HF folder
        model_args = {**pretrained['model_args'], 'dropout': config['dropout']}
        for key in sorted(k for k in model_args if model_args[k] != config[k] and k != 'real_vocab_size'):
            log(f"note: {key}={model_args[key]} from {config['init_from']} (the setting was {config[key]})")
        config.update(model_args)
        start.update(weights=pretrained['model'], model_args=model_args, tokenizer=pretrained['tokenizer'],
                     started_from=config['init_from'])
    if 'tokenizer' in start and not same_tokenizer(start['tokenizer'], data['tokenizer']):
        raise ValueError(f"the checkpoint was trained with the {tokenizer_name(start['tokenizer'])} tokenizer, "
                         f"but {config['data']} holds {tokenizer_name(data['tokenizer'])} tokens")
    if data['vocab_size'] > model_args['vocab_size']:
        raise ValueError(f"the data in {config['data']} has a vocabulary of {data['vocab_size']:,} tokens, more "
                         f"than the model's vocab_size={model_args['vocab_size']:,}")
    return start


# -----------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_state(config, data, p):
    """What a checkpoint holds besides the weights, optimizer and RNG states."""
    names = [s['name'] for s in data['sources']]
    return dict(model_args={f.name: config[f.name] for f in dataclasses.fields(GPTConfig)}, config=config,
                tokenizer=data['tokenizer'], iter_num=p.step, best_val_loss=p.best, initial_val_loss=p.initial,
                started_from=str(p.started_from), run_id=p.run_id,
                data_state=dict(positions={n: int(k) for n, k in zip(names, p.positions)},
                                shards={s['name']: s['shards'] for s in data['sources']}))


def save_checkpoint(paths, model, optimizer, state, lora_config, run):
    """Gather the full state on rank 0 and write it atomically to paths.ckpt (temp file, fsync, rename):
    a crash while writing leaves the previous checkpoint whole. Then this run's log is log.jsonl
    (settle_log). Every process must call this: FSDP gathers shards.
    With LoRA, ckpt['model'] is the frozen base and ckpt['lora'] the adapters and their config."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    # plain names ('transformer.h.0.attn...', no 'module.' or '_orig_mod.'): it loads into a bare GPT
    model_state = get_model_state_dict(model, options=options)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=options)
    rng = dict(cpu=torch.get_rng_state(), **({'cuda': torch.cuda.get_rng_state()} if torch.cuda.is_available() else {}))
    rngs = [rng] * run.world
    if run.world > 1:
        dist.all_gather_object(rngs, rng)  # each process's dropout stream
    if run.master:
        base, adapters = lora.split_state(model_state)
        extra = {} if lora_config is None else dict(lora=dict(config=lora_config, adapters=adapters))
        checkpoint = dict(version=1, model=base, optimizer=optimizer_state,
                          rng={k: [r[k] for r in rngs] for k in rng}, **extra, **state)
        with atomic_path(paths.ckpt) as tmp:
            torch.save(checkpoint, tmp)
        settle_log(paths, state['run_id'])
    if run.world > 1:
        dist.barrier()


def save_refusal(val_loss, initial, best):
    """Why weights with this val loss must not replace the last good checkpoint, or None to save them:
    a diverged run must not leave a worse model than the one it started from as ckpt.pt."""
    if not math.isfinite(val_loss):
        return "the val loss is not finite"
    if initial is not None and val_loss > initial:
        return f"the val loss is worse than at the start ({initial:.4f})"
    if val_loss > best + 1.0:
        return f"the val loss is more than 1 nat above the best so far ({best:.4f})"
    return None


def restore(start, model, optimizer, data, config, run, ckpt_path):
    """Where the loop starts: step, sequences read from each source, best and initial val loss; on a
    resume from the checkpoint, with the optimizer state and each process's RNG stream."""
    p = SimpleNamespace(step=0, positions=np.zeros(len(data['sources']), dtype=np.int64), best=float('inf'),
                        initial=None, last_good=True, refused=0, saved_step=None, started_from=start['started_from'])
    checkpoint = start['checkpoint']
    # names this run's log until its first save (open_log); os.urandom, not torch or numpy: the
    # RNG streams stay as an uninterrupted run's
    p.run_id = (checkpoint or {}).get('run_id') or os.urandom(4).hex()
    if checkpoint is not None:
        # the state (Adam's moments) is the checkpoint's, the settings (betas, weight decay, each group's
        # rate) this run's: loading put the saved ones back, and a changed --beta1 or --embedding_lr,
        # noted as 'now ...', was silently not used
        settings = [{k: v for k, v in group.items() if k != 'params'} for group in optimizer.param_groups]
        set_optimizer_state_dict(model, optimizer, checkpoint['optimizer'], options=StateDictOptions(full_state_dict=True))
        for group, ours in zip(optimizer.param_groups, settings):
            group.update(ours)
        saved, first = checkpoint['data_state'], data['sources'][0]['name']
        if 'positions' not in saved:  # an older train.py: one folder, one position
            saved = dict(positions={first: saved['next_sequence']}, shards={first: saved['shards']})
        for i, source in enumerate(data['sources']):
            if saved['shards'].get(source['name'], source['shards']) != source['shards']:
                raise ValueError(f"the train shards in {source['folder']} changed since {ckpt_path} was saved, so "
                                 f"its data position means nothing; start a new run from its weights with "
                                 f"--init_from={ckpt_path}")
            p.positions[i] = saved['positions'].get(source['name'], 0)
        p.step, p.best, p.initial = checkpoint['iter_num'], checkpoint['best_val_loss'], checkpoint.get('initial_val_loss')
        p.saved_step = p.step
        if len(checkpoint['rng']['cpu']) == run.world:  # as many processes as before: each continues its stream
            torch.set_rng_state(checkpoint['rng']['cpu'][run.rank])
            if 'cuda' in checkpoint['rng'] and run.device_type == 'cuda':
                torch.cuda.set_rng_state(checkpoint['rng']['cuda'][run.rank])
    p.start_step = p.step
    return p


# -----------------------------------------------------------------------------------------------
# the log and the loss plot


def open_log(config, step, paths, run, run_id=None):
    """The log so far and a function that appends a record to it. log.jsonl and loss.png always
    agree with the ckpt.pt beside them: a resume drops its lines from after the checkpoint's step (a
    crash may have left some), and a new run beside another run's ckpt.pt logs to
    log.jsonl.pending-RUN_ID and plots to loss.pending-RUN_ID.png until its first save replaces
    ckpt.pt (settle_log), so that a kill before then leaves the old run's log and plot whole.
    run_id: this run's (a resume's is its checkpoint's)."""
    os.makedirs(config['out_dir'], exist_ok=True)
    if run.master:  # temp files of saves killed mid-write (each as large as a checkpoint): free them now
        remove_stale_temps(config['out_dir'])
    history = []
    if run.master and config['init_from'] == 'resume':
        settle_log(paths, run_id)  # a save whose log was not renamed yet (killed in between): rename it
        if os.path.exists(paths.log):
            for line in open(paths.log, encoding='utf-8', errors='replace'):
                try:
                    record = json.loads(line)
                except ValueError:  # the last line, cut short by a kill or a full disk
                    continue
                if isinstance(record, dict) and record.get('step', math.inf) <= step:
                    history.append(record)
    elif run.master and os.path.exists(paths.ckpt):
        paths.log, paths.plot = pending_files(paths, run_id)
        run.log(f"note: the first save replaces {paths.ckpt} (--init_from=resume would continue it); "
                f"until then this run logs to {paths.log} and plots to {paths.plot}, and log.jsonl and "
                f"loss.png stay the checkpoint's")
    elif run.master:
        settle_log(paths, None)  # no checkpoint: any pending log is of a run that never saved
    if run.master:
        with atomic_path(paths.log) as tmp:  # a kill now must not lose the history
            with open(tmp, 'w') as f:
                f.writelines(json.dumps(h) + '\n' for h in history)

    def write_log(record):
        history.append(record)
        with open(paths.log, 'a') as f:  # paths.log, not a copy: the first save may rename the log
            f.write(json.dumps(record) + '\n')
    return history, write_log


def pending_files(paths, run_id):
    """The log and plot of a run that has not saved yet. The log's name does not end in .jsonl, so a
    glob of logs (log*.jsonl, *.jsonl) does not take it for a finished one; the plot's ends in .png,
    so it still opens as a picture while the run is watched."""
    folder = os.path.dirname(paths.ckpt)
    return (os.path.join(folder, f'log.jsonl.pending-{run_id}'),
            os.path.join(folder, f'loss.pending-{run_id}.png'))


def settle_log(paths, run_id):
    """ckpt.pt is run run_id's now: its log and plot, if still under their pending names, become
    log.jsonl and loss.png (one rename each: atomic), and those of runs killed before their first save
    are removed. Only names of that form are: a user's log.old.jsonl beside them is left alone."""
    folder = os.path.dirname(paths.ckpt)
    finals = os.path.join(folder, 'log.jsonl'), os.path.join(folder, 'loss.png')
    ours = pending_files(paths, run_id)
    # the last two: an older train.py's pending logs, log.RUN_ID.jsonl (8 hex digits)
    patterns = ['log.jsonl.pending-*', 'loss.pending-*.png', 'log.' + '[0-9a-f]' * 8 + '.jsonl']
    if os.path.exists(ours[0]) and not os.path.exists(ours[1]) and os.path.exists(finals[1]):
        os.remove(finals[1])  # the replaced run's picture: this one drew none (no matplotlib)
    for path in (p for pattern in patterns for p in glob.glob(os.path.join(glob.escape(folder), pattern))):
        if path in ours:
            os.replace(path, finals[ours.index(path)])
        else:
            os.remove(path)
    paths.log, paths.plot = finals


def plot(history, path):
    """Loss and bits per byte against tokens seen (and, for a mixture, the tokens of each source), as a
    PNG beside the log. Without matplotlib there is no picture; no plotting trouble stops a run."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        steps, evals = [h for h in history if 'loss' in h], [h for h in history if 'val_loss' in h]
        sources = sorted({s for h in evals for s in h.get('val_loss_by_source', {})})
        fig, axes = plt.subplots(1, 3 if sources else 2, figsize=(15 if sources else 11, 4.5))

        def line(ax, records, get, label, style):
            points = [(h['tokens'], get(h)) for h in records if get(h) is not None]
            if points:
                ax.plot(*zip(*points), style, label=label, markersize=3)
        line(axes[0], steps, lambda h: h['loss'], 'train', '-')
        for key, ax in (('val_loss', axes[0]), ('val_bpb', axes[1])):
            line(ax, evals, lambda h: h.get(key), 'val', 'o-')
            for s in sources:
                line(ax, evals, lambda h: h.get(f'{key}_by_source', {}).get(s), f'val {s}', '.--')
        for s in sources:
            line(axes[2], steps, lambda h: h.get('source_tokens', {}).get(s), s, '-')
        labels = ['loss (nats per token)', 'val bits per byte', 'tokens read from each source']
        for ax, label in zip(axes, labels):
            ax.set(xlabel='tokens', ylabel=label)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
        fig.suptitle(os.path.dirname(path))
        fig.subplots_adjust(left=0.06, right=0.98, wspace=0.3)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format='png')
        plt.close(fig)
    except ImportError:
        pass
    except Exception as e:
        print(f"warning: could not draw {path}: {e}", file=sys.stderr)


def catch_stop_signals():
    """SIGTERM/SIGINT -> finish the step, save, exit. torchrun and cluster schedulers pass a signal on,
    so it often arrives twice: a repeat is ignored, except Ctrl-C pressed again a few seconds later,
    which stops at once. Returns (the list of signal times, a function restoring the old handlers)."""
    stop_signal = []

    def request_stop(signum, frame):
        if signum == signal.SIGINT and stop_signal and time.time() - stop_signal[0] > 3:
            raise KeyboardInterrupt
        stop_signal.append(time.time())
    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    return stop_signal, lambda: [signal.signal(s, h) for s, h in previous.items()]
