"""
What makes a kill at any moment safe, for the data stages and train.py alike:

- atomic writes: every file is written under a temporary name and renamed over the real one when
  whole, so a reader sees the old file or the new one, never half of one;
- cleaning up after a kill: the temporary files a killed run left are removed by the next run;
- completeness: a stage's report says "complete": false from before its first output shard until it
  ends, so whoever reads the folder next can tell a finished run from what a killed one left.
"""

import contextlib
import json
import os
import re
import socket
import sys
import time
from pathlib import Path

# -----------------------------------------------------------------------------------------------
# writing atomically
#
# Every file is written to .NAME.tmp-HOST-PID beside NAME and renamed over it when whole, so a kill
# leaves the old file or the new one, never half of one. What a kill does leave is the temporary
# file: the first write into a folder removes those whose process is gone (the host in the name
# keeps machines that share a folder from judging each other's processes).

HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp(?:-(?P<host>.+)-)?(?P<pid>\d+)")  # and the older .NAME.tmpPID
OTHER_HOST_STALE_SECONDS = 24 * 3600  # another machine's temporary file untouched this long is dead too
_writing = set()  # this process's temporary files now open
_swept = set()  # folders this process has cleaned up


def is_stale_temp(path):
    """Whether path is one of our temporary files whose writer is gone."""
    match = TEMP_NAME.fullmatch(path.name)
    if not match or path in _writing or path.is_dir():  # we never write folders under such names
        return False
    host, pid = match["host"], int(match["pid"])
    if host not in (None, HOST):  # another machine's: only it can tell, unless it is long dead
        try:
            return time.time() - path.stat().st_mtime > OTHER_HOST_STALE_SECONDS
        except OSError:
            return False
    if pid == os.getpid():
        return True  # our number but not being written: an earlier process that had our pid
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, and is someone else's
    return False


def remove_stale_temps(folder, recursive=False):
    """Delete the temporary files that killed runs left in folder (and below it, if recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in (folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")):
        if is_stale_temp(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    if removed:
        print(f"note: removed {len(removed)} temporary file(s) left by killed runs in {folder} "
              f"(such as {removed[0].name})", file=sys.stderr)
    return removed


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent not in _swept:
        _swept.add(path.parent)
        remove_stale_temps(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{HOST}-{os.getpid()}")
    _writing.add(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename, so a power cut cannot leave an empty file
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one
    finally:
        _writing.discard(tmp)
        if tmp.exists():
            tmp.unlink()


def json_bytes(obj, **options):
    """obj as UTF-8 JSON. A lone surrogate (the reader repairs them, but a stage could make one) is
    written as its \\udXXXX escape, as json.dumps(ensure_ascii=True) would: still valid JSON, and
    the next stage's reader repairs it, where an encoding error would have stopped this one."""
    return json.dumps(obj, ensure_ascii=False, **options).encode("utf-8", "backslashreplace")


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_bytes(json_bytes(obj, indent=2, sort_keys=True) + b"\n")


# -----------------------------------------------------------------------------------------------
# whether a folder of shards is complete
#
# A stage writes its report twice: with "complete": false before its first output shard, and with
# "complete": true and the list of its shards last. So a folder whose report says false was left by
# a run that was killed (or is still running: the report names its host and pid), and a shard that
# no report lists was left by some other run. The next stage checks this when it lists its input.


def report_path(output_dir, args, name="report"):
    """report.json, or report_IIIII_of_NNNNN.json for machine I of N (name: report_sentences for
    dedup.py --sentences' second report in the same folder)."""
    shard, num_shards = getattr(args, "shard", 0), getattr(args, "num_shards", 1)  # tokenizer.py: one machine
    suffix = "" if num_shards == 1 else f"_{shard:05d}_of_{num_shards:05d}"
    return Path(output_dir) / f"{name}{suffix}.json"


def remove_other_machine_counts(output_dir, args, name="report"):
    """Delete the reports of an earlier run of this stage on another number of machines: its shards
    are all rewritten or listed by this run's reports now, and a report left from it would have the
    next stage warn for ever that runs of two --num_shards are mixed. name: "report_sentences" for
    dedup.py --sentences, whose reports sit beside dedup's own."""
    for path in Path(output_dir).glob(f"{name}*.json"):
        match = re.fullmatch(rf"{name}(?:_\d+_of_(\d+))?\.json", path.name)
        if match and int(match[1] or 1) != args.num_shards:
            path.unlink(missing_ok=True)


