"""dedup.py against a brute-force reference: planted duplicates at known Jaccard similarity on the
same word 5-grams, the chaining trap, worker counts, machines, Redis, bad input and the shipped sample."""

import gzip
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

import dedup

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


def shingles(text, n=5):
    """The reference: the set of word n-grams of the normalized text, computed the slow, obvious way."""
    words = dedup.normalize(text).split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a, b):
    a, b = shingles(a), shingles(b)
    return len(a & b) / len(a | b)


def write_shard(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for doc in docs:
            f.write(doc if isinstance(doc, str) else json.dumps(doc) + "\n")


def read_shard(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def run_dedup(*args):
    result = subprocess.run([sys.executable, str(ROOT / "dedup.py"), *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def output_ids(folder):
    return {p.name: [d["id"] for d in read_shard(p)] for p in sorted(Path(folder).glob("*.jsonl.gz"))}


# -----------------------------------------------------------------------------------------------
# a synthetic corpus with planted pairs, spread over 3 shards


def random_word(rng):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))


def edited(rng, words, edits):
    words = list(words)
    for i in rng.sample(range(len(words)), edits):
        words[i] = random_word(rng)
    return words


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Unrelated documents, plus copies: exact, exact after normalization, and edited ones whose
    Jaccard similarity to their original is measured by brute force."""
    rng = random.Random(1234)
    vocabulary = [random_word(rng) for _ in range(3000)]
    docs, pairs = [], []  # pairs: (original id, copy id, true Jaccard)

    def add(words, kind):
        doc = {"id": f"{kind}-{len(docs)}", "url": f"https://example.com/{len(docs)}", "text": " ".join(words)}
        docs.append(doc)
        return doc

    originals = [add(rng.choices(vocabulary, k=rng.randint(150, 300)), "doc") for _ in range(300)]
    for i, original in enumerate(originals[:160]):
        words = original["text"].split()
        if i < 20:  # exact copy
            copy = add(words, "exact")
        elif i < 30:  # equal after normalization only: case, punctuation, spacing
            copy = add([w.upper() + "," for w in words], "normexact")
        elif i < 110:  # light edits: J around 0.8 to 0.97
            copy = add(edited(rng, words, rng.randint(1, max(1, len(words) // 60))), "near")
        else:  # heavy edits: J at most about 0.5
            copy = add(edited(rng, words, len(words) // rng.randint(5, 9)), "far")
        pairs.append((original["id"], copy["id"], jaccard(original["text"], copy["text"])))
    rng.shuffle(docs)  # copies land before and after their originals, in all shards
    folder = tmp_path_factory.mktemp("corpus") / "in"
    for shard in range(3):
        write_shard(folder / f"part-{shard}.jsonl.gz", docs[shard::3])
    return folder, docs, pairs


@pytest.fixture(scope="module")
def deduped(corpus, tmp_path_factory):
    folder, docs, pairs = corpus
    out = tmp_path_factory.mktemp("out")
    run_dedup(f"--input={folder}", f"--output={out}", "--workers=1", f"--clusters={out / 'clusters.jsonl'}")
    kept = {i for ids in output_ids(out).values() for i in ids}
    return out, kept


def test_planted_pairs_against_brute_force(corpus, deduped):
    _, docs, pairs = corpus
    _, kept = deduped
    high = [(a, b) for a, b, j in pairs if j >= 0.85]
    low = [(a, b) for a, b, j in pairs if j <= 0.5]
    assert len(high) >= 80 and len(low) >= 40  # the corpus plants what the test needs
    found = sum((a in kept) != (b in kept) for a, b in high)
    assert found >= 0.95 * len(high)  # the S-curve misses ~1.5% at J = 0.85, ~0 above 0.9
    assert all(a in kept and b in kept for a, b in low)
    exact = [(a, b) for a, b, _ in pairs if b.startswith(("exact", "normexact"))]
    assert all((a in kept) != (b in kept) for a, b in exact)  # exact copies always go, once
    # nothing unplanted was removed: every removed document is the copy or original of a planted pair
    planted = {x for a, b, j in pairs if j > 0.7 for x in (a, b)}
    assert {d["id"] for d in docs} - kept <= planted


def test_every_cluster_keeps_its_first_document(corpus, deduped):
    folder, docs, _ = corpus
    out, kept = deduped
    order = [d["id"] for p in sorted(folder.glob("*.jsonl.gz")) for d in read_shard(p)]
    position = {i: n for n, i in enumerate(order)}
    text = {d["id"]: d["text"] for d in docs}
    clusters = [json.loads(line) for line in open(out / "clusters.jsonl")]
    assert clusters
    removed = set(text) - kept
    assert sum(len(c["removed"]) for c in clusters) == len(removed)
    for c in clusters:
        assert c["kept"]["id"] in kept
        for r in c["removed"]:
            assert r["id"] in removed
            assert position[c["kept"]["id"]] < position[r["id"]]  # the first in input order stays
            assert jaccard(text[c["kept"]["id"]], text[r["id"]]) > 0.7  # a true partner, not a chain
    report = json.loads((out / "report.json").read_text())
    totals = report["totals"]
    assert totals["documents_in"] == len(docs) and totals["documents_out"] == len(kept)
    assert totals["removed_exact_duplicates"] == 30
    assert report["all_shards"]["duplicate_clusters"] == len(clusters)


def test_signatures_are_datasketch_minhashes():
    text = "The quick brown fox, 42 times — jumps over the lazy dog; Ünïcödé too!\n" * 3 + "end"
    words = dedup.normalize(text).split()
    grams = [" ".join(words[i:i + 5]).encode() for i in range(len(words) - 4)]
    reference = MinHash(num_perm=112, seed=7, hashfunc=dedup.shingle_hash)
    reference.update_batch(grams)
    _, signature = dedup.document_signature(text, 5, dedup.permutations(112, 7))
    assert np.array_equal(signature, reference.hashvalues)
    assert np.array_equal(dedup.shingle_hashes(" ".join(words).encode(), 5), [dedup.shingle_hash(g) for g in grams])
    # a text shorter than one n-gram is a single shingle, not an empty set
    assert len(dedup.shingle_hashes(b"two words", 5)) == 1


def test_normalize():
    assert dedup.normalize("  Hello,\tWORLD!! 2024\n") == "hello world 0000"
    assert dedup.normalize("Caf\u00e9 na\u00efve") == dedup.normalize("Cafe\u0301 nai\u0308ve") == "cafe naive"
    assert dedup.normalize("end.Start \u201cquoted\u201d \u00a0x\u2014y") == "end start quoted x y"
    assert dedup.normalize("\u0414\u041e\u041c \u0663") == "\u0434\u043e\u043c 0"


def test_chain_through_one_shared_band_is_not_merged():
    """A shares one LSH band with B, B another with C: candidates, but nothing alike. Union-find on
    raw candidates would make one cluster of all three; the Jaccard check keeps them apart."""
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32, (3, 112), dtype=np.uint64).astype(np.uint32)
    signatures[1, 0:8] = signatures[0, 0:8]
    signatures[1, 8:16] = signatures[2, 8:16]
    keys = np.array([1, 2, 3], np.int64)
    exact = np.arange(48, dtype=np.uint8).reshape(3, 16)
    args = type("Args", (), dict(bands=14, rows=8, seed=1, threshold=0.75, redis=""))()
    stats = {"candidate_pairs": 0, "candidate_pairs_rejected": 0}
    assert dedup.cluster_in_memory(keys, exact, signatures, args, stats) == []
    assert stats == {"candidate_pairs": 2, "candidate_pairs_rejected": 2}
    args.threshold = 0.0  # no check, as FineWeb runs it: the chain forms
    edges = dedup.cluster_in_memory(keys, exact, signatures, args, stats)
    assert dedup.clusters_from_edges(edges) == {2: 1, 3: 1}


def test_union_find_keeps_the_smallest_key():
    edges = [(5, 9, False), (2, 9, False), (7, 8, True), (3, 7, False)]
    assert dedup.clusters_from_edges(edges) == {5: 2, 9: 2, 7: 3, 8: 3}


def test_same_result_for_any_worker_count_and_resume(corpus, deduped, tmp_path):
    folder, _, _ = corpus
    out, _ = deduped
    run_dedup(f"--input={folder}", f"--output={tmp_path}", "--workers=2")
    assert output_ids(tmp_path) == output_ids(out)
    for p in sorted(tmp_path.glob("*.jsonl.gz")):  # identical shards, to the byte once decompressed
        assert gzip.decompress(p.read_bytes()) == gzip.decompress((out / p.name).read_bytes())
    again = run_dedup(f"--input={folder}", f"--output={tmp_path}", "--workers=2")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["shards_skipped_done"] == 3 and "3 already done" in again.stdout


def test_machines_sharing_a_folder_agree(corpus, deduped, tmp_path):
    """--num_shards=2 without Redis: each machine waits for the other's signatures, then both
    compute the same global clustering."""
    folder, _, _ = corpus
    out, _ = deduped
    machines = [subprocess.Popen([sys.executable, str(ROOT / "dedup.py"), f"--input={folder}", f"--output={tmp_path}",
                                  "--workers=1", f"--shard={i}", "--num_shards=2"], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for m in machines:
        _, err = m.communicate(timeout=300)
        assert m.returncode == 0, err
    assert output_ids(tmp_path) == output_ids(out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path):
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        if os.environ.get("REQUIRE_REDIS"):  # CI sets it: there the test must run, not skip
            pytest.fail("REQUIRE_REDIS is set but redis-server is not installed")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_redis_index_shared_by_two_machines_equals_memory(corpus, deduped, tmp_path, redis_server):
    folder, _, _ = corpus
    out, _ = deduped
    machines = [subprocess.Popen([sys.executable, str(ROOT / "dedup.py"), f"--input={folder}",
                                  f"--output={tmp_path / 'machine'}", "--workers=1", f"--redis={redis_server}",
                                  f"--shard={i}", "--num_shards=2", f"--clusters={tmp_path / 'clusters.jsonl'}"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for m in machines:
        _, err = m.communicate(timeout=300)
        assert m.returncode == 0, err
    assert output_ids(tmp_path / "machine") == output_ids(out)
    reports = [json.loads(p.read_text()) for p in (tmp_path / "machine").glob("report_*.json")]
    assert len(reports) == 2
    expected = json.loads((out / "report.json").read_text())
    shard_stats = [json.loads(p.read_text()) for p in (tmp_path / "machine" / ".stats").glob("*.json")]
    for key in ("removed_exact_duplicates", "removed_near_duplicates", "documents_out"):
        assert sum(s.get(key, 0) for s in shard_stats) == expected["totals"][key]
    assert all(r["all_shards"] == expected["all_shards"] for r in reports)
    assert (tmp_path / "clusters.jsonl").read_text() == (out / "clusters.jsonl").read_text()


def test_bad_input_is_counted_not_fatal(tmp_path, monkeypatch, capsys):
    good = {"id": "a", "text": "one two three four five six seven eight nine ten"}
    write_shard(tmp_path / "in" / "x.jsonl.gz", [good, "{not json\n", json.dumps({"id": "b", "text": ""}) + "\n",
                                                  json.dumps([1, 2]) + "\n", dict(good, id="c")])
    result = run_dedup(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", "--workers=1")
    assert "x.jsonl.gz:2" in result.stderr
    assert output_ids(tmp_path / "out") == {"x.jsonl.gz": ["a"]}
    totals = json.loads((tmp_path / "out" / "report.json").read_text())["totals"]
    assert totals["bad_input:malformed_json"] == 1 and totals["bad_input:empty_text"] == 1
    assert totals["bad_input:not_an_object"] == 1 and totals["removed_exact_duplicates"] == 1
    for flags, message in [([f"--input={tmp_path / 'nothing'}"], "no .jsonl"), (["--threshold=1.5"], "threshold"),
                           (["--redis=localhost"], "HOST:PORT")]:
        monkeypatch.setattr(sys, "argv", ["dedup.py", f"--input={tmp_path / 'in'}", *flags])
        with pytest.raises(SystemExit) as stopped:
            dedup.main()
        assert stopped.value.code == 1 and message in capsys.readouterr().err


def test_shipped_sample_planted_duplicates(tmp_path):
    """The real pages of data/sample: the planted exact and near copies are removed, and every other
    page removed really is a copy: the real manuals repeat themselves too (identical search and index
    pages, GIMP filter pages that differ by a name), checked by brute-force Jaccard."""
    clusters = tmp_path / "clusters.jsonl"
    run_dedup(f"--input={SAMPLE / 'docs.jsonl.gz'}", f"--output={tmp_path / 'out'}", "--workers=1",
              f"--clusters={clusters}")
    docs = {d["id"]: d for d in read_shard(SAMPLE / "docs.jsonl.gz")}
    url = {i: d["url"] for i, d in docs.items()}
    kept = {url[i] for i in output_ids(tmp_path / "out")["docs.jsonl.gz"]}
    planted = json.loads((SAMPLE / "planted.json").read_text())
    pairs = [(p["url"], p["duplicate_of"]) for p in planted["exact_duplicates"] + planted["near_duplicates"]]
    pairs = [(a, b) for a, b in pairs if a in url.values() and b in url.values()]
    assert len(pairs) >= 25
    assert all((a in kept) != (b in kept) for a, b in pairs)
    planted_urls = {u for pair in pairs for u in pair}
    others = 0
    for cluster in map(json.loads, clusters.read_text().splitlines()):
        for removed in cluster["removed"]:
            if removed["url"] not in planted_urls:
                others += 1
                j = jaccard(docs[removed["id"]]["text"], docs[cluster["kept"]["id"]]["text"])
                assert j >= 0.6, f"{removed['url']} removed as a copy of {cluster['kept']['url']} at J={j:.2f}"
    assert len(url) - len(kept) == len(pairs) + others and others <= 15
