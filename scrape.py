"""
Stage 1: web pages -> clean text documents in data/raw/*.jsonl.gz.

    python scrape.py --warc=data/sample/pages.warc.gz              # WARC/WET files: path, URL or glob
    python scrape.py --cc=CC-MAIN-2024-10 --cc_files=2             # the first files of a Common Crawl
    python scrape.py --urls=urls.txt                                # a list of pages, one per line
    python scrape.py --crawl=https://example.org/ --max_pages=500   # one site, breadth first

Nearly all the cost is trafilatura, which finds the main text of a page (the article, not the menus
and footers) in tens of milliseconds of CPU. Fetching is mostly waiting. So pages are fetched by
threads of the main process and extracted by --workers processes, and the fetch queue is kept full
enough that the extractors never wait. trafilatura has no timeout of its own and a hostile page can
keep lxml or a regex busy for minutes, so each worker gets one page at a time and a deadline; a worker
past it is killed and replaced, and the page is recorded as 'extraction_timeout'.

Every page ends as a document or as a line in errors/ with its reason. Shards are written atomically,
so a rerun skips what is done: WARC files whose shard exists, URLs saved or failed for good.
"""

import contextlib
import glob
import gzip
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
import zlib
from collections import Counter
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import charset_normalizer
import htmldate
import requests
import trafilatura
import urllib3
from trafilatura.utils import load_html
from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from common import fail, jsonl_writer, print_summary, progress, run_stage, stage_arguments, write_json

HTML_TYPES = ("text/html", "application/xhtml+xml")
BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b", b"\x7fELF")
SKIP_EXTENSIONS = (".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".zip", ".gz", ".tar", ".mp3",
                   ".mp4", ".css", ".js", ".ico", ".woff", ".woff2", ".exe", ".dmg", ".iso")
PART_SECONDS = 600  # URL modes close a part at least this often, so a crash loses little


def doc_id(url):
    return hashlib.sha256(url.encode()).hexdigest()[:16]  # the team's stable id: same URL, same id


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def failure(reason, detail="", transient=False):
    """How a page that gives no document is recorded. Transient failures are retried by a rerun."""
    return {"reason": reason, "detail": str(detail)[:300], "transient": transient}


class Failure(Exception):
    def __init__(self, reason, detail="", transient=False):
        super().__init__(reason)
        self.result = failure(reason, detail, transient)

# -----------------------------------------------------------------------------------------------
# extraction: runs in the worker processes


def looks_binary(body):
    head = body[:1024]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False  # UTF-16 has NUL bytes and is still text
    return b"\x00" in head or head.startswith(BINARY_MAGIC)


