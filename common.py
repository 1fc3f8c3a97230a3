"""
The plumbing every data stage shares (scrape, clean, dedup, prepare), so that each stage's own file
can be about its one idea.

- Documents are JSON Lines, one object per line, gzip-compressed: {"id": ..., "text": ..., ...}.
- A stage reads a folder (or glob) of shards and writes one output shard per input shard, under the
  same name. Shards are written under a temporary name and renamed when complete, so a crash never
  leaves a half shard that looks whole, and a rerun skips the shards that are done and removes the
  temporary files a killed run left.
- The stage's report says "complete": false from before its first shard until it ends, so the next
  stage (and train.py) can tell a finished folder from what a killed run left (crashsafe.py: atomic
  writes, cleanup after killed runs, completeness).
- Several machines split the input files with --shard I --num_shards N (or Slurm's array variables);
  --workers N processes share the documents of one machine. The output never depends on N.
- Bad input (a broken line, bad UTF-8, a document without text, JSON nested too deep) is counted by
  reason, reported with its file and line, and set aside in OUTPUT/bad_input/: it never stops a long
  run, and nothing vanishes without a trace.
"""

import argparse
import base64
import contextlib
import glob
import gzip
import json
import math
import multiprocessing
import os
import re
import sys
import time
import zlib
from collections import Counter, deque
from pathlib import Path

import numpy as np
from tqdm import tqdm

# atomic writes, cleaning up after killed runs, completeness reports: their own file; the stages
# and train.py use them from here too (common.atomic_path, common.write_json, ...)
from crashsafe import (HOST, atomic_path, check_input, comparable_settings, done_shard_stats,  # noqa: F401
                       file_identity, json_bytes, last_input_check, mark_in_progress, read_json,
                       record_shard_done, remove_other_machine_counts, remove_stale_temps, report_path,
                       tree_identity, write_json)

# -----------------------------------------------------------------------------------------------
# command line


def stage_arguments(description, input_default, output_default, workers="processes on this machine"):
    """An ArgumentParser with the flags every data stage takes (no --input for scrape.py, which reads
    the web)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if input_default is not None:
        p.add_argument("--input", default=input_default, help="folder or glob of .jsonl(.gz) shards")
    p.add_argument("--output", default=output_default, help="folder for the output shards")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help=workers)
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
    elif os.path.isfile(input_path):  # as written: glob reads 'crawl [2024]/a.jsonl.gz' as a pattern
        paths = [Path(input_path)] if input_path.endswith(SHARD_SUFFIXES) else []
    else:
        paths = [Path(p) for p in glob.glob(input_path) if p.endswith(SHARD_SUFFIXES)]
    if not paths:
        fail(f"no .jsonl or .jsonl.gz files found at {input_path!r}")
    paths = sorted(paths)
    by_output = {}
    for path in paths:  # a.jsonl and a.jsonl.gz, or x/a.jsonl.gz and y/a.jsonl.gz: one would be lost
        if (other := by_output.setdefault(shard_name(path), path)) != path:
            fail(f"{other} and {path} would both be written as {shard_name(path)}: rename one")
    check_input(input_path, paths)
    return paths[shard::num_shards]


def shard_name(path):
    """'part-0001.jsonl' and 'part-0001.jsonl.gz' both become 'part-0001.jsonl.gz' on output."""
    name = Path(path).name
    return name if name.endswith(".gz") else name + ".gz"


# -----------------------------------------------------------------------------------------------
# reading documents
#
# A line of input is taken as a document only if it is a JSON object with a non-empty string 'text'
# that every later step can handle: UTF-8 all the way through, numbers Python can hold, nesting
# shallow enough for pickle (the workers) and json.dumps. Anything else is set aside, line by line,
# in OUTPUT/bad_input/<shard> (file, line number, reason, and the line itself), so a long run never
# dies on one record and nothing is lost without a trace.

MAX_WARNINGS_PER_FILE = 10  # say which lines were bad, without flooding the terminal
MAX_JSON_DEPTH = 100  # no web document nests deeper; pickle fails near 500 and json near 1000
BOM = b"\xef\xbb\xbf"
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins valid pairs: what is left is lone
# what a file named .jsonl.gz that is not gzip usually is, by its first bytes
NOT_JSONL = {b"\x28\xb5\x2f\xfd": "zstd-compressed", b"BZh": "bzip2-compressed", b"\xfd7zXZ\x00": "xz-compressed",
             b"PK\x03\x04": "a zip archive", b"\xff\xfe": "UTF-16 text", b"\xfe\xff": "UTF-16 text"}

# Files being read now, and where their bad lines go: run_stage sets it for the shard it processes,
# so every stage sets its bad lines aside without passing the path down.
SET_ASIDE = {}


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text):
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:30]} is too large for a float")
    return value


# NaN, Infinity and 1e999 would be written back as non-standard JSON that other tools refuse
JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def nesting_depth(value):
    """How many containers deep a parsed JSON value goes (a flat document is 1), without recursion."""
    depth, level = 0, [value]
    while containers := [v for v in level if isinstance(v, (dict, list))]:
        depth += 1
        level = [child for v in containers for child in (v.values() if isinstance(v, dict) else v)]
    return depth


def has_lone_surrogate(value):
    """Whether a string anywhere in a parsed JSON value, keys included, holds a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # the fastest exact test: UTF-8 has no encoding for a lone surrogate
            return False
        except UnicodeEncodeError:
            return True
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    return False


