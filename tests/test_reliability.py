"""What a long run survives: hostile input lines (set aside or repaired, never a crash), files that
are not what their name says, and kill -9 (temporary files cleaned up by the rerun, and a folder
that says it is incomplete until the run that writes it has finished). The kills are real: a stage
reads a named pipe that the test holds open, so the kill lands mid-run at a known point."""

import base64
import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

import common

ROOT = Path(__file__).resolve().parent.parent

GOOD = [{"id": f"good{i}", "text": text} for i, text in enumerate([
    "The first good document, with a few words of ordinary text in it.",
    "Another one entirely, about rivers and the mills that stood along them.",
    "A third page describes how bread is baked in a wood-fired oven.",
    "The last of them lists the trains that leave the station each morning."])]
# (line as it is in the file, reason it is set aside, or None if the document is kept)
HOSTILE = [
    (json.dumps(GOOD[0]).encode(), None),
    (b'{"id": "s1", "text": "\\ud83d hello"}', None),                     # lone surrogate in the text
    (b'{"id": "s2", "text": "fine", "\\udc00key": ["\\uDFFF"]}', None),   # ... in a key, and uppercase
    (b'{"id": "pair", "text": "emoji \\ud83d\\ude00 ok"}', None),         # a valid pair: left alone
    (b'{"id": "deep", "text": "x", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "too_deep"),
    (b'{"id": "deep500", "text": "x", "extra": ' + b"[" * 500 + b"]" * 500 + b"}", "too_deep"),  # pickle's limit
    (b'{"id": "big", "text": "x", "extra": ' + b"7" * 5000 + b"}", "bad_number"),
    (b'{"id": "nan", "text": "x", "score": NaN}', "bad_number"),
    (b'{"id": "inf", "text": "x", "score": 1e999}', "bad_number"),
    (b'{"id": "latin1", "text": "caf\xe9"}', "bad_utf8"),
    (b'{"id": "cut", "text": "unterminated', "malformed_json"),
    (json.dumps(GOOD[1]).encode(), None),
]


def write_lines(path, lines, compress=True, bom=False):
    data = (common.BOM if bom else b"") + b"".join(line + b"\n" for line in lines)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(gzip.compress(data, mtime=0) if compress else data)


def read_jsonl(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_hostile_lines_are_set_aside_or_repaired_and_the_rest_survives_every_later_step(tmp_path):
    write_lines(tmp_path / "in.jsonl.gz", [line for line, _ in HOSTILE], bom=True)
    stats = Counter()
    docs = dict(common.read_documents(tmp_path / "in.jsonl.gz", stats, set_aside=tmp_path / "aside.jsonl.gz"))
    kept = [i + 1 for i, (_, reason) in enumerate(HOSTILE) if reason is None]
    assert sorted(docs) == kept  # the first line, behind its byte-order mark, too
    assert docs[2]["text"] == "\ufffd hello" and docs[3] == {"id": "s2", "text": "fine", "\ufffdkey": ["\ufffd"]}
    assert docs[4]["text"] == "emoji \U0001f600 ok"
    assert stats["repaired:lone_surrogate"] == 2
    for doc in docs.values():  # what a stage does next: encode, pickle to a worker, write
        doc["text"].encode("utf-8")
        pickle.loads(pickle.dumps(doc))
        json.loads(common.json_bytes(doc).decode("utf-8"))
    # every line not kept is in the set-aside file: where it was, why, and the line itself
    aside = read_jsonl(tmp_path / "aside.jsonl.gz")
    expected = [(i + 1, reason) for i, (_, reason) in enumerate(HOSTILE) if reason]
    assert [(r["line"], r["reason"]) for r in aside] == expected
    assert all(r["file"] == str(tmp_path / "in.jsonl.gz") for r in aside)
    assert {k: v for k, v in stats.items() if k.startswith("bad_input:")} == Counter(f"bad_input:{r}" for _, r in expected)
    for record in aside:
        raw = record["raw"].encode() if "raw" in record else base64.b64decode(record["raw_base64"])
        assert raw == HOSTILE[record["line"] - 1][0]
    # read again with no bad lines: the earlier set-aside file must not stay behind
    write_lines(tmp_path / "in.jsonl.gz", [json.dumps(d).encode() for d in GOOD])
    assert len(list(common.read_documents(tmp_path / "in.jsonl.gz", Counter(), set_aside=tmp_path / "aside.jsonl.gz"))) == 4
    assert not (tmp_path / "aside.jsonl.gz").exists()


def test_a_file_is_read_by_what_it_is_not_by_its_name(tmp_path, capsys):
    lines = [json.dumps(d).encode() for d in GOOD]
    write_lines(tmp_path / "plain.jsonl.gz", lines, compress=False)
    write_lines(tmp_path / "zipped.jsonl", lines, compress=True)
    (tmp_path / "zstd.jsonl.gz").write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(100))
    (tmp_path / "html.jsonl.gz").write_bytes(b"<!DOCTYPE html><html>Not Found</html>\n")
    # a good gzip member, then one whose deflate block type is the reserved one: zlib.error
    damaged = bytearray(gzip.compress(b'{"id": "lost", "text": "after the damage"}\n', mtime=0))
    damaged[10] |= 0b110
    (tmp_path / "corrupt.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines[:2]) + b"\n", mtime=0) + damaged)
    read = {}
    for name in ["plain.jsonl.gz", "zipped.jsonl", "zstd.jsonl.gz", "html.jsonl.gz", "corrupt.jsonl.gz"]:
        stats = Counter()
        docs = [doc["id"] for _, doc in common.read_documents(tmp_path / name, stats, set_aside=tmp_path / "aside" / name)]
        read[name] = docs, dict(stats)
    err = capsys.readouterr().err
    assert read["plain.jsonl.gz"] == (["good0", "good1", "good2", "good3"], {"repaired:plain_text_named_gz": 1})
    assert "plain.jsonl.gz: named .gz but plain text: read as plain JSON Lines" in err
    assert read["zipped.jsonl"] == (["good0", "good1", "good2", "good3"], {"repaired:gzip_not_named_gz": 1})
    assert read["zstd.jsonl.gz"] == ([], {"bad_input:not_jsonl_file": 1}) and "zstd-compressed" in err
    assert read["html.jsonl.gz"] == ([], {"bad_input:not_jsonl_file": 1}) and "neither gzip nor JSON Lines" in err
    assert read["corrupt.jsonl.gz"] == (["good0", "good1"], {"bad_input:corrupt_gzip": 1})
    assert [r["reason"] for r in read_jsonl(tmp_path / "aside" / "zstd.jsonl.gz")] == ["not_jsonl_file"]
    assert read_jsonl(tmp_path / "aside" / "corrupt.jsonl.gz")[0]["line"] == 3


def run(*argv, check=True):
    result = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert not check or result.returncode == 0, f"{argv} failed:\n{result.stderr[-3000:]}"
    return result


def test_every_stage_survives_hostile_lines_and_sets_them_aside_alike(tmp_path):
    write_lines(tmp_path / "in" / "part.jsonl.gz", [line for line, _ in HOSTILE], bom=True)
    expected = [(i + 1, reason) for i, (_, reason) in enumerate(HOSTILE) if reason]
    outputs = {}
    for workers in (1, 2):  # the language filter off and --save_rejected: the paths that crashed
        out = tmp_path / f"clean{workers}"
        run("clean.py", f"--input={tmp_path / 'in'}", f"--output={out}", f"--workers={workers}",
            "--filters=gopher_quality", "--save_rejected")
        outputs[workers] = (out / "bad_input" / "part.jsonl.gz").read_bytes()
        report = json.loads((out / "report.json").read_text())
        assert report["complete"] and report["bad_input"] == str(out / "bad_input")
        assert report["totals"]["docs_in"] == 5 and report["totals"]["repaired:lone_surrogate"] == 2
    assert outputs[1] == outputs[2]  # the same bytes whatever the worker count
    assert [(r["line"], r["reason"]) for r in read_jsonl(tmp_path / "clean1" / "bad_input" / "part.jsonl.gz")] == expected
    run("dedup.py", f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'dedup'}", "--workers=1")
    assert [d["id"] for d in read_jsonl(tmp_path / "dedup" / "part.jsonl.gz")] == ["good0", "s1", "s2", "pair", "good1"]
    assert (tmp_path / "dedup" / "bad_input" / "part.jsonl.gz").read_bytes() == outputs[1]
    result = run("prepare.py", f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}")
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["documents"] == 5 and report["repaired"] == {"lone_surrogate": 2}
    assert report["skipped"] == dict(Counter(r for _, r in expected))
    assert (tmp_path / "tok" / "bad_input" / "part.jsonl.gz").read_bytes() == outputs[1]
    assert f"{tmp_path / 'tok' / 'bad_input'}/" in result.stdout


# -----------------------------------------------------------------------------------------------
# kill -9


WRITER = """
import sys, time, common
with common.atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"half a checkpoint")
        f.flush()
        print(tmp, flush=True)
        time.sleep(60)
"""


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_rerun_removes_the_temporary_files_of_killed_writers(tmp_path):
    # as train.py writes a checkpoint: killed with the temporary file half written
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "out" / "ckpt.pt")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    tmp = Path(writer.stdout.readline().strip())
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert tmp.exists() and tmp.name == f".ckpt.pt.tmp-{common.HOST}-{writer.pid}"
    out = tmp_path / "out"
    legacy = out / f".ckpt.pt.tmp{dead_pid()}"  # the name before the host was in it
    alive = out / f".ckpt.pt.tmp-{common.HOST}-{os.getpid()}"  # this test is running: not stale
    elsewhere = out / ".ckpt.pt.tmp-othermachine-1"  # another machine's, fresh: only it can tell
    long_dead = out / ".log.tmp-othermachine-2"
    for path in (legacy, alive, elsewhere, long_dead):
        path.write_bytes(b"x")
    folder = out / f".runs.tmp-{common.HOST}-{dead_pid()}"  # a user's folder named like ours: not ours to delete
    folder.mkdir()
    os.utime(long_dead, (time.time() - 3 * 86400,) * 2)
    write = f"import common; common.write_json({str(out / 'ckpt.pt')!r}, {{'step': 2}})"
    result = subprocess.run([sys.executable, "-c", write], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "removed 3 temporary file(s) left by killed runs" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(["ckpt.pt", alive.name, elsewhere.name, folder.name])


def open_fifo_for_writing(fifo, process, timeout=60):
    """The write end of a named pipe, once the process has opened the read end."""
    deadline = time.time() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # fails until a reader has it open
            os.set_blocking(fd, True)
            return fd
        except OSError:
            assert process.poll() is None and time.time() < deadline, process.communicate()[1][-3000:]
            time.sleep(0.02)


def wait_for(path, process, timeout=60):
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None and time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def short_docs(n):
    return [json.dumps({"id": str(i), "text": f"document {i} says " + "words " * 20}).encode() for i in range(n)]


def test_a_killed_prepare_leaves_a_folder_that_says_so(tmp_path):
    flags = [f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}", "--shard_size=2000",
             "--val_tokens=2000", "--workers=1"]
    write_lines(tmp_path / "in" / "a.jsonl", short_docs(3000), compress=False)
    run("prepare.py", *flags)  # a complete, longer run first
    longer = sorted(p.name for p in (tmp_path / "tok").glob("*.bin"))
    # the next run reads a pipe the test holds open, so it is mid-run, shards written, when killed
    (tmp_path / "in" / "a.jsonl").unlink()
    os.mkfifo(tmp_path / "in" / "a.jsonl")
    prepare = subprocess.Popen([sys.executable, "prepare.py", *flags], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    fd = open_fifo_for_writing(tmp_path / "in" / "a.jsonl", prepare)
    os.write(fd, b"".join(line + b"\n" for line in short_docs(1500)))
    wait_for(tmp_path / "tok" / "train_000003.bin", prepare)
    prepare.send_signal(signal.SIGKILL)
    prepare.wait()
    os.close(fd)
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    # new shards and the longer run's stale ones side by side, and a report that says so
    assert sorted(p.name for p in (tmp_path / "tok").glob("*.bin")) == longer
    assert report["complete"] is False and report["shards"] == []
    assert report["pid"] == prepare.pid and report["host"] == common.HOST
    # the rerun finishes: the report, written last, lists exactly the shards on disk
    (tmp_path / "in" / "a.jsonl").unlink()
    write_lines(tmp_path / "in" / "a.jsonl", short_docs(1500), compress=False)
    run("prepare.py", *flags)
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["complete"] is True
    on_disk = sorted((tmp_path / "tok").glob("val_*.bin")) + sorted((tmp_path / "tok").glob("train_*.bin"))
    assert [s["name"] for s in report["shards"]] == [p.name for p in on_disk] and len(on_disk) < len(longer)
    for shard, path in zip(report["shards"], on_disk):
        tokens = np.asarray(common.load_shard(path))
        assert shard["tokens"] == len(tokens) and shard["max_token"] == int(tokens.max())
    assert sum(s["tokens"] for s in report["shards"]) == report["tokens"]


def test_a_killed_clean_is_recognised_by_the_next_stage_and_cleaned_up_by_its_rerun(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", short_docs(50), compress=False)
    os.mkfifo(tmp_path / "raw" / "b.jsonl")  # the second shard: the kill lands while it is read
    flags = [f"--input={tmp_path / 'raw'}", f"--output={tmp_path / 'clean'}", "--workers=1", "--filters=pii"]
    clean = subprocess.Popen([sys.executable, "clean.py", *flags], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    fd = open_fifo_for_writing(tmp_path / "raw" / "b.jsonl", clean)
    os.write(fd, b"".join(line + b"\n" for line in short_docs(10)))
    temp = tmp_path / "clean" / f".b.jsonl.gz.tmp-{common.HOST}-{clean.pid}"
    wait_for(temp, clean)
    clean.send_signal(signal.SIGKILL)
    clean.wait()
    os.close(fd)
    assert temp.exists() and (tmp_path / "clean" / "a.jsonl.gz").exists()
    report = json.loads((tmp_path / "clean" / "report.json").read_text())
    assert report["complete"] is False and report["pid"] == clean.pid
    # the next stage goes on with the whole shards, says the input is incomplete, and records it
    result = run("prepare.py", f"--input={tmp_path / 'clean'}", f"--output={tmp_path / 'tok'}")
    assert f"pid {clean.pid} on {common.HOST}) has not finished" in result.stderr
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["input_complete"] is False and report["documents"] == 50
    # the rerun removes the killed run's temporary file and finishes
    (tmp_path / "raw" / "b.jsonl").unlink()
    write_lines(tmp_path / "raw" / "b.jsonl", short_docs(10), compress=False)
    result = run("clean.py", *flags)
    assert "removed 1 temporary file(s)" in result.stderr and not temp.exists()
    report = json.loads((tmp_path / "clean" / "report.json").read_text())
    assert report["complete"] is True and report["shards"] == [{"name": "a.jsonl.gz"}, {"name": "b.jsonl.gz"}]
    assert report["shards_skipped_done"] == 1 and report["input_complete"] is None  # raw: no report of ours


def test_the_next_stage_is_told_of_stale_shards_missing_machines_and_foreign_folders(tmp_path, capsys):
    def check(folder):
        paths = sorted(Path(folder).glob("*.jsonl.gz"))
        answer = common.check_input(folder, paths)
        return answer["input_complete"], " ".join(answer["input_problems"]) + capsys.readouterr().err

    folder = tmp_path / "clean"
    for name in ["a.jsonl.gz", "b.jsonl.gz", "old.jsonl.gz"]:
        write_lines(folder / name, [json.dumps(GOOD[0]).encode()])
    complete, said = check(folder)
    assert complete is None and "no report.json of ours" in said  # another tool's shards: a note
    common.write_json(folder / "report.json", {"complete": True, "shards": [{"name": "a.jsonl.gz"}, {"name": "b.jsonl.gz"}]})
    complete, said = check(folder)
    assert complete is False and "1 shard(s) in no report, left by another run: old.jsonl.gz" in said
    (folder / "old.jsonl.gz").unlink()
    assert check(folder)[0] is True
    (folder / "report.json").unlink()
    common.write_json(folder / "report_00000_of_00003.json", {"complete": True, "shards": [{"name": "a.jsonl.gz"}]})
    common.write_json(folder / "report_00002_of_00003.json", {"complete": True, "shards": [{"name": "b.jsonl.gz"}]})
    complete, said = check(folder)
    assert complete is False and "no report from machine(s) [1] of 3" in said
    (folder / "report_00002_of_00003.json").write_text("{not json")
    complete, said = check(folder)
    assert complete is False and "report_00002_of_00003.json is unreadable" in said


def test_a_resume_survives_a_log_line_cut_short_by_the_kill(tmp_path):
    """A kill or a full disk mid-append leaves half a line at the end of log.jsonl: the resume drops
    it (and the lines after the checkpoint's step) instead of dying on a JSONDecodeError."""
    from types import SimpleNamespace

    import run_files
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "val_loss": 4.0}\n'
                   '{"step": 3, "loss": 3.0}\n{"step": 4, "lo')
    paths = SimpleNamespace(log=str(log), ckpt=str(tmp_path / "ckpt.pt"), plot=str(tmp_path / "loss.png"))
    run = SimpleNamespace(master=True, log=print)
    config = dict(out_dir=str(tmp_path), init_from="resume")
    history, write_log = run_files.open_log(config, 2, paths, run)
    assert [h["step"] for h in history] == [1, 2]
    write_log({"step": 3, "loss": 2.5})
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]


def sample_warc(path, count):
    """The sample WARC's warcinfo and first `count` responses: one gzip member each, cut as they are."""
    data, end = (ROOT / "data/sample/pages.warc.gz").read_bytes(), 0
    for _ in range(count + 1):
        member = zlib.decompressobj(31)
        member.decompress(data[end:])
        end = len(data) - len(member.unused_data)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data[:end])


