"""
Benchmark dedup.py on real pages with planted near-duplicates: speed (docs/s per core), peak memory,
and quality against a brute-force Jaccard over every pair of documents. Optionally the same corpus
through datatrove's 4-stage MinHash pipeline (FineWeb's), for speed and quality side by side.

    python bench/dedup.py [--docs=3000] [--planted=400] [--datatrove_python=/path/to/venv/bin/python]

The corpus: Debian's HTML documentation (python3.11-doc, postgresql-doc-15, git-doc, the Debian
handbook in five languages), text taken with lxml, plus copies of some pages with a random
share of words replaced, so their Jaccard similarity to the original spreads over 0.4 .. 1.0.
"""

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import sparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import dedup  # noqa: E402

SOURCES = ["/usr/share/doc/python3.11-doc/html", "/usr/share/doc/postgresql-doc-15/html", "/usr/share/doc/git-doc",
           "/usr/share/doc/debian-handbook/html/en-US", "/usr/share/doc/debian-handbook/html/fr-FR",
           "/usr/share/doc/debian-handbook/html/de-DE", "/usr/share/doc/debian-handbook/html/es-ES",
           "/usr/share/doc/debian-handbook/html/it-IT"]


def html_text(path):
    import lxml.html
    tree = lxml.html.fromstring(Path(path).read_bytes())
    for element in tree.xpath("//script|//style"):
        element.drop_tree()
    lines = (" ".join(line.split()) for line in tree.text_content().splitlines())
    return "\n".join(line for line in lines if line)


def build_corpus(folder, num_docs, num_planted, seed=0):
    rng = random.Random(seed)
    paths = sorted(p for source in SOURCES for p in Path(source).rglob("*.html"))
    rng.shuffle(paths)
    docs = []
    for path in paths:
        text = html_text(path)
        if len(text.split()) >= 50:
            docs.append({"id": f"page-{len(docs)}", "url": "file://" + str(path), "text": text})
        if len(docs) == num_docs:
            break
    for original in rng.sample(docs, num_planted):
        words = original["text"].split(" ")
        # share of words replaced; each replaced word breaks up to 5 shingles, so J ~ (1 - 5r) / (1 + 5r):
        # half the copies above J = 0.8, half between 0.4 and 0.8
        rate = rng.uniform(0.0, 0.022) if rng.random() < 0.5 else rng.uniform(0.022, 0.085)
        for i in rng.sample(range(len(words)), int(rate * len(words))):
            words[i] = rng.choice(["lorem", "ipsum", "dolor", "amet", "elit", "sed"]) + str(rng.randint(0, 9))
        docs.append({"id": f"copy-of-{original['id']}", "url": original["url"] + "#copy", "text": " ".join(words)})
    rng.shuffle(docs)
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(4):
        with gzip.open(folder / f"part-{shard}.jsonl.gz", "wt", encoding="utf-8") as f:
            for doc in docs[shard::4]:
                f.write(json.dumps(doc) + "\n")
    return docs


def brute_force_jaccard(docs, ngram=5):
    """Exact Jaccard of the word 5-gram sets of every pair that shares a shingle (a sparse product)."""
    vocabulary, rows, cols = {}, [], []
    for i, doc in enumerate(docs):
        words = dedup.normalize(doc["text"]).split()
        grams = {" ".join(words[k:k + ngram]) for k in range(max(1, len(words) - ngram + 1))}
        cols += [vocabulary.setdefault(g, len(vocabulary)) for g in grams]
        rows += [i] * len(grams)
    m = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(docs), len(vocabulary)))
    sizes = np.asarray(m.sum(axis=1)).ravel()
    inter = sparse.triu(m @ m.T, k=1).tocoo()
    j = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    return {(int(a), int(b)): float(x) for a, b, x in zip(inter.row, inter.col, j) if x >= 0.3}


