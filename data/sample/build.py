"""
Build the built-in sample of real web pages: data/sample/pages.warc.gz and docs.jsonl.gz.

The pages are real documentation pages, taken from the Debian documentation packages and filed under
the public URL each page is served at: prose-rich manuals whole (the Python tutorial, HOWTOs, FAQs and
language reference; PostgreSQL 15; SQLite; the GIMP manual; the English Debian Administrator's
Handbook, installation guide, securing manual, policy, FAQ, developers' reference and maintainers'
guide), a few dozen pages of the code-heavy API references (Python library, git), and the handbook
in eight other languages. To rebuild (the output is byte-identical on every run):

    apt-get install python3.11-doc postgresql-doc-15 debian-handbook git-doc debian-faq \
        developers-reference maint-guide debian-policy harden-doc installation-guide-amd64 \
        sqlite3-doc gimp-help-en
    python data/sample/build.py

What a real crawl contains, and so what the sample plants on purpose (listed in planted.json):
  - pages in other languages (the handbook in fr/de/es/ja/ru/zh/pt/it), for language ID to drop;
  - index pages, tables of contents and very short pages, for the quality filters;
  - exact duplicates: the same bytes served again at an alias URL (docs.python.org/3/ ...);
  - near-duplicates: an older or mirrored copy with a banner added and a few sentences edited,
    at Jaccard 0.85-0.93 on word 5-grams of the extracted text, for MinHash dedup;
  - a few pages re-encoded to ISO-8859-1 / windows-1252 and declared so, for the scraper's decoding.

docs.jsonl.gz holds the same records already extracted with trafilatura, one document per line in
the DESIGN.md format, so that tests can use real text without running the scraper.
"""
import fnmatch
import gzip
import hashlib
import html
import io
import json
import os
import re
import sys
import unicodedata
import uuid
from pathlib import Path

import trafilatura
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

DOC = Path("/usr/share/doc")
OUT = Path(__file__).resolve().parent
WARC_DATE = "2026-11-01T00:00:00Z"  # fixed, so the output is deterministic
MAX_PAGE_BYTES = 120_000  # larger pages are mostly long tables and lists; they also slow extraction
HANDBOOK_LANGS = ["fr-FR", "de-DE", "es-ES", "ja-JP", "ru-RU", "zh-CN", "pt-BR", "it-IT"]
PACKAGES = ["python3.11-doc", "postgresql-doc-15", "debian-handbook", "git-doc", "debian-faq",
            "developers-reference", "maint-guide", "debian-policy", "harden-doc",
            "installation-guide-amd64", "sqlite3-doc", "gimp-help-en"]
PYTHON = DOC / "python3.11/html"
PYTHON_PROSE = ["tutorial/*.html", "howto/*.html", "faq/*.html", "reference/*.html", "using/*.html",
                "extending/*.html", "installing/*.html", "distributing/*.html"]

# (folder, url prefix, which files (globs; "!glob": not those), how many (None: all), pages always
# included: the junk a crawl picks up too). Prose first: whole manuals of the prose-rich packages; of the API references, which
# are mostly code and fail FineWeb's filters, a few dozen pages, as a crawl would meet them.
SOURCES = [
    (PYTHON, "https://docs.python.org/3.11/", PYTHON_PROSE, None, []),
    (PYTHON, "https://docs.python.org/3.11/", ["library/*.html", "*.html", "c-api/*.html", "whatsnew/*.html"], 40,
     ["genindex-A.html", "py-modindex.html", "search.html", "bugs.html", "contents.html", "library/index.html"]),
    # PostgreSQL without most of its pages of tables (functions, catalogs, views, types): the always-list
    # keeps one of each
    (DOC / "postgresql-doc-15/html", "https://www.postgresql.org/docs/15/",
     ["*.html", "!functions-*", "!catalog-*", "!infoschema-*", "!datatype-*", "!ecpg-*", "!view-*"], None,
     ["index.html", "sql-commands.html", "biblio.html", "legalnotice.html", "functions-string.html",
      "catalog-pg-class.html", "infoschema-tables.html", "datatype-numeric.html"]),
    (DOC / "git-doc", "https://git-scm.com/docs/", ["*.html"], 30, ["git-citool.html", "git-gui.html"]),
    (DOC / "debian-handbook/html/en-US", "https://debian-handbook.info/browse/en-US/stable/", ["*.html"], None, []),
    (DOC / "sqlite3", "https://www.sqlite.org/", ["*.html"], None, []),
    (Path("/usr/share/gimp/2.0/help/en"), "https://docs.gimp.org/2.10/en/", ["*.html"], None, []),
    (DOC / "installation-guide-amd64/en", "https://www.debian.org/releases/bookworm/amd64/", ["*.html"], None, []),
    (DOC / "harden-doc/html/en-US", "https://www.debian.org/doc/manuals/securing-debian-manual/", ["*.html"], None, []),
    (DOC / "debian-policy/policy.html", "https://www.debian.org/doc/debian-policy/", ["*.html"], None, []),
    (DOC / "debian/FAQ", "https://www.debian.org/doc/manuals/debian-faq/", ["*.en.html"], None, []),
    (Path("/usr/share/developers-reference"), "https://www.debian.org/doc/manuals/developers-reference/",
     ["*.html"], None, []),
    (DOC / "maint-guide/html", "https://www.debian.org/doc/manuals/maint-guide/", ["*.en.html"], None, []),
] + [(DOC / f"debian-handbook/html/{lang}", f"https://debian-handbook.info/browse/{lang}/stable/", ["*.html"],
      5, []) for lang in HANDBOOK_LANGS]