def make_output_folder(output_dir):
    """Create the output folder, or stop with one line saying why not: mkdir's traceback
    (FileExistsError, NotADirectoryError, PermissionError) named neither the flag nor the fix."""
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        what = "is a file" if Path(output_dir).is_file() else f"cannot be made ({e.strerror})"
        print(f"error: the output folder {output_dir} {what}: give a folder", file=sys.stderr)
        sys.exit(1)


def make_own_output_folder(output_dir, inputs, stage, default):
    """make_output_folder, after stopping with one line if the folder is another stage's: the input
    folder, or one holding another stage's report (--output=data/dedup by a slip), whose report.json
    this stage would replace, so that the next reader would lose what it says."""
    out, what = Path(output_dir), None
    for path in sorted(out.glob("report*.json")):
        report = read_json(path)
        if what is None and isinstance(report, dict) and report.get("stage") not in (None, stage):
            what = f"holds {path.name} of the {report['stage']} stage, which {stage}.py would overwrite"
    if what is None and any(Path(path).parent.resolve() == out.resolve() for path in inputs):
        what = "is the input folder"
    if what:
        print(f"error: --output={out} {what}: give a folder of its own (default {default})", file=sys.stderr)
        sys.exit(1)
    make_output_folder(out)


def mark_in_progress(name, output_dir, args, report="report", **extra):
    """Write the report a stage starts with: until it is rewritten at the end, anyone reading the
    folder knows the run has not finished, and a killed run is recognisable."""
    make_output_folder(output_dir)
    path = report_path(output_dir, args, report)
    report = {"stage": name, "complete": False, "input": str(getattr(args, "input", "")),
              "output": str(output_dir), "host": HOST, "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "shard": getattr(args, "shard", 0),
              "num_shards": getattr(args, "num_shards", 1), "shards": [], **extra}
    write_json(path, report)
    return report


_input_checks = {}  # input path -> (what was checked, the answer): a stage that lists its input twice is told once


def version(path):
    """What changes when a file is rewritten (even within one tick of the clock)."""
    try:
        stat = path.stat()
    except OSError:
        return str(path), None
    return str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino


def check_input(input_path, paths):
    """Whether the run that wrote these input shards finished, from the reports beside them.

    Returns {"input_complete": True, False or None, "input_problems": [...]}: False comes with a
    warning naming what is missing or stale; None (no report of ours: shards from another tool)
    with a one-line note. The stage goes on either way: every shard there is whole (written
    atomically), and using a partial input can be what the user wants (cleaning a crawl that is
    still running); its own report records input_complete, so the gap is never silent."""
    folders = sorted({Path(p).parent for p in paths})
    # report_sentences.json: dedup.py --sentences, run again over dedup's own output
    names = ("report.json", "report_sentences.json", "report_*_of_*.json")
    reports_of = {folder: [r for name in names for r in sorted(folder.glob(name))] for folder in folders}
    checked = (sorted(map(str, paths)), [version(r) for f in folders for r in reports_of[f]])
    if str(input_path) in _input_checks and _input_checks[str(input_path)][0] == checked:
        return _input_checks[str(input_path)][1]
    problems, unknown = [], False
    for folder in folders:
        names = {Path(p).name for p in paths if Path(p).parent == folder}
        reports = reports_of[folder]
        if not reports:
            print(f"note: {folder} has no report.json of ours (shards from another tool?): "
                  f"not checked for completeness", file=sys.stderr)
            unknown = True
            continue
        listed, machines = set(), {}
        for path in reports:
            try:
                report = json.loads(path.read_text())
                shards = report.get("shards")
                listed |= {s["name"] if isinstance(s, dict) else s for s in shards or ()}
            except (OSError, ValueError, AttributeError, TypeError, KeyError) as e:
                problems.append(f"{path} is unreadable ({type(e).__name__}: {e})")
                continue
            if "complete" not in report or shards is None:
                print(f"note: {path} does not say whether its run finished (an older version?): "
                      f"not checked for completeness", file=sys.stderr)
                unknown, listed = True, None
                break
            if not report["complete"]:
                problems.append(f"{path}: {report.get('stage', 'the stage')} started {report.get('started', '?')} "
                                f"(pid {report.get('pid', '?')} on {report.get('host', '?')}) has not finished: "
                                f"killed, or still running")
            # machines of dedup's (or any stage's) run, and of a --sentences pass over its output
            if match := re.fullmatch(r"report(_sentences)?_(\d+)_of_(\d+)\.json", path.name):
                machines.setdefault((match[1] or "", int(match[3])), set()).add(int(match[2]))
        if listed is None:
            continue
        for (kind, count), seen in sorted(machines.items()):
            if missing := sorted(set(range(count)) - seen):
                problems.append(f"{folder}: no report{kind} from machine(s) {missing[:5]} of {count} "
                                f"(--num_shards): not run, or killed before starting")
        for kind in ("", "_sentences"):
            if sum(k == kind for k, _ in machines) + (folder / f"report{kind}.json").exists() > 1:
                problems.append(f"{folder}: report{kind} files of runs with different --num_shards: "
                                f"shards of both are mixed")
        # a shard the report lists but the folder lacks (deleted, or a report rewritten after a kill
        # with a shard given up on): the run's output is not all there, whatever `complete` says
        if gone := sorted(name for name in listed if not (folder / name).exists()):
            problems.append(f"{folder}: {len(gone)} shard(s) its report lists are missing: "
                            f"{', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''}")
        if stale := sorted(names - listed):
            problems.append(f"{folder}: {len(stale)} shard(s) in no report, left by another run: "
                            f"{', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}")
    for problem in problems:
        print(f"warning: input not complete: {problem}", file=sys.stderr)
    if problems:
        print("warning: going on with the whole shards that are there; rerun the stage that wrote the input "
              "to complete it, then this one", file=sys.stderr)
    answer = {"input_complete": False if problems else None if unknown else True, "input_problems": problems}
    _input_checks[str(input_path)] = checked, answer
    return answer


