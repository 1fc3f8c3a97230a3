"""dedup.py against a brute-force reference: planted duplicates at known Jaccard similarity on the
same word 5-grams, the chaining trap, planted chains of edits (every removed page keeps a near copy),
worker counts, the passes run as separate tasks, bad input and the shipped sample."""

import functools
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

import crashsafe
import dedup
import minhash

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


@functools.lru_cache(maxsize=None)
def shingles(text, n=5):
    """The reference: the set of word n-grams of the normalized text, computed the slow, obvious way."""
    words = minhash.normalize(text).split()
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
        first = min((d["id"] for d in c["kept"] + c["removed"]), key=position.get)
        assert c["kept"][0]["id"] == first and {d["id"] for d in c["kept"]} <= kept  # the first in input order stays
        for r in c["removed"]:
            assert r["id"] in removed and r["partner"] in {d["id"] for d in c["kept"]}
            assert jaccard(text[r["partner"]], text[r["id"]]) > 0.7  # a true partner, not a chain
    report = json.loads((out / "report.json").read_text())
    totals = report["totals"]
    assert totals["documents_in"] == len(docs) and totals["documents_out"] == len(kept)
    assert totals["removed_exact_duplicates"] == 30
    assert report["all_shards"]["duplicate_clusters"] == len(clusters)


def test_signatures_are_datasketch_minhashes():
    text = "The quick brown fox, 42 times \u2014 jumps over the lazy dog; \u00dcn\u00efc\u00f6d\u00e9 too!\n" * 3 + "end"
    words = minhash.normalize(text).split()
    grams = [" ".join(words[i:i + 5]).encode() for i in range(len(words) - 4)]
    reference = MinHash(num_perm=112, seed=7, hashfunc=minhash.shingle_hash)
    reference.update_batch(grams)
    _, signature = minhash.document_signature(text, 5, minhash.permutations(112, 7))
    assert np.array_equal(signature, reference.hashvalues)
    assert np.array_equal(minhash.shingle_hashes(" ".join(words).encode(), 5), [minhash.shingle_hash(g) for g in grams])
    # a text shorter than one n-gram is a single shingle, not an empty set
    assert len(minhash.shingle_hashes(b"two words", 5)) == 1


def test_normalize():
    assert minhash.normalize("  Hello,\tWORLD!! 2024\n") == "hello world 0000"
    assert minhash.normalize("Caf\u00e9 na\u00efve") == minhash.normalize("Cafe\u0301 nai\u0308ve") == "cafe naive"
    assert minhash.normalize("end.Start \u201cquoted\u201d \u00a0x\u2014y") == "end start quoted x y"
    assert minhash.normalize("\u0414\u041e\u041c \u0663") == "\u0434\u043e\u043c 0"
    assert dedup.normalize is minhash.normalize  # other scripts normalize as dedup does


def test_chain_through_one_shared_band_is_not_merged():
    """A shares one LSH band with B, B another with C: candidates, but nothing alike. Union-find on
    raw candidates would make one cluster of all three; the Jaccard check keeps them apart. Without
    the check (threshold 0, as FineWeb runs it) the chain forms, and the kept-copy rule still keeps C,
    which is nothing like A, the one union-find keeps."""
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32, (3, 112), dtype=np.uint64).astype(np.uint32)
    signatures[1, 0:8] = signatures[0, 0:8]
    signatures[1, 8:16] = signatures[2, 8:16]
    keys = np.array([1, 2, 3], np.int64)
    exact = np.arange(48, dtype=np.uint8).reshape(3, 16)
    args = type("Args", (), dict(bands=14, rows=8, threshold=0.75))()
    stats = {"candidate_pairs": 0, "candidate_pairs_rejected": 0}
    assert dedup.checked_pairs(0, keys[:2], signatures[:2], exact[:2], args, stats) == []
    assert dedup.checked_pairs(1, keys[1:], signatures[1:], exact[1:], args, stats) == []
    assert stats == {"candidate_pairs": 2, "candidate_pairs_rejected": 2}
    args.threshold = 0.0
    pairs = np.array(dedup.checked_pairs(0, keys[:2], signatures[:2], exact[:2], args, stats) +
                     dedup.checked_pairs(1, keys[1:], signatures[1:], exact[1:], args, stats), dedup.PAIR)
    assert [(int(a), int(b)) for a, b, _ in pairs] == [(1, 2), (2, 3)]
    earlier, later = pairs["earlier"] - 1, pairs["later"] - 1
    assert dedup.union_find(earlier, later, 3).tolist() == [0, 0, 0]
    kept, partner, _ = dedup.keep_near_copies(earlier, later, pairs["agree"], 3)
    assert kept.tolist() == [True, False, True] and partner[1] == 0


