"""
Stage 1: web pages -> clean text documents in data/raw/*.jsonl.gz.

    python scrape.py --warc=data/sample/pages.warc.gz              # WARC/WET files: path, URL or glob
    python scrape.py --cc=CC-MAIN-2024-10 --cc_files=2             # the first files of a Common Crawl
    python scrape.py --urls=urls.txt                                # a list of pages, one per line
    python scrape.py --crawl=https://example.org/ --max_pages=500   # one site, breadth first
    python scrape.py --warc=... --extractor=resiliparse             # DCLM's extractor, ~15x less CPU

Nearly all the cost is finding the main text of each page (the article, not the menus and
footers): extract.py, in --workers processes. This file is the pipeline around it, and must cost
far less than it. A local .warc.gz is cut into chunks by byte offset, and each worker reads its
chunk's records itself (warc.py, with fastwarc), extracts them and makes the shard's gzip bytes, so
the main process only appends what comes back, in input order. A WARC streamed over HTTP, a
plain .warc or one gzipped whole is read by the main process and sent to the workers in batches. In the URL modes,
one thread of the main process fetches (fetch.py: polite, with a deadline on every request) and
the main thread batches what it brings.

Every page ends as a document or as a line in errors/ with its reason. Shards are written atomically,
so a rerun skips what is done: WARC files whose shard exists, URLs saved or failed for good. A WARC
file that is cut short or damaged loses only the records that are: each gzip member holds one
record, so reading resumes at the next whole member, and errors/ says which bytes were lost.
"""

import contextlib
import gzip
import hashlib
import http.client
import json
import os
import queue
import re
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from common import (atomic_path, fail, mark_in_progress, print_summary, progress, run_stage, stage_arguments,
                    write_json)
from extract import EXTRACTORS, ExtractionPool, doc_id, gzip_member, json_line, record
from fetch import Failure, Fetcher, failure, now_iso, url_host, url_key
from warc import local_warc_files, one_member_per_record, warc_chunks, warc_pages

SKIP_EXTENSIONS = (".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".zip", ".gz", ".tar", ".mp3",
                   ".mp4", ".css", ".js", ".ico", ".woff", ".woff2", ".exe", ".dmg", ".iso")
PART_SECONDS = 600  # URL modes close a part at least this often, so a crash loses little
# Pages per batch sent to a worker: large enough that the messages cost nothing next to the
# extraction, small enough that a batch retried after a hang is cheap. Fixed, so a WARC shard's
# bytes do not depend on --workers. URL modes send what the fetcher has brought, up to 8.
BATCH_PAGES, BATCH_BYTES, URL_BATCH_PAGES = 64, 4_000_000, 8

# -----------------------------------------------------------------------------------------------
# writing outcomes


def errors_path(out_path):
    return Path(out_path).parent / "errors" / Path(out_path).name  # out of clean.py's way


def read_jsonl(path):
    """Lines of a finished .jsonl.gz as dicts; a bad line is skipped (these files are ours)."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                yield json.loads(line)


def finished_urls(output):
    """URLs a rerun must not fetch again (by url_key): saved as documents, or failed for good."""
    done = set()
    for path in Path(output).glob("*.jsonl.gz"):
        done.update(url_key(u) for doc in read_jsonl(path) for u in (doc.get("url"), doc.get("redirected_from")) if u)
    for path in Path(output).glob("errors/*.jsonl.gz"):
        done.update(url_key(e["url"]) for e in read_jsonl(path) if not e.get("transient"))
    return done


@contextlib.contextmanager
def gzip_members_writer(path):
    """Append finished gzip members to `path`, atomically; an empty file is still valid gzip."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f.write
        if f.tell() == 0:
            f.write(gzip.compress(b"", mtime=0))


@contextlib.contextmanager
def jsonl_members_writer(path, lines_per_member=64):
    """`with jsonl_members_writer(p) as write: write(doc)`: a shard of gzip members of a few dozen
    lines, as the WARC workers make them (orjson, ISA-L level 1, 15% larger). The URL modes write
    in the main process, beside the fetch thread: json.dumps and zlib's level 6 cost it 0.42 ms a
    page there (6.7k characters of text), a fifth of resiliparse's own time; these 0.03-0.05 ms."""
    lines = []
    with gzip_members_writer(path) as write:
        def write_line(obj):
            lines.append(json_line(obj))
            if len(lines) == lines_per_member:
                write(gzip_member(lines))
                lines.clear()
        yield write_line
        write(gzip_member(lines))