# aliases a crawler really meets for the same page: exact copies live there
EXACT_ALIAS = [("https://docs.python.org/3.11/", "https://docs.python.org/3/"),
               ("https://www.postgresql.org/docs/15/", "https://www.postgresql.org/docs/current/"),
               ("https://git-scm.com/docs/", "http://git-scm.com/docs/"),
               ("https://debian-handbook.info/", "http://debian-handbook.info/"),
               ("https://www.sqlite.org/", "https://sqlite.org/"),
               ("https://docs.gimp.org/2.10/", "http://docs.gimp.org/2.10/"),
               ("https://www.debian.org/", "http://www.debian.org/")]
# older versions and mirrors: near-duplicates live there
NEAR_ALIAS = [("https://docs.python.org/3.11/", "https://docs.python.org/3.10/"),
              ("https://www.postgresql.org/docs/15/", "https://www.postgresql.org/docs/14/"),
              ("https://git-scm.com/docs/", "https://git-mirror.example.org/docs/"),
              ("https://debian-handbook.info/browse/en-US/stable/",
               "https://debian-handbook.info/browse/en-US/bullseye/"),
              ("https://www.sqlite.org/", "https://sqlite-mirror.example.org/"),
              ("https://docs.gimp.org/2.10/", "https://docs.gimp.org/2.8/"),
              ("https://www.debian.org/releases/bookworm/", "https://www.debian.org/releases/bullseye/"),
              ("https://www.debian.org/doc/", "https://debian-mirror.example.org/doc/")]
N_EXACT, N_NEAR = 15, 15
# word swaps that make "a few sentences edited" look like a later revision of the same page
EDITS = {"the": "this", "is": "was", "can": "may", "a": "one", "to": "into", "of": "for",
         "and": "plus", "be": "become", "that": "which", "in": "within"}


def stable_order(key):
    return hashlib.sha256(key.encode()).hexdigest()


def page_url(prefix, rel):
    if prefix.startswith("https://git-scm.com/"):
        return prefix + rel.removesuffix(".html")  # git-scm.com serves /docs/git-add
    return prefix + rel


def select_pages():
    """A deterministic pick: the named junk pages, then pages ordered by a hash of their path."""
    pages = []
    for folder, prefix, patterns, count, always in SOURCES:
        files = sorted({p.relative_to(folder).as_posix() for pattern in patterns if not pattern.startswith("!")
                        for p in folder.glob(pattern) if p.is_file() and p.stat().st_size <= MAX_PAGE_BYTES})
        files = [f for f in files if not any(fnmatch.fnmatch(f, x[1:]) for x in patterns if x.startswith("!"))]
        picked = [f for f in always if f in files]
        rest = sorted(set(files) - set(picked), key=stable_order)
        picked += rest if count is None else rest[:count - len(picked)]
        pages += [(page_url(prefix, rel), (folder / rel).read_bytes()) for rel in sorted(picked)]
    return pages


