"""
Remove duplicate documents, exact and near, as FineWeb does: MinHash signatures of word 5-grams,
locality-sensitive hashing (LSH) for candidate pairs, union-find to group them into clusters.

    python dedup.py [--input=data/clean] [--output=data/dedup] [--workers=N] [--clusters=FILE]

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
   is merged only if that is >= --threshold. Without the check, one band shared by chance or by a
   boilerplate paragraph merges unrelated documents, and union-find chains them into big clusters.
5. Union-find makes clusters; the first document of each in input order (input shards sorted by
   name, then line order) is kept, the others removed.

Two passes keep memory small: pass 1 computes a signature per document (cached in
OUTPUT/.signatures/), the clustering needs only signatures and ids, pass 2 streams the input again
and writes the survivors, one output shard per input shard.

Several machines (--shard=I --num_shards=N) must agree on one global clustering. Without --redis,
each machine writes the signatures of its shards to the shared output folder, waits for those of
all shards, and computes the same clustering as the others (every machine holds every signature,
~0.5 kB per document). With --redis=HOST:PORT the LSH index lives in Redis and a machine holds only
its own documents: see cluster_with_redis() for the protocol and its two barriers.
"""

import hashlib
import json
import pickle
import re
import string
import struct
import sys
import time
import unicodedata
from collections import Counter
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH

from common import (atomic_path, fail, jsonl_writer, list_shards, parallel_map, print_summary, progress,
                    read_documents, run_stage, shard_name, stage_arguments)

# -----------------------------------------------------------------------------------------------
# normalization and shingles


@lru_cache(maxsize=None)
def _unicode_table():
    """What normalization does to each non-ASCII character, from the Unicode tables, so every
    script is handled: accents (combining marks, once NFD has split them off) go, punctuation,
    symbols and odd spaces become a space, digits become 0."""
    table = {}
    for code in range(128, sys.maxunicode + 1):
        category = unicodedata.category(chr(code))
        if category == "Mn":
            table[code] = None
        elif category[0] in "PSZ" or category in ("Cc", "Cf"):
            table[code] = " "
        elif category == "Nd":
            table[code] = "0"
    return table


ASCII_PUNCTUATION = string.punctuation + "".join(map(chr, range(32))) + "\x7f"
ASCII_TABLE = bytes.maketrans((ASCII_PUNCTUATION + string.digits).encode(),
                              b" " * len(ASCII_PUNCTUATION) + b"0" * 10)
NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _normalize_non_ascii(match):
    return unicodedata.normalize("NFD", match.group()).translate(_unicode_table())  # "é" -> "e" + accent -> "e"


def normalize(text):
    """FineWeb's text normalization before hashing: lowercase, accents stripped, digits -> 0,
    punctuation -> space (not nothing: "end.Start" stays two words), whitespace collapsed, so copies
    that differ only in these ways become equal. Most characters are ASCII and take the fast path of
    bytes.translate; only the runs of other characters go through the Unicode table."""
    text = text.lower()
    if not text.isascii():
        text = NON_ASCII.sub(_normalize_non_ascii, text)
    return b" ".join(text.encode("utf-8").translate(ASCII_TABLE).split()).decode("utf-8")


# A shingle is hashed by a polynomial over its UTF-8 bytes, sum(byte_k * BASE^k) mod 2^64, top 32
# bits kept. The polynomial lets numpy hash all n-grams of a document at once from prefix sums, with
# no Python loop over words. shingle_hash() is the same function for one shingle, written plainly;
# given to datasketch as `hashfunc` it yields exactly our signatures (tests check this).
BASE = 0x9E3779B97F4A7C15  # any odd 64-bit number: odd, so invertible mod 2^64
BASE_INVERSE = pow(BASE, -1, 2**64)


def shingle_hash(shingle: bytes) -> int:
    return (sum(byte * pow(BASE, k, 2**64) for k, byte in enumerate(shingle)) % 2**64) >> 32


_powers = np.ones((2, 1), np.uint64)  # BASE^k and BASE^-k, grown as longer texts come


