"""
Speed, memory and fidelity of sentence_dedup.py against datatrove's SentenceDedup (its three
stages: signatures, find duplicates, filter), on the same pages, shards and cores.

    python bench/sentence_dedup.py [--pages=N] [--workers=2] [--shards=2] [--datatrove_python=PATH] [--show=N]

The pages: ~4,900 pages of the Debian documentation packages (Python, PostgreSQL, the Debian
handbook in its languages, git, the Debian FAQ, reference, developers' reference, maintainers'
guide), extracted once with trafilatura and cached at --docs (--pages takes that many of them,
evenly spaced). Into every 5th a boilerplate paragraph
of 4 sentences is planted after its first sentence, and every 7th gets a 3-sentence footer, so the
corpus has repeats that must go besides those the documentation has itself.

Both run as their own processes, one after the other, with --workers processes over --shards input
files; the figures are wall-clock seconds, and for ours CPU seconds and the peak resident memory of
the largest process (GNU time; datatrove's workers are children of a forkserver, which GNU time
does not see, so for it only the wall time is measured). datatrove needs its own environment (pip install datatrove spacy xxhash in
another venv, given as --datatrove_python): it is not a dependency of the project.

Fidelity: the spans removed (ours counts windows; datatrove counts sentences), the pages dropped,
the planted boilerplate left (it must stay on exactly one page), and the pages whose text differs
between the two outputs (whitespace at the ends aside: datatrove strips it), or that one kept and
the other dropped. To tell the causes apart, both then run again on the corpus as ONE shard (on
several, datatrove's first copy is the first by document index within its task, then task, not the
first in input order), and ours is run again with datatrove's ways swapped in one after the other,
patched into sentence_dedup's module in this process: its normalization (simplify_text), its drop
of a changed page left with fewer than 3 sentences (min_num_sentences), spaCy's sentence boundaries
(the spans its filter cuts by) and spaCy's word count; then with all of them but one, to show what
each alone leaves. These need datatrove's modules, imported from --datatrove_python's venv.
"""

import argparse
import contextlib
import difflib
import glob
import gzip
import io
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


def agreement(ours, theirs):
    """How the two outputs compare, page by page: kept by both with the same text (whitespace at the
    ends aside: datatrove strips it), kept by both with other text, kept by one only."""
    both = set(ours) & set(theirs)
    same = sum(ours[i].strip() == theirs[i].strip() for i in both)
    only_ours, only_theirs = len(set(ours) - set(theirs)), len(set(theirs) - set(ours))
    return {"both": len(both), "same": same, "other_text": len(both) - same, "ours_only": only_ours,
            "datatrove_only": only_theirs, "differ": len(both) - same + only_ours + only_theirs}


def run_datatrove(args, src, work, tasks, workers):
    script = Path(args.out) / "datatrove_sentence_dedup.py"
    script.write_text(DATATROVE)
    seconds = timed([args.datatrove_python, str(script), str(src), str(work), str(tasks), str(workers)], "datatrove")[0]
    # (its CPU time and memory are not shown: its workers are children of a forkserver, which GNU
    # time does not wait for, so it would count its main process only)
    return seconds, read_folder(Path(work) / "output")


# -----------------------------------------------------------------------------------------------
# datatrove's parts swapped into ours, one at a time, to count what each difference accounts for.
# They are patched into sentence_dedup's module in this process (never into the product code), so
# these runs use one worker: nothing patched has to cross to another process.

DATATROVE_PARTS = {}  # its simplify_text, spaCy tokenizer and split_into_sentences, once imported
SPACY_CACHE = {}  # text -> spaCy's sentence spans: pass 1 and pass 3 split the same texts


def import_datatrove(python):
    """datatrove's modules, from its venv (the same Python version): its site-packages go last on
    sys.path, so every package we have ourselves (numpy, regex) stays ours."""
    where = "import datatrove, pathlib; print(pathlib.Path(datatrove.__file__).parent.parent)"
    site = subprocess.run([python, "-c", where], capture_output=True, text=True, check=True).stdout.strip()
    sys.path.append(site)
    from datatrove.utils.text import simplify_text, split_into_sentences
    from datatrove.utils.word_tokenizers import load_word_tokenizer
    DATATROVE_PARTS.update(simplify_text=simplify_text, split_into_sentences=split_into_sentences,
                           tokenizer=load_word_tokenizer("en"))


