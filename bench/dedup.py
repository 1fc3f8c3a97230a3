"""
Benchmark dedup.py's passes on real pages with planted near-duplicates, at several corpus sizes, as
1 task and as 4 tasks per pass (the tasks of a pass run at once, as an array job's would): wall time,
CPU seconds per document, peak memory per task, disk of the work files, and quality against a
brute-force Jaccard over every pair of documents.

Optionally the same corpus through datatrove's 4-stage MinHash pipeline (FineWeb's) with the same
numbers of tasks and workers; and, from the largest corpus, a projection to 1B documents.

    python bench/dedup.py [--sizes=1000,2000,4000] [--planted=0.12] [--datatrove_python=VENV/bin/python]

The corpus: Debian's HTML documentation (python3.11-doc, postgresql-doc-15, git-doc, the Debian
handbook in five languages), text taken with lxml, plus copies of some pages with a random
share of words replaced, so their Jaccard similarity to the original spreads over 0.4 .. 1.0.
"""

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy import sparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import minhash  # noqa: E402

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
        words = minhash.normalize(doc["text"]).split()
        grams = {" ".join(words[k:k + ngram]) for k in range(max(1, len(words) - ngram + 1))}
        cols += [vocabulary.setdefault(g, len(vocabulary)) for g in grams]
        rows += [i] * len(grams)
    m = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(docs), len(vocabulary)))
    sizes = np.asarray(m.sum(axis=1)).ravel()
    inter = sparse.triu(m @ m.T, k=1).tocoo()
    j = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    return {(int(a), int(b)): float(x) for a, b, x in zip(inter.row, inter.col, j) if x >= 0.3}