def replace_lone_surrogates(value):
    """value with every lone surrogate, in keys and values at any depth, replaced by U+FFFD."""
    if isinstance(value, str):
        return LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [replace_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {replace_lone_surrogates(k): replace_lone_surrogates(v) for k, v in value.items()}
    return value


def printable(path):
    """A path as text that can be written as UTF-8 (a file name may hold bytes that are not)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def bad_input_path(out_path):
    """Where the bad lines of the input of output shard out_path are set aside."""
    return Path(out_path).parent / "bad_input" / shard_name(out_path)


MISNAMED = {"repaired:plain_text_named_gz": "named .gz but plain text: read as plain JSON Lines",
            "repaired:gzip_not_named_gz": "gzip-compressed though not named .gz: read as gzip"}


def open_lines(f, path):
    """The lines of an open file, gzip or plain as its first bytes say, whatever its name, and a
    'repaired:' key (MISNAMED) when the name says otherwise; ValueError for a file that is not JSON
    Lines. The content decides, as for `zcat -f`: refusing a misnamed file would drop every document
    in it over a naming slip, and reading it as what its name says loses them all."""
    head = f.peek(64)[:64]
    named_gz = str(path).endswith(".gz")
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=f), None if named_gz else "repaired:gzip_not_named_gz"
    for magic, what in NOT_JSONL.items():
        if head.startswith(magic):
            raise ValueError(f"the file is {what}, not JSON Lines (first bytes {head[:8]!r})")
    if named_gz and head and not head.removeprefix(BOM).lstrip().startswith(b"{"):
        raise ValueError(f"named .gz but neither gzip nor JSON Lines (first bytes {head[:16]!r})")
    return f, "repaired:plain_text_named_gz" if named_gz and head else None


def read_documents(path, stats, warn=True, set_aside=None):
    """Yield (line_number, document) for each good document of a .jsonl or .jsonl.gz file.

    Bad lines are counted in `stats` (a Counter) as 'bad_input:<reason>', warned about with file
    and line for the first few (warn=False for a second pass over the same file), and, when
    set_aside (or SET_ASIDE[path]) names a file, written there, one JSON line each: the file, line,
    reason, detail and the line itself ('raw', or 'raw_base64' when it is not UTF-8). What is kept
    with a change is counted as 'repaired:<what>': a lone surrogate becomes U+FFFD; a file is read as
    gzip or plain text by its first bytes, not its name. A truncated or corrupt gzip file keeps what
    was readable before the damage."""
    set_aside = set_aside or SET_ASIDE.get(str(path))
    warned = 0
    stack = contextlib.ExitStack()
    write_aside = None

    def warning(line_number, what, detail=""):
        nonlocal warned
        if warn and warned < MAX_WARNINGS_PER_FILE:
            where = f"{path}:{line_number}" if line_number else f"{path}"
            print(f"warning: {where}: {what}{': ' + detail if detail else ''}", file=sys.stderr)
        warned += 1

    def bad(line_number, reason, detail="", raw=None):
        nonlocal write_aside
        stats[f"bad_input:{reason}"] += 1
        warning(line_number, reason, detail)
        if set_aside is None:
            return
        if write_aside is None:  # opened at the first bad line, so a clean file leaves no empty file
            write_aside = stack.enter_context(jsonl_writer(set_aside))
        record = {"file": printable(path), "line": line_number, "reason": reason, "detail": detail}
        if raw is not None:
            raw = raw.rstrip(b"\r\n")
            try:
                record["raw"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                record["raw_base64"] = base64.b64encode(raw).decode("ascii")
        write_aside(record)

    def parse(line_number, raw):
        """The document on one line, or None (and the line set aside)."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return bad(line_number, "bad_utf8", str(e), raw)
        try:
            doc = JSON.decode(line)
        except json.JSONDecodeError as e:
            return bad(line_number, "malformed_json", f"{e.msg} (column {e.colno})", raw)
        except RecursionError:
            return bad(line_number, "too_deep", f"JSON nested more than {MAX_JSON_DEPTH} deep", raw)
        except ValueError as e:  # a 5,000-digit integer, NaN, 1e999
            detail = str(e).split(";")[0]  # not Python's advice to raise its limit: that is for programmers
            return bad(line_number, "bad_number", detail[:200], raw)
        # cheap tests first: a document nests only if it holds a list or an object, and a lone
        # surrogate can only come from a \ud escape (strict UTF-8 decoding never makes one)
        if (not isinstance(doc, dict) or any(isinstance(v, (dict, list)) for v in doc.values())) \
                and nesting_depth(doc) > MAX_JSON_DEPTH:
            return bad(line_number, "too_deep", f"JSON nested more than {MAX_JSON_DEPTH} deep", raw)
        if (b"\\ud" in raw or b"\\uD" in raw) and has_lone_surrogate(doc):
            # half of a UTF-16 pair (a string cut by a tool that counts UTF-16 units): valid JSON,
            # but no UTF-8 encoder takes it, so one bad character would crash every later stage
            doc = replace_lone_surrogates(doc)
            stats["repaired:lone_surrogate"] += 1
            warning(line_number, "lone surrogate", "replaced by U+FFFD, document kept")
        if not isinstance(doc, dict):
            return bad(line_number, "not_an_object", f"expected a JSON object, got {type(doc).__name__}", raw)
        if "text" not in doc:
            return bad(line_number, "missing_text", "no 'text' key", raw)
        text = doc["text"]
        if not isinstance(text, str):
            return bad(line_number, "text_not_string", f"'text' is {type(text).__name__}", raw)
        if not text.strip():
            return bad(line_number, "empty_text", "", raw)
        if "\x00" in text:
            return bad(line_number, "binary_text", "NUL bytes in 'text'", raw)
        if "id" not in doc:  # the id is required downstream; derive a stable one
            doc["id"] = f"{printable(Path(path).name)}:{line_number}"
        return doc

    with stack:
        line_number, lines = 0, ()
        try:
            f = stack.enter_context(open(path, "rb"))
            lines, note = open_lines(f, path)
        except OSError as e:
            bad(0, "unreadable_file", str(e))
        except ValueError as e:
            bad(0, "not_jsonl_file", str(e))
        else:
            if note:
                stats[note] += 1
                print(f"warning: {path}: {MISNAMED[note]}", file=sys.stderr)
        try:
            for line_number, raw in enumerate(lines, start=1):
                if raw.startswith(BOM):  # Windows tools start a file with one; `cat` puts it mid-stream
                    raw = raw[len(BOM):]
                if raw.strip() and (doc := parse(line_number, raw)) is not None:
                    yield line_number, doc
        except EOFError as e:  # a shard cut short (a crashed writer, a partial download)
            bad(line_number + 1, "truncated_file", f"unreadable after line {line_number}: {e}")
        except (gzip.BadGzipFile, zlib.error) as e:  # damaged inside: the lines before the damage stay
            bad(line_number + 1, "corrupt_gzip", f"unreadable after line {line_number}: {e}")
        except OSError as e:
            bad(line_number + 1, "unreadable_file", f"after line {line_number}: {e}")
        if warn and warned > MAX_WARNINGS_PER_FILE:
            print(f"warning: {path}: {warned - MAX_WARNINGS_PER_FILE:,} more warnings not shown"
                  + (f"; every bad line is in {set_aside}" if set_aside else ""), file=sys.stderr)
    if set_aside is not None and write_aside is None:
        Path(set_aside).unlink(missing_ok=True)  # an earlier run's, from input that has changed since


# -----------------------------------------------------------------------------------------------
# writing document shards


@contextlib.contextmanager
def jsonl_writer(path):
    """Write documents to a .jsonl.gz shard atomically: `with jsonl_writer(p) as write: write(doc)`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # the final name, mtime=0 and a fixed level in the gzip header: the bytes depend on the documents alone
        with open(tmp, "wb") as raw, gzip.GzipFile(path.name, "wb", 6, raw, mtime=0) as f:
            def write(doc):
                f.write(json_bytes(doc) + b"\n")
            yield write


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


def run_stage(name, process_shard, inputs, output_dir, args, extra_report=None, settings=None,
              files=None):
    """Run process_shard(input_path, output_path) -> stats (a dict of numbers: documents in and out,
    bytes, 'bad_input:<reason>' counts, ...) over every input shard whose output is not done yet,
    then write the stage report beside the output.

    The report says "complete": false from before the first shard until the end, when it is
    rewritten with "complete": true and the shards made. A shard is done when its stats file records
    the same input file (size and modification time) and the same `settings` (a dict of what the
    output depends on; `files` maps an input that is not a path, such as scrape.py's shard names, to
    its file): crashsafe.done_shard_stats, so a rerun with another threshold or a changed input
    redoes the shards it changes, and a crash only costs the shard it cut. The report sums the stats of
    all shards done so far, this run's and earlier runs', so a resumed run reports the whole output.
    The bad lines of each input shard are set aside in OUTPUT/bad_input/<shard>, and a killed run's
    temporary files are removed first."""
    output_dir = Path(output_dir)
    stats_dir = output_dir / ".stats"
    start = time.time()
    for path in inputs:  # clean.py --input=D --output=D would replace the raw pages by its output
        out_path = output_dir / shard_name(path)
        if os.path.exists(path) and Path(path).resolve() == out_path.resolve():
            fail(f"{name}: the output {output_dir} is the input folder: {path} would be overwritten; "
                 f"give another --output")
    mark_in_progress(name, output_dir, args)
    remove_stale_temps(output_dir, recursive=True)
    settings = comparable_settings(settings)
    done_before, all_stats = 0, []
    for path in inputs:
        out_path = output_dir / shard_name(path)
        stats_path = stats_dir / (shard_name(path) + ".json")
        source_file = (files or {}).get(path, path)
        source = file_identity(source_file)
        if (done := done_shard_stats(out_path, stats_path, settings, source)) is not None:
            done_before += 1
            all_stats.append(done)
            continue
        print(f"{name}: {source_file} -> {out_path}", file=sys.stderr)
        SET_ASIDE[str(path)] = bad_input_path(out_path)
        try:
            stats = process_shard(path, out_path)
        finally:
            del SET_ASIDE[str(path)]
        record_shard_done(stats_path, settings, source, stats)
        all_stats.append(stats)
    totals = Counter()
    for stats in all_stats:
        for key, value in stats.items():
            totals[key] += value
    seconds = time.time() - start
    set_aside = any(key.startswith("bad_input:") for key in totals)
    report = {"stage": name, "complete": True, "input": str(getattr(args, "input", "")), "output": str(output_dir),
              "shards_processed": len(inputs) - done_before, "shards_skipped_done": done_before,
              "seconds": round(seconds, 2), "totals": dict(sorted(totals.items())),
              "shards": [{"name": shard_name(path)} for path in inputs],
              "bad_input": str(output_dir / "bad_input") if set_aside else None,
              **last_input_check(getattr(args, "input", ""))}
    report.update(extra_report or {})
    report["report"] = str(report_path(output_dir, args))
    write_json(report["report"], report)
    remove_other_machine_counts(output_dir, args)  # this run's reports now cover every shard
    return report


def print_summary(name, report, keys):
    """Print the lines of a stage's report a user wants to see at the end of a run."""
    totals = report["totals"]
    print(f"\n{name} done in {report['seconds']:.1f}s "
          f"({report['shards_processed']} shards processed, {report['shards_skipped_done']} already done)")
    for key in keys:
        if key in totals:
            print(f"  {key:>28}: {totals[key]:,}")
    for prefix, what in (("repaired:", "input repaired and kept"), ("bad_input:", "bad input set aside")):
        counts = {k[len(prefix):]: v for k, v in totals.items() if k.startswith(prefix)}
        if counts:
            print(f"  {what}: " + ", ".join(f"{k}={v:,}" for k, v in sorted(counts.items())))
    if report.get("bad_input"):
        print(f"  bad lines, each with its file, line and reason: {report['bad_input']}/")
    if report.get("input_complete") is False:
        print(f"  warning: the input was not complete: {'; '.join(report['input_problems'])}")
    print(f"  report: {report['report']}")
