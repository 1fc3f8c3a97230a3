"""
Remove duplicate documents, exact and near, as FineWeb does: MinHash signatures of word 5-grams,
locality-sensitive hashing (LSH) for candidate pairs, union-find to group them into clusters.

    python dedup.py [--input=data/clean] [--output=data/dedup] [--workers=N] [--clusters=FILE]
    python dedup.py --pass=signatures|buckets|clusters|write --shard=I --num_shards=N   (a cluster)

Crawls are full of copies (mirrors, one page at several URLs, templates that differ by a date);
training on them wastes compute and teaches the model to memorize.

1. Normalize each text (lowercase, accents stripped, digits -> 0, punctuation -> space, whitespace
   collapsed), so that trivial differences do not hide a copy.
2. Exact duplicates: the same hash of the normalized text. All but the first copy go.
3. Near duplicates: a document is the set of its word 5-grams ("shingles"), and two are alike when
   the Jaccard similarity J = |A & B| / |A | B| of their sets is high. MinHash sums a set up in 112
   numbers, each equal for two documents with probability J. LSH cuts them into 14 bands of 8: a
   pair is a candidate when a whole band agrees, with probability P = 1 - (1 - J^8)^14 (0.05 at
   J = 0.5, 0.92 at J = 0.8), so similar pairs meet without comparing all n^2 pairs.
4. Each candidate pair is checked: the share of its 112 numbers that agree estimates J, and the pair
   is linked only if that is >= --threshold. Without the check, one band shared by chance or by a
   boilerplate paragraph links unrelated documents, and union-find chains them into big clusters.
5. Union-find makes clusters; the first document of each in input order (input shards sorted by
   name, then line order) is kept. Then, in input order, any other member with no kept document
   among its linked pairs is kept too: a chain A~B~C must not lose C because B went.

The work is four passes, each a separate run that reads the files the one before wrote (under
OUTPUT/.dedup/), so on a cluster each pass is an array job that never waits for another task
(slurm/pipeline.sh chains them), and a task that fails is rerun alone:

  signatures  one task per group of input shards: per shard, the signatures, and per band a file of
              (band hash, document key) sorted by hash; the hash of the normalized text is one more
              "band", so exact copies meet the same way.
  buckets     one task per group of (band, slice of the hash range): the slices of every shard's
              sorted file, merged; documents with an equal band are candidates, checked as in 4.
  clusters    one task: union-find over the checked pairs, the kept-copy rule, the removal lists.
  write       one task per group of input shards: the survivors and the report.

Without --pass, one process runs all four, with the same output byte for byte. The MinHash itself
(normalization, shingles, signatures, band hashes) is written out in minhash.py.
"""

import hashlib
import json
import math
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from common import (atomic_path, fail, jsonl_writer, list_shards, parallel_map, print_summary, progress,
                    read_documents, read_json, remove_other_machine_counts, run_stage, shard_name,
                    stage_arguments, write_json)
from crashsafe import make_output_folder, report_path
from minhash import band_hashes, document_signature, permutations
from minhash import normalize  # noqa: F401  (dedup.normalize: the normalization, for other scripts)

PASSES = ("signatures", "buckets", "clusters", "write")

# -----------------------------------------------------------------------------------------------
# the work folder, OUTPUT/.dedup/
#
# A document is known everywhere by one integer key, shard number << 32 | row, the shard number
# being its position among ALL input shards sorted by name and the row its place among the shard's
# good documents: sorting keys sorts documents in input order, so "keep the first" means "keep the
# smallest key".

BAND_ENTRY = np.dtype([("hash", "<u8"), ("key", "<i8")])
PAIR = np.dtype([("earlier", "<i8"), ("later", "<i8"), ("agree", "<u2")])  # agree: hashes equal
REMOVAL = np.dtype([("row", "<u4"), ("exact", "?")])


def document_key(shard_index, row):
    return (np.int64(shard_index) << np.int64(32)) | np.asarray(row, np.int64)


def work_dir(args):
    return Path(args.output) / ".dedup"


def shard_dir(args, shard):
    return work_dir(args) / "shards" / shard_name(shard)


def fingerprint(all_shards, args):
    """The same in every task of one job (same input files and settings); any change of either
    changes it, and files that carry another one are stale and are redone."""
    stats = [(Path(s).name, Path(s).stat().st_size, Path(s).stat().st_mtime_ns) for s in all_shards]
    text = repr((stats, args.ngram, args.bands, args.rows, args.seed, args.threshold, args.range_docs))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def save_array(path, array):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


