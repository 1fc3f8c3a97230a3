"""
Speed, memory and fidelity of sentence_dedup.py against datatrove's SentenceDedup (its three
stages: signatures, find duplicates, filter), on the same pages, shards and cores.

    python bench/sentence_dedup.py [--workers=2] [--shards=2] [--datatrove_python=PATH]

The pages: ~4,900 pages of the Debian documentation packages (Python, PostgreSQL, the Debian
handbook in its languages, git, the Debian FAQ, reference, developers' reference, maintainers'
guide), extracted once with trafilatura and cached at --docs. Into every 5th a boilerplate paragraph
of 4 sentences is planted after its first sentence, and every 7th gets a 3-sentence footer, so the
corpus has repeats that must go besides those the documentation has itself.

Both run as their own processes, one after the other, with --workers processes over --shards input
files; the figures are wall-clock seconds, and for ours CPU seconds and the peak resident memory of
the largest process (GNU time; datatrove's workers are children of a forkserver, which GNU time
does not see, so for it only the wall time is measured). datatrove needs its own environment (pip install datatrove spacy xxhash in
another venv, given as --datatrove_python): it is not a dependency of the project.

Fidelity: the spans removed (ours counts windows; datatrove counts sentences), the pages dropped,
the planted boilerplate left (it must stay on exactly one page), and the share of pages whose text
is the same in both outputs (whitespace at the ends aside: datatrove strips it). datatrove keeps the
first occurrence in the order (hash, document index within its task, task), not in input order, so
with several shards a span repeated across them can be kept on a different page than ours.
"""

import argparse
import glob
import gzip
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIRS = ["/usr/share/doc/python3.11/html", "/usr/share/doc/postgresql-doc-15/html", "/usr/share/doc/debian-handbook/html",
        "/usr/share/doc/git-doc", "/usr/share/doc/debian/FAQ", "/usr/share/debian-reference",
        "/usr/share/developers-reference", "/usr/share/doc/maint-guide/html"]
BOILERPLATE = ("Sign up for our weekly newsletter to hear about new releases first. We send one e-mail a week, "
               "never more. You can unsubscribe at any time with one click. Read past issues in our archive.")
FOOTER = "This page was last updated by the web team. Report a problem with this page. All trademarks belong to their owners."

DATATROVE = '''
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.sentence_dedup import (SentDedupConfig, SentenceDedupFilter, SentenceDedupSignature,
                                                     SentenceFindDedups)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

if __name__ == "__main__":  # its workers start by importing this file
    src, work, tasks, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    config = SentDedupConfig(n_sentences=3, min_doc_words=50)
    LocalPipelineExecutor(pipeline=[JsonlReader(src), SentenceDedupSignature(f"{work}/sigs", config=config)],
                          tasks=tasks, workers=workers, logging_dir=f"{work}/logs1").run()
    LocalPipelineExecutor(pipeline=[SentenceFindDedups(f"{work}/sigs", f"{work}/dups", config=config)],
                          tasks=1, logging_dir=f"{work}/logs2").run()
    LocalPipelineExecutor(pipeline=[JsonlReader(src), SentenceDedupFilter(f"{work}/dups", config=config),
                                    JsonlWriter(f"{work}/output", output_filename="${rank}.jsonl.gz")],
                          tasks=tasks, workers=workers, logging_dir=f"{work}/logs3").run()
'''


def extract(path):
    import trafilatura
    try:
        html = re.sub(r"^\s*<\?xml[^>]*\?>", "", Path(path).read_bytes().decode("utf-8", "replace"))
        text = trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=True)
    except Exception:
        return None
    return {"id": path, "url": "file://" + path, "text": text} if text else None


def load_docs(path):
    if not os.path.exists(path):
        pages = sorted({p for d in DIRS for p in glob.glob(f"{d}/**/*.html", recursive=True)})
        if not pages:
            sys.exit("the Debian documentation packages are not installed (see the docstring)")
        print(f"extracting {len(pages)} pages with trafilatura into {path} (once)", file=sys.stderr)
        with multiprocessing.Pool() as pool, gzip.open(path, "wt", encoding="utf-8") as f:
            for doc in pool.imap(extract, pages, chunksize=8):
                if doc:
                    f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def plant(docs):
    planted = 0
    for i, doc in enumerate(docs):
        text = doc["text"]
        if i % 5 == 0 and (m := re.search(r"[.!?]\n", text)):
            doc["text"] = text[:m.start() + 1] + "\n" + BOILERPLATE + text[m.start() + 1:]
            planted += 1
        if i % 7 == 0:
            doc["text"] += "\n" + FOOTER
    return planted