def decode_html(body, content_type):
    """Bytes to str as a browser would: byte-order mark, then the HTTP header's charset, then the
    page's <meta>, then UTF-8, then a statistical guess. A wrong label falls through to the next."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if body.startswith(bom):
            return body.decode(codec, errors="replace")
    labels = re.findall(r"charset=[\"']?([\w.:-]+)", content_type or "", re.I)
    labels += [m.decode("ascii") for m in re.findall(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", body[:4096], re.I)]
    for label in labels + ["utf-8"]:
        if label.lower() in ("iso-8859-1", "latin1", "latin-1", "us-ascii", "ascii"):
            label = "windows-1252"  # what these labels mean on the web (WHATWG Encoding standard)
        try:
            return body.decode(label)
        except (LookupError, UnicodeDecodeError):
            continue
    guess = charset_normalizer.from_bytes(body).best()
    return str(guess) if guess is not None else body.decode("utf-8", errors="replace")


def test_hooks(body):
    """Stand-ins for hostile pages, enabled only by SCRAPE_TEST_HOOKS=1: the tests need a page that
    hangs the extractor (and ignores SIGTERM, as C code stuck in a loop would) and one that kills it."""
    if b"<!-- scrape-test: hang -->" in body:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    if b"<!-- scrape-test: crash -->" in body:
        os._exit(11)


def extract_page(task, options):
    """One page -> {"text", "title", "date"[, "links"]} or a failure."""
    if task.get("text") is not None:  # a WET record: Common Crawl already extracted the text
        text, title, date, tree = task["text"].strip(), None, None, None
    else:
        body = task["body"]
        if options["test_hooks"]:
            test_hooks(body)
        if looks_binary(body):
            return failure("binary", "binary content served as HTML")
        # lxml refuses a str that still declares its encoding; it is decoded already
        html = re.sub(r"^\s*<\?xml[^>]*\?>", "", decode_html(body, task.get("content_type")))
        tree = load_html(html)  # parsed once for text, date, title and links
        if tree is None:
            return failure("empty", "not parseable as HTML")
        title = " ".join((tree.findtext(".//title") or "").split()) or None
        # htmldate as trafilatura's metadata runs it, minus the slow extensive search; a page cannot
        # be published after it was fetched. (All of trafilatura's metadata would cost 50% more.)
        date = htmldate.find_date(tree, extensive_search=False, original_date=True,
                                  max_date=task["fetched_at"][:10])
        # the main text, with FineWeb's settings (extract() works on a copy of the tree)
        text = trafilatura.extract(tree, favor_precision=True, include_comments=False) or ""
    if not text:
        return failure("empty", "no main text found")
    if len(text) < options["min_chars"]:
        return failure("too_short", f"{len(text)} characters")
    result = {"text": text, "title": title, "date": date}
    if task.get("want_links"):
        base = urljoin(task["url"], (tree.xpath("//base/@href") or [""])[0])
        links = (urldefrag(urljoin(base, href.strip()))[0] for href in tree.xpath("//a/@href"))
        result["links"] = list(dict.fromkeys(links))[:1000]
    return result


def extraction_worker(conn, options):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the main process to handle
    logging.disable(logging.CRITICAL)  # trafilatura logs every page it discards
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        try:
            result = extract_page(task, options)
        except Exception as e:  # a bug or an odd page costs one page, not the worker
            result = failure("extraction_error", repr(e))
        conn.send(result)


class ExtractionPool:
    """--workers processes running extract_page, one page at a time each, so that a page over its
    time limit costs one SIGKILL (stuck C code ignores everything else) and a fresh worker."""

    def __init__(self, workers, time_limit, options):
        # forkserver: workers are forked from a clean single-threaded process, never from this one
        # while fetch threads hold locks; trafilatura is imported there once
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.context = multiprocessing.get_context(method)
        if method == "forkserver":
            self.context.set_forkserver_preload(["trafilatura"])
        self.time_limit, self.options = time_limit, options
        self.idle = [self.start() for _ in range(workers)]
        self.busy = {}  # connection -> (process, task, deadline)

    def start(self):
        conn, child_conn = self.context.Pipe()
        process = self.context.Process(target=extraction_worker, args=(child_conn, self.options), daemon=True)
        process.start()
        child_conn.close()
        return process, conn

    def replace(self, process, conn):
        process.kill()
        process.join()
        conn.close()
        self.idle.append(self.start())

    def map(self, tasks):
        """Yield (task, result) for every task, as they finish. A task that already has a "result"
        (it failed before extraction) passes straight through. `tasks` may yield None, meaning
        'nothing ready yet': the URL modes feed pages as the fetchers bring them."""
        tasks, more = iter(tasks), True
        try:
            while more or self.busy:
                while more and self.idle:
                    task = next(tasks, StopIteration)
                    if task is StopIteration:
                        more = False
                    elif task is None:
                        break
                    elif "result" in task:
                        yield task, task["result"]
                    else:
                        process, conn = self.idle.pop()
                        with contextlib.suppress(OSError):  # a dead worker: recv() below says so
                            conn.send(task)
                        # the worker has its copy: results waiting in line should not hold pages
                        task["html_bytes"] = len(task.pop("body", b""))
                        self.busy[conn] = (process, task, time.monotonic() + self.time_limit)
                if not self.busy:
                    continue
                # block until a result or the nearest deadline; just poll if idle workers await pages
                first_deadline = min(deadline for _, _, deadline in self.busy.values())
                timeout = 0 if (more and self.idle) else max(0.0, first_deadline - time.monotonic())
                for conn in multiprocessing.connection.wait(list(self.busy), timeout):
                    process, task, _ = self.busy.pop(conn)
                    try:
                        result = conn.recv()
                        self.idle.append((process, conn))
                    except (EOFError, OSError):
                        process.join()
                        result = failure("extraction_crash", f"worker died with exit code {process.exitcode}")
                        self.replace(process, conn)
                    yield task, result
                for conn, (process, task, deadline) in list(self.busy.items()):
                    if time.monotonic() > deadline:
                        del self.busy[conn]
                        self.replace(process, conn)
                        yield task, failure("extraction_timeout", f"over {self.time_limit}s")
        finally:  # abandoned midway (the input broke): pages still in workers belong to no one now
            for conn, (process, _, _) in list(self.busy.items()):
                del self.busy[conn]
                self.replace(process, conn)

    def close(self):
        for process, conn in self.idle + [(p, c) for c, (p, _, _) in self.busy.items()]:
            process.kill()
            process.join()
            conn.close()

# -----------------------------------------------------------------------------------------------
# fetching (--urls, --crawl): threads in the main process


def retry_after_seconds(value):
    """Retry-After is either seconds or an HTTP date."""
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


class Fetcher:
    """HTTP for the URL modes: one Session with pooled connections, shared by the fetch threads, and
    politeness per host: robots.txt fetched once and obeyed, a delay between requests, a cap on
    parallel connections, and backing off when the server says it is struggling (429, 5xx)."""

    def __init__(self, args):
        self.args = args
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=64, pool_maxsize=args.connections, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = args.user_agent
        self.hosts, self.lock = {}, threading.Lock()

    def host(self, url):
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url)).lower()
        with self.lock:
            if origin not in self.hosts:
                self.hosts[origin] = SimpleNamespace(
                    origin=origin, lock=threading.Lock(), slots=threading.Semaphore(self.args.per_host),
                    next_time=0.0, delay=self.args.delay, robots=None, robots_lock=threading.Lock())
            return self.hosts[origin]

    def wait_turn(self, h):
        with h.lock:  # requests to one host start at least h.delay seconds apart
            now = time.monotonic()
            start = max(now, h.next_time)
            h.next_time = start + h.delay
        time.sleep(start - now)

    def back_off(self, h, attempt, retry_after=None):
        wait = retry_after_seconds(retry_after)
        wait = min(self.args.backoff * 2 ** attempt if wait is None else wait, self.args.max_retry_wait)
        with h.lock:  # the whole host waits, not just this request: it asked us to slow down
            h.next_time = max(h.next_time, time.monotonic() + wait)

    def get(self, url, max_bytes, html_only):
        """One GET, redirects not followed, with retries. Returns (response, body)."""
        a, h = self.args, self.host(url)
        with h.slots:
            for attempt in range(a.retries + 1):
                self.wait_turn(h)
                try:
                    r = self.session.get(url, stream=True, allow_redirects=False,
                                         timeout=(a.connect_timeout, a.read_timeout))
                except requests.ConnectionError as e:  # includes ConnectTimeout: worth another try
                    if attempt < a.retries:
                        self.back_off(h, attempt)
                        continue
                    raise Failure("connection", e, transient=True)
                except requests.Timeout as e:  # the server accepted, then did not answer: no retry
                    raise Failure("timeout", e, transient=True)
                except requests.RequestException as e:
                    raise Failure("bad_url", e)
                with r:
                    if r.status_code == 429 or r.status_code >= 500:
                        if attempt < a.retries:
                            self.back_off(h, attempt, r.headers.get("Retry-After"))
                            continue
                        raise Failure("server_error", f"HTTP {r.status_code}", transient=True)
                    if r.status_code >= 400 or r.is_redirect:
                        return r, b""
                    mime = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    if html_only and mime and mime not in HTML_TYPES:
                        raise Failure("not_html", mime)
                    return r, self.read_body(r, max_bytes)

    def read_body(self, r, max_bytes):
        """The body, abandoned past max_bytes (after decompression: a gzip bomb stops too) or past
        --fetch_timeout in all (a server trickling a byte at a time never trips the read timeout)."""
        if int(r.headers.get("Content-Length", "0") or 0) > max_bytes:
            raise Failure("too_large", f"Content-Length {r.headers['Content-Length']}")
        deadline, chunks, size = time.monotonic() + self.args.fetch_timeout, [], 0
        try:
            for chunk in r.iter_content(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise Failure("too_large", f"over {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise Failure("timeout", f"body not done in {self.args.fetch_timeout}s", transient=True)
                chunks.append(chunk)
        except requests.RequestException as e:  # requests wraps a read timeout mid-body this way
            timed_out = bool(e.args) and isinstance(e.args[0], urllib3.exceptions.ReadTimeoutError)
            raise Failure("timeout" if timed_out else "connection", e, transient=True)
        return b"".join(chunks)

    def allowed(self, url):
        h = self.host(url)
        with h.robots_lock:  # fetched once per host, however many threads ask
            if h.robots is None:
                h.robots = self.load_robots(h)
        if h.robots.failure:  # the host is down or failing: its pages fail the same way, for now
            raise Failure(h.robots.failure["reason"], "robots.txt: " + h.robots.failure["detail"], transient=True)
        return h.robots.can_fetch(self.args.user_agent, url)

    def load_robots(self, h):
        """RFC 9309: a robots.txt that does not exist (4xx) allows everything; one that cannot be
        fetched (5xx, network) forbids everything for now. Up to 5 redirects are followed."""
        robots, url = RobotFileParser(), h.origin + "/robots.txt"
        robots.failure = None
        try:
            for _ in range(5):
                r, body = self.get(url, 500_000, html_only=False)
                if not r.is_redirect:
                    break
                url = urljoin(url, r.headers["Location"])
            if r.status_code >= 300:
                robots.allow_all = True
                return robots
        except Failure as f:  # for now if the host is failing; for good if robots.txt is odd
            robots.failure, robots.allow_all = (f.result, False) if f.result["transient"] else (None, True)
            return robots
        robots.parse(body.decode("utf-8", errors="replace").splitlines())
        crawl_delay = robots.crawl_delay(self.args.user_agent)
        if crawl_delay:
            h.delay = max(h.delay, min(float(crawl_delay), self.args.max_retry_wait))
        return robots

    def fetch_page(self, url):
        """(final url, content type, body) of an HTML page, following up to --max_redirects."""
        for _ in range(self.args.max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise Failure("bad_url", "only http and https URLs are fetched")
            if not self.allowed(url):
                raise Failure("robots", "disallowed by robots.txt")
            r, body = self.get(url, self.args.max_bytes, html_only=True)
            if r.is_redirect:
                url = urldefrag(urljoin(url, r.headers["Location"]))[0]
                continue
            if r.status_code >= 300:
                raise Failure("status", f"HTTP {r.status_code}")
            return url, r.headers.get("Content-Type", ""), body
        raise Failure("redirects", f"more than {self.args.max_redirects} redirects")

# -----------------------------------------------------------------------------------------------
# writing outcomes


def record(task, result, write_doc, write_error, stats):
    """Write a page's outcome: a document, or an error line with its reason. Returns True for a doc."""
    stats["pages"] += 1
    stats["html_bytes"] += task.get("html_bytes", 0)
    asked = task.get("redirected_from", task["url"])
    if "reason" in result:
        stats[result["reason"]] += 1
        write_error({"url": asked, **result, "time": now_iso()})
        return False
    doc = {"id": doc_id(task["url"]), "url": task["url"], "text": result["text"], "title": result["title"],
           "date": result["date"], "fetched_at": task["fetched_at"], "source": task["source"]}
    if asked != task["url"]:
        doc["redirected_from"] = asked
    write_doc(doc)
    stats["docs"] += 1
    stats["text_chars"] += len(doc["text"])
    return True