# -----------------------------------------------------------------------------------------------
# pass 1: signatures, band files and exact hashes, per input shard


def signatures_of_shard(shard, shard_index, args):
    """shards/NAME/: signatures.npy (one row per document), exact.npy (16-byte text hashes) and
    bands.npy (bands + 1 rows of (hash, key), each sorted by hash; the last row is the text hash),
    then done.json last, so a shard is done exactly when done.json matches."""
    folder = shard_dir(args, shard)
    stat = Path(shard).stat()
    settings = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ngram": args.ngram, "bands": args.bands,
                "rows": args.rows, "seed": args.seed, "shard_index": shard_index}  # keys hold it
    done = read_json(folder / "done.json")
    if done and all(done.get(k) == v for k, v in settings.items()):
        return
    perms = permutations(args.bands * args.rows, args.seed)
    exact, signatures = [], []
    with progress(f"signatures {Path(shard).name}") as bar:
        texts = (doc["text"] for _, doc in read_documents(shard, Counter()))
        for e, s in parallel_map(partial(document_signature, ngram=args.ngram, perms=perms), texts, args.workers):
            exact.append(np.frombuffer(e, np.uint8))
            signatures.append(s)
            bar.update()
    exact = np.array(exact, np.uint8).reshape(-1, 16)
    signatures = np.array(signatures, np.uint32).reshape(-1, args.bands * args.rows)
    keys = document_key(shard_index, np.arange(len(exact)))
    hashes = np.concatenate([band_hashes(signatures, args.bands, args.rows), exact[:, :8].copy().view("<u8")], axis=1)
    bands = np.empty((args.bands + 1, len(keys)), BAND_ENTRY)
    for band in range(args.bands + 1):
        order = np.lexsort((keys, hashes[:, band]))
        bands[band]["hash"], bands[band]["key"] = hashes[order, band], keys[order]
    save_array(folder / "signatures.npy", signatures)
    save_array(folder / "exact.npy", exact)
    save_array(folder / "bands.npy", bands)
    write_json(folder / "done.json", dict(settings, documents=len(keys)))


def fetch(keys, what, all_shards, args):
    """Rows of signatures.npy or exact.npy for the given keys (sorted), read through memory maps,
    so a task reads only the documents it needs."""
    shard_of = keys >> 32
    parts = []
    for shard_index in np.unique(shard_of):
        table = np.load(shard_dir(args, all_shards[shard_index]) / f"{what}.npy", mmap_mode="r")
        parts.append(table[keys[shard_of == shard_index] & 0xFFFFFFFF])
    if not parts:
        return np.zeros((0, 16), np.uint8) if what == "exact" else np.zeros((0, args.bands * args.rows), np.uint32)
    return np.concatenate(parts)


# -----------------------------------------------------------------------------------------------
# pass 2: buckets. A unit of work is one band and one slice of the 64-bit hash range.


def bucket_units(all_shards, args):
    """(band, part, parts) for every unit. More documents, more slices, so that a unit holds about
    --range_docs band entries (16 bytes each) whatever the corpus size."""
    documents = sum(read_json(shard_dir(args, s) / "done.json")["documents"] for s in all_shards)
    parts = max(1, math.ceil(documents / args.range_docs))
    return [(band, part, parts) for band in range(args.bands + 1) for part in range(parts)]


def pairs_path(args, band, part, parts):
    name = "exact" if band == args.bands else f"band{band:02d}"
    return work_dir(args) / "pairs" / f"{name}_{part:05d}_of_{parts:05d}.npz"


def merged_slice(band, part, parts, all_shards, args):
    """The (hash, key) entries of one band in one slice of the hash range, from every shard's sorted
    file: a binary search finds the slice, and only it is read."""
    low, high = part * 2**64 // parts, (part + 1) * 2**64 // parts
    pieces = []
    for shard in all_shards:
        entries = np.load(shard_dir(args, shard) / "bands.npy", mmap_mode="r")[band]
        start = np.searchsorted(entries["hash"], np.uint64(low))
        end = len(entries) if high == 2**64 else np.searchsorted(entries["hash"], np.uint64(high))
        pieces.append(np.array(entries[start:end]))
    merged = np.concatenate(pieces)
    return merged[np.lexsort((merged["key"], merged["hash"]))]