def timed(command, label):
    start = time.time()
    result = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *command], capture_output=True, text=True)
    seconds = time.time() - start
    if result.returncode:
        sys.exit(f"{label} failed:\n{result.stderr[-3000:]}")
    user, system, peak_kb = result.stderr.strip().splitlines()[-1].split()
    return seconds, float(user) + float(system), int(peak_kb) / 1024


def read_folder(folder):
    docs = {}
    for path in sorted(Path(folder).glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                docs[doc["id"]] = doc["text"]
    return docs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--docs", default="/tmp/sentence_bench_docs.jsonl.gz")
    p.add_argument("--out", default="/tmp/sentence_bench")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--datatrove_python", default="", help="python of a venv with datatrove, spacy and xxhash")
    args = p.parse_args()
    docs = load_docs(args.docs)
    planted = plant(docs)
    out = Path(args.out)
    subprocess.run(["rm", "-rf", str(out)], check=True)
    per_shard = -(-len(docs) // args.shards)
    for k in range(args.shards):
        (out / "in").mkdir(parents=True, exist_ok=True)
        with gzip.open(out / "in" / f"part-{k:02d}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs[k * per_shard:(k + 1) * per_shard])
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"{len(docs)} pages, {mb:.1f} MB, boilerplate planted in {planted}, {args.shards} shards, "
          f"{args.workers} workers")

    ours = timed([sys.executable, str(ROOT / "sentence_dedup.py"), f"--input={out / 'in'}", f"--output={out / 'ours'}",
                  f"--workers={args.workers}"], "sentence_dedup.py")
    report = json.loads((out / "ours" / "report_sentences.json").read_text())["totals"]
    kept = read_folder(out / "ours")
    print(f"sentence_dedup.py: {ours[0]:.1f} s, {len(docs) / ours[0]:.0f} pages/s, {ours[1]:.1f} CPU s, "
          f"peak {ours[2]:.0f} MB; {report['spans_removed']:,} spans ({report['characters_removed']:,} characters) "
          f"removed, {report['documents_changed']:,} pages changed, {report['documents_dropped']:,} dropped; "
          f"boilerplate left on {sum(BOILERPLATE in t for t in kept.values())} page(s)")
    if not args.datatrove_python:
        return
    script = out / "datatrove_sentence_dedup.py"
    script.write_text(DATATROVE)
    theirs = timed([args.datatrove_python, str(script), str(out / "in"), str(out / "datatrove"), str(args.shards),
                    str(args.workers)], "datatrove")
    dt = read_folder(out / "datatrove" / "output")
    changed = sum(dt[i] != d["text"] for d in docs if (i := d["id"]) in dt)
    # (its CPU time and memory are not shown: its workers are children of a forkserver, which GNU
    # time does not wait for, so it would count its main process only)
    print(f"datatrove:         {theirs[0]:.1f} s, {len(docs) / theirs[0]:.0f} pages/s; "
          f"{changed:,} pages changed, {len(docs) - len(dt):,} dropped; "
          f"boilerplate left on {sum(BOILERPLATE in t for t in dt.values())} page(s)")
    both = set(kept) & set(dt)
    same = sum(kept[i].strip() == dt[i].strip() for i in both)
    print(f"  ours is {theirs[0] / ours[0]:.1f}x faster (wall, same cores); pages kept by both: "
          f"{len(both):,}, same text on {same:,} ({same / max(1, len(both)):.2%}); kept by ours only "
          f"{len(set(kept) - set(dt))}, by datatrove only {len(set(dt) - set(kept))}")
    removed_ours = sum(len(d["text"]) - len(kept.get(d["id"], "")) for d in docs)
    removed_dt = sum(len(d["text"]) - len(dt.get(d["id"], "")) for d in docs)
    print(f"  characters removed with dropped pages: ours {removed_ours:,}, datatrove {removed_dt:,}")


if __name__ == "__main__":
    main()
