"""
sentence_dedup.py: remove every span of 3 sentences that an earlier document already has, as C4
("we discarded all but one of any three-sentence span occurring more than once in the data set",
Raffel et al. 2020) and datatrove's SentenceDedup do.

    python sentence_dedup.py --input=data/dedup --output=data/dedup_sentences [--workers=N]
    python dedup.py --sentences       (the same, in place, after dedup.py's document passes)

Document-level dedup keeps a page whose body is new even when its cookie banner, its newsletter
box or its licence footer is on ten thousand other pages; these blocks are the same few sentences
every time, so they are found by hashing spans of consecutive sentences:

1. Split each document into sentences (spaCy's sentencizer, as words.py writes it), normalize each
   as dedup.py does (lowercase, no accents or punctuation, digits -> 0), and hash every window of 3
   consecutive sentences to 64 bits. A window i covers sentences i, i+1, i+2.
2. A window whose hash an earlier window has (earlier: in input order, the shards sorted by name,
   then line, then position in the document) is a duplicate. All but the first occurrence go.
3. Each document loses the sentences its duplicate windows cover (the union of them); one left with
   fewer than --min_doc_words words (words.py's count, punctuation included, as datatrove's) is dropped.

At scale it never holds texts, only hashes: pass 1 streams each shard and writes its windows' hashes,
sorted, to OUTPUT/.sentences/ (16 bytes a window); pass 2 reads them back in ranges of hash values
(every shard's rows for one range at a time, which is all that can match each other), so its memory
is one range's rows, however large the corpus; pass 3 streams each shard again and writes it without
its duplicate spans. With --shard/--num_shards each machine does passes 1 and 3 for its own shards
and, after waiting for every machine's hashes, pass 2 for all of them (to keep only its own results),
so all agree; --workers processes split the sentence splitting and hashing within a machine. The
output is the same whatever either number is.
"""

import hashlib
import json
import os
import time
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from common import (atomic_path, fail, jsonl_writer, list_shards, parallel_map, print_summary, progress,
                    read_documents, remove_other_machine_counts, shard_name, stage_arguments, write_json)
import crashsafe
from crashsafe import make_output_folder
from minhash import normalize
from words import count_words, sentence_ends

SIGNATURE = np.dtype([("hash", "<u8"), ("line", "<u4"), ("sentence", "<u4")])
ROWS_PER_RANGE = 25_000_000  # pass 2 holds one range of rows at a time: 25 M rows take ~1 GB while sorted

# -----------------------------------------------------------------------------------------------
# sentences and their spans


def sentences(text):
    """The text cut into sentences, each with the whitespace before it, as datatrove cuts it, and
    the last with any whitespace after it too (datatrove drops that), so they join into the text."""
    ends = sentence_ends(text)[:-1] + [len(text)]
    return [text[start:end] for start, end in zip([0] + ends[:-1], ends)] if text else []


def span_hash(normalized_sentences):
    return int.from_bytes(hashlib.blake2b(" ".join(normalized_sentences).encode("utf-8"), digest_size=8).digest(),
                          "little")


def span_hashes(text, n):
    """(hashes, first sentences) of every window of n consecutive sentences of the text, as two
    arrays; none for a text of fewer than n sentences, nor for a window that normalizes to nothing."""
    normalized = [normalize(s) for s in sentences(text)]
    starts = [i for i in range(len(normalized) - n + 1) if any(normalized[i:i + n])]
    return np.array([span_hash(normalized[i:i + n]) for i in starts], np.uint64), np.array(starts, np.uint32)


def remove_spans(text, starts, n):
    """The text without the sentences of the windows starting at `starts`: the others joined as they
    were (and, if the first sentence went, without the whitespace that then leads)."""
    removed = set()
    for start in starts:
        removed.update(range(start, start + n))
    kept = "".join(s for i, s in enumerate(sentences(text)) if i not in removed)
    return kept.lstrip() if 0 in removed else kept


# -----------------------------------------------------------------------------------------------
# where the passes keep their state: OUTPUT/.sentences/<shard>.npy (the hashes), .json (what they
# were computed from; written after the .npy, so it marks it complete) and .done.json (the shard
# has been written; with the fingerprint of all the hashes it was written from)


def state_path(output, shard, suffix):
    return Path(output) / ".sentences" / (shard_name(shard) + suffix)


def file_stat(path):
    return [path.stat().st_size, path.stat().st_mtime_ns] if path.exists() else None


def read_json(path):
    return json.loads(path.read_text()) if path.exists() else None


def target_path(shard, output):
    return Path(output) / shard_name(shard)


