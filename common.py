"""
The plumbing every data stage shares (scrape, clean, dedup, prepare), so that each stage's own file
can be about its one idea.

- Documents are JSON Lines, one object per line, gzip-compressed: {"id": ..., "text": ..., ...}.
- A stage reads a folder (or glob) of shards and writes one output shard per input shard, under the
  same name. Shards are written under a temporary name and renamed when complete, so a crash never
  leaves a half shard that looks whole, and a rerun skips the shards that are done.
- Several machines split the input files with --shard I --num_shards N (or Slurm's array variables);
  --workers N processes share the documents of one machine. The output never depends on N.
- Bad input (a broken line, bad UTF-8, a document without text) is counted by reason, reported with
  its file and line, and skipped: it never stops a long run.
"""

import argparse
import contextlib
import glob
import gzip
import json
import multiprocessing
import os
import sys
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np
from tqdm import tqdm

# -----------------------------------------------------------------------------------------------
# command line


def stage_arguments(description, input_default, output_default):
    """An ArgumentParser with the flags every data stage takes (no --input for scrape.py, which reads
    the web)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if input_default is not None:
        p.add_argument("--input", default=input_default, help="folder or glob of .jsonl(.gz) shards")
    p.add_argument("--output", default=output_default, help="folder for the output shards")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes on this machine")
    # Slurm job arrays set these, so `sbatch --array=0-63` needs no extra flags
    p.add_argument("--shard", type=int, default=int(os.environ.get("SLURM_ARRAY_TASK_ID", 0)),
                   help="which part of the input files this machine handles (0-based)")
    p.add_argument("--num_shards", type=int, default=int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1)),
                   help="how many machines split the input files")
    return p


def fail(message):
    """Stop with a one-line message and no traceback: for mistakes in the command line or setup."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


# -----------------------------------------------------------------------------------------------
# finding and naming shards

SHARD_SUFFIXES = (".jsonl.gz", ".jsonl")


def list_shards(input_path, shard=0, num_shards=1):
    """The input shards this machine handles: every *.jsonl(.gz) under a folder, or matching a glob,
    in sorted order, dealt round-robin over num_shards machines."""
    if not 0 <= shard < num_shards:
        fail(f"--shard={shard} must be in [0, --num_shards={num_shards})")
    if os.path.isdir(input_path):
        paths = [p for p in Path(input_path).iterdir() if p.name.endswith(SHARD_SUFFIXES)]
    else:
        paths = [Path(p) for p in glob.glob(input_path) if p.endswith(SHARD_SUFFIXES)]
    if not paths:
        fail(f"no .jsonl or .jsonl.gz files found at {input_path!r}")
    paths = sorted(paths)
    return paths[shard::num_shards]


def shard_name(path):
    """'part-0001.jsonl' and 'part-0001.jsonl.gz' both become 'part-0001.jsonl.gz' on output."""
    name = Path(path).name
    return name if name.endswith(".gz") else name + ".gz"


# -----------------------------------------------------------------------------------------------
# reading documents

MAX_WARNINGS_PER_FILE = 10  # say which lines were bad, without flooding the terminal


def read_documents(path, stats, warn=True):
    """Yield (line_number, document) for each good document of a .jsonl or .jsonl.gz file.

    Bad lines are counted in `stats` (a Counter) as 'bad_input:<reason>' and skipped, with a warning
    naming the file and line for the first few (warn=False for a second pass over the same file).
    A truncated gzip file keeps what was readable."""
    warned = 0

    def bad(line_number, reason, detail=""):
        nonlocal warned
        stats[f"bad_input:{reason}"] += 1
        if warn and warned < MAX_WARNINGS_PER_FILE:
            print(f"warning: {path}:{line_number}: {reason}{': ' + detail if detail else ''}",
                  file=sys.stderr)
        warned += 1

    opener = gzip.open if str(path).endswith(".gz") else open
    line_number = 0
    try:
        with opener(path, "rb") as f:
            for line_number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue  # blank lines carry nothing: not worth a warning
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad(line_number, "bad_utf8", str(e))
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as e:
                    bad(line_number, "malformed_json", f"{e.msg} at column {e.colno}")
                    continue
                if not isinstance(doc, dict):
                    bad(line_number, "not_an_object", f"expected a JSON object, got {type(doc).__name__}")
                elif "text" not in doc:
                    bad(line_number, "missing_text", "no 'text' key")
                elif not isinstance(doc["text"], str):
                    bad(line_number, "text_not_string", f"'text' is {type(doc['text']).__name__}")
                elif not doc["text"].strip():
                    bad(line_number, "empty_text")
                elif "\x00" in doc["text"]:
                    bad(line_number, "binary_text", "NUL bytes in 'text'")
                else:
                    if "id" not in doc:  # the id is required downstream; derive a stable one
                        doc["id"] = f"{Path(path).name}:{line_number}"
                    yield line_number, doc
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        # a shard cut short (a crashed writer, a partial download): keep what was read, say so
        stats["bad_input:truncated_file"] += 1
        print(f"warning: {path}: unreadable after line {line_number}: {e}", file=sys.stderr)