def errors_path(out_path):
    return Path(out_path).parent / "errors" / Path(out_path).name  # out of clean.py's way


def read_jsonl(path):
    """Lines of a finished .jsonl.gz as dicts; a bad line is skipped (these files are ours)."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                yield json.loads(line)


def finished_urls(output):
    """URLs a rerun must not fetch again: saved as documents, or failed for a lasting reason."""
    done = set()
    for path in Path(output).glob("*.jsonl.gz"):
        done.update(u for doc in read_jsonl(path) for u in (doc.get("url"), doc.get("redirected_from")) if u)
    for path in Path(output).glob("errors/*.jsonl.gz"):
        done.update(e["url"] for e in read_jsonl(path) if not e.get("transient"))
    return done

# -----------------------------------------------------------------------------------------------
# --urls and --crawl


def scrape_urls(args, pool, source, urls):
    """Fetch threads feed the extraction pool; outcomes go to parts of --part_docs pages, each written
    atomically. In crawl mode, links of each page join the frontier (same site, breadth first)."""
    start, out = time.time(), Path(args.output)
    done = finished_urls(out)
    crawl = source == "crawl"
    sites = {urlsplit(args.crawl).netloc.lower()} if crawl else set()  # + where the seed redirects
    frontier_path = out / f"frontier-{doc_id(args.crawl or '')[:8]}.json"
    if crawl and frontier_path.exists():  # a crawl resumes where its last saved part left it
        frontier = json.loads(frontier_path.read_text())
        urls, sites = [(u, d) for u, d in frontier["pending"] if u not in done], set(frontier["sites"])
    budget = args.max_pages - sum(urlsplit(u).netloc.lower() in sites for u in done) if crawl else float("inf")
    fetcher, todo = Fetcher(args), queue.Queue()
    fetched = queue.Queue(maxsize=args.connections + 2 * args.workers)  # bounds memory: full = fetchers wait
    seen, saved, pending, next_run = set(done), set(done), {}, {}  # next_run: the crawl's frontier

    def submit(url, depth):
        nonlocal budget
        if url in seen:
            return
        seen.add(url)
        if budget <= 0:
            next_run[url] = depth  # over --max_pages: kept for a later run with a larger budget
            return
        pending[url] = depth
        budget -= 1
        todo.put((url, depth))

    def fetch_loop():
        while (item := todo.get()) is not None:
            url, depth = item
            task = {"url": url, "depth": depth, "source": source, "want_links": crawl}
            try:
                final_url, task["content_type"], task["body"] = fetcher.fetch_page(url)
                task["fetched_at"] = now_iso()
                if final_url != url:
                    task.update(url=final_url, redirected_from=url)
            except Failure as f:
                task["result"] = f.result
            except Exception as e:  # a bug here must cost a page, never a silent hang
                task["result"] = failure("fetch_error", repr(e))
            fetched.put(task)

    def ready_pages():
        while pending:
            try:
                yield fetched.get(timeout=0.02)
            except queue.Empty:
                yield None

    def follow_links(task, result):
        if task["depth"] >= args.max_depth:
            return
        for link in result.get("links", []):
            parts = urlsplit(link)
            if (parts.scheme in ("http", "https") and parts.netloc.lower() in sites
                    and not parts.path.lower().endswith(SKIP_EXTENSIONS)):
                submit(link, task["depth"] + 1)

    for url, depth in urls:
        submit(url, depth)
    print(f"scrape: {len(pending):,} URLs to fetch ({len(done):,} done in earlier runs)")
    for _ in range(args.connections):
        threading.Thread(target=fetch_loop, daemon=True).start()
    prefix = f"{source}-{args.shard:05d}-"
    part = 1 + max([int(p.name[len(prefix):][:5]) for p in out.glob(prefix + "*.jsonl.gz")], default=-1)
    results, finished, bar, totals = pool.map(ready_pages()), False, progress("scrape", unit="page"), Counter()
    while not finished:
        name, stats, part_start = f"{prefix}{part:05d}.jsonl.gz", Counter(), time.time()
        with jsonl_writer(out / name) as write_doc, jsonl_writer(errors_path(out / name)) as write_error:
            try:
                for task, result in results:
                    asked = task.get("redirected_from", task["url"])
                    pending.pop(asked, None)
                    if task["url"] in saved and "reason" not in result:  # two URLs, one page
                        result = failure("duplicate", f"redirects to {task['url']}, already saved")
                    saved.add(task["url"])
                    seen.add(task["url"])  # reached by a redirect: not to be fetched again
                    if crawl and task["depth"] == 0:  # example.org -> www.example.org is the same site
                        sites.add(urlsplit(task["url"]).netloc.lower())
                    if record(task, result, write_doc, write_error, stats) and crawl:
                        follow_links(task, result)
                    elif result.get("transient"):
                        next_run[asked] = task["depth"]
                    bar.update()
                    if stats["pages"] >= args.part_docs or time.time() - part_start > PART_SECONDS:
                        break
                else:
                    finished = True
            except KeyboardInterrupt:  # keep what is done; the pages in flight are fetched next run
                print("\nscrape: interrupted, saving what is done")
                finished = True
        if stats["pages"] == 0:  # nothing happened in this part: leave no empty files behind
            (out / name).unlink()
            errors_path(out / name).unlink()
        else:
            write_json(out / ".stats" / (name + ".json"), dict(stats))
            part += 1
        if crawl:
            write_json(frontier_path, {"seed": args.crawl, "sites": sorted(sites), "pending": sorted(
                {**pending, **next_run}.items(), key=lambda item: item[1])})
        totals += stats
    bar.close()
    for _ in range(args.connections):
        todo.put(None)
    return write_report(args, out, start, totals)


def write_report(args, out, start, this_run):
    totals = Counter()
    for path in sorted((out / ".stats").glob("*.json")):
        totals.update(json.loads(path.read_text()))
    seconds = time.time() - start
    report = {"stage": "scrape", "input": args.urls or args.crawl, "output": str(out),
              "seconds": round(seconds, 2), "shards_processed": 1, "shards_skipped_done": 0,
              "this_run": dict(this_run), "pages_per_second": round(this_run["pages"] / max(seconds, 1e-9), 2),
              "totals": dict(sorted(totals.items()))}
    suffix = "" if args.num_shards == 1 else f"_{args.shard:05d}_of_{args.num_shards:05d}"
    report["report"] = str(out / f"report{suffix}.json")
    write_json(report["report"], report)
    return report

# -----------------------------------------------------------------------------------------------
# --warc and --cc


def warc_sources(args):
    """The WARC/WET files to read: a local path, a folder, a glob or an http(s) URL; for --cc the
    first --cc_files of the snapshot's paths list. Split round-robin over --num_shards machines."""
    if args.cc:
        url = f"{args.cc_base.rstrip('/')}/crawl-data/{args.cc}/{args.cc_kind}.paths.gz"
        try:
            r = requests.get(url, timeout=(args.connect_timeout, args.read_timeout), headers={"User-Agent": args.user_agent})
            r.raise_for_status()
            paths = gzip.decompress(r.content).decode().split()
        except (requests.RequestException, OSError) as e:
            fail(f"cannot read the list of {args.cc_kind} files of {args.cc} at {url}: {e}")
        sources = [f"{args.cc_base.rstrip('/')}/{p}" for p in paths[:args.cc_files]]
    elif args.warc.startswith(("http://", "https://")):
        sources = [args.warc]
    elif os.path.isdir(args.warc):
        sources = sorted(str(p) for p in Path(args.warc).iterdir() if re.search(r"\.(warc|wet)(\.gz)?$", p.name))
    else:
        sources = sorted(glob.glob(args.warc))
    if not sources:
        fail(f"no WARC files found at {args.warc or args.cc!r}")
    return sources[args.shard::args.num_shards]