def timed(command):
    """Run a command; wall seconds and the peak resident memory (MB) of its largest process."""
    start = time.time()
    result = subprocess.run(["/usr/bin/time", "-f", "PEAK_KB=%M", *command], capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    peak_kb = int(result.stderr.rsplit("PEAK_KB=", 1)[1].split()[0])
    return time.time() - start, peak_kb / 1024, result


def quality(docs, pairs, kept_ids):
    """The same measures for every run, from the brute-force Jaccard of all pairs:
    recall: of the pairs at J >= 0.8, the share where at least one of the two was removed;
    removed without partner: removed documents with no other document at all above J = 0.7;
    removed, nothing similar kept: removed documents with no *kept* document above J = 0.7, so
    that their content is gone from the output."""
    index = {d["id"]: i for i, d in enumerate(docs)}
    kept = {index[i] for i in kept_ids}
    removed = set(range(len(docs))) - kept
    partners = defaultdict(list)
    for (a, b), j in pairs.items():
        if j > 0.7:
            partners[a].append(b)
            partners[b].append(a)
    bins = {}
    for low, high in ((0.8, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.01)):
        true = [(a, b) for (a, b), j in pairs.items() if low <= j < high]
        bins[f"{low:.2f}-{min(high, 1):.2f}"] = f"{sum(a in removed or b in removed for a, b in true)}/{len(true)}"
    true = [(a, b) for (a, b), j in pairs.items() if j >= 0.8]
    return {"removed": len(removed),
            "recall_at_0.8": round(sum(a in removed or b in removed for a, b in true) / max(1, len(true)), 4),
            "recall_by_jaccard": bins,
            "removed_without_partner_above_0.7": sum(not partners[r] for r in removed),
            "removed_with_nothing_similar_kept": sum(not kept.intersection(partners[r]) for r in removed)}


def run_ours(folder, out, docs, pairs, workers, threshold, repeat):
    """Best of `repeat` runs from scratch (the machine may be shared), quality from the last."""
    seconds = peak = float("inf")
    for attempt in range(repeat):
        out = out.with_name(f"{out.name.split('.')[0]}.{attempt}")
        s, p, _ = timed([sys.executable, "dedup.py", f"--input={folder}", f"--output={out}", f"--workers={workers}",
                         f"--threshold={threshold}", f"--clusters={out}/clusters.jsonl"])
        seconds, peak = min(seconds, s), min(peak, p)
    kept = [json.loads(line)["id"] for p in sorted(out.glob("*.jsonl.gz")) for line in gzip.open(p, "rt")]
    report = json.loads((out / "report.json").read_text())
    return {"workers": workers, "threshold": threshold, "seconds": round(seconds, 2),
            "docs_per_second": round(len(docs) / seconds, 1), "peak_memory_mb": round(peak),
            "seconds_signatures": report["seconds_signatures"], "seconds_clustering": report["seconds_clustering"],
            "seconds_writing": report["seconds"], "candidate_pairs": report["candidate_pairs_checked"],
            "rejected": report["candidate_pairs_rejected"],
            "clusters": report["all_shards"]["cluster_sizes"], **quality(docs, pairs, kept)}


DATATROVE = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers.jsonl import JsonlWriter
data, work = sys.argv[1], sys.argv[2]
config = MinhashConfig()  # FineWeb's: 5-grams, 14 buckets x 8 hashes
steps = [
    ([JsonlReader(data), MinhashDedupSignature(output_folder=work + "/sigs", config=config)], 1),
    ([MinhashDedupBuckets(input_folder=work + "/sigs", output_folder=work + "/buckets", config=config)], 14),
    ([MinhashDedupCluster(input_folder=work + "/buckets", output_folder=work + "/remove", config=config)], 1),
    ([JsonlReader(data), MinhashDedupFilter(input_folder=work + "/remove"), JsonlWriter(work + "/out")], 1),
]
for n, (pipeline, tasks) in enumerate(steps):
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=f"{work}/logs/{n}").run()
"""


def run_datatrove(python, folder, work, docs, pairs):
    script = work / "datatrove_minhash.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(DATATROVE)
    seconds, peak, _ = timed([python, str(script), str(folder), str(work)])
    kept = [json.loads(line)["id"] for p in sorted((work / "out").glob("*.jsonl*"))
            for line in (gzip.open(p, "rt") if p.name.endswith(".gz") else open(p))]
    return {"workers": 1, "seconds": round(seconds, 2), "docs_per_second": round(len(docs) / seconds, 1),
            "peak_memory_mb": round(peak), **quality(docs, pairs, kept)}


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--docs", type=int, default=3000, help="real pages in the corpus")
    p.add_argument("--planted", type=int, default=400, help="edited copies added")
    p.add_argument("--datatrove_python", default="", help="a python with datatrove installed, to compare")
    p.add_argument("--repeat", type=int, default=2, help="time dedup.py as the best of this many runs")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_dedup_"))
    docs = build_corpus(work / "in", args.docs, args.planted)
    start = time.time()
    pairs = brute_force_jaccard(docs)
    megabytes = sum(len(d["text"]) for d in docs) / 1e6
    print(f"corpus: {len(docs)} documents ({args.planted} planted copies), {megabytes:.1f} MB; "
          f"brute-force Jaccard of all pairs in {time.time() - start:.1f}s: "
          f"{sum(j >= 0.8 for j in pairs.values())} pairs at J >= 0.8, "
          f"{sum(0.5 <= j < 0.8 for j in pairs.values())} in [0.5, 0.8)")
    results = {"dedup.py": run_ours(work / "in", work / "ours1", docs, pairs, 1, 0.75, args.repeat),
               "dedup.py --workers=2": run_ours(work / "in", work / "ours2", docs, pairs, 2, 0.75, args.repeat),
               "dedup.py --threshold=0 (no check, as FineWeb)": run_ours(work / "in", work / "ours0", docs, pairs,
                                                                         1, 0.0, 1)}
    if args.datatrove_python:
        results["datatrove MinHash (4 stages, 1 worker)"] = run_datatrove(args.datatrove_python, work / "in",
                                                                          work / "datatrove", docs, pairs)
    for name, result in results.items():
        print(f"\n{name}\n  " + "\n  ".join(f"{k}: {v}" for k, v in result.items()))
    if args.datatrove_python:
        theirs = results["datatrove MinHash (4 stages, 1 worker)"]["docs_per_second"]
        ratio = results["dedup.py"]["docs_per_second"] / theirs
        print(f"\ndedup.py per core is {ratio:.1f}x datatrove's MinHash pipeline on the same documents")
    print(f"\n(work folder: {work})")


if __name__ == "__main__":
    main()
