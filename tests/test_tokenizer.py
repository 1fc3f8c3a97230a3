"""tokenizer.py's training: the merges against a plain-Python BPE, the exported ranks against a
plain-Python BPE encoder, exact round trips (every script, emoji, lone surrogates), the held-out split,
the folder's completeness, the vocabulary limit, and prepare.py encoding with the result."""

import base64
import gzip
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import regex

import common
import tokenizer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = ROOT / "data" / "sample" / "docs.jsonl.gz"

# texts a tokenizer gets wrong first: every script, emoji (4 UTF-8 bytes, joiners, flags, skin
# tones), combining marks, odd whitespace, the special token's text inside a page, control characters
HARD_TEXTS = [
    "Ελληνικά, русский, 日本語のテキスト, 中文文本, 한국어, العربية, עברית, हिन्दी, ไทย",
    "emoji: 😀 👩‍👩‍👧‍👦 🇫🇷 👍🏽 ❤️ and text after",
    "combining: e\u0301 a\u0308 n\u0303, precomposed: é ä ñ, zero width:\u200b\u200d\ufeff",
    "windows\r\nline ends\r\n\ttabs\tand    spaces   \n\n\n\x0bvertical tab\x0cform feed",
    "a page that mentions <|endoftext|> in its text, and <|endoftext|> again",
    "numbers 1234567890 3.14159 1e-10 0xDEADBEEF, symbols ~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./",
    "control \x01\x02\x1b[31m red \x1b[0m and \x7f delete, private use \ue000, max \U0010ffff",
]


def run_tokenizer(*flags):
    return subprocess.run([sys.executable, str(ROOT / "tokenizer.py"), *map(str, flags)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def write_docs(path, lines):
    """lines: dicts (written as JSON) or raw bytes (written as they are, to make bad input)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n")


def sample_docs():
    with gzip.open(SAMPLE_DOCS, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def dead_pid():
    """The id of a process that has ended: a temporary file it left is stale."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def ranks_of(folder):
    spec = tokenizer.read_folder(folder)
    return {base64.b64decode(t): int(r) for t, r in (line.split() for line in spec["vocab"].splitlines())}


# -----------------------------------------------------------------------------------------------
# the reference: BPE written out in plain Python (minbpe's algorithm)


def chunk_ids(texts, pattern=tokenizer.GPT4_PATTERN):
    """Each distinct pre-token chunk of the texts as a tuple of byte values, with its count."""
    counts = Counter()
    for text in texts:
        counts.update(regex.findall(pattern, text))
    return {tuple(chunk.encode("utf-8")): n for chunk, n in counts.items()}


def pair_counts(chunks):
    counts = Counter()
    for ids, n in chunks.items():
        for pair in zip(ids, ids[1:]):
            counts[pair] += n
    return counts


def merge(ids, pair, new):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


def reference_encode(text, merges):
    """Encode by applying, in each chunk, the earliest-learned merge present, until none is."""
    tokens = []
    for chunk in regex.findall(tokenizer.GPT4_PATTERN, text):
        ids = tuple(chunk.encode("utf-8"))
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
            if pair not in merges:
                break
            ids = merge(ids, pair, merges[pair])
        tokens += ids
    return tokens


# -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The stage run once on the whole built-in sample (every language in it) plus the hard texts."""
    tmp = tmp_path_factory.mktemp("tok")
    docs = sample_docs()
    docs += [{"id": f"hard{i}", "text": t} for i, t in enumerate(HARD_TEXTS)]
    write_docs(tmp / "docs" / "part.jsonl.gz", docs)
    result = run_tokenizer(f"--input={tmp / 'docs'}", f"--output={tmp / 'tok'}", "--vocab_size=2048",
                           "--val_bytes=2e5", "--workers=2")
    assert result.returncode == 0, result.stderr
    return dict(docs=docs, folder=tmp / "tok", result=result, tmp=tmp)


def test_every_document_and_hard_text_round_trips_exactly(trained):
    enc = tokenizer.load_tokenizer(trained["folder"])
    assert enc.n_vocab == 2048 and enc.eot_token == 2047
    for doc in trained["docs"]:
        tokens = enc.encode_ordinary(doc["text"])
        assert max(tokens) < 2047  # the special token never comes out of ordinary text
        assert enc.decode_bytes(tokens) == doc["text"].encode("utf-8"), doc["id"]
    for text in HARD_TEXTS + ["", " ", "\n", "x" * 10000, "🙂" * 300]:
        assert enc.decode(enc.encode_ordinary(text)) == text


def test_lone_surrogates_become_the_replacement_character_as_in_prepare(tmp_path):
    """JSON may hold '\\ud800', which UTF-8 cannot: common.read_documents makes it U+FFFD for every
    stage, as tiktoken would, so the tokenizer is trained on the text prepare.py encodes, the repair is
    counted, and nothing crashes."""
    lines = [{"id": "a", "text": "plain text " * 50},
             b'{"id": "b", "text": "lone \\ud800 high and \\udfff low surrogate, pair \\ud83d\\ude00 ok"}\n',
             {"id": "c", "text": "more plain text " * 50}]
    write_docs(tmp_path / "in" / "x.jsonl.gz", lines)
    result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}", "--vocab_size=300",
                           "--val_bytes=0")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["repaired"] == {"lone_surrogate": 1} and report["documents"] == 3
    enc = tokenizer.load_tokenizer(tmp_path / "tok")
    text = json.loads(lines[1].decode())["text"]
    fixed = "lone \ufffd high and \ufffd low surrogate, pair 😀 ok"  # what the reader hands every stage
    assert enc.decode(enc.encode_ordinary(fixed)) == fixed
    assert enc.decode(enc.encode_ordinary(text)) == fixed  # and tiktoken agrees