def powers(n):
    """BASE^k and BASE^-k mod 2^64 for k < n (uint64 arithmetic wraps around: that is the mod)."""
    global _powers
    if _powers.shape[1] < n:
        factors = np.array([[BASE], [BASE_INVERSE]], np.uint64).repeat(max(n, 2 * _powers.shape[1]), axis=1)
        factors[:, 0] = 1
        _powers = np.cumprod(factors, axis=1, dtype=np.uint64)
    return _powers[0, :n], _powers[1, :n]


def shingle_hashes(normalized: bytes, ngram):
    """shingle_hash() of every word n-gram of a normalized text (words separated by one space),
    vectorized. A text of fewer than `ngram` words is one shingle, so it still has a signature."""
    codes = np.frombuffer(normalized, np.uint8)
    spaces = np.flatnonzero(codes == 32)
    starts = np.concatenate(([0], spaces + 1))  # byte where each word starts
    ends = np.concatenate((spaces, [len(codes)]))  # byte where each word ends
    if len(starts) < ngram:
        starts, ends = starts[:1], ends[-1:]
    else:
        starts, ends = starts[: len(starts) - ngram + 1], ends[ngram - 1:]
    base, inverse = powers(len(codes) + 1)
    # prefix[i] = sum(byte_k * BASE^k for k < i), so the polynomial of bytes [s, e) starting at
    # power 0 is (prefix[e] - prefix[s]) * BASE^-s
    prefix = np.zeros(len(codes) + 1, np.uint64)
    np.cumsum(codes * base[:-1], out=prefix[1:])
    return (((prefix[ends] - prefix[starts]) * inverse[starts]) >> np.uint64(32)).astype(np.uint32)


# -----------------------------------------------------------------------------------------------
# MinHash signatures, with datasketch's "affine32" permutation scheme


@lru_cache(maxsize=None)
def permutations(num_perm, seed):
    """datasketch's own permutation parameters (a, b), so our signatures are its MinHash values."""
    return MinHash(num_perm=num_perm, seed=seed).permutations


def fmix32(h):
    """MurmurHash3's finalizer: datasketch mixes every input hash with it before permuting."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def minhash_signature(hashes, perms, chunk=4096):
    """For each permutation h -> a*h + b (mod 2^32), the minimum over the document's shingles. Two
    documents agree on one minimum with probability equal to their Jaccard similarity."""
    a, b = perms
    mixed = fmix32(hashes)
    signature = np.full(len(a), np.iinfo(np.uint32).max, np.uint32)
    for i in range(0, len(mixed), chunk):  # in chunks: a huge document must not build a huge matrix
        permuted = np.multiply.outer(mixed[i:i + chunk], a)  # wraps around: that is the mod 2^32
        permuted += b
        np.minimum(signature, permuted.min(axis=0), out=signature)
    return signature


def document_signature(text, ngram, perms):
    """(hash of the normalized text for exact dedup, MinHash signature for near dedup)."""
    normalized = normalize(text).encode("utf-8")
    exact = hashlib.blake2b(normalized, digest_size=16).digest()
    return exact, minhash_signature(shingle_hashes(normalized, ngram), perms)


def estimated_jaccard(signature_a, signature_b):
    return float(np.count_nonzero(signature_a == signature_b)) / len(signature_a)


# -----------------------------------------------------------------------------------------------
# pass 1: signatures of every document, cached per shard
#
# A document is known everywhere by one integer key, shard number << 32 | line number, shard number
# being its position among ALL input shards sorted by name: sorting keys sorts documents in input
# order, so "keep the first" means "keep the smallest key".


def document_key(shard_index, line_number):
    return (shard_index << 32) | line_number


def signature_path(output_dir, shard):
    return Path(output_dir) / ".signatures" / (shard_name(shard) + ".npz")


def compute_signatures(shard, args):
    """Signatures of one shard's documents, saved to OUTPUT/.signatures/ (unless already there)."""
    path, stat = signature_path(args.output, shard), Path(shard).stat()
    # a changed input shard or setting invalidates the cached signatures
    settings = np.array([stat.st_size, stat.st_mtime_ns, args.ngram, args.bands * args.rows, args.seed], np.int64)
    if path.exists():
        with np.load(path) as cached:
            if np.array_equal(cached["settings"], settings):
                return
    perms = permutations(args.bands * args.rows, args.seed)
    stats, lines = Counter(), []

    def texts():
        for line_number, doc in read_documents(shard, stats):
            lines.append(line_number)
            yield doc["text"]

    exact, signatures = [], []
    with progress(f"signatures {Path(shard).name}") as bar:
        signature_of = partial(document_signature, ngram=args.ngram, perms=perms)
        for e, s in parallel_map(signature_of, texts(), args.workers):
            exact.append(np.frombuffer(e, np.uint8))
            signatures.append(s)
            bar.update()
    num_perm = args.bands * args.rows
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, settings=settings, lines=np.array(lines, np.int64),
                 exact=np.array(exact, np.uint8).reshape(-1, 16),
                 signatures=np.array(signatures, np.uint32).reshape(-1, num_perm))