def first_of_each(values):
    """For each row of a 2-D array, the first row that holds the same values."""
    _, first, inverse = np.unique(np.ascontiguousarray(values).view(f"V{values.shape[1] * values.itemsize}").ravel(),
                                  return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def checked_pairs(band, members, signatures, exact, args, stats):
    """The pairs of one bucket (documents whose band `band` hashes alike), checked as in step 4.
    Exact copies give way to their first copy, which stands for them (the exact pass links them).
    A pair that shares several bands is checked only in the first of them, so once overall."""
    rows = args.rows
    bucket = signatures[:, band * rows:(band + 1) * rows]
    pairs = []
    same_band = first_of_each(bucket)  # a chance collision of 64-bit hashes is no candidate
    for group in np.unique(same_band):
        inside = np.flatnonzero(same_band == group)
        inside = inside[first_of_each(exact[inside]) == np.arange(len(inside))]
        for i, row in enumerate(inside[:-1]):
            others = inside[i + 1:]
            equal = signatures[others] == signatures[row]
            first_band = equal.reshape(len(others), args.bands, rows).all(axis=2).argmax(axis=1)
            others, equal = others[first_band == band], equal[first_band == band]
            agree = equal.sum(axis=1)
            accepted = agree / signatures.shape[1] >= args.threshold
            stats["candidate_pairs"] += len(others)
            stats["candidate_pairs_rejected"] += int((~accepted).sum())  # a band agreed by chance or boilerplate
            pairs += [(members[row], members[o], a) for o, a in zip(others[accepted], agree[accepted])]
    return pairs


def buckets_of_unit(unit, all_shards, args, job):
    """pairs/NAME.npz: the linked pairs of one unit and its candidate counts."""
    band, part, parts = unit
    path = pairs_path(args, band, part, parts)
    if path.exists():
        with np.load(path) as done:
            if str(done["fingerprint"]) == job:
                return
    entries = merged_slice(band, part, parts, all_shards, args)
    boundaries = np.flatnonzero(entries["hash"][1:] != entries["hash"][:-1]) + 1
    starts, ends = np.concatenate(([0], boundaries)), np.concatenate((boundaries, [len(entries)]))
    runs = [(s, e) for s, e in zip(starts.tolist(), ends.tolist()) if e - s > 1]  # buckets of 2 or more
    keys = np.unique(np.concatenate([entries["key"][s:e] for s, e in runs])) if runs else np.zeros(0, np.int64)
    exact = fetch(keys, "exact", all_shards, args)
    stats, pairs = Counter(), []
    if band == args.bands:  # the text hash: every copy is linked to the first with the same text
        for s, e in runs:
            members = entries["key"][s:e]
            first = first_of_each(exact[np.searchsorted(keys, members)])
            pairs += [(members[f], members[i], args.bands * args.rows) for i, f in enumerate(first) if f != i]
    else:
        signatures = fetch(keys, "signatures", all_shards, args)
        for s, e in runs:
            at = np.searchsorted(keys, entries["key"][s:e])
            pairs += checked_pairs(band, keys[at], signatures[at], exact[at], args, stats)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, pairs=np.array(pairs, PAIR), fingerprint=job, candidate_pairs=stats["candidate_pairs"],
                 candidate_pairs_rejected=stats["candidate_pairs_rejected"])


# -----------------------------------------------------------------------------------------------
# pass 3: clusters


def union_find(earlier, later, n):
    """Union-find over nodes 0..n-1 linked by the pairs (earlier[i], later[i]), in numpy: returns the
    root of every node, which is the smallest node of its cluster. Each round joins the root of one
    end of every pair under the root of the other, the larger under the smaller (so a root is always
    its cluster's first document); then every node jumps to its root ("path compression")."""
    parent = np.arange(n)
    while True:
        while not np.array_equal(grandparent := parent[parent], parent):
            parent = grandparent
        a, b = parent[earlier], parent[later]
        apart = a != b
        if not apart.any():
            return parent
        np.minimum.at(parent, np.maximum(a, b)[apart], np.minimum(a, b)[apart])