def test_merges_are_bpe_most_frequent_pair_first(trained):
    """Replay the trainer's merges on the training text in plain Python: each must be, when it is
    made, a pair of greatest count (ties may go either way), and the chunks must end as tiktoken
    encodes them."""
    tmp = trained["tmp"]
    texts = [" ".join(d["text"] for d in sample_docs()[:40])[:60000]]  # 60 kB: the replay is quadratic-ish
    write_docs(tmp / "small" / "s.jsonl.gz", [{"id": "s", "text": texts[0]}])
    result = run_tokenizer(f"--input={tmp / 'small'}", f"--output={tmp / 'small_tok'}", "--vocab_size=450",
                           "--val_bytes=0")
    assert result.returncode == 0, result.stderr
    ranks = ranks_of(tmp / "small_tok")
    assert len(ranks) == 449 and all(ranks[bytes([b])] == b for b in range(256))
    by_rank = {rank: token for token, rank in ranks.items()}
    chunks, merges = chunk_ids(texts), {}
    for new in range(256, 449):
        counts = pair_counts(chunks)
        best = max(counts.values())
        # the pair that makes token `new`: the one whose bytes join to it, among the most frequent
        made = [p for p, n in counts.items() if by_rank[p[0]] + by_rank[p[1]] == by_rank[new]]
        assert made and counts[made[0]] == best, f"merge {new} ({by_rank[new]!r}) was not a most frequent pair"
        merges[made[0]] = new
        chunks = {merge(ids, made[0], new): n for ids, n in chunks.items()}
    enc = tokenizer.load_tokenizer(tmp / "small_tok")
    for text in [t["text"][:3000] for t in sample_docs()[40:60]] + HARD_TEXTS:
        assert enc.encode_ordinary(text) == reference_encode(text, merges)