def load_signatures(shards, all_shards, args):
    """(keys, exact hashes, signatures) of the given shards' documents, in input order."""
    keys, exact, signatures = [], [], []
    shard_index = {shard: i for i, shard in enumerate(all_shards)}
    for shard in shards:
        with np.load(signature_path(args.output, shard)) as cached:
            keys.append(document_key(shard_index[shard], cached["lines"]))
            exact.append(cached["exact"])
            signatures.append(cached["signatures"])
    if not keys:  # no documents at all
        return np.zeros(0, np.int64), np.zeros((0, 16), np.uint8), np.zeros((0, args.bands * args.rows), np.uint32)
    return np.concatenate(keys), np.concatenate(exact), np.concatenate(signatures)


# -----------------------------------------------------------------------------------------------
# finding duplicate pairs ("edges"): (earlier key, later key, is the later an exact copy?)


def exact_duplicate_edges(keys, exact):
    """Link every document to the first document with the same normalized text. Returns the edges
    and the rows of the first copies, the only ones that go on to near-duplicate search."""
    as_bytes = np.ascontiguousarray(exact).view("V16").ravel()
    _, first_row, inverse = np.unique(as_bytes, return_index=True, return_inverse=True)  # first occurrence
    first = first_row[inverse.ravel()]
    copies = np.flatnonzero(first != np.arange(len(keys)))
    edges = [(int(keys[first[row]]), int(keys[row]), True) for row in copies]
    return edges, np.flatnonzero(first == np.arange(len(keys)))


def build_index(keys, signatures, rows, args, name=""):
    """datasketch's LSH index of the given rows, in this process's memory or, with --redis, in a
    Redis server that other machines share (datasketch's storage_config, keys prefixed by name)."""
    storage = {"type": "dict"}
    if args.redis:
        host, port = args.redis.rsplit(":", 1)
        storage = {"type": "redis", "basename": name.encode(), "redis": {"host": host, "port": int(port)}}
    lsh = MinHashLSH(num_perm=args.bands * args.rows, params=(args.bands, args.rows), storage_config=storage)
    with lsh.insertion_session() as session:  # buffered: one round trip per many inserts with Redis
        for row in rows:  # check_duplication=False: reinserting after a crash is harmless
            minhash = MinHash(seed=args.seed, hashvalues=signatures[row], scheme="affine32",
                              permutations=permutations(args.bands * args.rows, args.seed))
            session.insert(int(keys[row]), minhash, check_duplication=False)
    return lsh


def query_many(lsh, signatures):
    """lsh.query() for many documents at once: one call per band (a single round trip with Redis,
    through datasketch's own storage API) instead of one per band and document."""
    found = [set() for _ in signatures]
    for (start, end), table in zip(lsh.hashranges, lsh.hashtables):
        for keys, bucket in zip(found, table.getmany(*[lsh._H(s[start:end]) for s in signatures])):
            keys.update(bucket)
    return [[pickle.loads(k) for k in keys] if lsh.prepickle else keys for keys in found]


def near_duplicate_edges(lsh, keys, exact, signatures, rows, lookup, args, stats, batch=1000):
    """Query the index with each document; check every candidate that comes earlier in input order
    (so each pair is checked once, by its later document) against the estimated Jaccard.
    lookup(list of keys) -> list of (exact hash, signature) of those documents."""
    edges = []
    with progress("near-duplicate search", total=len(rows)) as bar:
        for i in range(0, len(rows), batch):
            chunk = rows[i:i + batch]
            pairs = [(int(c), row) for row, found in zip(chunk, query_many(lsh, signatures[chunk]))
                     for c in found if c < keys[row]]
            candidates = sorted({c for c, _ in pairs})
            known = dict(zip(candidates, lookup(candidates)))
            for candidate, row in pairs:
                candidate_exact, candidate_signature = known[candidate]
                if estimated_jaccard(signatures[row], candidate_signature) >= args.threshold:
                    edges.append((candidate, int(keys[row]), bytes(candidate_exact) == bytes(exact[row])))
                else:
                    stats["candidate_pairs_rejected"] += 1  # a band agreed by chance or by boilerplate
            stats["candidate_pairs"] += len(pairs)
            bar.update(len(chunk))
    return edges


