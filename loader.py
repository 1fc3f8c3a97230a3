"""
The token data train.py (and eval.py) read: prepare.py's shard folders, checked, and the fixed
orders in which training reads them.

    open_source(folder, block_size)      one folder of val_*.bin / train_*.bin shards, after checking that
                                         prepare.py finished it and that every token id fits the vocabulary
    open_data(data, block_size, ...)     the sources of a run: one folder, or a weighted mixture of several,
                                         optionally in stages
    mixture_sources(seed, step, ...)     THE MIXTURE SAMPLER: which source each sequence of a step comes from
    plan_step / read_windows             a step's sequences: (source, position in that source's order) -> tokens
    val_windows(shards, block_size, n)   the fixed val set: the same windows whatever the batch size and the
                                         number of processes, so train.py's and eval.py's val losses agree
                                         (n = val_window_count(ckpt['config']) for a run's own val set)

A source is read as non-overlapping windows of block_size + 1 tokens (inputs and, shifted by one, the
targets). Each epoch visits its shards in a seeded order and each shard's windows in a seeded order,
so "sequence i of source s" means the same tokens in every process, on every run with the same seed.
Which source feeds each sequence of optimizer step t is a function of (seed, t, mixture) alone; how
far each source has been read is a count per source, saved in the checkpoint. So a resumed run, or a
run on any number of GPUs, sees the same tokens at the same step.
Errors are ValueError with a one-line message naming the file and what to do.
"""

import functools
import glob
import json
import math
import os
import re
import sys
import time

import numpy as np

from common import load_shard
from tokenizer import same_tokenizer

# -----------------------------------------------------------------------------------------------
# one folder of shards


def read_report(folder):
    """prepare.py's report for a token folder, merged over machines when it ran as --num_shards=N
    (report_IIIII_of_NNNNN.json each); None when the folder has no report of ours (llm.c's shards)."""
    paths = sorted(glob.glob(os.path.join(folder, 'report*.json')))
    if not paths:
        return None
    reports = []
    for path in paths:
        try:
            with open(path, encoding='utf-8') as f:
                report = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable prepare.py report ({e}): rerun prepare.py") from None
        if not isinstance(report, dict):
            raise ValueError(f"{path}: not a prepare.py report (a JSON {type(report).__name__}): rerun prepare.py")
        reports.append(report)
    parts = [re.fullmatch(r'report_(\d+)_of_(\d+)\.json', os.path.basename(p)) for p in paths]
    if any(parts):
        wanted = int(next(p for p in parts if p).group(2))
        if len(paths) != wanted or not all(parts):
            raise ValueError(f"{folder}: {len(paths)} report files for a prepare.py run on {wanted} machines: "
                             f"the folder is incomplete or mixes runs; rerun prepare.py")
    # machines run one by one (a rerun of one, with a retrained tokenizer) can write other ids
    for path, report in zip(paths, reports):
        if not same_tokenizer(report.get('tokenizer', 'gpt2'), reports[0].get('tokenizer', 'gpt2')):
            raise ValueError(f"{path} and {paths[0]} name different tokenizers: their ids do not "
                             f"mean the same tokens; rerun prepare.py on every machine with one "
                             f"--tokenizer")
    merged = dict(reports[0])
    merged['complete'] = all(r.get('complete', True) for r in reports) if any('complete' in r for r in reports) else None
    if all('shards' in r for r in reports):
        merged['shards'] = [s for r in reports for s in r['shards']]
    merged['vocab_size'] = max(r.get('vocab_size', 0) for r in reports) or None
    return merged


def max_tokens(paths, shards, report):
    """Each shard's largest token id: from the report (prepare.py records it), else by reading the shard,
    with progress for a big corpus (a 10B-token folder is 20 GB of reads)."""
    listed = {s['name']: s.get('max_token') for s in (report or {}).get('shards', [])}
    result, start, done = [], time.time(), 0
    total = sum(len(s) for p, s in zip(paths, shards) if listed.get(os.path.basename(p)) is None)
    for path, shard in zip(paths, shards):
        known = listed.get(os.path.basename(path))
        if known is None:
            known = max(int(shard[i:i + (1 << 26)].max()) for i in range(0, len(shard), 1 << 26))
            done += len(shard)
            if total > 1e9:
                print(f"checked token ids of {done:,}/{total:,} tokens ({done / (time.time() - start) / 1e6:,.0f}M/s)",
                      file=sys.stderr, flush=True)
        result.append(int(known))
    return result


