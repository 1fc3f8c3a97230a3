"""
MinHash, written out: text normalization, word n-gram shingles hashed with numpy, MinHash
signatures equal to datasketch's, and the band hashes LSH buckets documents by. dedup.py uses it
for documents; anything else that must normalize text as dedup does imports it from here.

    from minhash import normalize, document_signature, permutations, band_hashes
"""

import hashlib
import re
import string
import sys
import unicodedata
from functools import lru_cache

import numpy as np

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
    """The permutations h -> a*h + b (mod 2^32) that datasketch's MinHash(num_perm, seed,
    scheme='affine32') draws, so our signatures are its MinHash values (tests check this): odd a,
    so each is a bijection."""
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


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
    """(hash of the normalized text for exact dedup, MinHash signature for near dedup). A text
    with no words (only emoji, symbols, punctuation) normalizes to nothing, so all such texts were
    copies of each other: those are hashed as they are, so that only their exact copies meet."""
    normalized = normalize(text).encode("utf-8") or text.encode("utf-8", "surrogatepass")
    exact = hashlib.blake2b(normalized, digest_size=16).digest()
    return exact, minhash_signature(shingle_hashes(normalized, ngram), perms)


def estimated_jaccard(signature_a, signature_b):
    return float(np.count_nonzero(signature_a == signature_b)) / len(signature_a)


def fmix64(h):
    """MurmurHash3's 64-bit finalizer: spreads every input bit over all output bits."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def band_hashes(signatures, bands, rows):
    """One 64-bit hash per band of each signature (FNV-1a over its `rows` numbers, then mixed).
    Equal bands give equal hashes; the buckets pass compares the bands themselves, so a chance
    collision of two hashes never links anything."""
    values = signatures.reshape(len(signatures), bands, rows).astype(np.uint64)
    h = np.full(values.shape[:2], 0xCBF29CE484222325, np.uint64)
    for k in range(rows):
        h = (h ^ values[:, :, k]) * np.uint64(0x100000001B3)
    return fmix64(h)