class Killed(BaseException):
    pass


def test_a_scrape_killed_after_its_report_never_reads_complete_with_a_warc_given_up_on(tmp_path, monkeypatch):
    """scrape.py wrote report.json complete (run_stage), then rewrote it incomplete when a WARC file
    had been given up on: killed in between, the folder read complete to clean.py without that file."""
    import scrape
    sample_warc(tmp_path / "warcs" / "good.warc.gz", 3)
    sample_warc(tmp_path / "warcs" / "lost.warc.gz", 3)
    real_open, real_run_stage = scrape.open_warc, scrape.run_stage

    def open_warc(path, fetcher):
        if path.endswith("lost.warc.gz"):
            raise OSError(f"{path}: unreadable")
        return real_open(path, fetcher)

    def killed_after(*args, **kwargs):  # the kill lands the moment run_stage has written its report
        real_run_stage(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(scrape, "open_warc", open_warc)
    monkeypatch.setattr(scrape, "run_stage", killed_after)
    out = tmp_path / "raw"
    try:
        scrape.main([f"--warc={tmp_path / 'warcs'}", f"--output={out}", "--workers=1", "--extractor=resiliparse"])
    except Killed:
        pass
    shards = sorted(out.glob("*.jsonl.gz"))
    assert [p.name for p in shards] == ["good.jsonl.gz"]
    assert common.check_input(out, shards)["input_complete"] is False
    report = json.loads((out / "report.json").read_text())
    assert report["shards"] == [{"name": "good.jsonl.gz"}] and report["warc_failed"] == [str(tmp_path / "warcs" / "lost.warc.gz")]