def test_a_pair_sharing_several_bands_is_checked_once():
    rng = np.random.default_rng(1)
    signatures = rng.integers(0, 2**32, (2, 112), dtype=np.uint64).astype(np.uint32)
    signatures[1, 16:40] = signatures[0, 16:40]  # bands 2, 3 and 4 agree
    args = type("Args", (), dict(bands=14, rows=8, threshold=0.1))()
    stats = {"candidate_pairs": 0, "candidate_pairs_rejected": 0}
    found = [dedup.checked_pairs(band, np.array([5, 9]), signatures, np.arange(32, dtype=np.uint8).reshape(2, 16),
                                 args, stats) for band in (2, 3, 4)]
    assert found == [[(5, 9, 24)], [], []] and stats["candidate_pairs"] == 1


def test_union_find_against_breadth_first_search():
    rng = np.random.default_rng(2)
    for n, m in [(1, 0), (2, 1), (50, 30), (400, 350), (1000, 2000)]:
        earlier, later = rng.integers(0, n, m), rng.integers(0, n, m)
        root = dedup.union_find(earlier, later, n)
        neighbours = [[] for _ in range(n)]
        for a, b in zip(earlier, later):
            neighbours[a].append(b)
            neighbours[b].append(a)
        expected = [-1] * n
        for start in range(n):  # visiting nodes in order, the first of a component is its smallest
            if expected[start] < 0:
                expected[start], todo = start, [start]
                while todo:
                    for b in neighbours[todo.pop()]:
                        if expected[b] < 0:
                            expected[b] = start
                            todo.append(b)
        assert root.tolist() == expected


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


def dedup_in_process(monkeypatch, *flags):
    monkeypatch.setattr(sys, "argv", ["dedup.py", *map(str, flags)])
    dedup.main()


def test_passes_as_separate_tasks_equal_one_process(corpus, deduped, tmp_path, monkeypatch):
    """Each pass as an array of tasks, one after the other, as slurm/pipeline.sh runs them, with the
    hash range cut into slices: the same bytes as one process. Then a buckets task whose output was
    lost (and a stale temporary file beside it) is rerun alone, and the result is the same again."""
    folder, _, _ = corpus
    out, _ = deduped
    common = [f"--input={folder}", f"--output={tmp_path}", "--workers=1", "--range_docs=100"]
    for task in range(2):
        dedup_in_process(monkeypatch, *common, "--pass=signatures", f"--shard={task}", "--num_shards=2")
    for task in range(4):
        dedup_in_process(monkeypatch, *common, "--pass=buckets", f"--shard={task}", "--num_shards=4")
    units = sorted((tmp_path / ".dedup" / "pairs").glob("*.npz"))
    assert len(units) == 15 * 5  # (14 bands + the text hash) x 5 slices of the hash range
    dedup_in_process(monkeypatch, *common, "--pass=clusters", f"--clusters={tmp_path / 'clusters.jsonl'}")
    for task in range(3):
        dedup_in_process(monkeypatch, *common, "--pass=write", f"--shard={task}", "--num_shards=3")
    for p in sorted(out.glob("*.jsonl.gz")):
        assert (tmp_path / p.name).read_bytes() == p.read_bytes()
    assert (tmp_path / "clusters.jsonl").read_text() == (out / "clusters.jsonl").read_text()
    reports = [json.loads(p.read_text()) for p in tmp_path.glob("report_*_of_00003.json")]
    expected = json.loads((out / "report.json").read_text())
    assert len(reports) == 3 and all(r["all_shards"] == expected["all_shards"] for r in reports)
    assert sum(r["totals"]["documents_out"] for r in reports) == expected["totals"]["documents_out"]
    assert sum(r["candidate_pairs"] for r in reports) == 3 * expected["candidate_pairs"]

    signatures = tmp_path / ".dedup" / "shards" / "part-0.jsonl.gz" / "signatures.npy"
    written = signatures.stat().st_mtime_ns
    dedup_in_process(monkeypatch, *common, "--pass=signatures")  # done: skipped
    assert signatures.stat().st_mtime_ns == written
    lost = units[7]
    lost.unlink()
    (lost.parent / f".{lost.name}.tmp12345").write_bytes(b"half a file")
    for p in [tmp_path / ".dedup" / "clusters.json", *tmp_path.glob("*.jsonl.gz"), *(tmp_path / ".stats").glob("*")]:
        p.unlink()
    with pytest.raises(SystemExit):  # the clusters pass names what is missing rather than guess
        dedup_in_process(monkeypatch, *common, "--pass=clusters")
    dedup_in_process(monkeypatch, *common, "--pass=buckets", f"--shard={7 % 4}", "--num_shards=4")
    dedup_in_process(monkeypatch, *common, "--pass=clusters")
    dedup_in_process(monkeypatch, *common, "--pass=write")
    for p in sorted(out.glob("*.jsonl.gz")):
        assert (tmp_path / p.name).read_bytes() == p.read_bytes()