def keep_near_copies(earlier, later, agree, n):
    """Union-find keeps one document per cluster; of the others, in input order, one is removed
    only if a kept document is linked to it (a checked pair, estimated J >= --threshold), and kept
    otherwise. Returns kept (per node) and each removed node's kept partner and agreeing hashes,
    the partner being the closest kept one."""
    kept = np.ones(n, bool)
    partner, partner_agree = np.full(n, -1), np.zeros(n, np.int64)
    order = np.lexsort((earlier, -agree.astype(np.int64), later))  # by later node, closest first
    later, earlier, agree = later[order], earlier[order], agree[order]
    bounds = np.flatnonzero(np.diff(later, prepend=-1, append=n))
    for start, end in zip(bounds[:-1], bounds[1:]):  # nodes in input order: earlier ones are decided
        linked_kept = np.flatnonzero(kept[earlier[start:end]])
        if len(linked_kept):
            node, best = later[start], start + linked_kept[0]
            kept[node], partner[node], partner_agree[node] = False, earlier[best], agree[best]
    return kept, partner, partner_agree


def find_clusters(all_shards, args, job):
    """Read every unit's pairs; returns (nodes, root, kept, partner, agree, exact copy?) per node
    of any pair, and the candidate counts."""
    units = bucket_units(all_shards, args)
    missing, exact_pairs, near_pairs, stats = [], [], [], Counter()
    for band, part, parts in units:
        path = pairs_path(args, band, part, parts)
        try:
            with np.load(path) as unit:
                if str(unit["fingerprint"]) != job:
                    raise OSError
                (exact_pairs if band == args.bands else near_pairs).append(unit["pairs"])
                for key in ("candidate_pairs", "candidate_pairs_rejected"):
                    stats[key] += int(unit[key])
        except OSError:
            missing.append(path.name)
    if missing:
        fail(f"{len(missing)} of {len(units)} bucket units are not done ({', '.join(missing[:5])}"
             f"{', ...' if len(missing) > 5 else ''}): rerun the buckets tasks that failed")
    exact_pairs, near_pairs = np.concatenate([np.zeros(0, PAIR), *exact_pairs]), np.concatenate([np.zeros(0, PAIR), *near_pairs])
    nodes = np.unique(np.concatenate([exact_pairs["earlier"], exact_pairs["later"], near_pairs["earlier"],
                                      near_pairs["later"]]))
    exact_first, exact_copy = np.searchsorted(nodes, exact_pairs["earlier"]), np.searchsorted(nodes, exact_pairs["later"])
    near_earlier, near_later = np.searchsorted(nodes, near_pairs["earlier"]), np.searchsorted(nodes, near_pairs["later"])
    root = union_find(np.concatenate([exact_first, near_earlier]), np.concatenate([exact_copy, near_later]), len(nodes))
    kept, partner, agree = keep_near_copies(near_earlier, near_later, near_pairs["agree"], len(nodes))
    # an exact copy goes, always: its first copy is kept, or went for a kept partner that is as
    # close to the copy (the same text, the same signature)
    is_copy = np.zeros(len(nodes), bool)
    is_copy[exact_copy] = True
    first_kept = kept[exact_first]
    kept[exact_copy] = False
    partner[exact_copy] = np.where(first_kept, exact_first, partner[exact_first])
    agree[exact_copy] = np.where(first_kept, args.bands * args.rows, agree[exact_first])
    return nodes, root, kept, partner, agree, is_copy, stats


def size_histogram(root):
    bins = Counter()
    for size in Counter(root.tolist()).values():
        bins[str(size) if size < 5 else "5-9" if size < 10 else "10-99" if size < 100 else "100+"] += 1
    return {k: bins[k] for k in ("2", "3", "4", "5-9", "10-99", "100+") if bins[k]}


def clusters_pass(all_shards, args, job):
    """removed/NAME.npy per shard (the rows to remove), then clusters.json last: the summary the
    write pass puts in the report, and this pass's completion mark."""
    summary_path = work_dir(args) / "clusters.json"
    summary = read_json(summary_path)
    if summary and summary.get("fingerprint") == job and (not args.clusters or Path(args.clusters).exists()):
        return summary
    nodes, root, kept, partner, agree, is_copy, stats = find_clusters(all_shards, args, job)
    removed = ~kept
    for shard_index, shard in enumerate(all_shards):
        mine = removed & (nodes >> 32 == shard_index)
        table = np.zeros(int(mine.sum()), REMOVAL)
        table["row"], table["exact"] = nodes[mine] & 0xFFFFFFFF, is_copy[mine]
        save_array(work_dir(args) / "removed" / (shard_name(shard) + ".npy"), table)
    roots = root[np.flatnonzero(root != np.arange(len(nodes)))]
    found = {"documents_removed": int(removed.sum()), "exact_duplicates": int(is_copy.sum()),
             "near_duplicates": int((removed & ~is_copy).sum()), "duplicate_clusters": len(np.unique(roots)),
             "cluster_sizes": size_histogram(root), "kept_without_a_kept_near_copy": int(
                 (kept & (root != np.arange(len(nodes)))).sum())}
    if args.clusters:
        write_clusters(args.clusters, nodes, root, kept, partner, agree, is_copy, all_shards, args)
    summary = {"fingerprint": job, "all_shards": found, **stats}
    write_json(summary_path, summary)
    return summary


