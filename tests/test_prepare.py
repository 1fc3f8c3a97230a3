"""prepare.py against tiktoken itself, and the shard format against llm.c's definition."""

import base64
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import common
import tokenizer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = ROOT / "data" / "sample" / "docs.jsonl.gz"


def run_prepare(*flags):
    result = subprocess.run([sys.executable, str(ROOT / "prepare.py"), *flags],
                            capture_output=True, text=True, cwd=ROOT)
    return result


def real_texts(limit=None):
    with gzip.open(SAMPLE_DOCS, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return texts[:limit]


def write_docs(path, lines):
    """lines: dicts (written as JSON) or raw bytes (written as they are, to make bad input)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n")


def read_stream(folder):
    """All tokens of a prepare.py output folder, val first, then train shards in order."""
    folder = Path(folder)
    shards = sorted(folder.glob("val_*.bin")) + sorted(folder.glob("train_*.bin"))
    return np.concatenate([np.asarray(common.load_shard(p)) for p in shards]), shards


def test_gpt2_tokenizer_is_gpt2():
    enc = tokenizer.load_tokenizer("gpt2")
    # ids published with GPT-2 (and produced by tiktoken.get_encoding("gpt2") online)
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.encode_ordinary(" the") == [262]
    assert enc.eot_token == 50256 and enc.n_vocab == 50257
    assert enc.decode(enc.encode_ordinary("naïve café — 東京")) == "naïve café — 東京"


def test_token_stream_equals_tiktoken_on_real_text(tmp_path):
    texts = real_texts(150)
    write_docs(tmp_path / "a.jsonl.gz", [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    result = run_prepare(f"--input={tmp_path}", f"--output={tmp_path}/tok", "--shard_size=20000",
                         "--val_tokens=5000", "--workers=2")
    assert result.returncode == 0, result.stderr
    stream, shards = read_stream(tmp_path / "tok")
    enc = tokenizer.load_tokenizer("gpt2")
    expected = []
    for text in texts:
        expected += [enc.eot_token] + enc.encode_ordinary(text)
    assert stream.tolist() == expected
    # val shard first and of the asked size, then full train shards, the last one partial
    sizes = [len(common.load_shard(p)) for p in shards]
    assert shards[0].name == "val_000000.bin" and sizes[0] == 5000
    assert [p.name for p in shards[1:3]] == ["train_000001.bin", "train_000002.bin"]
    assert all(s == 20000 for s in sizes[1:-1]) and 0 < sizes[-1] <= 20000
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["documents"] == len(texts) and report["tokens"] == len(expected)
    assert report["tokenizer"] == "gpt2" and report["vocab_size"] == 50257 and report["eot_token"] == 50256
    # the completeness contract train.py reads: every shard listed, in order, with its size and largest id
    assert report["complete"] is True and report["bad_input"] is None
    assert report["shards"] == [{"name": p.name, "tokens": size, "max_token": int(np.max(common.load_shard(p)))}
                                for p, size in zip(shards, sizes)]


def test_header_layout(tmp_path):
    tokens = np.random.randint(0, 50257, size=1234)
    common.write_shard(tmp_path / "s.bin", tokens)
    raw = (tmp_path / "s.bin").read_bytes()
    assert len(raw) == 1024 + 2 * 1234
    header = np.frombuffer(raw[:1024], dtype="<i4")
    assert header[0] == 20240520 and header[1] == 1 and header[2] == 1234 and not header[3:].any()
    assert np.frombuffer(raw[1024:], dtype="<u2").tolist() == tokens.tolist()
    assert common.load_shard(tmp_path / "s.bin").tolist() == tokens.tolist()


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-2], "truncated or corrupt"),
    (lambda raw: raw + b"\0\0", "truncated or corrupt"),
    (lambda raw: b"\1\2\3\4" + raw[4:], "not an llm.c token shard"),
    (lambda raw: raw[:4] + np.int32(7).tobytes() + raw[8:], "version 7"),
    (lambda raw: raw[:100], "shorter than the 1024-byte shard header"),
])
def test_bad_shards_are_rejected_with_the_file_named(tmp_path, damage, message):
    path = tmp_path / "train_000001.bin"
    common.write_shard(path, np.arange(100))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as e:
        common.load_shard(path)
    assert str(path) in str(e.value)


def test_same_bytes_whatever_the_worker_count(tmp_path):
    texts = real_texts(120)
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": str(i), "text": t} for i, t in enumerate(texts[:60])])
    write_docs(tmp_path / "in" / "b.jsonl.gz", [{"id": str(i), "text": t} for i, t in enumerate(texts[60:])])
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"tok{workers}"
        result = run_prepare(f"--input={tmp_path}/in", f"--output={out}", f"--workers={workers}",
                             "--shard_size=7777", "--val_tokens=3000")
        assert result.returncode == 0, result.stderr
        outputs.append({p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))})
    assert len(outputs[0]) > 3 and outputs[0] == outputs[1]


def test_bad_input_is_counted_reported_and_skipped(tmp_path):
    good = [{"id": "a", "text": "The first good document."}, {"id": "b", "text": "The second one."}]
    write_docs(tmp_path / "in.jsonl.gz", [
        good[0],
        b'{"id": "x", "text": "unterminated\n',        # line 2: malformed JSON
        {"id": "y", "body": "no text key"},              # line 3
        b'{"id": "z", "text": "caf\xe9"}\n',             # line 4: Latin-1 byte, not UTF-8
        {"id": "e", "text": "   "},                      # line 5: empty
        {"id": "n", "text": 42},                         # line 6: text is not a string
        good[1],
    ])
    result = run_prepare(f"--input={tmp_path}", f"--output={tmp_path}/tok")
    assert result.returncode == 0, result.stderr
    for line, reason in [(2, "malformed_json"), (3, "missing_text"), (4, "bad_utf8"), (5, "empty_text"),
                         (6, "text_not_string")]:
        assert f"in.jsonl.gz:{line}: {reason}" in result.stderr
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["documents"] == 2
    assert report["skipped"] == {"malformed_json": 1, "missing_text": 1, "bad_utf8": 1, "empty_text": 1,
                                 "text_not_string": 1}
    enc = tokenizer.load_tokenizer("gpt2")
    expected = []
    for doc in good:
        expected += [enc.eot_token] + enc.encode_ordinary(doc["text"])
    assert read_stream(tmp_path / "tok")[0].tolist() == expected


def test_truncated_gzip_keeps_what_was_readable(tmp_path):
    write_docs(tmp_path / "in.jsonl.gz", [{"id": str(i), "text": f"document number {i} " * 50} for i in range(200)])
    raw = (tmp_path / "in.jsonl.gz").read_bytes()
    (tmp_path / "in.jsonl.gz").write_bytes(raw[: len(raw) // 2])
    result = run_prepare(f"--input={tmp_path}", f"--output={tmp_path}/tok")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["skipped"] == {"truncated_file": 1} and 0 < report["documents"] < 200


def test_rerun_does_not_duplicate_and_removes_stale_shards(tmp_path):
    texts = real_texts(80)
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    flags = [f"--input={tmp_path}/in", f"--output={tmp_path}/tok", "--shard_size=5000", "--val_tokens=5000"]
    assert run_prepare(*flags).returncode == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "tok").glob("*.bin")}
    assert run_prepare(*flags).returncode == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "tok").glob("*.bin")} == first
    # a smaller corpus: the shards of the longer run beyond the new end must go
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": str(i), "text": t} for i, t in enumerate(texts[:20])])
    assert run_prepare(*flags).returncode == 0
    stream, shards = read_stream(tmp_path / "tok")
    assert len(shards) < len(first)
    assert json.loads((tmp_path / "tok" / "report.json").read_text())["tokens"] == len(stream)
    assert not list((tmp_path / "tok").glob(".*tmp*"))  # no temporary files left behind


def test_small_corpus_gets_a_tenth_for_validation(tmp_path):
    write_docs(tmp_path / "in.jsonl.gz", [{"id": str(i), "text": t} for i, t in enumerate(real_texts(30))])
    assert run_prepare(f"--input={tmp_path}", f"--output={tmp_path}/tok").returncode == 0
    stream, shards = read_stream(tmp_path / "tok")
    assert [p.name for p in shards] == ["val_000000.bin", "train_000001.bin"]
    assert len(common.load_shard(shards[0])) == len(stream) // 10


def test_machines_split_the_input_and_together_cover_it(tmp_path):
    texts = real_texts(60)
    for k in range(3):
        write_docs(tmp_path / "in" / f"part{k}.jsonl.gz", [{"id": f"{k}{i}", "text": t}
                                                        for i, t in enumerate(texts[k * 20:(k + 1) * 20])])
    tokens = 0
    for machine in range(2):
        result = run_prepare(f"--input={tmp_path}/in", f"--output={tmp_path}/tok", f"--shard={machine}",
                             "--num_shards=2", "--val_tokens=1000")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "tok" / f"val_m{machine:04d}_000000.bin").exists()
        tokens += json.loads((tmp_path / "tok" / f"report_{machine:05d}_of_00002.json").read_text())["tokens"]
    enc = tokenizer.load_tokenizer("gpt2")
    assert tokens == sum(1 + len(enc.encode_ordinary(t)) for t in texts)
    assert tokens == len(read_stream(tmp_path / "tok")[0])
    # one machine over the same folder would mix its shards with theirs: refused before any is written
    result = run_prepare(f"--input={tmp_path}/in", f"--output={tmp_path}/tok")
    assert result.returncode == 1 and "report_00000_of_00002.json of a run with a different --num_shards" in result.stderr
    assert not (tmp_path / "tok" / "report.json").exists() and not (tmp_path / "tok" / "val_000000.bin").exists()


def test_vocabulary_over_uint16_is_refused(tmp_path):
    # a made-up vocabulary of 70,000 byte strings: too many ids for uint16 shards
    ranks = [bytes([b]) for b in range(256)] + [f"tok{i}".encode() for i in range(70000 - 256)]
    (tmp_path / "big.tiktoken").write_text(
        "".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ranks)))
    write_docs(tmp_path / "in.jsonl.gz", [{"id": "a", "text": "hello"}])
    result = run_prepare(f"--input={tmp_path}", f"--output={tmp_path}/tok", f"--tokenizer={tmp_path}/big.tiktoken")
    assert result.returncode == 1
    assert "70,001 tokens" in result.stderr and "uint16" in result.stderr
    assert "Traceback" not in result.stderr and not list((tmp_path / "tok").glob("*.bin"))


def test_a_tiktoken_file_is_recorded_by_its_ranks_not_its_path(tmp_path):
    """The report (and so the checkpoint) carries the tokenizer itself: deleting or rewriting the
    .tiktoken file afterwards must not change how the tokens decode."""
    vocab = tmp_path / "bytes.tiktoken"
    vocab.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))
    write_docs(tmp_path / "in.jsonl.gz", [{"id": "a", "text": "hello world " * 20}])
    result = run_prepare(f"--input={tmp_path}", f"--output={tmp_path}/tok", f"--tokenizer={vocab}")
    assert result.returncode == 0, result.stderr
    vocab.unlink()
    spec = json.loads((tmp_path / "tok" / "report.json").read_text())["tokenizer"]
    enc = tokenizer.load_tokenizer(spec)
    assert enc.eot_token == 256
    assert enc.decode(read_stream(tmp_path / "tok")[0][1:].tolist()) == "hello world " * 20


def test_bad_flags_are_refused_before_a_good_folder_is_touched(tmp_path):
    """A crash after the run started would leave an earlier, finished folder marked incomplete."""
    write_docs(tmp_path / "in.jsonl.gz", [{"id": "a", "text": "hello world " * 20}])
    (tmp_path / "tok").mkdir()
    report = tmp_path / "tok" / "report.json"
    report.write_text('{"stage": "prepare", "complete": true, "shards": []}')
    before = report.read_bytes()
    for flag in ("--workers=0", "--shard_size=inf", "--val_tokens=nan"):
        result = run_prepare(f"--input={tmp_path}", f"--output={tmp_path}/tok", flag)
        assert result.returncode == 1 and "Traceback" not in result.stderr, (flag, result.stderr)
        assert "at least 1" in result.stderr
    assert report.read_bytes() == before  # still complete: true


def test_a_batch_of_long_pages_is_held_as_uint16_not_as_python_ints():
    """A batch in flight held every token as a Python int (~36 bytes) until the batch was done: with
    long pages (books, code files), gigabytes per batch. Now 2 bytes a token, and a page's ints."""
    import tracemalloc

    import prepare
    enc = tokenizer.load_tokenizer("gpt2")
    pages = real_texts(200)
    texts = [" ".join(pages[i::20])[:40000] for i in range(20)]
    tracemalloc.start()
    try:
        tokens = prepare.tokenize_batch(enc, texts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    expected = [t for text in texts for t in [enc.eot_token] + enc.encode_ordinary(text)]
    assert tokens.tolist() == expected
    assert peak < 12 * len(tokens), f"{peak / len(tokens):.1f} bytes per token"


def test_another_stages_folder_is_refused_as_output(tmp_path, monkeypatch, capsys):
    """--output=data/dedup (or clean's folder) rewrote that stage's report.json as prepare's: the
    folder then looked like tokens, and its documents like shards no report lists."""
    import prepare
    docs = [{"id": "a", "text": "hello world " * 20}]
    for stage in ("clean", "dedup"):
        write_docs(tmp_path / stage / "part0.jsonl.gz", docs)
        common.write_json(tmp_path / stage / "report.json",
                          {"stage": stage, "complete": True, "shards": [{"name": "part0.jsonl.gz"}]})
    write_docs(tmp_path / "other_tool" / "part0.jsonl.gz", docs)  # no report: only the input check
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def run(input_folder, output):
        monkeypatch.setattr(sys, "argv", ["prepare.py", f"--input={tmp_path / input_folder}",
                                          f"--output={tmp_path / output}", "--workers=1"])
        prepare.main()

    for input_folder, output in (("dedup", "dedup"), ("dedup", "clean"), ("other_tool", "other_tool")):
        with pytest.raises(SystemExit):
            run(input_folder, output)
        [message] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert str(tmp_path / output) in message and "--output" in message
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    run("dedup", "tokens")  # the same input into a folder of its own
    assert (tmp_path / "tokens" / "val_000000.bin").exists()


def test_an_empty_or_broken_tiktoken_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """An empty .tiktoken file stopped prepare.py with "max() arg is an empty sequence"."""
    import prepare
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": "a", "text": "hello world"}])
    (tmp_path / "empty.tiktoken").write_text("")
    (tmp_path / "broken.tiktoken").write_text("aGk= 0\nnot base64 and a rank\n")
    (tmp_path / "folder").mkdir()  # a trained tokenizer's folder with its vocabulary emptied
    (tmp_path / "folder" / "vocab.tiktoken").write_text("")
    (tmp_path / "folder" / "config.json").write_text(json.dumps({"pattern": r"\S+", "special_tokens": {
        tokenizer.ENDOFTEXT: 0}}))
    for name, where, expected in (("empty.tiktoken", "empty.tiktoken", "empty"),
                                  ("broken.tiktoken", "broken.tiktoken", "line 2"),
                                  ("folder", "folder/vocab.tiktoken", "empty")):
        monkeypatch.setattr(sys, "argv", ["prepare.py", f"--input={tmp_path / 'in'}",
                                          f"--output={tmp_path / 'tok'}", f"--tokenizer={tmp_path / name}"])
        with pytest.raises(SystemExit):
            prepare.main()
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error:"), err
        detail = err.split(f"--tokenizer={tmp_path / name}: ", 1)[1]  # what follows the flag's echo
        assert str(tmp_path / where) in detail and expected in detail and "'base64" in detail
    assert not (tmp_path / "tok").exists()


def test_a_name_or_file_that_is_no_tokenizer_is_one_line_saying_so(tmp_path, monkeypatch, capsys):
    """An unknown name printed tiktoken's three-line message ('Plugins found: ...'), and an existing
    file that is not a .tiktoken file (config.json given for its folder) was said not to exist."""
    import prepare
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": "a", "text": "hello world"}])
    (tmp_path / "config.json").write_text("{}")
    for name, expected in (("nonsense", "Unknown encoding nonsense"), ("", "Unknown encoding"),
                           (str(tmp_path / "config.json"), "is not a folder or a .tiktoken file")):
        monkeypatch.setattr(sys, "argv", ["prepare.py", f"--input={tmp_path / 'in'}",
                                          f"--output={tmp_path / 'tok'}", f"--tokenizer={name}"])
        with pytest.raises(SystemExit):
            prepare.main()
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error:") and expected in err, err
    assert not (tmp_path / "tok").exists()


def test_a_rerun_leaves_no_bad_lines_of_an_input_file_gone_and_names_an_idle_machine(
        tmp_path, monkeypatch, capsys):
    """bad_input/old.jsonl.gz of an earlier run on other input stayed, beside a report saying
    'bad_input': null; and a machine beyond the input files said the input held no usable documents."""
    import prepare

    def run(folder, *flags):
        monkeypatch.setattr(sys, "argv", ["prepare.py", f"--input={tmp_path / folder}",
                                          f"--output={tmp_path / 'tok'}", *flags])
        prepare.main()
        return capsys.readouterr().err

    write_docs(tmp_path / "old" / "old.jsonl.gz", [{"id": "a", "text": "hello world"}, b"{broken\n"])
    run("old")
    assert (tmp_path / "tok" / "bad_input" / "old.jsonl.gz").exists()
    write_docs(tmp_path / "new" / "new.jsonl.gz", [{"id": "a", "text": "hello world"}])
    run("new")
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["bad_input"] is None and not list((tmp_path / "tok" / "bad_input").iterdir())
    for machine in (0, 1):  # one input file, two machines: the second has nothing to do, and says why
        err = run("new", f"--shard={machine}", "--num_shards=2", f"--output={tmp_path / 'two'}")
        assert ("--shard=1 of --num_shards=2 has no input file" in err) == (machine == 1), err
        assert "no usable documents" not in err


def test_an_output_that_is_a_file_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    """prepare.py and tokenizer.py --output=FILE (or FILE/sub) stopped with mkdir's FileExistsError
    or NotADirectoryError traceback."""
    import prepare
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": "a", "text": "hello world"}])
    (tmp_path / "file").write_text("mine")
    for output, expected in (("file", "is a file"), ("file/sub", "cannot be made (Not a directory)")):
        flags = [f"--input={tmp_path / 'in'}", f"--output={tmp_path / output}"]
        for main in (lambda: tokenizer.main(flags), lambda: (monkeypatch.setattr(sys, "argv", ["prepare.py", *flags]),
                                                             prepare.main())):
            with pytest.raises(SystemExit):
                main()
            err = capsys.readouterr().err
            assert err.splitlines()[-1] == f"error: the output folder {tmp_path / output} {expected}: give a folder"
            assert "Traceback" not in err
    assert (tmp_path / "file").read_text() == "mine"


def test_a_val_shard_reaching_past_the_tokenizers_held_out_documents_is_warned(tmp_path, monkeypatch, capsys):
    """The tokenizer holds out --val_bytes (~ bytes per token x prepare's --val_tokens); with more
    bytes per token (a large vocabulary) or a larger --val_tokens, the val shard held documents the
    tokenizer was trained on, so its loss read too low, and nothing said so."""
    import prepare
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": str(i), "text": t} for i, t in enumerate(real_texts(60))])
    tokenizer.main([f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tk'}", "--vocab_size=300",
                    "--val_bytes=2e4", "--workers=1"])
    held_out = json.loads((tmp_path / "tk" / "report.json").read_text())["held_out_documents"]
    for val_tokens in (1e3, 5e4):
        monkeypatch.setattr(sys, "argv", ["prepare.py", f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}",
                                          f"--tokenizer={tmp_path / 'tk'}", f"--val_tokens={val_tokens}"])
        capsys.readouterr()
        prepare.main()
        err = capsys.readouterr().err
        val = np.asarray(common.load_shard(tmp_path / "tok" / "val_000000.bin"))
        starts = int((val == tokenizer.load_tokenizer(tmp_path / "tk").eot_token).sum())
        assert (f"the val shard holds {starts:,} documents" in err) == (starts > held_out), (err, starts, held_out)
        assert (starts > held_out) == (val_tokens == 5e4)
    (tmp_path / "other").mkdir()  # the same documents in another folder: the tokenizer's input is not this
    (tmp_path / "in" / "a.jsonl.gz").rename(tmp_path / "other" / "a.jsonl.gz")
    monkeypatch.setattr(sys, "argv", [*sys.argv[:1], f"--input={tmp_path / 'other'}", *sys.argv[2:]])
    prepare.main()
    assert "the val shard holds" not in capsys.readouterr().err