def spacy_sentences(text):
    """sentence_dedup.sentences() with spaCy's sentence ends (the spans datatrove's filter cuts by):
    each sentence with the whitespace before it, the last with what follows it too."""
    if text not in SPACY_CACHE:
        SPACY_CACHE[text] = [end for _, end in DATATROVE_PARTS["tokenizer"].span_tokenize(text)]
    ends = SPACY_CACHE[text][:-1] + [len(text)]
    return [text[start:end] for start, end in zip([0] + ends[:-1], ends)] if text else []


def spacy_count_words(text):
    return len(DATATROVE_PARTS["tokenizer"].word_tokenize(text))


def words_count_sentences(text):
    import words
    return words.count_sentences(text)


def spacy_count_sentences(text):
    return len(DATATROVE_PARTS["split_into_sentences"](text))


def with_min_sentences(clean_document, count_sentences):
    """clean_document that also drops a changed page left with fewer than 3 sentences, as
    datatrove's SentenceDedupFilter does (its min_num_sentences=3)."""
    def clean(item, n, min_doc_words):
        doc, stats = clean_document(item, n, min_doc_words)
        if doc is not None and item[1] and count_sentences(doc["text"]) < 3:
            stats["documents_out"] -= 1
            stats["documents_dropped"] += 1
            return None, stats
        return doc, stats
    return clean


PART_NAMES = {"normalize": "datatrove's normalization (simplify_text)",
              "min_sentences": "its min_num_sentences=3 drop of changed pages",
              "spacy_sentences": "spaCy's sentence boundaries",
              "spacy_words": "spaCy's word counts (for min_doc_words)"}
ALL_PARTS = set(PART_NAMES)
STEPS = [("ours as shipped, 1 shard", set())]  # cumulative: each adds one of datatrove's ways
for part in PART_NAMES:
    STEPS.append(("+ " + PART_NAMES[part], STEPS[-1][1] | {part}))


def run_patched(shards, output, parts):
    """sentence_dedup.run on these shards, one worker, with the named datatrove parts swapped in."""
    import sentence_dedup as sd
    saved = {name: getattr(sd, name) for name in ("normalize", "sentences", "count_words", "clean_document")}
    try:
        if "normalize" in parts:
            sd.normalize = DATATROVE_PARTS["simplify_text"]
        if "spacy_sentences" in parts:
            sd.sentences = spacy_sentences
        if "spacy_words" in parts:
            sd.count_words = spacy_count_words
        if "min_sentences" in parts:
            count = spacy_count_sentences if "spacy_sentences" in parts else words_count_sentences
            sd.clean_document = with_min_sentences(saved["clean_document"], count)
        args = argparse.Namespace(shard=0, num_shards=1, workers=1, min_doc_words=50)
        with contextlib.redirect_stdout(io.StringIO()):
            report = sd.run([str(s) for s in shards], output, args)
    finally:
        for name, value in saved.items():
            setattr(sd, name, value)
    return report["totals"], read_folder(output)


def show_differences(docs, ours, theirs, limit):
    """The first `limit` pages whose texts differ: the sentences one has and the other has not."""
    shown = 0
    for doc in docs:
        i = doc["id"]
        if shown == limit or ours.get(i, "").strip() == theirs.get(i, "").strip():
            continue
        shown += 1
        print(f"--- {i}: ours {len(ours.get(i, '')):,} characters{'' if i in ours else ' (dropped)'}, datatrove "
              f"{len(theirs.get(i, '')):,}{'' if i in theirs else ' (dropped)'}")
        mine, other = ours.get(i, "").splitlines(), theirs.get(i, "").splitlines()
        for line in difflib.unified_diff(mine, other, "ours", "datatrove", n=0, lineterm=""):
            print("    " + line[:160])