def signatures_current(shard, output, n):
    """Are the saved hashes of this shard those of its input? The input may also be our own
    rewrite of it (in place, as dedup.py --sentences runs), whose .done.json says so; only then:
    into another folder, an edited input under an unchanged output is no rewrite of ours."""
    meta, done = read_json(state_path(output, shard, ".json")), read_json(state_path(output, shard, ".done.json"))
    if not meta or meta["n"] != n:
        return False
    in_place = Path(shard).resolve() == target_path(shard, output).resolve()
    return meta["source"] == file_stat(Path(shard)) or bool(in_place and done and done["source"] == meta["source"]
                                                            and done["target"] == file_stat(target_path(shard, output)))


def compute_signatures(shard, output, n, workers):
    """Pass 1 for one shard: the hashes of its windows, sorted by hash, to OUTPUT/.sentences/."""
    stats, lines = Counter(), []

    def texts():
        for line_number, doc in read_documents(shard, stats):
            lines.append(line_number)
            yield doc["text"]

    parts = []  # 16 bytes a window: the shard's texts are never all in memory
    with progress(f"sentence spans {Path(shard).name}") as bar:
        for k, (hashes, starts) in enumerate(parallel_map(partial(span_hashes, n=n), texts(), workers)):
            part = np.empty(len(hashes), SIGNATURE)
            part["hash"], part["line"], part["sentence"] = hashes, lines[k], starts  # results come in input order
            parts.append(part)
            bar.update()
    signatures = np.concatenate(parts) if parts else np.empty(0, SIGNATURE)
    signatures.sort(order=["hash", "line", "sentence"])
    source = file_stat(Path(shard))
    with atomic_path(state_path(output, shard, ".npy")) as tmp, open(tmp, "wb") as f:
        np.save(f, signatures)
    write_json(state_path(output, shard, ".json"), {"source": source, "n": n, "spans": len(signatures)})


# -----------------------------------------------------------------------------------------------
# pass 2: the duplicate windows