# -----------------------------------------------------------------------------------------------
# --urls and --crawl


class EmptyPart(Exception):
    pass


def remove_uncommitted_parts(out, prefix):
    """A part's documents are renamed into place after its errors and stats: errors or stats of
    a part with no documents are a run killed in between. Left, the errors would be overwritten
    by the next part of that number, and the stats count pages that are nowhere; removed, their
    pages are fetched again (the crawl's frontier still holds them)."""
    orphans = [p for p in [*out.glob(f"errors/{prefix}*.jsonl.gz"), *out.glob(f".stats/{prefix}*.json")]
               if not (out / p.name.removesuffix(".json")).exists()]
    for path in orphans:
        path.unlink()
    if orphans:
        print(f"scrape: removed {len(orphans)} file(s) of parts a killed run left unfinished; "
              f"their pages are fetched again")


def scrape_urls(args, pool, source, urls):
    """The fetch thread feeds the extraction pool; outcomes go to parts of --part_docs pages, each
    written atomically. In crawl mode, links of each page join the frontier (same site, breadth
    first)."""
    start, out, prefix = time.time(), Path(args.output), f"{source}-{args.shard:05d}-"
    remove_uncommitted_parts(out, prefix)
    done = finished_urls(out)
    mark_in_progress("scrape", out, args, input=args.urls or args.crawl)  # until the report says complete
    crawl = source == "crawl"
    sites = {url_host(args.crawl)} if crawl else set()  # + where the seed redirects
    # named by the seed's url_key: a seed spelled another way (HTTP://, a default port) resumes too
    frontier_path = out / f"frontier-{doc_id(url_key(args.crawl or ''))[:8]}.json"
    if crawl and not frontier_path.exists() and (old := out / f"frontier-{doc_id(args.crawl)[:8]}.json").exists():
        old.rename(frontier_path)  # saved by a version that named it by the seed as written
    if crawl and frontier_path.exists():  # a crawl resumes where its last saved part left it
        frontier = json.loads(frontier_path.read_text())
        urls, sites = [(u, d) for u, d in frontier["pending"] if url_key(u) not in done], set(frontier["sites"])
    budget = args.max_pages - sum(url_host(u) in sites for u in done) if crawl else float("inf")
    fetcher, todo, fetched = Fetcher(args), queue.SimpleQueue(), queue.Queue()
    backlog = args.connections + URL_BATCH_PAGES * args.workers  # fetched pages waiting for a worker, at most: memory
    # seen, saved: url_keys, so that /café.html and /caf%C3%A9.html are one page; pending and next_run
    # (the crawl's frontier) keep each URL as it was written, for its document
    seen, saved, pending, next_run = set(done), set(done), {}, {}

    def submit(url, depth):
        nonlocal budget
        if (key := url_key(url)) in seen:
            return
        seen.add(key)
        if budget <= 0:
            next_run[url] = depth  # over --max_pages: kept for a later run with a larger budget
            return
        pending[url] = depth
        budget -= 1
        todo.put((url, depth))

    def page_fetched(url, depth, outcome):  # in the fetch thread
        task = {"url": url, "depth": depth, "source": source, "want_links": crawl}
        if isinstance(outcome, Failure):
            task["result"] = outcome.result
        else:
            final_url, task["content_type"], task["body"] = outcome
            task["fetched_at"] = now_iso()
            if final_url != url:
                task.update(url=final_url, redirected_from=url)
        fetched.put(task)

    def ready_batches():  # what the fetcher has brought, up to URL_BATCH_PAGES; None: nothing yet
        while pending:
            if not fetch_thread.is_alive():
                fail("scrape.py: the fetch thread died; its traceback is above")
            batch = []
            with contextlib.suppress(queue.Empty):
                batch.append(fetched.get(timeout=0.02))
                while len(batch) < URL_BATCH_PAGES:
                    batch.append(fetched.get_nowait())
            yield batch or None

    def follow_links(task, result):
        if task["depth"] >= args.max_depth:
            return
        for link in result.get("links", []):
            parts = urlsplit(link)
            if (parts.scheme in ("http", "https") and url_host(link) in sites
                    and not parts.path.lower().endswith(SKIP_EXTENSIONS)):
                submit(link, task["depth"] + 1)

    for url, depth in urls:
        submit(url, depth)
    print(f"scrape: {len(pending):,} URLs to fetch ({len(done):,} done in earlier runs)")
    fetch_thread = threading.Thread(target=fetcher.run, args=(todo, page_fetched, lambda: fetched.qsize() < backlog),
                                    daemon=True)
    fetch_thread.start()
    part = 1 + max([int(p.name[len(prefix):][:5]) for p in out.glob(prefix + "*.jsonl.gz")], default=-1)
    results = ((task, result) for batch, batch_results in pool.map(ready_batches()) for task, result in zip(batch, batch_results))
    finished, bar, totals = False, progress("scrape", unit="page", total=None if crawl else len(pending)), Counter()
    while not finished:
        name, stats, part_start = f"{prefix}{part:05d}.jsonl.gz", Counter(), time.time()
        in_part = {}  # URL -> depth of this part's pages: in the frontier until their part is there
        # a part's files are put in place frontier, errors, stats, then documents, the part's
        # commit: a run killed in between leaves what remove_uncommitted_parts clears
        with contextlib.suppress(EmptyPart), jsonl_members_writer(out / name) as write_doc:
            with jsonl_members_writer(errors_path(out / name)) as write_error:
                try:
                    for task, result in results:
                        asked = task.get("redirected_from", task["url"])
                        in_part[asked] = pending.pop(asked, task["depth"])
                        if (key := url_key(task["url"])) in saved and "reason" not in result:  # two URLs, one page
                            result = failure("duplicate", f"redirects to {task['url']}, already saved")
                        saved.add(key)
                        seen.add(key)  # reached by a redirect: not to be fetched again
                        if crawl and task["depth"] == 0:  # example.org -> www.example.org is the same site
                            sites.add(url_host(task["url"]))
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
                if crawl:
                    write_json(frontier_path, {"seed": args.crawl, "sites": sorted(sites), "pending": sorted(
                        {**in_part, **pending, **next_run}.items(), key=lambda item: item[1])})
                if stats["pages"] == 0:  # nothing happened in this part: no files (raised: none renamed)
                    raise EmptyPart
            write_json(out / ".stats" / (name + ".json"), dict(stats))
        part += stats["pages"] > 0
        totals += stats
    bar.close()
    todo.put(None)
    return write_report(args, out, start, totals, complete=not pending)