def timed(command):
    """Run a command: wall seconds, CPU seconds (user + system) and peak resident memory (MB) of its
    largest process."""
    start = time.time()
    result = subprocess.run(["/usr/bin/time", "-f", "TIME=%U %S %M", *command], capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    user, system, peak_kb = result.stderr.rsplit("TIME=", 1)[1].split()[:3]
    return {"wall": time.time() - start, "cpu": float(user) + float(system), "peak_mb": int(peak_kb) / 1024}


def tasks_at_once(commands):
    """The tasks of one pass, all at once: wall time of the pass, CPU summed, the largest task's peak."""
    start = time.time()
    with ThreadPoolExecutor(len(commands)) as pool:
        runs = list(pool.map(timed, commands))
    return {"wall": time.time() - start, "cpu": sum(r["cpu"] for r in runs), "peak_mb": max(r["peak_mb"] for r in runs)}


def quality(docs, pairs, kept_ids):
    """The same measures for every run, from the brute-force Jaccard of all pairs:
    recall: of the pairs at J >= 0.8, the share where at least one of the two was removed;
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
    true = [(a, b) for (a, b), j in pairs.items() if j >= 0.8]
    return {"removed": len(removed),
            "recall_at_0.8": round(sum(a in removed or b in removed for a, b in true) / max(1, len(true)), 4),
            "removed_with_nothing_similar_kept": sum(not kept.intersection(partners[r]) for r in removed)}


def read_ids(folder):
    return [json.loads(line)["id"] for p in sorted(Path(folder).glob("*.jsonl*"))
            for line in (gzip.open(p, "rt") if p.name.endswith(".gz") else open(p))]


def summarize(steps, docs):
    total = {"wall_s": round(sum(s["wall"] for s in steps.values()), 2),
             "cpu_ms_per_doc": round(1000 * sum(s["cpu"] for s in steps.values()) / len(docs), 3),
             "peak_mb_per_task": round(max(s["peak_mb"] for s in steps.values()))}
    total["passes"] = {name: f"{s['wall']:.1f} s wall, {1000 * s['cpu'] / len(docs):.2f} ms CPU/doc, "
                             f"{s['peak_mb']:.0f} MB" for name, s in steps.items()}
    return total


def run_ours(folder, out, docs, pairs, tasks):
    """Each pass as `tasks` processes at once (clusters: one), as slurm/pipeline.sh submits them."""
    steps = {}
    for name in dedup_passes():
        count = 1 if name == "clusters" else tasks
        steps[name] = tasks_at_once([[sys.executable, "dedup.py", f"--pass={name}", f"--input={folder}",
                                      f"--output={out}", "--workers=1", f"--shard={i}", f"--num_shards={count}"]
                                     for i in range(count)])
    work = out / ".dedup"
    disk = {part: sum(p.stat().st_size for p in work.rglob(pattern)) / len(docs)
            for part, pattern in (("signatures", "signatures.npy"), ("bands", "bands.npy"), ("exact", "exact.npy"),
                                  ("pairs", "*.npz"))}
    summary = json.loads((work / "clusters.json").read_text())
    return steps, {**summarize(steps, docs), "disk_bytes_per_doc": {k: round(v) for k, v in disk.items()},
            "kept_without_a_kept_near_copy": summary["all_shards"]["kept_without_a_kept_near_copy"],
            **quality(docs, pairs, read_ids(out))}


def dedup_passes():
    return ["signatures", "buckets", "clusters", "write"]


DATATROVE = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers.jsonl import JsonlWriter
data, work, stage, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
config = MinhashConfig()  # FineWeb's: 5-grams, 14 buckets x 8 hashes
steps = {
    "signatures": ([JsonlReader(data), MinhashDedupSignature(output_folder=work + "/sigs", config=config)], workers),
    "buckets": ([MinhashDedupBuckets(input_folder=work + "/sigs", output_folder=work + "/buckets", config=config)], 14),
    "clusters": ([MinhashDedupCluster(input_folder=work + "/buckets", output_folder=work + "/remove", config=config)], 1),
    "write": ([JsonlReader(data), MinhashDedupFilter(input_folder=work + "/remove"), JsonlWriter(work + "/out")],
              workers),
}
pipeline, tasks = steps[stage]
if __name__ == "__main__":  # its worker processes import this file again
    # fork: the workers are children of this process, so /usr/bin/time counts their CPU and memory
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks), start_method="fork",
                          logging_dir=f"{work}/logs/{stage}").run()
"""


def run_datatrove(python, folder, work, docs, pairs, tasks):
    """datatrove's stages, each as one run of its local executor with `tasks` workers (its buckets
    stage needs one task per band: 14, run `tasks` at a time); the peak is its largest process's."""
    script = work / "datatrove_minhash.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(DATATROVE)
    steps = {name: timed([python, str(script), str(folder), str(work), name, str(tasks)]) for name in dedup_passes()}
    return {**summarize(steps, docs), **quality(docs, pairs, read_ids(work / "out"))}


# bytes a task holds per unit of its share, from the arrays it builds (dedup.py): a signatures task
# per document of its shard (the lists while computing, then signatures, text hashes, 15 band
# hashes and the sorted band lists); a buckets task per band entry of its unit (the slices read,
# merged, sorted) plus a signature per document in a bucket of two or more; the clusters task per
# linked pair (the pairs, their nodes, union-find's arrays); a write task per removed row of its shard
STATE_BYTES = {"signatures": 1500, "buckets": 56, "clusters": 100, "write": 100}


def clusters_per_pair(pairs=1_000_000, seed=0):
    """CPU seconds per linked pair of the clusters pass's work (union-find, then the kept-copy rule),
    in this process on a million synthetic pairs: the corpora here have too few pairs to see it."""
    sys.path.insert(0, str(ROOT))
    import dedup
    rng = np.random.default_rng(seed)
    later = rng.integers(1, 3 * pairs // 2, pairs)
    earlier = np.maximum(0, later - rng.integers(1, 4, pairs))  # clusters of a few pages
    agree = rng.integers(84, 113, pairs).astype(np.uint16)
    start = time.process_time()
    dedup.union_find(earlier, later, 3 * pairs // 2)
    dedup.keep_near_copies(earlier, later, agree, 3 * pairs // 2)
    return (time.process_time() - start) / pairs


def projection(measured, num_docs=1e9, shard_docs=1e6, tasks=1000):
    """What the passes need at num_docs, from the 1-task runs: CPU per document as the slope between
    the smallest and the largest corpus (so that starting Python is left out; clusters: per linked
    pair, from clusters_per_pair), memory from the
    state each task holds per unit of its share (STATE_BYTES) next to the peak measured here."""
    (small_docs, _, small), (docs, removed, large) = measured[0], measured[-1]
    pairs = num_docs * removed / docs
    share = {"signatures": (shard_docs, "documents of its shard"), "buckets": (2**24, "band entries of its unit"),
             "clusters": (pairs, "linked pairs"), "write": (shard_docs * removed / docs, "removed rows of its shard")}
    lines = [f"projection to {num_docs:.0e} documents, {tasks} tasks per array pass, input shards of "
             f"{shard_docs:.0e} documents ({15 * -(-int(num_docs) // 2**24)} bucket units of 2^24 entries), "
             f"{removed / docs:.0%} removed as here:"]
    for name, (units, what) in share.items():
        cpu_hours = (large[name]["cpu"] - small[name]["cpu"]) / (docs - small_docs) * num_docs / 3600
        if name == "clusters":  # what grows is the pairs' work; reading the pair files is the buckets' writing
            cpu_hours = clusters_per_pair() * pairs / 3600
        memory = 0.04 + STATE_BYTES[name] * units / 1e9  # + the interpreter and numpy, ~40 MB
        lines.append(f"  {name:>10}: {cpu_hours:7,.1f} CPU hours ({cpu_hours / (1 if name == 'clusters' else tasks):,.2f} h "
                     f"per task); memory per task ~{memory:.2f} GB ({STATE_BYTES[name]} bytes x {units:.2g} {what}; "
                     f"measured peak here {large[name]['peak_mb']:.0f} MB)")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--sizes", default="1000,2000,4000", help="real pages in each corpus, comma-separated")
    p.add_argument("--planted", type=float, default=0.12, help="edited copies added, as a share of the pages")
    p.add_argument("--tasks", default="1,4", help="tasks per pass, comma-separated")
    p.add_argument("--datatrove_python", default="", help="a python with datatrove installed, to compare")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_dedup_"))
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; work folder {work}")
    measured = []
    for size in map(int, args.sizes.split(",")):
        folder = work / f"in{size}"
        docs = build_corpus(folder, size, int(args.planted * size))
        pairs = brute_force_jaccard(docs)
        print(f"\n=== {len(docs)} documents ({int(args.planted * size)} planted copies, "
              f"{sum(len(d['text']) for d in docs) / 1e6:.1f} MB): {sum(j >= 0.8 for j in pairs.values())} pairs at "
              f"J >= 0.8 by brute force")
        for tasks in map(int, args.tasks.split(",")):
            steps, ours = run_ours(folder, work / f"ours{size}_{tasks}", docs, pairs, tasks)
            if tasks == 1:
                measured.append((len(docs), ours["removed"], steps))
            runs = {f"dedup.py passes, {tasks} task(s)": ours}
            if args.datatrove_python:
                runs[f"datatrove MinHash, {tasks} worker(s)"] = run_datatrove(
                    args.datatrove_python, folder, work / f"datatrove{size}_{tasks}", docs, pairs, tasks)
            for name, result in runs.items():
                print(f"{name}\n  " + "\n  ".join(f"{k}: {v}" for k, v in result.items()))
        print(f"load now {os.getloadavg()[0]:.1f}")
    disk = sum(ours["disk_bytes_per_doc"].values())
    print("\n" + projection(measured) + f"\n  work files: {disk:.0f} bytes per document, {disk * 1e9 / 1e12:.2f} TB "
          f"at 1e9 documents (band files {ours['disk_bytes_per_doc']['bands']} bytes per document)")


if __name__ == "__main__":
    main()