def in_order(results):
    """(task, result) pairs back in input order, so a shard's bytes never depend on which worker
    was fastest. Every task gets exactly one result, so the sequence has no gaps."""
    waiting, next_seq = {}, 0
    for task, result in results:
        waiting[task["seq"]] = (task, result)
        while next_seq in waiting:
            yield waiting.pop(next_seq)
            next_seq += 1


def warc_pages(stream, path, args, stats):
    """One extraction task per page of a WARC file, streamed record by record: HTML responses (and
    resources), and WET conversion records, whose text is already extracted. A local file that turns
    unreadable keeps what was read before: a rerun would fail at the same place."""
    seq = 0
    try:
        for record in ArchiveIterator(stream):
            kind = record.rec_type
            if kind not in ("response", "resource", "conversion"):
                continue  # requests, metadata, warcinfo, revisits: not pages
            headers = record.http_headers if kind == "response" else record.rec_headers
            if headers is None:
                continue  # a response record without HTTP headers (dns:, ftp:)
            task = {"seq": seq, "url": record.rec_headers.get_header("WARC-Target-URI"),
                    "source": "cc" if args.cc else "warc",
                    "fetched_at": record.rec_headers.get_header("WARC-Date") or now_iso()}
            seq += 1
            if kind == "conversion":
                task["text"] = record.content_stream().read().decode("utf-8", errors="replace")
                yield task
                continue
            status = record.http_headers.get_statuscode() if kind == "response" else "200"
            mime = (headers.get_header("Content-Type") or "").split(";")[0].strip().lower()
            if status != "200":
                task["result"] = failure("status", f"HTTP {status}")
            elif mime not in HTML_TYPES:
                task["result"] = failure("not_html", mime)
            else:
                body = record.content_stream().read(args.max_bytes + 1)
                if len(body) > args.max_bytes:
                    task["result"] = failure("too_large", f"over {args.max_bytes} bytes")
                else:
                    task.update(body=body, content_type=headers.get_header("Content-Type"))
            yield task
    except (ArchiveLoadFailed, EOFError, zlib.error, gzip.BadGzipFile) as e:
        if path.startswith(("http://", "https://")):
            raise  # over the network: the download is retried whole
        stats["warc_unreadable"] += 1
        print(f"\nwarning: {path}: WARC unreadable after {stats['pages']} pages, keeping those: {e}")