def test_training_is_deterministic(tmp_path):
    """Same text, same tokenizer, whatever the number of threads."""
    write_docs(tmp_path / "in" / "a.jsonl.gz", sample_docs()[:300])
    for workers in (1, 2):
        result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={tmp_path / str(workers)}",
                               "--vocab_size=1024", f"--workers={workers}")
        assert result.returncode == 0, result.stderr
    for name in ("vocab.tiktoken", "config.json"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


def test_report_compares_with_gpt2_on_held_out_documents(trained):
    report = json.loads((trained["folder"] / "report.json").read_text())
    assert report["complete"] and report["vocab_size"] == 2048 and report["trainer"] == "rustbpe"
    assert report["roundtrip_failures"] == 0
    # the held-out part: the documents starting in the first 2e5 bytes (--val_bytes), or in the
    # first tenth of a smaller corpus
    sizes = [len(d["text"].encode()) for d in trained["docs"]]
    cut = 2e5 if sum(sizes) >= 2e5 else sum(sizes) / 10
    expected = next(i + 1 for i in range(len(sizes)) if sum(sizes[:i + 1]) >= cut)
    assert report["held_out_documents"] == expected
    assert report["train_documents"] == len(sizes) - expected
    total = report["evaluation"]["all"]
    assert total["documents"] == expected and total["bytes"] == sum(sizes[:expected])
    enc = tokenizer.load_tokenizer("gpt2")
    assert total["gpt2"] == sum(len(enc.encode_ordinary(d["text"])) for d in trained["docs"][:expected])
    assert 2.0 < total["ours_bytes_per_token"] < 6.0
    hosts = {g.split()[-1] for g in report["evaluation"]} - {"all", "other"}
    assert "docs.python.org" in hosts or "www.postgresql.org" in hosts
    assert "bytes per token" not in trained["result"].stderr  # the table goes to stdout
    assert "ours vs gpt2" in trained["result"].stdout and "all" in trained["result"].stdout


def test_held_out_documents_are_not_trained_on(tmp_path):
    """A word repeated all over the first (held-out) document gets no token; the same kind of word in
    a training document does, so the check can fail."""
    held, seen = "zqxvbkwj", "pyfgcrlm"
    docs = [{"id": "0", "text": f" {held}" * 2000}] + \
           [{"id": str(i), "text": f"ordinary text number {i} with {seen} inside. " * 40} for i in range(1, 40)]
    write_docs(tmp_path / "in" / "a.jsonl.gz", docs)
    result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}", "--vocab_size=400")
    assert result.returncode == 0, result.stderr
    tokens = set(ranks_of(tmp_path / "tok"))
    assert f" {seen}".encode() in tokens
    assert not any(held[:4].encode() in t for t in tokens)
    assert json.loads((tmp_path / "tok" / "report.json").read_text())["held_out_documents"] == 1


def test_bad_lines_are_counted_not_fatal(tmp_path):
    write_docs(tmp_path / "in" / "a.jsonl.gz", [
        {"id": "1", "text": "good text " * 100}, b"{not json\n", b'{"id": "2"}\n', b"\xff\xfe\n",
        {"id": "3", "text": "also good " * 100}])
    result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}", "--vocab_size=300")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["skipped"] == {"malformed_json": 1, "missing_text": 1, "bad_utf8": 1}
    assert report["documents"] == 2
    assert "a.jsonl.gz:2" in result.stderr and "bad input skipped" in result.stdout


def test_vocabulary_limits(tmp_path):
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": "1", "text": "abc abd " * 20}])
    for size in (65537, 100000, 256):
        result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}", f"--vocab_size={size}")
        assert result.returncode == 1 and "uint16" in result.stderr and "Traceback" not in result.stderr
        assert size > 256 or "256 bytes" in result.stderr  # too small, not 'a larger vocabulary'
    # a text with few distinct pairs allows fewer merges than asked: said, and the folder says the truth
    result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}", "--vocab_size=65536",
                           "--val_bytes=0")
    assert result.returncode == 0 and "allows only" in result.stderr
    enc = tokenizer.load_tokenizer(tmp_path / "tok")
    assert enc.n_vocab == json.loads((tmp_path / "tok" / "config.json").read_text())["vocab_size"] < 300
    assert enc.decode(enc.encode_ordinary("abd abc")) == "abd abc"


def test_interrupted_or_mismatched_folder_is_refused_and_rerun_cleans_up(trained, tmp_path):
    folder = tmp_path / "tok"
    folder.mkdir()
    for name in ("vocab.tiktoken", "config.json"):
        (folder / name).write_bytes((trained["folder"] / name).read_bytes())
    tokenizer.load_tokenizer(folder)
    # a vocabulary that is not the one config.json names (a run killed between the two files)
    (folder / "vocab.tiktoken").write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))
    with pytest.raises(ValueError, match="does not match"):
        tokenizer.load_tokenizer(folder)
    # a rerun into the folder: the stale temporary file goes, and so do the old config and report
    # until the new ones are written
    (folder / f".vocab.tiktoken.tmp{dead_pid()}").write_text("half")  # the older name, of a process gone
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": "1", "text": "some text " * 100}])
    result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={folder}", "--vocab_size=300", "--val_bytes=0")
    assert result.returncode == 0, result.stderr
    assert not list(folder.glob(".*tmp*"))
    assert tokenizer.load_tokenizer(folder).n_vocab <= 300