def open_source(folder, block_size):
    """A source dict (folder, train and val shards as memmaps, tokenizer, vocab_size, shards: [[name,
    tokens]...] for the resume check, windows: windows per train shard) after every check that can
    fail, so that nothing fails once training has started."""
    if os.path.isfile(folder):  # --data=data/tokens/train_000001.bin
        raise ValueError(f"--data={folder} is a file: give the folder of prepare.py's shards")
    if not os.path.isdir(folder):
        raise ValueError(f"data folder {folder} does not exist: run prepare.py first, or pass --data=FOLDER")
    val_paths = sorted(glob.glob(os.path.join(folder, 'val_*.bin')))
    train_paths = sorted(glob.glob(os.path.join(folder, 'train_*.bin')))
    if not val_paths or not train_paths:
        raise ValueError(f"{folder} needs val_*.bin and train_*.bin shards (found {len(val_paths)} and "
                         f"{len(train_paths)}): run prepare.py --output={folder}")
    report, notes = read_report(folder), []
    if report is None:
        notes.append(f"note: {folder} has no report.json of prepare.py: completeness not checked, gpt2 tokens assumed")
    elif report['complete'] is False:
        raise ValueError(f"{folder}: report.json says prepare.py did not finish (killed?): rerun prepare.py")
    elif report['complete'] is None:
        notes.append(f"note: {folder}/report.json does not say whether prepare.py finished: completeness not checked")
    try:
        val, train = [load_shard(p) for p in val_paths], [load_shard(p) for p in train_paths]
    except ValueError as e:
        raise ValueError(f"corrupt shard: {e}") from None
    if report is not None and 'shards' in report:
        listed = {s['name']: s.get('tokens') for s in report['shards']}
        on_disk = {os.path.basename(p): len(s) for p, s in zip(val_paths + train_paths, val + train)}
        odd = {'missing': sorted(listed.keys() - on_disk.keys()), 'not listed': sorted(on_disk.keys() - listed.keys()),
               'another size': sorted(n for n in listed.keys() & on_disk.keys() if listed[n] not in (None, on_disk[n]))}
        detail = '; '.join(f"{kind}: {', '.join(names[:3])}" for kind, names in odd.items() if names)
        if detail:
            raise ValueError(f"{folder}: the shards on disk are not the ones report.json lists ({detail}): "
                             f"a killed or mixed run; rerun prepare.py")
    # the last train shard of a series ends where the corpus ends, so it can be too short for one
    # window: it then adds none; only a train split with no window at all is refused
    longest = max(range(len(train)), key=lambda i: len(train[i]))
    for path, shard in [*zip(val_paths, val), (train_paths[longest], train[longest])]:
        if len(shard) <= block_size:
            raise ValueError(f"{path}: {len(shard)} tokens, fewer than block_size + 1 = {block_size + 1}")
    highest = max_tokens(val_paths + train_paths, val + train, report)
    vocab_size = (report or {}).get('vocab_size') or 1 + max(highest)
    for path, top in zip(val_paths + train_paths, highest):
        if top >= vocab_size:
            raise ValueError(f"{path}: token id {top:,}, but the tokenizer has {vocab_size:,} tokens: the shard is "
                             f"corrupt or from another tokenizer; rerun prepare.py")
    return dict(folder=folder, val=val, train=train, notes=notes, vocab_size=vocab_size,
                tokenizer=(report or {}).get('tokenizer', 'gpt2'),
                shards=[[os.path.basename(p), len(s)] for p, s in zip(train_paths, train)],
                windows=tuple((len(s) - 1) // block_size for s in train))


# -----------------------------------------------------------------------------------------------
# the sources of a run: one folder, a mixture, or stages of mixtures


def parse_mixture(mixture, sources):
    """{name: (folder, weight)} from 'FOLDER', 'data/web:0.85,data/code:0.15', 'web:0.85,code:0.15'
    (names from the config's `sources` dict of name -> folder) or a dict {name or folder: weight}."""
    given = mixture
    if isinstance(mixture, str):
        items = []
        for item in filter(None, (part.strip() for part in mixture.split(','))):
            name, colon, weight = (part.strip() for part in item.rpartition(':'))  # 'web : 0.5' too
            try:
                items.append((name, float(weight)) if colon else (item, 1.0))
            except ValueError:  # 'FOLDER' alone (a ':' in its name?), weight 1
                if name in sources or os.path.isdir(name):  # 'web:0.8.5' is a typo, not a folder
                    raise ValueError(f"source {name!r}: weight {weight!r}, expected a number >= 0") from None
                items.append((item, 1.0))
        mixture = dict(items)
        if len(mixture) < len(items):  # else the last of its weights wins, silently
            twice = next(k for k in mixture if [n for n, _ in items].count(k) > 1)
            raise ValueError(f"source {twice!r} appears twice in the mixture {given!r}: give it one weight")
    if not isinstance(mixture, dict) or not mixture:
        raise ValueError(f"a mixture is 'FOLDER' or 'NAME:WEIGHT,NAME:WEIGHT,...', got {given!r}")
    result, seen = {}, {}
    for key, weight in mixture.items():
        if key in sources:
            name, folder = key, sources[key]
        elif os.path.isdir(key) or (len(mixture) == 1 and not sources) or os.sep in key:
            name, folder = os.path.basename(os.path.normpath(key)), key
        else:
            raise ValueError(f"unknown source {key!r} in the mixture: not a folder, and the config's sources "
                             f"define {', '.join(map(repr, sources)) or 'none'}")
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"source {key!r}: weight {weight!r}, expected a number >= 0")
        same = seen.setdefault(os.path.realpath(folder), key)
        if same != key:  # 'data/web' and 'data/web/', or a name and its folder: read twice as often
            raise ValueError(f"{same!r} and {key!r} in the mixture are the same folder: give it one weight")
        if name in result and result[name][0] != folder:
            name = folder  # two folders with one basename: call them by their paths
        result[name] = (folder, float(weight))
    total = sum(w for _, w in result.values())
    if not total > 0:
        raise ValueError(f"the weights of the mixture {mixture!r} sum to {total}, expected a positive number")
    return {name: (folder, w / total) for name, (folder, w) in result.items()}


def open_data(data, block_size, batch_tokens, sources=None, stages=None):
    """Every source of the run, opened and checked, and the stages as [(first step, weights per source)].
    `data` is a mixture (see parse_mixture); `stages` a list of (until_tokens, mixture), in order, the
    last one running to the end of training (its until_tokens None)."""
    sources, staged = sources or {}, bool(stages)
    stages = list(stages or []) or [(None, data)]
    mixtures, previous = [], 0
    for i, stage in enumerate(stages):
        if not isinstance(stage, (tuple, list)) or len(stage) != 2:
            raise ValueError(f"stage {i + 1}: expected (until_tokens, mixture), got {stage!r}")
        until, mixture = stage
        last = i == len(stages) - 1
        if not (until is None and last) and not (isinstance(until, (int, float)) and until > previous):
            raise ValueError(f"stage {i + 1}: until_tokens={until!r} must be a number above the previous "
                             f"stage's ({previous:,.0f}; None: the last stage only): stages go in order of "
                             f"tokens seen")
        if last and staged and until is not None:  # else ignored: the last stage ran on past it
            raise ValueError(f"stage {i + 1}: until_tokens={until!r}, expected None: until_tokens is the "
                             f"tokens seen when a stage ends and the next begins, and the last stage runs "
                             f"to the end of training (--max_iters)")
        try:
            mixtures.append(parse_mixture(mixture, sources))
        except ValueError as e:  # which of the stages
            raise ValueError(f"stage {i + 1}: {e}" if staged else str(e)) from None
        previous = until or previous
    folders = {}
    for mixture in mixtures:
        for name, (folder, _) in mixture.items():
            if folders.setdefault(name, folder) != folder:
                raise ValueError(f"two sources are called {name!r} ({folders[name]} and {folder}): name them "
                                 f"with a `sources` dict in a config file")
    opened = {name: dict(open_source(folder, block_size), name=name) for name, folder in folders.items()}
    first = next(iter(opened.values()))
    for source in opened.values():
        if not same_tokenizer(source['tokenizer'], first['tokenizer']):
            raise ValueError(f"{source['folder']} and {first['folder']} hold tokens of different tokenizers: "
                             f"a mixture needs one tokenizer")
    plan, start = [], 0
    for i, mixture in enumerate(mixtures):
        plan.append((start, np.array([mixture.get(name, (None, 0.0))[1] for name in opened])))
        if stages[i][0] is not None:
            start = math.ceil(stages[i][0] / batch_tokens)
            if i + 1 < len(stages) and start <= plan[-1][0]:
                raise ValueError(f"stage {i + 1} is shorter than one step of {batch_tokens:,} tokens")
    return dict(sources=list(opened.values()), stages=plan, tokenizer=first['tokenizer'], block_size=block_size,
                vocab_size=max(s['vocab_size'] for s in opened.values()))


def stage_weights(stages, step):
    return next(weights for start, weights in reversed(stages) if start <= step)


# -----------------------------------------------------------------------------------------------
# the training order


def mixture_sources(seed, step, weights, count):
    """THE MIXTURE SAMPLER: the source of each of the `count` sequences of optimizer step `step`.

    Every source first gets the whole part of its share, floor(count * weight) sequences; the fractional
    parts left over (they add up to a whole number of sequences) are handed out by systematic sampling:
    one random offset u, then the points u, u + 1, u + 2, ... over the fractions laid end to end, so a
    source with fraction f gets one more sequence with probability exactly f. Each source thus gets
    count * weight sequences on average, never more than one off, and the step's sequences are then
    shuffled so that every micro-batch and every process sees a mix. Depends on seed, step and weights
    only: every process computes the same, and a resumed run too."""
    rng = np.random.default_rng([seed, step, 7])  # 7: a stream apart from the window orders'
    expected = count * np.asarray(weights, dtype=np.float64)
    counts = np.floor(expected).astype(np.int64)
    fractions = expected - counts
    extra = int(round(count - counts.sum()))
    points = rng.random() + np.arange(extra)
    chosen = np.searchsorted(np.cumsum(fractions), points, side='right').clip(max=len(counts) - 1)
    counts += np.bincount(chosen, minlength=len(counts))
    return rng.permutation(np.repeat(np.arange(len(counts)), counts))


def plan_step(data, seed, step, per_step, positions):
    """The sequences of optimizer step `step`: (source of each, its position in that source's order),
    and the per-source positions after the step. positions: sequences read so far from each source."""
    sources = mixture_sources(seed, step, stage_weights(data['stages'], step), per_step)
    index, after = np.empty(per_step, dtype=np.int64), np.array(positions, dtype=np.int64)
    for k, s in enumerate(sources):
        index[k] = after[s]
        after[s] += 1
    return sources, index, after


@functools.lru_cache(maxsize=16)
def epoch_layout(seed, epoch, counts):
    """The shards in this epoch's (seeded) order, and where each one's windows end in it."""
    order = np.random.default_rng([seed, epoch]).permutation(len(counts))
    return order, np.cumsum([counts[s] for s in order])


@functools.lru_cache(maxsize=16)
def window_order(seed, epoch, shard, count):
    return np.random.default_rng([seed, epoch, shard]).permutation(count)


def read_windows(data, sources, index, block_size, seed):
    """The windows (block_size + 1 tokens each) at `index` in the orders of `sources`, as one array."""
    rows = []
    for s, g in zip(sources, index):
        source = data['sources'][s]
        counts = source['windows']
        epoch, i = divmod(int(g), sum(counts))
        order, ends = epoch_layout(seed, epoch, counts)
        k = int(np.searchsorted(ends, i, side='right'))
        window = window_order(seed, epoch, int(order[k]), counts[order[k]])[i - (ends[k - 1] if k else 0)]
        rows.append(source['train'][order[k]][window * block_size:(window + 1) * block_size + 1])
    return np.stack(rows)


# -----------------------------------------------------------------------------------------------
# the val set


def val_window_count(config):
    """How many val windows train.py evaluates per source, from a run's settings (ckpt['config'])."""
    return config['eval_iters'] * config['batch_tokens'] // config['block_size']


def val_windows(shards, block_size, count):
    """The fixed val set: `count` windows of block_size + 1 tokens, as a (count, block_size + 1) uint16
    array, spread evenly over the val shards (`shards`: token arrays, e.g. open_source(...)['val']).
    The val split is cut into non-overlapping windows as training cuts its shards, and `count` of them
    are taken at even spacing; all of them when there are fewer. Nothing here depends on the batch size
    or the number of processes, so every eval of a run, every run, and eval.py measure the same tokens.
    train.py takes count = val_window_count(config) per source."""
    per_shard = np.array([(len(s) - 1) // block_size for s in shards])
    ends = np.cumsum(per_shard)
    picks = np.unique(np.linspace(0, ends[-1] - 1, min(count, ends[-1])).round().astype(np.int64))
    rows = []
    for w in picks:
        shard = int(np.searchsorted(ends, w, side='right'))
        offset = (w - (ends[shard - 1] if shard else 0)) * block_size
        rows.append(shards[shard][offset:offset + block_size + 1])
    return np.stack(rows).astype(np.uint16)