def find_duplicates(shards, mine, output, rows_per_range=ROWS_PER_RANGE):
    """{shard index: (lines, first sentences) of its duplicate windows}, for the shard indices in
    `mine`. Key of a window: (hash, shard index, line, sentence); within one hash, all but the
    smallest key are duplicates. One range of hash values at a time, for bounded memory."""
    tables = [np.load(state_path(output, s, ".npy"), mmap_mode="r") for s in shards]
    ranges = max(1, -(-sum(len(t) for t in tables) // rows_per_range))
    bounds = np.array([k * (2**64 // ranges) for k in range(1, ranges)], np.uint64)
    cuts = [np.concatenate(([0], np.searchsorted(t["hash"], bounds), [len(t)])) for t in tables]  # tables are sorted
    found = {k: [] for k in mine}
    for r in range(ranges):
        hashes, keys, starts = [], [], []
        for k, table in enumerate(tables):
            rows = table[cuts[k][r]:cuts[k][r + 1]]
            hashes.append(rows["hash"])
            keys.append((np.uint64(k) << np.uint64(32)) | rows["line"].astype(np.uint64))
            starts.append(rows["sentence"])
        hashes, keys, starts = np.concatenate(hashes), np.concatenate(keys), np.concatenate(starts)
        order = np.lexsort((starts, keys, hashes))
        hashes, keys, starts = hashes[order], keys[order], starts[order]
        duplicate = np.flatnonzero(hashes[1:] == hashes[:-1]) + 1
        shard_of = (keys[duplicate] >> np.uint64(32)).astype(np.int64)
        for k in mine:
            here = duplicate[shard_of == k]
            found[k].append(((keys[here] & np.uint64(0xFFFFFFFF)).astype(np.int64), starts[here].astype(np.int64)))
    return {k: (np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])) for k, parts in found.items()}


def fingerprint(shards, output):
    """Changes when any shard's hashes do: a shard written from other hashes must be redone."""
    sources = [read_json(state_path(output, s, ".json"))["source"] for s in shards]
    return hashlib.sha1(json.dumps(sources).encode()).hexdigest()


# -----------------------------------------------------------------------------------------------
# pass 3: write each shard without its duplicate spans


def clean_document(item, n, min_doc_words):
    """(document or None if dropped, stats) for one (document, starts of its duplicate windows)."""
    doc, starts = item
    stats = Counter(documents_in=1)
    if starts:
        text = remove_spans(doc["text"], starts, n)
        stats.update(spans_removed=len(starts), characters_removed=len(doc["text"]) - len(text),
                     documents_changed=1)
        if not text or count_words(text) < min_doc_words:
            stats["documents_dropped"] += 1
            return None, stats
        doc = {**doc, "text": text}
    stats["documents_out"] += 1
    return doc, stats


def write_shard(shard, path, duplicates, n, min_doc_words, workers):
    lines, starts = duplicates
    by_line = {}
    for line, start in zip(lines.tolist(), starts.tolist()):
        by_line.setdefault(line, []).append(start)
    stats = Counter()
    items = ((doc, sorted(by_line.get(line, ()))) for line, doc in read_documents(shard, stats))
    with jsonl_writer(path) as write, progress(f"sentence dedup {Path(shard).name}") as bar:
        for doc, doc_stats in parallel_map(partial(clean_document, n=n, min_doc_words=min_doc_words), items, workers):
            stats.update(doc_stats)
            if doc is not None:
                write(doc)
            bar.update()
    return stats


# -----------------------------------------------------------------------------------------------


def mark_in_progress(output, args):
    """report_sentences*.json says "complete": false from here until the pass ends. dedup.py
    --sentences writes it before its own report, so that no moment of the run reads complete while
    repeated spans are still there."""
    crashsafe.mark_in_progress("sentence_dedup", output, args, report="report_sentences")


def run(shards, output, args):
    """Sentence dedup of the documents in `shards` (ALL input shards, sorted; this machine takes
    every --num_shards-th from --shard on) into `output`, which may be their own folder."""
    n, output = getattr(args, "n_sentences", 3), Path(output)
    mine = list(range(args.shard, len(shards), args.num_shards))
    start = time.time()
    report_path = crashsafe.report_path(output, args, "report_sentences")
    mark_in_progress(output, args)  # "complete" and "shards" as in every stage's report
    for k in mine:
        if not signatures_current(shards[k], output, n):
            compute_signatures(shards[k], output, n, args.workers)
    last_message = time.time()
    while not all(signatures_current(s, output, n) for s in shards):  # other machines' shards
        if time.time() - last_message > 60:
            print("sentence_dedup: waiting for the other machines' sentence hashes", flush=True)
            last_message = time.time()
        time.sleep(1)
    hashed = time.time() - start
    print(f"sentence_dedup: looking for repeated spans of {n} sentences in {len(shards)} shard(s)", flush=True)
    duplicates = find_duplicates(shards, mine, output, getattr(args, "rows_per_range", ROWS_PER_RANGE))
    current = fingerprint(shards, output)
    totals, skipped = Counter(), 0
    for k in mine:
        # written to OUTPUT/.sentences/new/ first, its .done.json next, then moved into place: a run
        # killed at any point leaves either the old shard or the new one with its .done.json
        shard, target, done_path = shards[k], target_path(shards[k], output), state_path(output, shards[k], ".done.json")
        new = Path(output) / ".sentences" / "new" / shard_name(shard)
        done, meta = read_json(done_path), read_json(state_path(output, shard, ".json"))
        # the same hashes and the same --min_doc_words (a marker without it is older: trust it)
        same = done and done["fingerprint"] == current
        same = same and done.get("min_doc_words", args.min_doc_words) == args.min_doc_words
        if same and done["target"] in (file_stat(target), file_stat(new)):
            if done["target"] == file_stat(new):
                os.replace(new, target)  # the killed run's last step
            totals.update(done["stats"])  # written by an earlier run, from the same hashes
            skipped += 1
            continue
        if done and done["target"] == file_stat(target) and Path(shard).resolve() == target.resolve():
            fail(f"{shard}: rewritten in place from other sentence hashes than today's (the input "
                 f"changed) or with another --min_doc_words; rerun dedup.py into an empty --output")
        stats = write_shard(shard, new, duplicates[k], n, args.min_doc_words, args.workers)
        write_json(done_path, {"source": meta["source"], "target": file_stat(new), "fingerprint": current,
                               "min_doc_words": args.min_doc_words, "stats": dict(stats)})
        os.replace(new, target)
        totals.update(stats)
    report = {"stage": "sentence_dedup", "complete": True, "output": str(output), "n_sentences": n,
              "min_doc_words": args.min_doc_words,
              "shards": [{"name": shard_name(shards[k])} for k in mine],
              "shards_processed": len(mine) - skipped, "shards_skipped_done": skipped,
              "seconds_hashing": round(hashed, 2), "seconds": round(time.time() - start, 2),
              "totals": dict(sorted(totals.items())), "report": str(report_path)}
    write_json(report_path, report)
    remove_other_machine_counts(output, args, "report_sentences")  # as run_stage does for its own
    return report


def dedup_sentences(shards, output, args):
    """run(), and the summary a user reads at the end."""
    report = run(shards, output, args)
    print_summary("sentence_dedup", report,
                  ["documents_in", "documents_out", "documents_changed", "spans_removed", "characters_removed",
                   "documents_dropped"])
    return report


def main():
    p = stage_arguments(__doc__.strip().split("\n\n")[0], "data/dedup", "data/dedup_sentences")
    p.add_argument("--n_sentences", type=int, default=3, help="sentences per span")
    p.add_argument("--min_doc_words", type=int, default=50, help="drop a document left with fewer words")
    args = p.parse_args()
    if args.n_sentences < 1:
        fail("--n_sentences must be at least 1")
    make_output_folder(args.output)
    dedup_sentences(list_shards(args.input), args.output, args)


if __name__ == "__main__":
    main()