def print_rows(rows, change=True):
    previous = None
    for name, row, totals in rows:
        step = "" if previous is None or not change else f"{row['differ'] - previous:+d}"
        print(f"{name:<58} {row['differ']:>6} {step:>6} {row['other_text']:>10} {row['ours_only']:>9} "
              f"{row['datatrove_only']:>7} {totals['spans_removed']:>7,}")
        previous = row["differ"]


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--docs", default="/tmp/sentence_bench_docs.jsonl.gz")
    p.add_argument("--out", default="/tmp/sentence_bench")
    p.add_argument("--pages", type=int, default=0, help="evenly spaced pages of the corpus (0: all)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--datatrove_python", default="", help="python of a venv with datatrove, spacy and xxhash")
    p.add_argument("--show", type=int, default=0, help="print the first N pages that still differ at the last step")
    args = p.parse_args()
    docs = load_docs(args.docs)
    if args.pages:
        docs = [docs[k * len(docs) // args.pages] for k in range(min(args.pages, len(docs)))]
    planted = plant(docs)
    out = Path(args.out)
    subprocess.run(["rm", "-rf", str(out)], check=True)
    per_shard = -(-len(docs) // args.shards)
    (out / "in").mkdir(parents=True)
    (out / "in1").mkdir()
    for k in range(args.shards):
        with gzip.open(out / "in" / f"part-{k:02d}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs[k * per_shard:(k + 1) * per_shard])
    with gzip.open(out / "in1" / "part-00.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
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
    seconds, dt = run_datatrove(args, out / "in", out / "datatrove", args.shards, args.workers)
    changed = sum(dt[i] != d["text"] for d in docs if (i := d["id"]) in dt)
    print(f"datatrove:         {seconds:.1f} s, {len(docs) / seconds:.0f} pages/s; "
          f"{changed:,} pages changed, {len(docs) - len(dt):,} dropped; "
          f"boilerplate left on {sum(BOILERPLATE in t for t in dt.values())} page(s)")
    a = agreement(kept, dt)
    print(f"  ours is {seconds / ours[0]:.1f}x faster (wall, same cores); pages kept by both: {a['both']:,}, "
          f"same text on {a['same']:,} ({a['same'] / max(1, a['both']):.2%}); kept by ours only {a['ours_only']}, "
          f"by datatrove only {a['datatrove_only']}")

    # Fidelity, cause by cause: on one shard "first" means the same for both (document order; on
    # several, datatrove orders by document index within its task before the task)
    seconds1, dt1 = run_datatrove(args, out / "in1", out / "datatrove1", 1, 1)
    ours1 = timed([sys.executable, str(ROOT / "sentence_dedup.py"), f"--input={out / 'in1'}",
                   f"--output={out / 'ours1'}", "--workers=1"], "sentence_dedup.py")
    print(f"1 shard, 1 worker: ours {ours1[0]:.1f} s, datatrove {seconds1:.1f} s ({seconds1 / ours1[0]:.1f}x)")
    import_datatrove(args.datatrove_python)
    sys.path.insert(0, str(ROOT))
    header = (f"{'pages that differ (other text, or kept by one only)':<58} {'differ':>6} {'change':>6} "
              f"{'other text':>10} {'ours only':>9} {'dt only':>7} {'spans':>7}")
    one_shard = [out / "in1" / "part-00.jsonl.gz"]
    print("datatrove's ways swapped into ours one after the other (the change: what each accounts for)")
    print(header)
    rows = [("ours as shipped, 2 shards vs datatrove's 2 tasks", a, report)]
    for name, parts in STEPS:
        totals, ours_kept = run_patched(one_shard, out / f"step{len(rows)}", parts)
        rows.append((name, agreement(ours_kept, dt1), totals))
    last = ours_kept
    print_rows(rows)
    print("all of datatrove's ways but one (what that one alone leaves)")
    print(header)
    rows = [("all, 1 shard", *rows[-1][1:])]
    for part in PART_NAMES:
        totals, ours_kept = run_patched(one_shard, out / f"without_{part}", ALL_PARTS - {part})
        rows.append(("all but " + PART_NAMES[part], agreement(ours_kept, dt1), totals))
    totals, ours_kept = run_patched(sorted((out / "in").glob("*.jsonl.gz")), out / "without_order", ALL_PARTS)
    rows.append((f"all but the order: {args.shards} shards vs its {args.shards} tasks", agreement(ours_kept, dt),
                 totals))
    print_rows(rows, change=False)
    if args.show:
        show_differences(docs, last, dt1, args.show)


if __name__ == "__main__":
    main()