def extract(page_html):
    """trafilatura on one page; returns (text, date) or (None, None)."""
    page_html = re.sub(r"^\s*<\?xml[^>]*\?>", "", page_html)  # lxml refuses str with a declaration
    doc = trafilatura.bare_extraction(
        page_html, favor_precision=True, include_comments=False, with_metadata=True,
        date_extraction_params={"extensive_search": False, "original_date": True,
                                "max_date": WARC_DATE[:10]})
    if doc is None or not (doc.text or "").strip():
        return None, None
    return doc.text, doc.date


def title_of(page_html):
    m = re.search(r"<title[^>]*>(.*?)</title>", page_html, re.S | re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).split()) if m else None


def prose_like(text):
    """Mostly words, no code: the Gopher rule wants >= 80% of words holding a letter (punctuation
    marks count as words), C4 drops any page with a '{'. Documentation full of code fails both."""
    words = re.findall(r"[^\W_]+|\S", text)
    return "{" not in text and sum(not w.isdigit() and w.isalnum() for w in words) >= 0.75 * len(words)


def shingles(text, n=5):
    """FineWeb's normalization (lowercase, digits->0, no punctuation, no accents), word n-grams."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"\d", "0", text)
    words = re.sub(r"[^\w\s]", " ", text).split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a, b):
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def edit_paragraphs(page_html, every):
    """Edit the words of every `every`-th <p>, and add an 'archived copy' banner at the top."""
    paragraphs = list(re.finditer(r"(<p\b[^>]*>)(.*?)(</p>)", page_html, re.S))
    out, last = [], 0
    for i, m in enumerate(paragraphs):
        if i % every:
            continue
        body = re.sub(r"(?<![<\w/])\b(" + "|".join(EDITS) + r")\b(?![^<]*>)",
                      lambda w: EDITS[w.group(1)], m.group(2))
        out += [page_html[last:m.start(2)], body]
        last = m.end(2)
    out.append(page_html[last:])
    banner = ('<div class="archive-banner"><p>You are reading an archived copy of this page. '
              'Some of its content may be out of date.</p></div>')
    return re.sub(r"(<body[^>]*>)", r"\1" + banner, "".join(out), count=1)


def near_duplicate(page_html, text):
    """Edit more and more paragraphs until Jaccard falls to 0.85-0.93; None if it never lands there.

    Not lower: dedup estimates J from 112 hashes (standard error ~0.035), and a true 0.81 pair could
    read below a 0.8 threshold; these pages are meant to be caught."""
    for every in (16, 12, 10, 8, 7, 6, 5, 4, 3, 2):
        variant = edit_paragraphs(page_html, every)
        vtext, _ = extract(variant)
        if vtext is None:
            return None
        j = jaccard(text, vtext)
        if 0.85 <= j <= 0.93:
            return variant, j
        if j < 0.85:
            return None
    return None


def reencode(page_html, charset):
    """The same page served in a legacy charset, declared in the HTTP header and in the page."""
    page_html = re.sub(r'(<\?xml[^>]*encoding=")[^"]*', r"\g<1>" + charset, page_html, count=1)
    page_html = re.sub(r"charset=[\w-]+", "charset=" + charset, page_html, count=1)
    return page_html.encode(charset, errors="xmlcharrefreplace")


def main():
    pages = select_pages()
    print(f"selected {len(pages)} pages")
    texts = {}
    for i, (url, body) in enumerate(pages):
        texts[url] = extract(body.decode("utf-8"))
        if i % 50 == 0:
            print(f"  extracted {i}/{len(pages)}", flush=True)

    # records: (url, body bytes, charset); planted: what a test should find
    records = [(url, body, "utf-8") for url, body in pages]
    planted = {"exact_duplicates": [], "near_duplicates": [], "legacy_charset": [],
               "non_english": sorted(u for u, _ in pages if "/browse/en-US/" not in u
                                     and "debian-handbook" in u)}
    english = [url for url, _ in pages if "debian-handbook" not in url or "/en-US/" in url]
    # duplicates are planted on long pages of prose, which clean.py keeps, so dedup sees them
    long_enough = sorted((u for u in english if texts[u][0] and len(texts[u][0].split()) >= 400
                          and prose_like(texts[u][0])), key=stable_order)
    raw = dict(pages)

    for url in long_enough[:N_EXACT]:
        alias = next(url.replace(a, b, 1) for a, b in EXACT_ALIAS if url.startswith(a))
        records.append((alias, raw[url], "utf-8"))
        planted["exact_duplicates"].append({"url": alias, "duplicate_of": url,
                                            "how": "same bytes at an alias URL"})
    for url in long_enough[N_EXACT:]:
        if len(planted["near_duplicates"]) == N_NEAR:
            break
        found = near_duplicate(raw[url].decode("utf-8"), texts[url][0])
        if found is None:
            continue
        alias = next((url.replace(a, b, 1) for a, b in NEAR_ALIAS if url.startswith(a)), None)
        if alias is None:
            continue
        records.append((alias, found[0].encode("utf-8"), "utf-8"))
        texts[alias] = extract(found[0])
        planted["near_duplicates"].append({
            "url": alias, "duplicate_of": url, "jaccard_5gram": round(found[1], 3),
            "how": "archive banner added, words edited in some paragraphs"})

    # legacy charsets: three French handbook pages in Latin-1, three English pages in cp1252
    used = {d["duplicate_of"] for d in planted["exact_duplicates"] + planted["near_duplicates"]}
    french = sorted((u for u, _ in pages if "/fr-FR/" in u), key=stable_order)[:3]
    others = [u for u in long_enough[::-1] if u not in used][:3]
    for urls, charset in ((french, "iso-8859-1"), (others, "windows-1252")):
        for url in urls:
            i = next(k for k, r in enumerate(records) if r[0] == url)
            records[i] = (url, reencode(raw[url].decode("utf-8"), charset), charset)
            planted["legacy_charset"].append({"url": url, "charset": charset})

    records.sort(key=lambda r: stable_order(r[0]))  # crawl order, duplicates scattered
    write_warc(records)
    write_docs(records, texts)
    write_json(OUT / "planted.json", planted)
    size = (OUT / "pages.warc.gz").stat().st_size
    print(f"wrote {len(records)} response records ({size / 1e6:.2f} MB) to {OUT / 'pages.warc.gz'}")


def write_warc(records):
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)  # one gzip member per record, as Common Crawl does
    info = (b"software: data/sample/build.py (warcio)\r\nformat: WARC File Format 1.0\r\n"
            b"description: real documentation pages from Debian packages, see LICENSES.md\r\n")
    writer.write_record(writer.create_warc_record(
        "", "warcinfo", payload=io.BytesIO(info), length=len(info),
        warc_headers_dict={"WARC-Record-ID": record_id("warcinfo"), "WARC-Date": WARC_DATE,
                           "WARC-Filename": "pages.warc.gz",
                           "Content-Type": "application/warc-fields"}))
    for url, body, charset in records:
        http_headers = StatusAndHeaders("200 OK", [
            ("Content-Type", f"text/html; charset={charset}"),
            ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(
            url, "response", payload=io.BytesIO(body), length=len(body),
            http_headers=http_headers,
            warc_headers_dict={"WARC-Record-ID": record_id(url), "WARC-Date": WARC_DATE}))
    atomic_write(OUT / "pages.warc.gz", buf.getvalue())


def record_id(key):
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}>"


def write_docs(records, texts):
    lines, raw_by_url = [], {}
    for url, body, charset in records:
        page_html = body.decode(charset)
        text, date = texts[url] if url in texts else extract(page_html)
        if not text:
            continue
        doc = {"id": hashlib.sha256(url.encode()).hexdigest()[:16], "url": url, "text": text,
               "title": title_of(page_html), "date": date, "source": "sample"}
        lines.append(json.dumps(doc, ensure_ascii=False) + "\n")
    data = io.BytesIO()
    with gzip.GzipFile(fileobj=data, mode="wb", mtime=0, filename="") as f:
        f.write("".join(lines).encode("utf-8"))
    atomic_write(OUT / "docs.jsonl.gz", data.getvalue())
    print(f"wrote {len(lines)} documents to {OUT / 'docs.jsonl.gz'} "
          f"({len(records) - len(lines)} pages with no extractable text left out)")


def write_json(path, obj):
    atomic_write(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def atomic_write(path, data):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


if __name__ == "__main__":
    missing = sorted({str(folder) for folder, *_ in SOURCES if not folder.is_dir()})
    if missing:
        sys.exit(f"build.py: the Debian doc packages are missing ({', '.join(missing)}); run "
                 f"apt-get install {' '.join(PACKAGES)}")
    main()