def write_clusters(path, nodes, root, kept, partner, agree, is_copy, all_shards, args):
    """One JSON line per cluster, largest first: the documents kept and those removed, with id, url,
    first words, and for a removed one its kept partner and their estimated Jaccard similarity.
    Reads the input shards holding cluster members once more."""
    info = {}
    for shard_index in np.unique(nodes >> 32):
        wanted = set((nodes[nodes >> 32 == shard_index] & 0xFFFFFFFF).tolist())
        documents = read_documents(all_shards[shard_index], Counter(), warn=False)
        for row, (_, doc) in enumerate(documents):
            if row in wanted:
                info[int(document_key(shard_index, row))] = {"id": doc.get("id"), "url": doc.get("url"),
                                                            "start": " ".join(doc["text"].split()[:30])}
    clusters = {}
    for i, key in enumerate(nodes.tolist()):
        entry = dict(info[key])
        if not kept[i]:
            entry.update(exact=bool(is_copy[i]), partner=info[int(nodes[partner[i]])]["id"],
                         jaccard=round(int(agree[i]) / (args.bands * args.rows), 3))
        clusters.setdefault(int(root[i]), {"kept": [], "removed": []})["kept" if kept[i] else "removed"].append(entry)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in sorted(clusters, key=lambda r: (-len(clusters[r]["kept"]) - len(clusters[r]["removed"]), r)):
            line = {"size": len(clusters[r]["kept"]) + len(clusters[r]["removed"]), **clusters[r]}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


# -----------------------------------------------------------------------------------------------
# pass 4: write the survivors


def write_survivors(path, out_path, removal_path):
    removal = np.load(removal_path)
    exact = dict(zip(removal["row"].tolist(), removal["exact"].tolist()))
    stats = Counter()
    with jsonl_writer(out_path) as write:
        for row, (_, doc) in enumerate(read_documents(path, stats)):
            stats["documents_in"] += 1
            if row not in exact:
                write(doc)
                stats["documents_out"] += 1
            else:
                stats["removed_exact_duplicates" if exact[row] else "removed_near_duplicates"] += 1
    return dict(stats)


# -----------------------------------------------------------------------------------------------


def run_pass(name, all_shards, args, job, seconds):
    start = time.time()
    mine = range(args.shard, len(all_shards), args.num_shards)
    if name == "signatures":
        print(f"dedup: signatures of {len(mine)} of {len(all_shards)} shard(s), {args.workers} worker(s)",
              file=sys.stderr)
        for i in mine:
            signatures_of_shard(all_shards[i], i, args)
    elif name == "buckets":
        done = [s for s in all_shards if read_json(shard_dir(args, s) / "done.json") is None]
        if done:
            fail(f"signatures of {len(done)} shard(s) are not done ({Path(done[0]).name}, ...): "
                 f"rerun the signatures tasks that failed")
        units = bucket_units(all_shards, args)[args.shard::args.num_shards]
        print(f"dedup: buckets, {len(units)} unit(s) of (band, hash slice)", file=sys.stderr)
        with progress("buckets", unit="unit", total=len(units)) as bar:
            for _ in parallel_map(partial(buckets_of_unit, all_shards=all_shards, args=args, job=job), units,
                                  args.workers, batch_size=1):
                bar.update()
    elif name == "clusters":
        if args.num_shards > 1:
            fail("--pass=clusters is one task: run it with --num_shards=1")
        clusters_pass(all_shards, args, job)
    seconds[f"seconds_{name}"] = round(time.time() - start, 2)