def local_lookup(keys, exact, signatures):
    def lookup(candidates):
        return [(exact[r], signatures[r]) for r in np.searchsorted(keys, candidates)]
    return lookup


def cluster_in_memory(keys, exact, signatures, args, stats):
    """Every signature is in this process: exact edges, then LSH over the first copies."""
    edges, rows = exact_duplicate_edges(keys, exact)
    lsh = build_index(keys, signatures, rows, args)
    return edges + near_duplicate_edges(lsh, keys, exact, signatures, rows, local_lookup(keys, exact, signatures),
                                        args, stats)


# -----------------------------------------------------------------------------------------------
# several machines sharing one index in Redis


def connect_redis(address):
    import redis  # only this mode needs the client
    host, port = address.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    try:
        client.ping()
    except redis.exceptions.RedisError as e:
        fail(f"cannot reach Redis at --redis={address}: {e}")
    return client


def wait_for_machines(client, name, what, num_shards):
    """A barrier: wait until all num_shards machines have added themselves to the set `name`."""
    last_message = time.time()
    while (done := client.scard(name)) < num_shards:
        if time.time() - last_message > 60:
            print(f"dedup: {done}/{num_shards} machines have {what}; waiting", file=sys.stderr)
            last_message = time.time()
        time.sleep(0.5)


EDGE = struct.Struct("<qq?")


def cluster_with_redis(keys, exact, signatures, args, stats, name):
    """The protocol, run by each of the --num_shards machines on its own shards:

    1. exact dedup among its own documents; insert the first copies into the shared LSH index and
       their signatures into the Redis hash NAME:signatures; join the set NAME:inserted.
       Barrier: wait until all machines have joined, or a query could miss a later insert.
    2. query the index with each of its first copies; a candidate (from any machine) earlier in
       input order is checked against its signature fetched from Redis. Exact copies held by
       different machines meet here, as candidates with identical signatures and text hashes.
    3. add all its edges (exact and near) to the set NAME:edges; join NAME:queried.
       Barrier: wait until all machines have joined; then every machine reads every edge and runs
       the same union-find, so all agree on which document of a cluster is kept.
    Every step is idempotent (sets, overwritten hash fields), so a crashed machine simply reruns.
    The state stays in Redis under NAME: delete it before rerunning on changed input."""
    client = connect_redis(args.redis)
    edges, rows = exact_duplicate_edges(keys, exact)
    lsh = build_index(keys, signatures, rows, args, name)
    for i in range(0, len(rows), 10000):  # the signatures, for other machines' candidate checks
        client.hset(f"{name}:signatures", mapping={
            struct.pack("<q", keys[r]): exact[r].tobytes() + signatures[r].tobytes() for r in rows[i:i + 10000]})
    client.sadd(f"{name}:inserted", args.shard)
    wait_for_machines(client, f"{name}:inserted", "inserted their signatures", args.num_shards)

    def lookup(candidates):
        if not candidates:
            return []
        values = client.hmget(f"{name}:signatures", [struct.pack("<q", c) for c in candidates])
        return [(np.frombuffer(v[:16], np.uint8), np.frombuffer(v[16:], np.uint32)) for v in values]

    edges += near_duplicate_edges(lsh, keys, exact, signatures, rows, lookup, args, stats)
    for i in range(0, len(edges), 10000):
        client.sadd(f"{name}:edges", *[EDGE.pack(*edge) for edge in edges[i:i + 10000]])
    client.sadd(f"{name}:queried", args.shard)
    wait_for_machines(client, f"{name}:queried", "published their duplicate pairs", args.num_shards)
    return [EDGE.unpack(member) for member in client.sscan_iter(f"{name}:edges", count=10000)], lookup