@contextlib.contextmanager
def open_warc(path, session, args):
    if path.startswith(("http://", "https://")):  # streamed: never downloaded whole
        with session.get(path, stream=True, timeout=(args.connect_timeout, args.read_timeout)) as r:
            r.raise_for_status()
            yield r.raw
    else:
        with open(path, "rb") as f:
            yield f


def scrape_warc(path, out_path, pool, args, session, bar):
    """One WARC file -> one shard of documents (and one of errors), written atomically. A download
    that breaks is retried from the start with backoff; a file that cannot be had is left undone,
    so a rerun tries it again."""
    print(f"scrape: {path} -> {out_path}")
    for attempt in range(args.retries + 1):
        stats = Counter()
        try:
            with open_warc(path, session, args) as stream, jsonl_writer(out_path) as write_doc, \
                    jsonl_writer(errors_path(out_path)) as write_error:
                for task, result in in_order(pool.map(warc_pages(stream, path, args, stats))):
                    record(task, result, write_doc, write_error, stats)
                    bar.update()
            return stats
        except (requests.RequestException, urllib3.exceptions.HTTPError, ArchiveLoadFailed, EOFError,
                zlib.error, gzip.BadGzipFile, OSError) as e:
            remote = path.startswith(("http://", "https://"))
            permanent = not remote or isinstance(e, requests.HTTPError) and e.response.status_code < 500
            if permanent or attempt == args.retries:
                print(f"\nwarning: {path}: giving up ({e}); a rerun will try it again")
                return Counter(warc_failed=1)
            print(f"\nwarning: {path}: {e}; retrying")
            time.sleep(min(args.backoff * 2 ** attempt, args.max_retry_wait))