def test_prepare_encodes_with_the_trained_tokenizer_and_checkpoint_spec_decodes_alone(trained, tmp_path):
    docs = trained["docs"][:60]
    write_docs(tmp_path / "dedup" / "a.jsonl.gz", docs)
    result = subprocess.run([sys.executable, str(ROOT / "prepare.py"), f"--input={tmp_path / 'dedup'}",
                             f"--output={tmp_path / 'tokens'}", f"--tokenizer={trained['folder']}",
                             "--workers=2"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "tokens" / "report.json").read_text())
    assert report["vocab_size"] == 2048 and report["eot_token"] == 2047
    spec = report["tokenizer"]
    assert tokenizer.same_tokenizer(spec, tokenizer.tokenizer_spec(trained["folder"]))
    shards = sorted((tmp_path / "tokens").glob("val_*.bin")) + sorted((tmp_path / "tokens").glob("train_*.bin"))
    stream = np.concatenate([np.asarray(common.load_shard(p)) for p in shards])
    # the spec alone (what a checkpoint carries) decodes the stream back to the documents
    enc = tokenizer.load_tokenizer(spec)
    texts = [enc.decode(part[1:].tolist()) for part in np.split(stream, np.flatnonzero(stream == 2047))[1:]]
    assert texts == [d["text"] for d in docs]
    lengths = tokenizer.token_byte_lengths(enc, 2112)
    assert lengths[2047] == 0 and lengths[2048:].sum() == 0
    assert lengths[stream[stream != 2047]].sum() == sum(len(d["text"].encode()) for d in docs)
    assert re.search(r"bpe_2048 \(2,048 tokens, sha256 [0-9a-f]{8}\)", tokenizer.tokenizer_name(spec))


def test_max_train_bytes_stops_reading_and_still_holds_out(tmp_path):
    docs = [{"id": str(i), "text": f"document {i} says something about databases. " * 20} for i in range(200)]
    write_docs(tmp_path / "in" / "a.jsonl.gz", docs)
    size = len(docs[0]["text"].encode())
    result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}", "--vocab_size=300",
                           f"--val_bytes={3 * size}", f"--max_train_bytes={50 * size}")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["held_out_documents"] == 3 and report["evaluation"]["all"]["documents"] == 3
    assert report["train_documents"] == 50 and report["documents"] == 53


def test_max_train_bytes_caps_a_corpus_smaller_than_val_bytes(tmp_path):
    """Such a corpus waits whole in the held-out buffer: the cap was not applied to it there."""
    docs = [{"id": str(i), "text": f"document {i:03d} says something about databases. " * 20}
            for i in range(100)]  # all of one size: the first tenth is 10 documents
    write_docs(tmp_path / "in" / "a.jsonl.gz", docs)
    size = len(docs[0]["text"].encode())
    result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}",
                           "--vocab_size=300", "--val_bytes=1e9", f"--max_train_bytes={20 * size}")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["held_out_documents"] == 10 and report["train_documents"] == 20


def test_a_corpus_larger_than_val_bytes_holds_out_val_bytes_as_prepare_does(tmp_path):
    """prepare.py's val shard is --val_tokens of a corpus larger than that (a tenth of a smaller
    one): here 30 of 100 documents, not the first tenth, or the tokenizer trains on 20 of them."""
    docs = [{"id": str(i), "text": f"document {i} says something about databases. " * 20}
            for i in range(100)]
    write_docs(tmp_path / "in" / "a.jsonl.gz", docs)
    size = len(docs[0]["text"].encode())
    result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}",
                           "--vocab_size=300", f"--val_bytes={30 * size}")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["held_out_documents"] == 30 and report["train_documents"] == 70