# -----------------------------------------------------------------------------------------------
# writing atomically


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename, so a power cut cannot leave an empty file
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def jsonl_writer(path):
    """Write documents to a .jsonl.gz shard atomically: `with jsonl_writer(p) as write: write(doc)`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # the final name, mtime=0 and a fixed level in the gzip header: the bytes depend on the documents alone
        with open(tmp, "wb") as raw, gzip.GzipFile(path.name, "wb", 6, raw, mtime=0) as f:
            def write(doc):
                f.write(json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n")
            yield write


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


# -----------------------------------------------------------------------------------------------
# token shards (llm.c / modded-nanogpt format), written by prepare.py and read by train.py

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256  # 1024 bytes


def write_shard(path, tokens):
    """Write tokens (any integer array with values < 65536) as an llm.c shard, atomically."""
    tokens = np.asarray(tokens)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, len(tokens)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(tokens.astype("<u2", copy=False).tobytes())


def load_shard(path):
    """Open a shard as a read-only uint16 memmap, after checking that it is one and is whole."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such shard")
    size = path.stat().st_size
    if size < HEADER_INTS * 4:
        raise ValueError(f"{path}: {size} bytes is shorter than the 1024-byte shard header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != SHARD_MAGIC:
        raise ValueError(f"{path}: magic number {header[0]}, expected {SHARD_MAGIC}: not an llm.c token shard")
    if header[1] != SHARD_VERSION:
        raise ValueError(f"{path}: version {header[1]}, expected {SHARD_VERSION} (uint16 tokens)")
    expected = HEADER_INTS * 4 + 2 * int(header[2])
    if size != expected:
        raise ValueError(f"{path}: header says {header[2]:,} tokens ({expected:,} bytes with header), "
                         f"but the file has {size:,} bytes: truncated or corrupt")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_INTS * 4, shape=(int(header[2]),))


# -----------------------------------------------------------------------------------------------
# running a stage over shards


def parallel_map(fn, items, workers, batch_size=64):
    """Like map(fn, items), in `workers` processes, results in input order.

    Items go out in batches, and at most 2 batches per worker are in flight, so memory stays bounded
    however long `items` is (multiprocessing's own imap would read all of it ahead)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn").Pool(workers) as pool:
        in_flight = deque()
        batch = []
        for item in items:
            batch.append(item)
            if len(batch) == batch_size:
                in_flight.append(pool.apply_async(_map_batch, (fn, batch)))
                batch = []
                if len(in_flight) >= 2 * workers:
                    yield from in_flight.popleft().get()
        if batch:
            in_flight.append(pool.apply_async(_map_batch, (fn, batch)))
        while in_flight:
            yield from in_flight.popleft().get()


def _map_batch(fn, batch):
    return [fn(item) for item in batch]


def progress(desc, unit="doc", total=None):
    """A progress bar with rate and ETA on stderr (tqdm), quiet when output is not a terminal
    except for a line every 30 s, so logs of long runs still show the rate."""
    interactive = sys.stderr.isatty()
    return tqdm(desc=desc, unit=unit, total=total, dynamic_ncols=True, smoothing=0.05,
                mininterval=0.5 if interactive else 30, unit_scale=True)


def run_stage(name, process_shard, inputs, output_dir, args, extra_report=None):
    """Run process_shard(input_path, output_path) -> stats (a dict of numbers: documents in and out,
    bytes, 'bad_input:<reason>' counts, ...) over every input shard whose output is not done yet,
    then write the stage report beside the output.

    A shard is done when its stats file exists: it is written after the shard itself is renamed into
    place, so a crash between the two only costs redoing that shard. The report sums the stats of all
    shards done so far, this run's and earlier runs', so a resumed run reports the whole output."""
    output_dir = Path(output_dir)
    stats_dir = output_dir / ".stats"
    start = time.time()
    done_before = 0
    for path in inputs:
        out_path = output_dir / shard_name(path)
        stats_path = stats_dir / (shard_name(path) + ".json")
        if stats_path.exists() and out_path.exists():
            done_before += 1
            continue
        print(f"{name}: {path} -> {out_path}", file=sys.stderr)
        stats = process_shard(path, out_path)
        write_json(stats_path, stats)
    totals = Counter()
    for path in inputs:
        for key, value in json.loads((stats_dir / (shard_name(path) + ".json")).read_text()).items():
            totals[key] += value
    seconds = time.time() - start
    report = {"stage": name, "input": str(getattr(args, "input", "")), "output": str(output_dir),
              "shards_processed": len(inputs) - done_before, "shards_skipped_done": done_before,
              "seconds": round(seconds, 2), "totals": dict(sorted(totals.items()))}
    report.update(extra_report or {})
    suffix = "" if args.num_shards == 1 else f"_{args.shard:05d}_of_{args.num_shards:05d}"
    report["report"] = str(output_dir / f"report{suffix}.json")
    write_json(report["report"], report)
    return report


def print_summary(name, report, keys):
    """Print the lines of a stage's report a user wants to see at the end of a run."""
    totals = report["totals"]
    print(f"\n{name} done in {report['seconds']:.1f}s "
          f"({report['shards_processed']} shards processed, {report['shards_skipped_done']} already done)")
    for key in keys:
        if key in totals:
            print(f"  {key:>28}: {totals[key]:,}")
    bad = {k[len("bad_input:"):]: v for k, v in totals.items() if k.startswith("bad_input:")}
    if bad:
        print("  bad input skipped: " + ", ".join(f"{k}={v:,}" for k, v in sorted(bad.items())))
    print(f"  report: {report['report']}")