def scrape_warcs(args, pool):
    sources = warc_sources(args)
    # run_stage names each output after its input; give it the names we want: pages.warc.gz -> pages
    by_name = {re.sub(r"(\.warc)?(\.wet)?(\.gz)?$", "", Path(urlsplit(s).path).name) + ".jsonl": s for s in sources}
    if len(by_name) < len(sources):
        fail("two WARC files with the same name would write the same output shard")
    args.input = args.warc or args.cc
    session = requests.Session()
    session.headers["User-Agent"] = args.user_agent
    bar, start, this_run = progress("scrape", unit="page"), time.time(), {}

    def process(name, out_path):
        stats = scrape_warc(by_name[str(name)], out_path, pool, args, session, bar)
        this_run["pages_this_run"] = this_run.get("pages_this_run", 0) + stats["pages"]
        this_run["pages_per_second"] = round(this_run["pages_this_run"] / (time.time() - start), 2)
        return stats

    report = run_stage("scrape", process, list(by_name), args.output, args, extra_report=this_run)
    bar.close()
    return report

# -----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = stage_arguments(__doc__.split("\n\n")[0], None, "data/raw")
    p.add_argument("--urls", help="file with one URL per line")
    p.add_argument("--crawl", help="seed URL: crawl its site breadth first")
    p.add_argument("--warc", help="WARC or WET file(s): path, folder, glob or http(s) URL")
    p.add_argument("--cc", help="Common Crawl snapshot, e.g. CC-MAIN-2024-10")
    p.add_argument("--cc_files", type=int, default=1, help="how many of the snapshot's files to read")
    p.add_argument("--cc_kind", default="warc", choices=["warc", "wet"], help="HTML (warc) or CC's own text (wet)")
    p.add_argument("--cc_base", default="https://data.commoncrawl.org/", help="where crawl-data/ lives")
    p.add_argument("--max_pages", type=int, default=1000, help="crawl: URLs to fetch in all")
    p.add_argument("--max_depth", type=int, default=3, help="crawl: links followed from the seed")
    p.add_argument("--connections", type=int, default=16, help="concurrent fetches")
    p.add_argument("--per_host", type=int, default=2, help="concurrent fetches per host")
    p.add_argument("--delay", type=float, default=1.0, help="seconds between requests to a host")
    p.add_argument("--user_agent", default="scrape.py/1.0 (pretraining data; polite crawler)", help="sent, and matched in robots.txt")
    p.add_argument("--connect_timeout", type=float, default=10.0, help="seconds to connect")
    p.add_argument("--read_timeout", type=float, default=30.0, help="seconds of silence from a server")
    p.add_argument("--fetch_timeout", type=float, default=120.0, help="seconds for a whole page")
    p.add_argument("--retries", type=int, default=3, help="on connection errors, 429 and 5xx")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry wait, doubled each time")
    p.add_argument("--max_retry_wait", type=float, default=60.0, help="cap on any wait, Retry-After too")
    p.add_argument("--max_redirects", type=int, default=5, help="a longer chain fails as 'redirects'")
    p.add_argument("--max_bytes", type=int, default=2_000_000, help="pages larger are skipped")
    p.add_argument("--extract_timeout", type=float, default=10.0, help="seconds of extraction per page")
    p.add_argument("--min_chars", type=int, default=200, help="pages with less main text are dropped")
    p.add_argument("--part_docs", type=int, default=10_000, help="URL modes: pages per output part")
    args = p.parse_args(argv)
    if sum(bool(m) for m in (args.urls, args.crawl, args.warc, args.cc)) != 1:
        fail("give exactly one of --urls, --crawl, --warc, --cc")
    if not 0 <= args.shard < args.num_shards:
        fail(f"--shard={args.shard} must be in [0, --num_shards={args.num_shards})")
    if args.crawl and args.num_shards > 1:
        fail("--crawl follows one site from one machine; split a large job with --urls instead")
    return args