def default_redis_name(all_shards, args):
    """The same on every machine of one job (same shard names and settings), different across jobs."""
    text = repr(([Path(s).name for s in all_shards], args.ngram, args.bands, args.rows, args.seed, args.threshold))
    return "dedup-" + hashlib.sha1(text.encode()).hexdigest()[:12]


# -----------------------------------------------------------------------------------------------
# clusters: union-find over the edges


def clusters_from_edges(edges):
    """Union-find. Returns {removed key: kept key}. Of two roots, the smaller key always becomes the
    root, so the root of each cluster is its first document in input order: the one kept."""
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])  # path halving keeps the trees shallow
            x = parent[x]
        return x

    for earlier, later, _ in edges:  # in any order: the root is always the smallest key
        a, b = find(earlier), find(later)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {x: find(x) for x in parent}


def size_histogram(removed):
    bins = Counter()
    for removed_in_favour in Counter(removed.values()).values():
        size = removed_in_favour + 1
        bins[str(size) if size < 5 else "5-9" if size < 10 else "10-99" if size < 100 else "100+"] += 1
    return {k: bins[k] for k in ("2", "3", "4", "5-9", "10-99", "100+") if bins[k]}


# -----------------------------------------------------------------------------------------------
# pass 2: write the survivors, and the clusters for inspection


def write_survivors(path, out_path, shard_index, removed, exact_copies):
    stats = Counter()
    with jsonl_writer(out_path) as write:
        for line_number, doc in read_documents(path, stats):
            key = document_key(shard_index, line_number)
            stats["documents_in"] += 1
            if key not in removed:
                write(doc)
                stats["documents_out"] += 1
            elif key in exact_copies:
                stats["removed_exact_duplicates"] += 1
            else:
                stats["removed_near_duplicates"] += 1
    return dict(stats)


def write_clusters(path, removed, exact_copies, all_shards, lookup):
    """One JSON line per cluster, largest first: the document kept and those removed, with id, url,
    first words, and (for removed ones) the Jaccard similarity to the kept one that the signatures
    estimate. Reads the input shards holding cluster members once more."""
    members = {}  # kept key -> removed keys
    for key, kept in sorted(removed.items()):
        members.setdefault(kept, []).append(key)
    info = {}
    for shard_index in sorted({key >> 32 for key in [*removed, *members]}):
        for line_number, doc in read_documents(all_shards[shard_index], Counter()):
            if (key := document_key(shard_index, line_number)) in removed or key in members:
                words = " ".join(doc["text"].split()[:30])
                info[key] = {"id": doc.get("id"), "url": doc.get("url"), "start": words}
    # exact copies share their kept document's signature, and only first copies are in Redis
    looked_up = sorted((set(removed) - exact_copies) | set(members))
    signatures = {key: signature for key, (_, signature) in zip(looked_up, lookup(looked_up))}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for kept in sorted(members, key=lambda k: (-len(members[k]), k)):
            cluster = [dict(info[key], exact=key in exact_copies, jaccard=1.0 if key in exact_copies else
                            round(estimated_jaccard(signatures[key], signatures[kept]), 3)) for key in members[kept]]
            line = {"size": 1 + len(cluster), "kept": info[kept], "removed": cluster}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


# -----------------------------------------------------------------------------------------------