def test_a_folder_without_endoftext_is_refused_with_the_file_named(trained, tmp_path):
    """prepare.py puts <|endoftext|> before every document: a config without it was a KeyError
    traceback halfway into prepare.py."""
    for name in ("vocab.tiktoken", "config.json"):
        (tmp_path / name).write_bytes((trained["folder"] / name).read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["special_tokens"] = {"<|end_of_text|>": 2047}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: no <\|endoftext\|> among the special"):
        tokenizer.load_tokenizer(tmp_path)


def test_a_malformed_url_does_not_stop_the_evaluation():
    """urlsplit raises on an unclosed IPv6 bracket: a held-out page with that url crashed it."""
    assert tokenizer.group_of({"url": "http://[::1/x", "language": "en", "source": "cc"}) == "en cc"
    assert tokenizer.group_of({"url": "https://[2001:db8::1]:8080/x"}) == "? 2001:db8::1"


def test_held_out_documents_follow_prepares_num_shards(tmp_path):
    """prepare.py --num_shards=2 makes a val shard on each machine, from the start of its own part
    of the shards (here b.jsonl.gz's first document): that one was trained on, as only the start of
    the whole stream was held out."""
    held, seen = "zqxvbkwj", "pyfgcrlm"
    for name, first in (("a", "the first page of shard a, like the others. " * 40), ("b", f" {held}" * 2000)):
        docs = [{"id": f"{name}0", "text": first}] + [
            {"id": f"{name}{i}", "text": f"ordinary text number {i} with {seen} inside. " * 40} for i in range(1, 20)]
        write_docs(tmp_path / "in" / f"{name}.jsonl.gz", docs)
    result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}", "--vocab_size=400",
                           "--val_bytes=1", "--prepare_num_shards=2")  # the first document of each part
    assert result.returncode == 0, result.stderr
    tokens = set(ranks_of(tmp_path / "tok"))
    assert f" {seen}".encode() in tokens and not any(held[:4].encode() in t for t in tokens)
    assert json.loads((tmp_path / "tok" / "report.json").read_text())["held_out_documents"] == 2
    # prepare.py on another number of machines says that its val text was partly trained on
    for machines, warned in ((2, False), (1, True)):
        prepared = subprocess.run([sys.executable, str(ROOT / "prepare.py"), f"--input={tmp_path / 'in'}",
                                   f"--output={tmp_path / f'tokens{machines}'}", f"--tokenizer={tmp_path / 'tok'}",
                                   f"--num_shards={machines}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert prepared.returncode == 0, prepared.stderr
        assert ("held out the val documents of --num_shards=2, this run has --num_shards=1" in prepared.stderr) \
            == warned, prepared.stderr


def test_a_vocabulary_tiktoken_would_panic_on_or_misread_is_refused_or_read_right(tmp_path):
    """A .tiktoken file lacking a single byte stopped prepare.py at the first text holding it with a
    Rust panic (a traceback), two tokens of one rank panicked in tiktoken, and a gap in the ranks put
    <|endoftext|> on a merge's id (len(ranks)), so every document's first token decoded as 'ab'."""
    byte_lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    for name, lines, expected in (("no_byte", byte_lines[:100] + byte_lines[101:], "byte 100 first"),
                                  ("shared_rank", byte_lines + ["YWI= 255"], "rank 255")):
        (tmp_path / f"{name}.tiktoken").write_text("\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=expected):
            tokenizer.load_tokenizer(tmp_path / f"{name}.tiktoken")
    (tmp_path / "gap.tiktoken").write_text("\n".join(byte_lines + ["YWI= 257"]) + "\n")  # no rank 256
    enc = tokenizer.load_tokenizer(str(tmp_path / "gap.tiktoken"))
    assert enc.encode_ordinary("ab") == [257] and enc.eot_token == 258
    assert enc.decode_bytes([enc.eot_token, 257]) == b"<|endoftext|>ab"
    # a trained folder's config naming a merge's id for the special token
    spec = dict(name="clash", pattern=r"\S+", vocab="\n".join(byte_lines + ["YWI= 256"]),
                special_tokens={tokenizer.ENDOFTEXT: 256})
    with pytest.raises(ValueError, match="already a token"):
        tokenizer.load_tokenizer(spec)


def test_another_stages_folder_or_the_input_is_refused_as_output(tmp_path, capsys):
    """--output=data/dedup (or data/tokens) deleted that stage's report.json and wrote ours in its
    place: dedup's completeness record, or the token folder's shard list, was lost."""
    write_docs(tmp_path / "dedup" / "a.jsonl.gz", [{"id": "1", "text": "abc abd " * 20}])
    (tmp_path / "tokens").mkdir()

    def refused(output):
        with pytest.raises(SystemExit):
            tokenizer.main([f"--input={tmp_path / 'dedup'}", f"--output={tmp_path / output}", "--vocab_size=300"])
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith("error:") and "Traceback" not in err, err
        return err

    for folder, stage in (("dedup", "dedup"), ("tokens", "prepare")):
        report = json.dumps({"stage": stage, "complete": True, "shards": [{"name": "a.jsonl.gz"}]})
        (tmp_path / folder / "report.json").write_text(report)
        assert f"report.json of the {stage} stage" in refused(folder)
        assert (tmp_path / folder / "report.json").read_text() == report  # untouched
        assert not (tmp_path / folder / "config.json").exists()
    (tmp_path / "dedup" / "report.json").unlink()  # shards of another tool, no report: still the input
    assert "is the input folder" in refused("dedup")


@pytest.mark.parametrize("config", [5, [], {"pattern": 5, "special_tokens": {"<|endoftext|>": 4095}},
                                    {"pattern": r"\S+", "special_tokens": ["<|endoftext|>"]},
                                    {"pattern": r"\S+", "special_tokens": {"<|endoftext|>": "x"}},
                                    {"pattern": "(", "special_tokens": {"<|endoftext|>": 4095}}])
def test_a_config_of_the_wrong_shape_is_an_error_naming_it(trained, tmp_path, config):
    """A config.json edited by hand: a number, a pattern that is not a string or not a regular
    expression, special tokens as a list, stopped prepare.py with a TypeError, AttributeError or
    tiktoken's bare 'Parsing error at position 1'."""
    folder = tmp_path / "tk"
    folder.mkdir()
    (folder / "vocab.tiktoken").write_bytes((trained["folder"] / "vocab.tiktoken").read_bytes())
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=re.escape(str(folder / "config.json"))):
        tokenizer.load_tokenizer(folder)


def test_a_folder_whose_training_did_not_finish_is_refused_by_prepare(tmp_path, monkeypatch, capsys):
    """A run killed after config.json, before report.json, left a folder that loads: prepare.py used
    it without the checks of what it held out, and said nothing. Now it is refused, in one line; a
    folder made by hand (no trainer in its config.json) is used, with a note."""
    import prepare
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": str(i), "text": d["text"]} for i, d in enumerate(sample_docs()[:40])])
    folder = tmp_path / "tk"

    def killed(*args):  # the held-out evaluation runs between config.json and report.json
        raise KeyboardInterrupt
    monkeypatch.setattr(tokenizer, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        tokenizer.main([f"--input={tmp_path / 'in'}", f"--output={folder}", "--vocab_size=300",
                        "--val_bytes=2e4", "--workers=1"])
    tokenizer.load_tokenizer(folder)  # it loads: only its report tells

    def run_prepare():
        monkeypatch.setattr(sys, "argv", ["prepare.py", f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'tok'}",
                                          f"--tokenizer={folder}", "--workers=1"])
        capsys.readouterr()
        prepare.main()
        return capsys.readouterr().err

    for case in ("said incomplete", "missing"):
        with pytest.raises(SystemExit):
            run_prepare()
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: --tokenizer={folder}: {folder / 'report.json'}"), err
        assert ("did not finish" in err and "rerun tokenizer.py" in err
                and ("pid" in err) == (case == "said incomplete")), err
        assert not (tmp_path / "tok").exists()
        (folder / "report.json").unlink(missing_ok=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({k: config[k] for k in ("pattern", "special_tokens")}))
    err = run_prepare()  # made by hand: no trainer, no report to expect
    assert "records no trainer" in err and (tmp_path / "tok" / "val_000000.bin").exists(), err


def test_a_vocabulary_without_its_config_says_what_is_missing(trained, tmp_path):
    folder = tmp_path / "tk"
    folder.mkdir()
    with pytest.raises(ValueError, match="is not a tokenizer folder: no vocab.tiktoken and no config.json"):
        tokenizer.read_folder(folder)
    (folder / "vocab.tiktoken").write_bytes((trained["folder"] / "vocab.tiktoken").read_bytes())
    with pytest.raises(ValueError, match=re.escape(f"{folder} has vocab.tiktoken but no config.json")):
        tokenizer.load_tokenizer(folder)


def test_a_rerun_removes_only_temporary_files_whose_writer_is_gone(trained, tmp_path):
    """tokenizer.py deleted every .*.tmp* file in its output folder, a live process's too."""
    folder = tmp_path / "tok"
    folder.mkdir()
    dead = folder / f".vocab.tiktoken.tmp-{common.HOST}-{dead_pid()}"
    live = folder / f".config.json.tmp-{common.HOST}-{os.getpid()}"  # this test's process: still running
    other = folder / ".notes.tmp-mine"  # not a name our writers use
    for path in (dead, live, other):
        path.write_text("half")
    write_docs(tmp_path / "in" / "a.jsonl.gz", [{"id": "1", "text": "some text " * 100}])
    result = run_tokenizer(f"--input={tmp_path / 'in'}", f"--output={folder}", "--vocab_size=300", "--val_bytes=0")
    assert result.returncode == 0, result.stderr
    assert not dead.exists() and live.exists() and other.exists()
    assert json.loads((folder / "report.json").read_text())["complete"] is True