def last_input_check(input_path):
    """check_input's latest answer for this input ({} if it was never checked): for the report."""
    return _input_checks.get(str(input_path), (None, {}))[1]


# -----------------------------------------------------------------------------------------------
# which shards a rerun skips
#
# run_stage writes OUTPUT/.stats/SHARD.json after the shard itself is renamed into place: the
# shard's stats, the settings it was made under (a dict of what the output depends on) and the
# identity of the input file it was made from. A rerun skips a shard only if both still match, so
# a crash between the two writes only costs redoing that shard, and a rerun with another threshold
# or a changed input redoes the shards it changes.


def file_identity(path):
    """[size, modification time] of an input file, to tell a rewritten input from the one a shard
    was made from; None for an input that is not a local file (a WARC over HTTP)."""
    with contextlib.suppress(OSError):
        stat = os.stat(path)
        return [stat.st_size, stat.st_mtime_ns]
    return None


def tree_identity(path):
    """file_identity of a file; of a folder (clean.py --url_lists, a Hugging Face model), that of
    each file below it, by name: a folder's own modification time changes when a name is added or
    removed, not when a file in it is edited."""
    path = Path(path)
    if not path.is_dir():
        return file_identity(path)
    return [[str(p.relative_to(path)), file_identity(p)] for p in sorted(path.rglob("*")) if p.is_file()]


def read_json(path):
    with contextlib.suppress(OSError, ValueError):
        return json.loads(Path(path).read_text())
    return None


def comparable_settings(settings):
    """settings as they read back from the stats file (sets sorted, tuples as lists), so that the
    same settings compare equal."""
    return json.loads(json_bytes(settings or {}, default=sorted))


def done_shard_stats(out_path, stats_path, settings, source):
    """The stats of a shard made from the same input under the same settings (a rerun skips it), or
    None when it must be made (again): missing, made from another input, or under other settings."""
    done = read_json(stats_path) if Path(out_path).exists() else None
    # a stats file of before settings were recorded is plain stats: trusted, as it always was
    same = done and done.get("settings", settings) == settings
    if same and done.get("source", source) == source:
        return done["stats"] if "settings" in done else done
    return None


def record_shard_done(stats_path, settings, source, stats):
    """Written once the shard is in place: from now on a rerun with these settings skips it."""
    write_json(stats_path, {"settings": settings, "source": source, "stats": stats})