def main():
    p = stage_arguments(__doc__.strip().split("\n\n")[0], "data/clean", "data/dedup")
    p.add_argument("--pass", dest="pass_", choices=PASSES, default="",
                   help="run one pass as one task of --num_shards (default: all four, in this process)")
    p.add_argument("--ngram", type=int, default=5, help="words per shingle")
    p.add_argument("--bands", type=int, default=14, help="LSH bands")
    p.add_argument("--rows", type=int, default=8, help="hashes per band (bands * rows hashes in all)")
    p.add_argument("--threshold", type=float, default=0.75,
                   help="link a candidate pair only if its signatures agree on at least this share of hashes")
    p.add_argument("--seed", type=int, default=1, help="seed of the MinHash permutations")
    p.add_argument("--range_docs", type=int, default=2**24,
                   help="band entries per bucket unit (16 bytes each): more documents, more units")
    p.add_argument("--clusters", default="", help="write the clusters found to this .jsonl file (clusters pass)")
    p.add_argument("--sentences", action="store_true",
                   help="then remove spans of 3 sentences seen in an earlier document (C4's dedup, sentence_dedup.py)")
    p.add_argument("--min_doc_words", type=int, default=50, help="--sentences: drop a document left with fewer words")
    args = p.parse_args()
    if args.ngram < 1 or args.bands < 2 or args.rows < 1 or not 0 <= args.threshold <= 1 or args.range_docs < 1:
        fail("need --ngram >= 1, --bands >= 2, --rows >= 1, 0 <= --threshold <= 1 and --range_docs >= 1")
    if args.bands * args.rows >= 2**16:
        fail("--bands * --rows must stay below 65536")
    if not args.pass_ and args.num_shards > 1:
        fail(f"--num_shards={args.num_shards} needs --pass: dedup is global, so several tasks run it pass by "
             f"pass (slurm/pipeline.sh chains them); without --pass one process runs everything")
    all_shards = list_shards(args.input)
    if len({shard_name(s) for s in all_shards}) < len(all_shards):
        fail(f"two input shards in {args.input} differ only by .gz: their outputs would collide")
    if len(all_shards) >= 2**31:
        fail("too many input shards for 32-bit shard numbers in document keys")
    make_output_folder(args.output)  # before the passes' work files go under it
    start, job, seconds = time.time(), fingerprint(all_shards, args), {}
    for name in [args.pass_] if args.pass_ else PASSES:
        if name != "write":
            run_pass(name, all_shards, args, job, seconds)
    if args.pass_ and args.pass_ != "write":
        print(f"dedup: pass {args.pass_} done in {time.time() - start:.1f}s")
        return

    summary = read_json(work_dir(args) / "clusters.json")
    if not summary or summary.get("fingerprint") != job:
        fail(f"no clusters for this input and these settings in {work_dir(args)}: run --pass=clusters first")
    extra = {"settings": {k: getattr(args, k) for k in ("ngram", "bands", "rows", "threshold", "seed")},
             **{k: v for k, v in summary.items() if k != "fingerprint"}, **seconds}
    print(f"dedup: writing survivors to {args.output}", file=sys.stderr)
    my_shards = list_shards(args.input, args.shard, args.num_shards)
    # a shard written from other clusters (the input or the settings changed) is written again, and
    # so is one that --sentences rewrote in place, when the run asks for no or other sentence dedup
    sentences = args.min_doc_words if args.sentences else None
    # report_sentences*.json first: "complete": false before report.json can say true (a kill
    # between the two stages must not leave a folder that reads complete with repeated spans in it),
    # or gone, without --sentences, since an earlier --sentences run's would describe other shards
    import sentence_dedup
    if args.sentences:
        sentence_dedup.mark_in_progress(args.output, args)
    else:
        report_path(args.output, args, "report_sentences").unlink(missing_ok=True)
        remove_other_machine_counts(args.output, args, "report_sentences")  # and on other --num_shards
    report = run_stage("dedup", lambda path, out_path: write_survivors(
        path, out_path, work_dir(args) / "removed" / (shard_name(path) + ".npy")),
        my_shards, args.output, args, extra, settings={"clusters": job, "sentences": sentences})
    print_summary("dedup", report, ["documents_in", "documents_out", "removed_exact_duplicates",
                                    "removed_near_duplicates"])
    found = summary["all_shards"]
    print(f"  all shards: {found['duplicate_clusters']:,} clusters, sizes {found['cluster_sizes']}; "
          f"{found['kept_without_a_kept_near_copy']:,} kept for want of a kept near copy; "
          f"{summary['candidate_pairs_rejected']:,} of {summary['candidate_pairs']:,} LSH candidate pairs "
          f"had estimated J < {args.threshold}")
    if args.clusters:
        print(f"  clusters: {args.clusters}")
    if args.sentences:  # in place, on the documents just written
        sentence_dedup.dedup_sentences([Path(args.output) / shard_name(s) for s in all_shards], args.output, args)


if __name__ == "__main__":
    main()