def write_report(args, out, start, this_run, complete):
    """The report of every part in the folder (all runs'), complete unless URLs were left unfetched
    (an interrupted run: the next one fetches them)."""
    totals = Counter()
    stats = sorted((out / ".stats").glob("*.json"))
    for path in stats:
        totals.update(json.loads(path.read_text()))
    seconds = time.time() - start
    report = {"stage": "scrape", "complete": complete, "input": args.urls or args.crawl, "output": str(out),
              "shards": [{"name": path.name[:-len(".json")]} for path in stats],
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
            with Fetcher(args).open_file(url) as r:
                paths = gzip.decompress(r.read()).decode().split()
        except (Failure, http.client.HTTPException, OSError) as e:
            fail(f"cannot read the list of {args.cc_kind} files of {args.cc} at {url}: {e}")
        sources = [f"{args.cc_base.rstrip('/')}/{p}" for p in paths[:args.cc_files]]
    elif args.warc.startswith(("http://", "https://")):
        sources = [args.warc]
    else:
        sources = local_warc_files(args.warc)
    if not sources:
        fail(f"no WARC files found at {args.warc or args.cc!r}")
    return sources[args.shard::args.num_shards]


def batches(tasks):
    """Tasks in batches of BATCH_PAGES pages or BATCH_BYTES of HTML, numbered in order."""
    batch, size, number = [], 0, 0
    for task in tasks:
        batch.append(task)
        size += len(task.get("body", b""))
        if len(batch) == BATCH_PAGES or size >= BATCH_BYTES:
            batch[0]["batch"], number = number, number + 1
            yield batch
            batch, size = [], 0
    if batch:
        batch[0]["batch"] = number
        yield batch


def in_order(results):
    """(batch, output) pairs back in input order, so a shard's bytes never depend on which worker
    was fastest. Every batch comes back exactly once, so the sequence has no gaps."""
    waiting, next_number = {}, 0
    for batch, output in results:
        waiting[batch["batch"] if isinstance(batch, dict) else batch[0]["batch"]] = (batch, output)
        while next_number in waiting:
            yield waiting.pop(next_number)
            next_number += 1


@contextlib.contextmanager
def open_warc(path, fetcher):
    if path.startswith(("http://", "https://")):  # streamed: never downloaded whole
        with fetcher.open_file(path) as r:
            yield r
    else:
        with open(path, "rb") as f:
            yield f


def scrape_warc(path, out_path, pool, args, fetcher, bar, eta_bytes):
    """One WARC file -> one shard of documents (and one of errors), written atomically. A download
    that breaks is retried from the start with backoff; a file that cannot be had is left undone,
    so a rerun tries it again."""
    for attempt in range(args.retries + 1):
        stats = Counter()
        try:
            with open_warc(path, fetcher) as stream, gzip_members_writer(out_path) as write_docs, \
                    gzip_members_writer(errors_path(out_path)) as write_errors:
                source, local = "cc" if args.cc else "warc", not path.startswith(("http://", "https://"))
                size = os.path.getsize(path) if local else 0
                if local and path.lower().endswith(".gz") and one_member_per_record(stream, size):
                    # the workers read it in chunks; the main process only appends what comes back
                    work = pool.map(warc_chunks(path, size, source, args.max_bytes), serialize=True)
                else:  # a stream, or plain WARC (or one gzipped whole): read here, sent in batches
                    work = pool.map(batches(warc_pages(stream, path, source, args.max_bytes)), serialize=True)
                for batch, (docs, errors, batch_stats) in in_order(work):
                    write_docs(docs)
                    write_errors(errors)
                    stats.update(batch_stats)
                    bar.update(batch_stats["pages"])
                    if eta_bytes["total"]:  # an ETA: pages so far, scaled by the bytes still to read
                        read = eta_bytes["done"] + (batch["end"] if isinstance(batch, dict) else batch[-1].get("warc_pos", 0))
                        bar.total = int(bar.n * eta_bytes["total"] / max(min(read, eta_bytes["total"]), 1))
            if not path.startswith(("http://", "https://")):
                eta_bytes["done"] += os.path.getsize(path)
            return stats
        except (Failure, http.client.HTTPException, OSError) as e:
            remote = path.startswith(("http://", "https://"))
            permanent = not remote or isinstance(e, Failure) and not e.result["transient"]
            if permanent or attempt == args.retries:
                print(f"\nwarning: {path}: giving up ({e}); a rerun will try it again")
                return Counter(warc_failed=1)
            print(f"\nwarning: {path}: {e}; retrying")
            time.sleep(min(args.backoff * 2 ** attempt, args.max_retry_wait))


def scrape_warcs(args, pool):
    sources = warc_sources(args)
    # run_stage names each output after its input; give it the names we want: pages.warc.gz -> pages
    by_name = {}
    for s in sources:
        name = re.sub(r"(\.warc)?(\.wet)?(\.gz)?$", "", Path(urlsplit(s).path).name, flags=re.I) + ".jsonl"
        if (other := by_name.setdefault(name, s)) != s:
            fail(f"{other} and {s} would both be written as {name}.gz: rename one")
    args.input = args.warc or args.cc
    fetcher = Fetcher(args)  # for WARC files over HTTP
    bar, start, this_run = progress("scrape", unit="page"), time.time(), {}
    # local files still to do, for the ETA (remote ones have no size until they are fetched)
    eta_bytes = {"done": 0, "total": 0 if any(s.startswith(("http://", "https://")) for s in sources) else sum(
        os.path.getsize(s) for name, s in by_name.items() if not (Path(args.output) / ".stats" / (name + ".gz.json")).exists())}

    failed = []  # WARC files given up on: they have no shard, so the folder is not complete

    def process(name, out_path):
        stats = scrape_warc(by_name[str(name)], out_path, pool, args, fetcher, bar, eta_bytes)
        if stats.get("warc_failed"):
            # said in run_stage's one write of the report (extra_report), not in a rewrite after it:
            # a kill between the two left a report that read complete with a file never read
            failed.append(name)
            this_run.update(complete=False, warc_failed=[by_name[n] for n in failed],
                            shards=[{"name": n + ".gz"} for n in by_name if n not in failed])
        this_run["pages_this_run"] = this_run.get("pages_this_run", 0) + stats["pages"]
        this_run["pages_per_second"] = round(this_run["pages_this_run"] / (time.time() - start), 2)
        return stats

    settings = {k: getattr(args, k) for k in ("extractor", "max_bytes", "extract_timeout",
                                              "min_chars")}
    report = run_stage("scrape", process, list(by_name), args.output, args, extra_report=this_run,
                       settings=settings, files=by_name)
    bar.total = bar.n  # the estimate ends exact
    bar.close()
    return report

# -----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = stage_arguments(__doc__.split("\n\n")[0], None, "data/raw")
    p.add_argument("--urls", help="file with one URL per line (gzipped or not)")
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
    p.add_argument("--fetch_timeout", type=float, default=120.0,
                   help="seconds for one whole request (connect, headers, body), robots.txt too")
    p.add_argument("--retries", type=int, default=3, help="on connection errors, 429 and 5xx")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry wait, doubled each time")
    p.add_argument("--max_retry_wait", type=float, default=60.0, help="cap on any wait, Retry-After too")
    p.add_argument("--max_redirects", type=int, default=5, help="a longer chain fails as 'redirects'")
    p.add_argument("--max_bytes", type=int, default=2_000_000, help="pages larger are skipped")
    p.add_argument("--extractor", default="trafilatura", choices=EXTRACTORS,
                   help="main text finder: trafilatura (FineWeb's) or resiliparse (DCLM's, ~15x less CPU)")
    p.add_argument("--extract_timeout", type=float, default=10.0, help="seconds of extraction per page")
    p.add_argument("--min_chars", type=int, default=200, help="pages with less main text are dropped")
    p.add_argument("--part_docs", type=int, default=10_000, help="URL modes: pages per output part")
    args = p.parse_args(argv)
    if sum(bool(m) for m in (args.urls, args.crawl, args.warc, args.cc)) != 1:
        fail("give exactly one of --urls, --crawl, --warc, --cc")
    if not 0 <= args.shard < args.num_shards:
        fail(f"--shard={args.shard} must be in [0, --num_shards={args.num_shards})")
    # below these, nothing could ever start (a hang), or a WARC file would never be tried (a crash);
    # a redirect loop would never end, or no Common Crawl file be read
    for name, least in (("workers", 1), ("connections", 1), ("per_host", 1), ("retries", 0),
                        ("max_redirects", 0), ("cc_files", 1)):
        if getattr(args, name) < least:
            fail(f"--{name}={getattr(args, name)} must be at least {least}")
    if args.extract_timeout <= 0:  # not 'no limit': every page would be over it, and killed
        fail(f"--extract_timeout={args.extract_timeout} must be more than 0 seconds")
    if args.crawl and not (args.crawl.lower().startswith(("http://", "https://")) and url_host(args.crawl)):
        fail(f"--crawl={args.crawl}: the seed must be an http(s) URL, such as https://example.org/")
    if args.crawl and args.num_shards > 1:
        fail("--crawl follows one site from one machine; split a large job with --urls instead")
    return args


def url_list(args):
    """(url, depth 0) for each line of --urls that falls to this machine's shard. Hosts, not URLs,
    are dealt out, so that politeness per host holds across machines."""
    try:
        data = Path(args.urls).read_bytes()
        if data.startswith(b"\x1f\x8b"):  # urls.txt.gz: read as zcat would, not as lines of noise
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # EOFError: a .gz cut short
        fail(f"cannot read --urls={args.urls}: {e}")
    # utf-8-sig: Notepad starts a file with a byte-order mark that would spoil the first URL
    lines = data.decode("utf-8-sig", errors="replace").splitlines()
    urls = {}  # url_key -> the first spelling of it: /café.html and /caf%C3%A9.html are one page
    for number, url in enumerate((line.strip() for line in lines), 1):
        if not url or url.startswith("#"):
            continue
        if len(url.split()) > 1:  # 'URL<TAB>label' (a TSV) would be fetched as one URL, tab dropped
            fail(f"--urls={args.urls}:{number}: {url[:80]!r} holds a space or tab: expected one URL per "
                 f"line (write a space inside a URL as %20)")
        urls.setdefault(url_key(url), url)
    if not urls:  # the wrong file?
        fail(f"--urls={args.urls} holds no URLs: expected one per line (# starts a comment)")
    mine = [u for u in urls.values()
            if int(hashlib.sha256(url_host(u).encode()).hexdigest()[:8], 16) % args.num_shards == args.shard]
    # in hash order, so that hosts interleave: a list sorted by host would have every fetch thread
    # queueing behind one host's politeness delay
    return [(u, 0) for u in sorted(mine, key=doc_id)]


def main(argv=None):
    args = parse_args(argv)
    urls = url_list(args) if args.urls else [(args.crawl, 0)] if args.crawl else None
    options = {"extractor": args.extractor, "min_chars": args.min_chars,
               "test_hooks": os.environ.get("SCRAPE_TEST_HOOKS") == "1"}
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