def test_rerun_with_other_settings_rewrites_the_output(tmp_path, monkeypatch):
    """A rerun into the same --output with another --threshold finds other clusters: the shards
    written from the old ones must be redone, not skipped as done."""
    rng = random.Random(3)
    words = [random_word(rng) for _ in range(200)]
    docs = [{"id": "a", "text": " ".join(words)}, 
            {"id": "b", "text": " ".join(edited(rng, words, 2))}]
    write_shard(tmp_path / "in" / "a.jsonl.gz", docs)
    flags = [f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", "--workers=1"]
    dedup_in_process(monkeypatch, *flags)
    assert output_ids(tmp_path / "out") == {"a.jsonl.gz": ["a"]}
    dedup_in_process(monkeypatch, *flags, "--threshold=1")
    assert output_ids(tmp_path / "out") == {"a.jsonl.gz": ["a", "b"]}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["totals"]["documents_out"] == 2


def test_a_new_shard_sorted_first_renumbers_the_others(tmp_path, monkeypatch):
    """Keys hold a shard's number among all input shards: a shard added in front of the others
    shifts their numbers, so their signature files, keyed by the old ones, must be redone."""
    rng = random.Random(4)
    docs = [{"id": f"b{i}", "text": " ".join(random_word(rng) for _ in range(100))}
            for i in range(3)]
    copies = [dict(d, id=d["id"] + "-copy") for d in docs]
    write_shard(tmp_path / "in" / "b.jsonl.gz", docs + copies)
    flags = [f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", "--workers=1"]
    dedup_in_process(monkeypatch, *flags)
    other = [{"id": f"a{i}", "text": " ".join(random_word(rng) for _ in range(100))}
             for i in range(6)]
    write_shard(tmp_path / "in" / "a.jsonl.gz", other)
    dedup_in_process(monkeypatch, *flags)
    assert output_ids(tmp_path / "out") == {"a.jsonl.gz": [d["id"] for d in other],
                                            "b.jsonl.gz": ["b0", "b1", "b2"]}


def chained_pages(rng, pages, length, step):
    """A chain of edits of each page: A, an edit of A, an edit of the edit, ... Each edit replaces
    words at fresh places at least 5 words from any earlier edit, so it breaks its own 5-grams only
    and the Jaccard similarity of A_i and A_j falls with |i - j| as (1 - step|i-j|) / (1 + step|i-j|)."""
    chains = []
    for c, page in enumerate(pages):
        words = page["text"].split()
        places = list(range(2, len(words) - 2, 5))
        rng.shuffle(places)
        per_edit = int(step * len(words) / 5)
        chain = [dict(page, id=f"chain{c}-0")]
        for i in range(1, length):
            for p in places[(i - 1) * per_edit: i * per_edit]:
                words[p] = f"zq{c}x{i}x{p}"
            chain.append(dict(page, id=f"chain{c}-{i}", url=f"{page['url']}#edit{i}", text=" ".join(words)))
        chains.append(chain)
    return chains


def test_no_page_removed_without_a_kept_near_copy(tmp_path, monkeypatch):
    """Real pages with planted chains of edits. Union-find links each edit to the next and keeps one
    page per chain, far from its end; the kept-copy rule must leave every removed page a kept
    partner: at estimated J >= the threshold (the rule itself), and at exact J >= the threshold less
    0.1, about 2 standard deviations of a 112-hash estimate (the edits are sized so that no pair
    lies in between)."""
    rng = random.Random(5)
    sample = [d for d in read_shard(SAMPLE / "docs.jsonl.gz") if len(d["text"].split()) >= 600]
    chains = chained_pages(rng, sample[:12], length=8, step=0.064)  # J: 0.88, 0.77, 0.68, 0.60, ...
    docs = [d for chain in chains for d in chain] + sample[12:40]
    rng.shuffle(docs)
    write_shard(tmp_path / "in" / "a.jsonl.gz", docs[::2])
    write_shard(tmp_path / "in" / "b.jsonl.gz", docs[1::2])
    dedup_in_process(monkeypatch, f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", "--workers=1")
    kept = {i for ids in output_ids(tmp_path / "out").values() for i in ids}
    text = {d["id"]: d["text"] for d in docs}
    perms = minhash.permutations(112, 1)
    signature = {i: minhash.document_signature(t, 5, perms)[1] for i, t in text.items()}
    removed = set(text) - kept
    assert len(removed) >= 3 * len(chains)  # the rule keeps what it must, not everything
    for r in removed:
        assert max(minhash.estimated_jaccard(signature[r], signature[k]) for k in kept) >= 0.75
        assert max(jaccard(text[r], text[k]) for k in kept) >= 0.65
    # the test has teeth: keeping only the first page of each chain, as union-find alone does,
    # removes pages whose closest kept page is far below the threshold
    first = {d["id"].split("-")[0]: d["id"] for d in [d for p in sorted((tmp_path / "in").glob("*")) for d in read_shard(p)]
             if d["id"].startswith("chain")}
    assert any(jaccard(text[r], text[first[r.split("-")[0]]]) < 0.65 for r in removed | (kept - set(first.values()))
               if r.startswith("chain"))
    found = json.loads((tmp_path / "out" / "report.json").read_text())["all_shards"]
    assert found["kept_without_a_kept_near_copy"] == len(kept & {d["id"] for c in chains for d in c}) - len(chains)


def test_pages_without_words_are_copies_only_of_their_exact_copies(tmp_path):
    """Emoji and punctuation normalize to nothing: three different such pages were one cluster, two
    of them removed as exact duplicates. Now only a byte-for-byte copy goes, as for any page."""
    docs = [{"id": i, "text": t} for i, t in enumerate(["\U0001f600\U0001f600", "\U0001f389 \U0001f389", "!!! ???",
                                                         "\U0001f600\U0001f600", "Hello, World!", "hello world"])]
    write_shard(tmp_path / "in" / "x.jsonl.gz", docs)
    run_dedup(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", "--workers=1")
    assert output_ids(tmp_path / "out") == {"x.jsonl.gz": [0, 1, 2, 4]}


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
                           (["--num_shards=2"], "needs --pass"), (["--pass=clusters", "--num_shards=2"], "one task"),
                           (["--pass=buckets", f"--output={tmp_path / 'new'}"], "signatures of 1 shard"),
                           (["--pass=write", f"--output={tmp_path / 'new'}"], "run --pass=clusters first")]:
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
                partner = docs[removed["partner"]]
                j = jaccard(docs[removed["id"]]["text"], partner["text"])
                assert j >= 0.6, f"{removed['url']} removed as a copy of {partner['url']} at J={j:.2f}"
    assert len(url) - len(kept) == len(pairs) + others and others <= 15


def test_rerun_without_or_with_other_sentences_rewrites_the_output(tmp_path, monkeypatch):
    """--sentences rewrites the shards in place: a rerun into the same --output without it, or with
    another --min_doc_words, must write them again from the input, not skip them as done."""
    shared = "The first shared line is here. The second shared line is here. The third one is too."
    docs = [{"id": "a", "text": "Page a starts with its own words. " + shared},
            {"id": "b", "text": shared + " Page b ends with words of its own, seven of them."}]
    write_shard(tmp_path / "in" / "a.jsonl.gz", docs)
    out = tmp_path / "out"
    flags = [f"--input={tmp_path / 'in'}", f"--output={out}", "--workers=1"]
    dedup_in_process(monkeypatch, *flags, "--sentences", "--min_doc_words=1")
    assert [d["text"] for d in read_shard(out / "a.jsonl.gz")][1].startswith("Page b ends")
    dedup_in_process(monkeypatch, *flags)
    assert read_shard(out / "a.jsonl.gz") == docs
    assert not (out / "report_sentences.json").exists()
    dedup_in_process(monkeypatch, *flags, "--sentences", "--min_doc_words=1")
    dedup_in_process(monkeypatch, *flags, "--sentences", "--min_doc_words=20")  # b keeps 12 words
    assert [d["id"] for d in read_shard(out / "a.jsonl.gz")] == ["a"]


def test_sentence_reports_of_another_num_shards_are_removed(tmp_path, monkeypatch):
    """--sentences on one machine, then on two, then on one, then on two without it: each time only
    the sentence reports of the run just made are left (an old machine's report_sentences_* would
    be summed with the new ones, or warned about for ever if its run was killed)."""
    shared = "The first shared line is here. The second shared line is here. The third one is too."
    for name in ("a", "b"):
        write_shard(tmp_path / "in" / f"{name}.jsonl.gz",
                    [{"id": name, "text": f"Page {name} starts with its own words. " + shared}])
    out = tmp_path / "out"
    flags = [f"--input={tmp_path / 'in'}", f"--output={out}", "--workers=1", "--min_doc_words=1"]

    def on_two(*more):
        for task in range(2):
            dedup_in_process(monkeypatch, *flags, "--pass=write", f"--shard={task}", "--num_shards=2", *more)

    def sentence_reports():
        return sorted(p.name for p in out.glob("report_sentences*.json"))

    dedup_in_process(monkeypatch, *flags, "--sentences")
    assert sentence_reports() == ["report_sentences.json"]
    on_two("--sentences")
    assert sentence_reports() == ["report_sentences_00000_of_00002.json", "report_sentences_00001_of_00002.json"]
    shards = sorted(out.glob("*.jsonl.gz"))
    assert crashsafe.check_input(str(out), shards)["input_complete"] is True
    (out / "report_sentences_00001_of_00002.json").unlink()  # its machine never ran: the next stage says so
    check = crashsafe.check_input(str(out), shards)
    assert check["input_complete"] is False
    assert any("no report_sentences from machine(s) [1] of 2" in p for p in check["input_problems"]), check
    killed = out / "report_sentences_00001_of_00002.json"  # as a run killed midway leaves it
    killed.write_text(json.dumps({"stage": "sentence_dedup", "complete": False, "shards": []}))
    dedup_in_process(monkeypatch, *flags, "--sentences")
    assert sentence_reports() == ["report_sentences.json"]
    assert crashsafe.check_input(str(out), sorted(out.glob("*.jsonl.gz")))["input_complete"] is True
    on_two()  # no sentence dedup now: the one machine's report_sentences.json describes nothing
    assert sentence_reports() == []


@pytest.mark.parametrize("script", ["dedup", "sentence_dedup"])
def test_an_output_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys, script):
    """--output=FILE was mkdir's NotADirectoryError (dedup) or FileExistsError (sentence_dedup)."""
    import sentence_dedup
    (tmp_path / "in").mkdir()
    with gzip.open(tmp_path / "in" / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"id": "a", "text": "one two three four five six"}) + "\n")
    (tmp_path / "afile").write_text("mine")
    monkeypatch.setattr(sys, "argv", [f"{script}.py", f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'afile'}"])
    with pytest.raises(SystemExit):
        {"dedup": dedup, "sentence_dedup": sentence_dedup}[script].main()
    assert f"error: the output folder {tmp_path / 'afile'} is a file: give a folder" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_rerun_without_sentences_killed_after_its_report_leaves_no_sentence_report(tmp_path, monkeypatch):
    """Without --sentences the shards are rewritten from the input; the earlier --sentences run's
    report_sentences.json, which says their repeated spans are gone, went only after report.json was
    complete: killed in between, the folder said both of shards that had them again."""
    shared = "The first shared line is here. The second shared line is here. The third one is too."
    write_shard(tmp_path / "in" / "a.jsonl.gz", [{"id": "a", "text": "Page a starts with its own words. " + shared},
                                                  {"id": "b", "text": shared + " Page b ends with words of its own."}])
    out = tmp_path / "out"
    flags = [f"--input={tmp_path / 'in'}", f"--output={out}", "--workers=1", "--min_doc_words=1"]
    dedup_in_process(monkeypatch, *flags, "--sentences")
    assert json.loads((out / "report_sentences.json").read_text())["complete"]

    class Killed(BaseException):
        pass
    real_run_stage = dedup.run_stage

    def killed_after(*args, **kwargs):  # the kill lands the moment report.json is complete
        real_run_stage(*args, **kwargs)
        raise Killed
    monkeypatch.setattr(dedup, "run_stage", killed_after)
    with pytest.raises(Killed):
        dedup_in_process(monkeypatch, *flags)
    assert shared in read_shard(out / "a.jsonl.gz")[1]["text"]  # the repeated span is back
    assert not list(out.glob("report_sentences*.json"))
