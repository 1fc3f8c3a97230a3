"""
The main text of a page, in worker processes that a hostile page cannot stall: the CPU half of
scrape.py.

Two extractors, chosen with scrape.py --extractor:
- trafilatura (the default; FineWeb's choice), with FineWeb's settings: favor_precision, no
  comments. 30-40 ms of CPU per page, most of the bill at Common Crawl scale.
- resiliparse (DCLM's choice): extract_plain_text(tree, main_content=True, alt_texts=False), as
  DCLM extracted its pool. C++ (lexbor), about 15x faster, keeps more tables and code.
Both get the same bytes decoded the same way (charset.decode_html), and the same title and date, both
read from the page's markup (page_title, page_date).

ExtractionPool sends pages to --workers processes in batches (one message each way per batch, not
per page), and watches them without talking to them: before each page a worker writes into shared
memory which page it is on and since when. A worker on one page past --extract_timeout is killed
(SIGKILL: C code stuck in a loop ignores everything else), its page recorded as
'extraction_timeout', and the batch sent again to a fresh worker with that page marked failed; a
worker that dies is handled the same way ('extraction_crash').
"""

import collections
import contextlib
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import re
import signal
import threading
import time
from datetime import date
from html import unescape
from types import SimpleNamespace
from urllib.parse import urldefrag, urljoin

import orjson
from isal import igzip

from charset import decode_html, looks_binary
from fetch import failure, now_iso
from warc import read_chunk

EXTRACTORS = ("trafilatura", "resiliparse")
XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
PRELOAD = {"trafilatura": "trafilatura", "resiliparse": "resiliparse.extract.html2text"}


def doc_id(url):
    return hashlib.sha256(url.encode()).hexdigest()[:16]  # the team's stable id: same URL, same id


# -----------------------------------------------------------------------------------------------
# the date of a page, from its markup


PUBLISHED = {"article:published_time", "og:published_time", "datepublished", "date", "dc.date",
             "dc.date.issued", "dcterms.date", "dcterms.created", "dcterms.issued", "publish-date",
             "publish_date", "publishdate", "pubdate", "sailthru.date", "parsely-pub-date",
             "citation_publication_date", "citation_date", "article.published"}
MODIFIED = {"article:modified_time", "og:updated_time", "datemodified", "dcterms.modified", "last-modified"}
META = re.compile(r"<meta\b[^>]*>", re.I)
ATTRIBUTE = re.compile(r"""([\w:.-]+)\s*=\s*("[^"]*"|'[^']*'|[^\s>"']+)""")
JSON_LD = re.compile(r'"(datePublished|dateCreated|dateModified)"\s*:\s*"([^"]{8,40})"')
TIME = re.compile(r"<time\b[^>]*>", re.I)
IN_URL = re.compile(r"/((?:19|20)\d\d)[/-](\d\d?)[/-](\d\d?)(?:/|[-_.]|$)")
ISO_DATE = re.compile(r"\s*((?:19|20)\d\d)[-/.]?(\d\d)[-/.]?(\d\d)")


def page_date(html, url, max_date):
    """The publication date a page declares (YYYY-MM-DD), or None: <meta> tags (Open Graph,
    Dublin Core, schema.org...), JSON-LD, <time pubdate>, a date in the URL; a modification date
    only when nothing else is there. htmldate's fast mode looks at the same markup and also at
    dates in the visible text, which costs more than resiliparse's whole extraction (2.8 ms) and on
    documentation pages mostly finds dates in code examples: that part is left out."""
    end_of_head = html.find("</head>", 0, 100_000)
    head = html[:end_of_head] if end_of_head >= 0 else html[:20_000]
    found = {"published": [], "modified": []}
    for tag in META.findall(head):
        lowered = tag.lower()  # only tags that may hold a date: str.find is far quicker than a regex
        if "date" not in lowered and "time" not in lowered and "modified" not in lowered:
            continue
        attrs = {k.lower(): v.strip("\"'") for k, v in ATTRIBUTE.findall(tag)}
        key = (attrs.get("property") or attrs.get("name") or attrs.get("itemprop") or "").lower()
        if key in PUBLISHED or key in MODIFIED:
            found["published" if key in PUBLISHED else "modified"].append(attrs.get("content", ""))
    for key, value in JSON_LD.findall(html) if '"date' in html else ():  # str.find is far quicker
        found["modified" if key == "dateModified" else "published"].append(value)
    for tag in TIME.findall(html) if "<time" in html else ():
        lowered = tag.lower()
        if "pubdate" in lowered or "datepublished" in lowered or "published" in lowered:
            found["published"] += [v.strip("\"'") for k, v in ATTRIBUTE.findall(tag) if k.lower() == "datetime"]
    found["published"] += ["-".join(m) for m in IN_URL.findall(url)]
    for value in found["published"] + found["modified"]:
        m = ISO_DATE.match(value)
        with contextlib.suppress(ValueError):
            if m and "1995-01-01" <= (d := date(*map(int, m.groups())).isoformat()) <= max_date:
                return d  # a page cannot be published before the web, or after it was fetched
    return None

