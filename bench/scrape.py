"""
How fast does scrape.py go, against the fastest it could go? The ceiling is trafilatura alone: the
same pages, already in memory, extracted by a plain multiprocessing.Pool on the same cores. scrape.py
has to fetch them from a web server (a local one, in its own process), decode them, and ship them
to its workers and back; if fetching hides behind extraction as it should, it reaches >= 90% of it.

    python bench/scrape.py [--workers=2] [--repeat=1] [--rounds=3]

Prints pages/s for: extract() alone (trafilatura.extract, FineWeb's settings), scrape.py's whole
per-page work alone (decode + extract + date + title), scrape.py --urls against the local server,
and scrape.py --warc on a WARC file of the same pages; and the ratios.
"""
import argparse
import multiprocessing
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trafilatura  # noqa: E402
from warcio.archiveiterator import ArchiveIterator  # noqa: E402

import scrape  # noqa: E402

CPU_PER_PAGE = {}  # function name -> [ms of CPU per page, one per run]


def load_pages(repeat):
    pages = []
    with open(ROOT / "data" / "sample" / "pages.warc.gz", "rb") as f:
        for r in ArchiveIterator(f):
            if r.rec_type == "response":
                pages.append((r.http_headers.get_header("Content-Type"), r.content_stream().read()))
    return pages * repeat


def serve(pages, port_queue):
    """The web server, in its own process: pages[i] at /p/i.html, keep-alive, no robots.txt (404)."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            m = re.fullmatch(r"/p/(\d+)\.html", self.path)
            content_type, body = pages[int(m.group(1))] if m else ("text/plain", b"not found")
            if self.path == "/cpu":  # the server's own CPU time: it shares the cores with the scraper
                m, body = True, str(time.process_time()).encode()
            self.send_response(200 if m else 404)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


def plain_extract(html):
    return trafilatura.extract(html, favor_precision=True, include_comments=False)


def scrape_work(task):
    return scrape.extract_page(task, {"min_chars": 0, "test_hooks": False})


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pool_rate(fn, items, workers):
    """pages/s of fn over items in a plain Pool; also records its CPU seconds per page (the
    workers are reaped when the pool closes, so their CPU time shows up in RUSAGE_CHILDREN)."""
    cpu = children_cpu()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(fn, items[:workers])  # warm up: imports done, caches filled
        start = time.perf_counter()
        for _ in pool.imap_unordered(fn, items, chunksize=1):
            pass
        rate = len(items) / (time.perf_counter() - start)
        pool.terminate()
        pool.join()
    CPU_PER_PAGE.setdefault(fn.__name__, []).append((children_cpu() - cpu) / len(items) * 1000)
    return rate


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=1, help="times the ~380 sample pages are served")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    pages = load_pages(args.repeat)
    fetched_at = scrape.now_iso()
    htmls = [re.sub(r"^\s*<\?xml[^>]*\?>", "", scrape.decode_html(body, ct)) for ct, body in pages]
    tasks = [{"url": f"http://x/{i}", "body": body, "content_type": ct, "fetched_at": fetched_at}
             for i, (ct, body) in enumerate(pages)]
    print(f"{len(pages)} pages, {sum(len(b) for _, b in pages) / 1e6:.1f} MB of HTML, {args.workers} workers")

    port_queue = multiprocessing.get_context("fork").Queue()
    server = multiprocessing.get_context("fork").Process(target=serve, args=(pages, port_queue), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port_queue.get()}"
    flags = [f"--workers={args.workers}", "--min_chars=0", "--delay=0", "--connections=16",
             "--per_host=16", "--extract_timeout=60"]
    # This machine is shared and its load drifts by 2x within minutes. So each round measures in a
    # mirror order (A B C D B A: a drift that is steady cancels) and gives its own ratios; the
    # median round is reported.
    names = ["extract() alone", "own work alone", "--urls", "--warc"]
    rounds, main_cpu, server_ms = [], {}, []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "urls.txt").write_text("".join(f"{base}/p/{i}.html\n" for i in range(len(pages))))
            with open(f"{tmp}/pages.warc.gz", "wb") as f:  # gzip members concatenate
                f.write((ROOT / "data" / "sample" / "pages.warc.gz").read_bytes() * args.repeat)
            runs = {"extract() alone": lambda: pool_rate(plain_extract, htmls, args.workers),
                    "own work alone": lambda: pool_rate(scrape_work, tasks, args.workers),
                    "--urls": lambda: scrape.main([f"--urls={tmp}/urls.txt", f"--output={tmp}/urls"] + flags),
                    "--warc": lambda: scrape.main([f"--warc={tmp}/pages.warc.gz", f"--output={tmp}/warc"] + flags)}
            rates = {name: [] for name in names}
            for name in names + names[1::-1]:
                cpu, server_cpu = time.process_time(), float(urlopen(base + "/cpu").read())
                result = runs[name]()
                if isinstance(result, dict):  # a scrape.py report
                    main_cpu[name] = (time.process_time() - cpu) / result["totals"]["pages"] * 1000
                    if name == "--urls":
                        server_ms.append((float(urlopen(base + "/cpu").read()) - server_cpu) / len(pages) * 1000)
                    result = result["pages_per_second"]
                rates[name].append(result)
            rounds.append({name: sum(r) / len(r) for name, r in rates.items()})
    server.terminate()

    print(f"\npages/s ({len(pages)} pages, {args.workers} workers), by round:")
    for name in names:
        cpu = f"   (main process: {main_cpu[name]:.1f} ms CPU per page)" if name in main_cpu else ""
        print(f"  {name:>16}: " + "  ".join(f"{r[name]:6.1f}" for r in rounds) + cpu)
    print(f"  the local server used {statistics.median(server_ms):.1f} ms CPU per page, on the same cores")
    print("  CPU per page, which the load on this machine does not blur: extract() alone "
          f"{statistics.median(CPU_PER_PAGE['plain_extract']):.1f} ms, scrape.py's per-page work "
          f"{statistics.median(CPU_PER_PAGE['scrape_work']):.1f} ms, plus in scrape.py's main process "
          f"{main_cpu['--urls']:.1f} ms (--urls) or {main_cpu['--warc']:.1f} ms (--warc)")
    for name in ("--urls", "--warc"):
        vs_extract = statistics.median(r[name] / r["extract() alone"] for r in rounds)
        vs_work = statistics.median(r[name] / r["own work alone"] for r in rounds)
        print(f"  scrape.py {name}: {vs_extract:.0%} of extract() alone, {vs_work:.0%} of its own "
              f"per-page work alone (median round)")

if __name__ == "__main__":
    main()