def url_list(args):
    """(url, depth 0) for each line of --urls that falls to this machine's shard. Hosts, not URLs,
    are dealt out, so that politeness per host holds across machines."""
    try:
        lines = Path(args.urls).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        fail(f"cannot read --urls={args.urls}: {e}")
    urls = [u.strip() for u in lines if u.strip() and not u.lstrip().startswith("#")]
    mine = [u for u in dict.fromkeys(urls)
            if int(hashlib.sha256(urlsplit(u).netloc.lower().encode()).hexdigest()[:8], 16) % args.num_shards == args.shard]
    # in hash order, so that hosts interleave: a list sorted by host would have every fetch thread
    # queueing behind one host's politeness delay
    return [(u, 0) for u in sorted(mine, key=doc_id)]


def main(argv=None):
    args = parse_args(argv)
    urls = url_list(args) if args.urls else [(args.crawl, 0)] if args.crawl else None
    options = {"min_chars": args.min_chars, "test_hooks": os.environ.get("SCRAPE_TEST_HOOKS") == "1"}
    pool = ExtractionPool(args.workers, args.extract_timeout, options)
    try:
        if urls is None:
            report = scrape_warcs(args, pool)
        else:
            report = scrape_urls(args, pool, "urls" if args.urls else "crawl", urls)
    except KeyboardInterrupt:
        fail("interrupted; shards not finished were not written, a rerun picks up from there")
    finally:
        pool.close()
    keys = ["pages", "docs"] + sorted(k for k in report["totals"] if k not in ("pages", "docs", "html_bytes", "text_chars"))
    print_summary("scrape", report, keys)
    return report


if __name__ == "__main__":
    main()