# -----------------------------------------------------------------------------------------------
# one page


def test_hooks(body):
    """Stand-ins for hostile pages, enabled only by SCRAPE_TEST_HOOKS=1: the tests need a page that
    hangs the extractor (and ignores SIGTERM, as C code stuck in a loop would) and one that kills it."""
    if b"<!-- scrape-test: hang -->" in body:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    if b"<!-- scrape-test: crash -->" in body:
        os._exit(11)


def trafilatura_text(html, want_links):
    """(main text or None if not HTML, (base href, link hrefs) if want_links)."""
    import trafilatura  # imported by the workers only (and preloaded by the forkserver)
    from trafilatura.utils import load_html
    html = XML_DECLARATION.sub("", html)  # lxml refuses a str that still declares its encoding
    tree = load_html(html)  # parsed once for text and links; extract() works on a copy
    if tree is None:
        return None, []
    text = trafilatura.extract(tree, favor_precision=True, include_comments=False)
    return text, (tree.xpath("//base/@href")[:1], tree.xpath("//a/@href")) if want_links else []


def resiliparse_text(html, want_links):
    """The same for resiliparse: main-content plain text as DCLM ran it."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree
    tree = HTMLTree.parse(html)
    text = extract_plain_text(tree, main_content=True, alt_texts=False).strip()
    if not want_links:
        return text, []
    base = [e.getattr("href") for e in tree.document.query_selector_all("base[href]")][:1]
    return text, (base, [e.getattr("href") for e in tree.document.query_selector_all("a[href]")])


EXTRACTOR_TEXT = {"trafilatura": trafilatura_text, "resiliparse": resiliparse_text}  # what bench/scrape.py times alone
TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.S | re.I)


def page_title(html):
    """The <title>, as a browser's tab shows it: the same for both extractors, and cheaper than
    asking either tree for it (resiliparse's costs a third of its parse)."""
    m = TITLE.search(html, 0, 200_000)
    return " ".join(unescape(re.sub(r"<[^>]+>", "", m.group(1))).split()) or None if m else None


def extract_page(task, options):
    """One page -> {"text", "title", "date"[, "links"]} or a failure."""
    if task.get("text") is not None:  # a WET record: Common Crawl already extracted the text
        text, title, date_, links = task["text"].strip(), None, None, []
    else:
        body = task["body"]
        if options.get("test_hooks"):
            test_hooks(body)
        if looks_binary(body):
            return failure("binary", "binary content served as HTML")
        html = decode_html(body, task.get("content_type"), task["url"])
        text, links = EXTRACTOR_TEXT[options["extractor"]](html, task.get("want_links"))
        if text is None:
            return failure("empty", "not parseable as HTML")
    if not text:
        return failure("empty", "no main text found")
    if len(text) < options["min_chars"]:
        return failure("too_short", f"{len(text)} characters")
    if task.get("text") is None:  # title and date only for the pages that are kept
        title, date_ = page_title(html), page_date(html, task["url"], task["fetched_at"][:10])
    result = {"text": text, "title": title, "date": date_}
    if task.get("want_links"):
        (base, hrefs) = links
        base = absolute(task["url"], base[0] if base else "") or task["url"]
        links = (absolute(base, href) for href in hrefs)
        result["links"] = [link for link in dict.fromkeys(links) if link][:1000]
    return result


def absolute(base, href):
    """href as an absolute URL without its #fragment, or None if it does not parse: one broken
    link ('http://[oops/') must not cost the page its text and its other links."""
    try:
        return urldefrag(urljoin(base, (href or "").strip()))[0]
    except ValueError:
        return None

# -----------------------------------------------------------------------------------------------
# the record of an outcome


def record(task, result, write_doc, write_error, stats):
    """Write a page's outcome: a document, or an error line with its reason. Returns True for a doc."""
    stats["pages"] += task.get("pages", 1)  # 0 for a WARC's unreadable stretch: not a page
    stats["html_bytes"] += task.get("html_bytes") or len(task.get("body", b""))
    asked = task.get("redirected_from", task["url"])
    if "reason" in result:
        stats[result["reason"]] += 1
        # when the page was fetched (a WARC's record date: the same bytes on every run), or failed
        write_error({"url": asked, **result, "time": task.get("fetched_at") or now_iso()})
        return False
    doc = {"id": doc_id(task["url"]), "url": task["url"], "text": result["text"], "title": result["title"],
           "date": result["date"], "fetched_at": task["fetched_at"], "source": task["source"]}
    if asked != task["url"]:
        doc["redirected_from"] = asked
    write_doc(doc)
    stats["docs"] += 1
    stats["text_chars"] += len(doc["text"])
    return True


def json_line(obj):
    """One line of a shard. orjson: a fifth of json.dumps's CPU (0.01 against 0.05 ms per document,
    a twentieth of resiliparse's time); it refuses a lone surrogate, which json writes as its
    escape (as common.json_bytes does), so that one odd string never costs the batch."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"


def gzip_member(lines):
    """A finished gzip member: concatenated members are one valid .gz file, so the workers compress
    and the main process only appends bytes. Fixed mtime and level: same pages, same bytes. ISA-L's
    deflate (python-isal) at level 1: a third of zlib's level-1 CPU (0.03 against 0.08 ms per page)
    for the same size (0.39 of the JSON); zlib's level 6 (0.3 ms, 15% smaller) would cost a fifth of
    resiliparse's time, in shards that clean.py reads once."""
    return igzip.compress(b"".join(lines), compresslevel=1, mtime=0) if lines else b""

# -----------------------------------------------------------------------------------------------
# the worker processes


def run_batch(batch, options, progress, slot, serialize):
    """Extract a batch: a list of tasks, or a chunk of a local .warc.gz, read here. serialize=False:
    the results, one per task. serialize=True (WARC files): the shard's bytes already made,
    (documents gzip member, errors gzip member, stats)."""
    tasks = batch
    progress[2 * slot], progress[2 * slot + 1] = 0, time.monotonic()
    if isinstance(batch, dict):
        try:
            tasks = read_chunk(batch)
        except Exception as e:  # the file went away, or fastwarc failed: the chunk's pages are lost
            tasks = [{"url": batch["warc"], "pages": 0, "result": failure(
                "warc_unreadable", f"bytes {batch['start']} to {batch['end']} of {batch['warc']}: {e}")}]
    results = []
    for i, task in enumerate(tasks):
        progress[2 * slot], progress[2 * slot + 1] = i, time.monotonic()  # for the watchdog
        if "result" in task:  # failed before extraction, or on an earlier try of this batch
            results.append(task["result"])
            continue
        try:
            results.append(extract_page(task, options))
        except Exception as e:  # a bug or an odd page costs one page, not the worker
            results.append(failure("extraction_error", repr(e)))
    progress[2 * slot], progress[2 * slot + 1] = len(tasks), time.monotonic()
    if not serialize:
        return results
    docs, errors, stats = [], [], collections.Counter()
    for task, result in zip(tasks, results):
        try:
            record(task, result, lambda d: docs.append(json_line(d)),
                   lambda e: errors.append(json_line(e)), stats)
        except Exception as e:  # one error line: an exception here would kill the worker, and the
            # batch, sent again, would kill the next one, for ever
            stats["record_error"] += 1
            errors.append(json_line({"url": str(task.get("url")), **failure("record_error", repr(e)),
                                     "time": now_iso()}))
    return gzip_member(docs), gzip_member(errors), stats


def worker_main(conn, options, progress, slot):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the main process to handle
    logging.disable(logging.CRITICAL)  # trafilatura logs every page it discards
    inbox = queue.SimpleQueue()

    def receive():
        """Take in the next batch while this one is extracted: the main process's send of pages
        never blocks on a full pipe (which, with this worker blocked sending its results back,
        would be a deadlock), and the next batch is here when this one is done."""
        while True:
            try:
                inbox.put(conn.recv())
            except (EOFError, OSError):
                inbox.put(None)
                return

    threading.Thread(target=receive, daemon=True).start()
    while (work := inbox.get()) is not None:
        tasks, serialize = work
        conn.send(run_batch(tasks, options, progress, slot, serialize))


class ExtractionPool:
    def __init__(self, workers, time_limit, options):
        # forkserver: workers are forked from a clean single-threaded process, never from the main
        # one while its fetch thread holds locks. The extractor is imported there once, and so is
        # scrape.py with all it imports: each worker runs the main script again as it starts (as
        # multiprocessing does), which then costs it ~0.04 s of CPU instead of ~0.5 s
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.context = multiprocessing.get_context(method)
        if method == "forkserver":
            self.context.set_forkserver_preload(["scrape", "extract", PRELOAD[options["extractor"]]])
        self.time_limit, self.options = time_limit, options
        self.progress = self.context.RawArray("d", 2 * workers)  # per worker: page index, its start time
        self.workers = [self.start(slot) for slot in range(workers)]

    def start(self, slot):
        conn, child_conn = self.context.Pipe()
        process = self.context.Process(target=worker_main, daemon=True,
                                       args=(child_conn, self.options, self.progress, slot))
        process.start()
        child_conn.close()
        return SimpleNamespace(slot=slot, process=process, conn=conn, queue=collections.deque())

    def restart(self, worker):
        """A fresh worker in the slot; what the old one still had to do is returned, oldest first."""
        worker.process.kill()
        worker.process.join()
        worker.conn.close()
        self.workers[worker.slot] = self.start(worker.slot)
        return list(worker.queue)

    def send(self, worker, batch, serialize):
        if not worker.queue:  # the watch starts now; a queued batch's worker starts it itself
            self.progress[2 * worker.slot], self.progress[2 * worker.slot + 1] = 0, time.monotonic()
        worker.queue.append(batch)
        with contextlib.suppress(OSError):  # a dead worker: the wait below says so
            worker.conn.send((batch, serialize))

    @staticmethod
    def has_room(worker):
        return len(worker.queue) < 2

    def map(self, batches, serialize=False):
        """Yield (batch, output of run_batch) for every batch (a list of tasks, or a chunk of a
        local .warc.gz), as they finish. `batches` may yield None, meaning 'nothing ready yet': the
        URL modes batch pages as the fetcher brings them. Each worker gets a second batch queued
        behind the one it works on, so that it never waits for this process. Batches that come back
        from a killed worker go out again first."""
        batches, more, again = iter(batches), True, collections.deque()
        try:
            while more or again or any(w.queue for w in self.workers):
                for worker in self.workers:
                    batch = StopIteration
                    while (again or more) and self.has_room(worker):
                        batch = again.popleft() if again else next(batches, StopIteration)
                        if batch is StopIteration:
                            more = False
                        elif batch is None:
                            break
                        else:
                            self.send(worker, batch, serialize)
                    if batch is None:  # nothing ready: no use asking again for the next worker
                        break
                busy = {w.conn: w for w in self.workers if w.queue}
                if not busy:
                    continue
                # wake for a result, or to look at the watch; just poll if idle workers await pages
                idle = more and len(busy) < len(self.workers)
                for conn in multiprocessing.connection.wait(list(busy), 0 if idle else 0.1):
                    worker = busy[conn]
                    try:
                        while conn.poll():  # all that is done, so that the watch below sees the batch in work
                            output = conn.recv()
                            yield worker.queue.popleft(), output
                    except (EOFError, OSError):
                        worker.process.join()
                        again.extend(self.fail_page(worker, "extraction_crash",
                                                    f"worker died with exit code {worker.process.exitcode}"))
                now = time.monotonic()
                for worker in list(self.workers):
                    if worker.queue and now - self.progress[2 * worker.slot + 1] > self.time_limit:
                        again.extend(self.fail_page(worker, "extraction_timeout", f"over {self.time_limit}s"))
        finally:  # abandoned midway (the input broke): batches still in workers belong to no one now
            for worker in list(self.workers):
                if worker.queue:
                    self.restart(worker)

    def fail_page(self, worker, reason, detail):
        """The page the worker was on fails; its batch, that page marked, and the batch queued
        behind it are to be sent again."""
        batch, page = worker.queue[0], int(self.progress[2 * worker.slot])
        if isinstance(batch, dict):  # a chunk: its worker reads its pages, and this one is failed
            batch["failed"][page] = failure(reason, detail)
        else:
            page = min(page, len(batch) - 1)
            batch[page] = {**batch[page], "result": failure(reason, detail)}
        return self.restart(worker)

    def close(self):
        for worker in self.workers:
            worker.process.kill()
            worker.process.join()
            worker.conn.close()