def main():
    p = stage_arguments(__doc__.strip().splitlines()[0], "data/clean", "data/dedup")
    p.add_argument("--ngram", type=int, default=5, help="words per shingle")
    p.add_argument("--bands", type=int, default=14, help="LSH bands")
    p.add_argument("--rows", type=int, default=8, help="hashes per band (bands * rows hashes in all)")
    p.add_argument("--threshold", type=float, default=0.75,
                   help="merge a candidate pair only if its signatures agree on at least this share of hashes")
    p.add_argument("--seed", type=int, default=1, help="seed of the MinHash permutations")
    p.add_argument("--redis", default="", help="HOST:PORT of a Redis server holding a shared LSH index")
    p.add_argument("--redis_name", default="", help="key prefix of this job in Redis (default: from shards)")
    p.add_argument("--clusters", default="", help="write the clusters found to this .jsonl file")
    p.add_argument("--sentences", action="store_true",
                   help="then remove spans of 3 sentences seen in an earlier document (C4's dedup, sentence_dedup.py)")
    p.add_argument("--min_doc_words", type=int, default=50, help="--sentences: drop a document left with fewer words")
    args = p.parse_args()
    if args.ngram < 1 or args.bands < 2 or args.rows < 1 or not 0 <= args.threshold <= 1:
        fail("need --ngram >= 1, --bands >= 2, --rows >= 1 and 0 <= --threshold <= 1")
    if args.redis and not re.fullmatch(r"[^:]+:\d+", args.redis):
        fail(f"--redis={args.redis}: expected HOST:PORT, such as 127.0.0.1:6379")
    all_shards = list_shards(args.input)
    my_shards = list_shards(args.input, args.shard, args.num_shards)
    if len({shard_name(s) for s in all_shards}) < len(all_shards):
        fail(f"two input shards in {args.input} differ only by .gz: their outputs would collide")
    start = time.time()

    print(f"dedup: pass 1, signatures of {len(my_shards)} shard(s) with {args.workers} worker(s)", file=sys.stderr)
    for shard in my_shards:
        compute_signatures(shard, args)
    signature_seconds = time.time() - start

    stats = Counter()
    if args.redis:
        name = args.redis_name or default_redis_name(all_shards, args)
        print(f"dedup: clustering through Redis at {args.redis} under the name {name!r}", file=sys.stderr)
        keys, exact, signatures = load_signatures(my_shards, all_shards, args)
        edges, lookup = cluster_with_redis(keys, exact, signatures, args, stats, name)
    else:
        if args.num_shards > 1:  # the clustering is global: wait for every machine's signatures
            print(f"dedup: waiting for the signatures of all shards in {args.output}/.signatures", file=sys.stderr)
            while not all(signature_path(args.output, s).exists() for s in all_shards):
                time.sleep(2)
        keys, exact, signatures = load_signatures(all_shards, all_shards, args)
        print(f"dedup: clustering {len(keys):,} documents in memory", file=sys.stderr)
        edges = cluster_in_memory(keys, exact, signatures, args, stats)
        lookup = local_lookup(keys, exact, signatures)
    removed = clusters_from_edges(edges)  # {removed key: kept key}
    exact_copies = {later for _, later, is_exact in edges if is_exact}
    cluster_seconds = time.time() - start - signature_seconds

    found = {"documents_removed": len(removed), "exact_duplicates": len(exact_copies),
             "near_duplicates": len(removed) - len(exact_copies), "duplicate_clusters": len(set(removed.values())),
             "cluster_sizes": size_histogram(removed)}
    extra = {"settings": {k: getattr(args, k) for k in ("ngram", "bands", "rows", "threshold", "seed")},
             "all_shards": found, "candidate_pairs_checked": stats["candidate_pairs"],
             "candidate_pairs_rejected": stats["candidate_pairs_rejected"],
             "seconds_signatures": round(signature_seconds, 2), "seconds_clustering": round(cluster_seconds, 2)}
    print(f"dedup: pass 2, writing survivors to {args.output}", file=sys.stderr)
    shard_index = {shard: i for i, shard in enumerate(all_shards)}
    report = run_stage("dedup", lambda path, out_path: write_survivors(
        path, out_path, shard_index[path], removed, exact_copies), my_shards, args.output, args, extra)
    if args.clusters and args.shard == 0:  # machine 0 writes it: every machine knows all clusters
        write_clusters(args.clusters, removed, exact_copies, all_shards, lookup)
    print_summary("dedup", report, ["documents_in", "documents_out", "removed_exact_duplicates",
                                    "removed_near_duplicates"])
    print(f"  all shards: {found['duplicate_clusters']:,} clusters, sizes {found['cluster_sizes']}; "
          f"{stats['candidate_pairs_rejected']:,} of {stats['candidate_pairs']:,} LSH candidate pairs "
          f"had estimated J < {args.threshold}")
    if args.clusters and args.shard == 0:
        print(f"  clusters: {args.clusters}")
    if args.sentences:  # in place, on the documents just written
        import sentence_dedup
        sentence_dedup.dedup_sentences([Path(args.output) / shard_name(s) for s in all_shards], args.output, args)


if __name__ == "__main__":
    main()
