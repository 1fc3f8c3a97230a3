"""
url_filter.py: clean.py's first filter, FineWeb's URL filter (datatrove's URLFilter, after RefinedWeb),
with its lists shipped in data/url_filter/ so that it works offline.

A page is dropped, cheapest test first, when
  1. its registered domain (example.co.uk for www.example.co.uk) is on the block list of ~4.6 M
     domains, mostly adult sites (the UT1 blacklists; data/url_filter/README.md) -> 'domain'
  2. its full host name is on that list                                           -> 'subdomain'
  3. the URL itself is on the list of ~20,000 URLs                                -> 'url'
  4. one of its words is a banned word ('porn', ...)                              -> 'hard_blacklisted'
  5. two or more of its words are soft-banned words ('sex', 'nude', ...)          -> 'soft_blacklisted'
  6. a banned string occurs anywhere in it ('bigtits', ...)                       -> 'blacklisted_subword'
where the words of a URL are the runs of ASCII letters and digits, as written (datatrove does not
lowercase them), and rule 6 looks in the URL lowercased with everything else removed, so a string
split by punctuation (big-tits) is still found. Two deliberate differences from datatrove: host names
are lowercased before the domain rules (DNS ignores case, so WWW.EXAMPLE.COM is example.com), and the
URL list is matched without the scheme, as its entries are written ('host/path'); datatrove compares
the whole URL with them, so its rule 3 never fires on a crawl URL.

The user's own --url_blocklist (and --url_allowlist, checked before anything else) hold domains or
URLs; a listed domain covers all its subdomains.
"""

import bisect
import gzip
import re
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

DEFAULT_LISTS = Path(__file__).resolve().parent / "data" / "url_filter"
NOT_ALPHANUMERIC = re.compile(r"[^a-zA-Z0-9]+")

_cache = {}  # per process: the lists, loaded once (before the workers fork, so they share them)


def read_words(path):
    """A word list as datatrove reads it: a line starting with '#' is a comment, the others are
    lowercased and stripped of everything but letters and digits ('2 girls 1 cup' -> '2girls1cup')."""
    with open(path, encoding="utf-8") as f:
        return {NOT_ALPHANUMERIC.sub("", line).lower() for line in f if not line.startswith("#")} - {""}


def read_sorted_lines(path):
    """A big sorted list, kept as one bytes object and the offset where each line starts: 4.6 M
    domains take 160 MB this way (a Python set of them takes 600 MB), in no Python objects, so
    forked workers share the pages instead of copying them."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n"))
    starts = np.concatenate(([0], newlines + 1))[:len(newlines)]
    return data, starts, newlines


def in_sorted_lines(lines, entry):
    """Binary search: is `entry` one of the lines? (The file is sorted byte by byte, LC_ALL=C.)"""
    data, starts, ends = lines
    key = entry.encode("utf-8")
    i = bisect.bisect_left(range(len(starts)), key, key=lambda k: data[starts[k]:ends[k]])
    return i < len(starts) and data[starts[i]:ends[i]] == key


def load_lists(folder):
    """FineWeb's lists from `folder` (data/url_filter/ by default): dict of the six rules' data."""
    folder = Path(folder)
    if folder not in _cache:
        with gzip.open(folder / "urls.txt.gz", "rt", encoding="utf-8") as f:
            urls = {line.strip() for line in f} - {""}
        banned_subwords = read_words(folder / "banned_subwords.txt")
        _cache[folder] = dict(
            domains=read_sorted_lines(folder / "domains.txt.gz"), urls=urls,
            banned_words=read_words(folder / "banned_words.txt"),
            soft_banned_words=read_words(folder / "soft_banned_words.txt"),
            # datatrove runs an Aho-Corasick automaton; one alternation of the ~130 strings does it too
            banned_subwords=re.compile("|".join(map(re.escape, sorted(banned_subwords)))))
    return _cache[folder]


_extract = None


def registered_domain(host):
    """example.co.uk for www.example.co.uk: one label more than the public suffix, by the Public
    Suffix List (tldextract's bundled copy, never fetched: nothing downloads at run time)."""
    global _extract
    if _extract is None:
        import tldextract
        _extract = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())
    return _extract(host).top_domain_under_public_suffix


def url_rule(url, lists, soft_word_threshold=2):
    """The rule of FineWeb's URL filter that drops this URL, or None."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:  # such as an unclosed '[' of an IPv6 address: no host, the word rules still apply
        host = ""
    domain = registered_domain(host) if host else ""
    if domain and in_sorted_lines(lists["domains"], domain):
        return "domain"
    if host and in_sorted_lines(lists["domains"], host):
        return "subdomain"
    if url.split("://", 1)[-1] in lists["urls"]:
        return "url"
    url_words = set(NOT_ALPHANUMERIC.split(url))
    if not lists["banned_words"].isdisjoint(url_words):
        return "hard_blacklisted"
    if soft_word_threshold and len(lists["soft_banned_words"] & url_words) >= soft_word_threshold:
        return "soft_blacklisted"
    if lists["banned_subwords"].search(NOT_ALPHANUMERIC.sub("", url).lower()):
        return "blacklisted_subword"
    return None


# -----------------------------------------------------------------------------------------------
# the user's lists


def load_user_list(path):
    """A file of domains or URLs, one per line ('#' comments allowed)."""
    if path not in _cache:
        with open(path, encoding="utf-8") as f:
            # without a trailing '/', as url_listed compares the URL: 'https://a.org/docs/' matches
            entries = {line.split("#")[0].strip().lower().rstrip("/") for line in f}
        _cache[path] = entries - {""}
    return _cache[path]


def url_listed(url, entries):
    """Listed if the URL, its host, or any parent domain of its host is."""
    if url.lower().rstrip("/") in entries:
        return True
    try:
        parts = (urlsplit(url).hostname or "").split(".")
    except ValueError:
        return False
    return any(".".join(parts[i:]) in entries for i in range(len(parts) - 1))


def url_reason(url, cfg):
    """Why clean.py's URL filter drops this URL, or None: the user's allowlist first, then the
    user's blocklist, then FineWeb's rules and lists."""
    if not url or cfg.url_allowlist and url_listed(url, load_user_list(cfg.url_allowlist)):
        return None
    if cfg.url_blocklist and url_listed(url, load_user_list(cfg.url_blocklist)):
        return "blocklisted"
    if cfg.url_lists:
        return url_rule(url, load_lists(cfg.url_lists), cfg.url_soft_word_threshold)
    return None
