"""
How fast does scrape.py go, against the fastest its extractor could go, on a WARC of 20,000+ real
pages?

The ceiling is the extractor alone: extract.py's own extractor call (trafilatura_text or
resiliparse_text, what scrape.py's workers call: trafilatura.extract with FineWeb's settings, or
resiliparse as DCLM ran it) on the pages scrape.py extracts (HTTP 200, HTML, at most --max_bytes),
already decoded to text (charset.decode_html) and in memory, run by a plain multiprocessing.Pool of
--workers processes forked after the pages are loaded (so nothing is sent to them but an index),
timed from the first page handed out to the last result back, after a warm-up that imports the
extractor. scrape.py --warc must read and inflate the WARC, decode, find title and date, hand work
to its workers and back, make the JSON lines and their gzip, and write the shards, all inside its
own process's time from start to exit: that must cost under a tenth.

    python bench/scrape.py [--records=21000] [--extractors=trafilatura,resiliparse] [--url_pages=10000]
                           [--rounds=3] [--workers=2] [--cache=~/.cache/webgpt-bench]

The corpus: the Debian documentation packages (python3.11-doc, postgresql-doc-15, debian-handbook,
git-doc, debian-reference-en, developers-reference, maint-guide: ~5,250 HTML files), each page at
several URLs, copy k with every (k+1)-th paragraph, list item, table row or code block dropped, so
no two records are the same page; one gzip member per record and a request record before each
response, as in Common Crawl. Built once into --cache, never into the repository.

The runs alternate, alone / scrape.py / alone / scrape.py / ... / alone, so that each scrape.py run
has an extractor-alone run on either side and a load that drifts during the bench cancels; each
round's ratio is scrape.py's rate over the mean of its two neighbours', and the median of the rounds
is the figure. For each extractor it prints pages/s per core of both (and their ratio), CPU ms per
page (scrape.py's main process and its workers apart), the peak memory of scrape.py's processes
together in the first and second half of a run (flat: it does not grow with the pages), and
scrape.py's last progress line; scrape.py --urls against a local server (its own process, on the
same cores) on the corpus's first --url_pages pages (10,000: enough that start-up, ~0.4 s of CPU in
the main process and as much in the workers, is not a tenth of the bill), against the extractor
alone on those pages (run just before and after it: they are smaller than the corpus's average),
with the ratio counting the server's CPU and scrape.py's CPU per page (main process, where the
fetching is, and workers apart); then what each extractor keeps (characters, agreement between the two, documents and GPT-2 tokens clean.py's
FineWeb chain keeps), on the bench corpus and on the built-in sample.
"""
import argparse
import gzip
import importlib
import io
import json
import multiprocessing
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import extract  # noqa: E402  (the extractor calls scrape.py's workers make)
from charset import decode_html, looks_binary  # noqa: E402
from fetch import HTML_TYPES  # noqa: E402

MAX_BYTES = 2_000_000  # scrape.py's --max_bytes, passed to it explicitly
DOC = Path("/usr/share/doc")
PACKAGES = ["python3.11", "postgresql-doc-15", "debian-handbook", "git-doc", "debian-reference-en",
            "developers-reference", "maint-guide"]
BLOCK = re.compile(rb"<(p|li|tr|dd|pre)\b.*?</\1>", re.S | re.I)

# -----------------------------------------------------------------------------------------------
# the corpus


def variant(body, k):
    """Copy k of a page: every (k+1)-th block dropped (k = 0: the page itself)."""
    if k == 0:
        return body
    count = 0

    def drop(m):
        nonlocal count
        count += 1
        return b"" if count % (k + 1) == 0 else m.group(0)
    return BLOCK.sub(drop, body)


def build_corpus(path, records):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter
    files = sorted(p for pkg in PACKAGES if (DOC / pkg).is_dir() for p in (DOC / pkg).rglob("*.html") if p.is_file())
    if not files:
        sys.exit("the Debian documentation packages are not installed: apt-get install " + " ".join(
            ["python3.11-doc", "postgresql-doc-15", "debian-handbook", "git-doc", "debian-reference-en",
             "developers-reference", "maint-guide"]))
    print(f"building {path}: {records:,} pages from {len(files):,} files ...", flush=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        date = {"WARC-Date": "2026-11-01T00:00:00Z"}
        for i in range(records):
            source, k = files[i % len(files)], i // len(files)
            body = variant(source.read_bytes(), k)
            url = f"https://docs.example.org/v{k}/{source.relative_to(DOC)}"
            writer.write_record(writer.create_warc_record(url, "request", warc_headers_dict=date,
                                                          payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))],
                                       protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body),
                                                          http_headers=headers, warc_headers_dict=date))
    tmp.rename(path)


def read_pages(path):
    """(url, content type, body) of every response record."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    return [(r.headers.get("WARC-Target-URI"), r.http_headers.get("Content-Type"), r.reader.read())
            for r in ArchiveIterator(str(path), record_types=WarcRecordType.response, parse_http=True)]


def extracted_pages(pages):
    """The pages scrape.py hands its extractor, as it hands them: decoded, in the same order."""
    html = []
    for url, content_type, body in pages:
        mime = (content_type or "").split(";")[0].strip().lower()
        if mime in HTML_TYPES and len(body) <= MAX_BYTES and not looks_binary(body):
            html.append(decode_html(body, content_type, url))
    return html

# -----------------------------------------------------------------------------------------------
# the extractors alone


EXTRACTOR = "trafilatura"
HTML = []  # filled before the pool forks: the workers read the pages from memory


def alone(i):
    text, _ = extract.EXTRACTOR_TEXT[EXTRACTOR](HTML[i], False)
    return len(text or "")


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_alone(extractor, html, workers):
    """pages/s and CPU ms/page of the extractor alone on `html`, in a Pool of `workers` (chunks of
    16: no hand-off cost to speak of)."""
    global EXTRACTOR
    EXTRACTOR = extractor
    HTML[:] = html
    cpu = children_cpu()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(alone, range(workers))  # imports done
        start = time.perf_counter()
        for _ in pool.imap_unordered(alone, range(len(html)), chunksize=16):
            pass
        seconds = time.perf_counter() - start
        pool.close()
        pool.join()
    HTML.clear()
    return len(html) / seconds, (children_cpu() - cpu) / len(html) * 1000

# -----------------------------------------------------------------------------------------------
# scrape.py, a process of its own, watched


def tree_usage(pid):
    """(resident memory in MiB, {pid: CPU seconds}) of a process and all its descendants (the
    forkserver's workers are not its children, so they are found through their parents)."""
    parents, cpu = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
        cpu[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    family, rss = {pid}, 0
    for _ in range(4):
        family |= {p for p, parent in parents.items() if parent in family}
    for p in family:
        try:
            rss += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text()).group(1))
        except (OSError, AttributeError):
            continue
    return rss / 1024, {p: cpu[p] for p in family}


def run_scrape(flags):
    """Run scrape.py; returns wall seconds, CPU seconds of its main process and of the others (the
    forkserver and the workers), sampled every 0.5 s (the last moments are missed; each look costs
    a few ms of CPU, ~0.5% of a core), peak memory in the first and second half of the run, and
    its last progress line."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "scrape.py")] + flags, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    samples, errors, cpu = [], [], {}
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    reader.start()
    while process.poll() is None:
        rss, seen = tree_usage(process.pid)
        samples.append((time.perf_counter() - start, rss))
        cpu.update(seen)
        time.sleep(0.5)
    reader.join()
    seconds = time.perf_counter() - start
    if process.returncode:
        sys.exit(f"scrape.py failed: {errors[0][-2000:]}")
    first = max([m for t, m in samples if t < seconds / 2], default=0)
    second = max([m for t, m in samples if t >= seconds / 2], default=0)
    lines = [line.strip() for line in re.split(r"[\r\n]", errors[0]) if line.strip().startswith("scrape:") and "page" in line]
    main_cpu = cpu.pop(process.pid, 0)
    return seconds, (main_cpu, sum(cpu.values())), (first, second), lines[-1] if lines else ""


def serve(pages, port_queue):
    """The web server, in its own process: pages[i] at /p/i.html, keep-alive, no robots.txt (404)."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize, disable_nagle_algorithm = 1 << 16, True  # headers and body in one packet, sent at once

        def do_GET(self):
            m = re.fullmatch(r"/p/(\d+)\.html", self.path)
            content_type, body = pages[int(m.group(1))][1:] if m else ("text/plain", b"not found")
            if self.path == "/cpu":  # the server's own CPU time: it shares the cores with the scraper
                m, body = True, str(time.process_time()).encode()
            self.send_response(200 if m else 404)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        # a listen backlog like a real server's: with the default 5, the connections past the
        # fifth of --connections=16 opened at once wait a second for their SYN to be sent again
        request_queue_size, daemon_threads = 128, True

        def handle_error(self, request, client_address):
            pass  # a client hanging up on a keep-alive connection (scrape.py at exit) is no error

    httpd = Server(("127.0.0.1", 0), Handler)
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()

# -----------------------------------------------------------------------------------------------
# what each extractor keeps


def read_docs(folder):
    return {d["url"]: d["text"] for p in sorted(Path(folder).glob("*.jsonl.gz")) for d in map(json.loads, gzip.open(p, "rt"))}


def agreement(a, b):
    """How much text two extractions share: 2 |A & B| / (|A| + |B|) over their words, counted."""
    wa, wb = Counter(a.split()), Counter(b.split())
    return 2 * sum((wa & wb).values()) / max(sum(wa.values()) + sum(wb.values()), 1)


def kept_by_clean(folder, out):
    """Documents and GPT-2 tokens that clean.py's FineWeb chain keeps of a scrape.py output."""
    subprocess.run([sys.executable, str(ROOT / "clean.py"), f"--input={folder}", f"--output={out}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sys.path.insert(0, str(ROOT))
    from tokenizer import load_tokenizer  # GPT-2's, from the vocabulary the project ships
    texts = list(read_docs(out).values())
    return len(texts), sum(map(len, load_tokenizer("gpt2").encode_ordinary_batch(texts)))


def compare(outputs, tmp, label):
    """outputs: extractor -> scrape.py output folder of the same pages."""
    docs = {name: read_docs(folder) for name, folder in outputs.items()}
    names = list(docs)
    common = set(docs[names[0]]).intersection(*docs.values())
    agree = sum(agreement(docs[names[0]][u], docs[names[-1]][u]) for u in common) / max(len(common), 1)
    print(f"\nwhat each extractor keeps, {label} (text agreement between them: {agree:.3f} on {len(common):,} pages):")
    for name in names:
        kept, tokens = kept_by_clean(outputs[name], Path(tmp) / f"clean-{label}-{name}")
        print(f"  {name:>12}: {len(docs[name]):,} documents, {sum(map(len, docs[name].values())):,} characters; "
              f"clean.py keeps {kept:,} documents, {tokens:,} tokens")


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--records", type=int, default=21_000, help="pages in the bench WARC (>= 20,000)")
    p.add_argument("--extractors", default="trafilatura,resiliparse")
    p.add_argument("--url_pages", type=int, default=10_000, help="pages fetched in the --urls run (0: none)")
    p.add_argument("--rounds", type=int, default=3, help="scrape.py runs per extractor, each between two runs alone")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/webgpt-bench"))
    args = p.parse_args()
    extractors = args.extractors.split(",")
    warc = Path(args.cache) / f"debian-docs-{args.records}.warc.gz"
    warc.parent.mkdir(parents=True, exist_ok=True)
    if not warc.exists():
        build_corpus(warc, args.records)
    pages = read_pages(warc)
    html = extracted_pages(pages)
    print(f"{warc}: {len(pages):,} pages ({len(html):,} of them extracted: HTML, at most {MAX_BYTES:,} bytes), "
          f"{sum(len(b) for *_, b in pages) / 1e6:.0f} MB of HTML, {warc.stat().st_size / 1e6:.0f} MB gzipped; "
          f"{args.workers} workers; load {os.getloadavg()[0]:.1f}")

    port_queue = multiprocessing.get_context("fork").Queue()
    url_pages = pages[:args.url_pages]
    url_html = extracted_pages(url_pages)
    server = multiprocessing.get_context("fork").Process(target=serve, args=(url_pages, port_queue), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port_queue.get()}"
    (Path(tmp := tempfile.mkdtemp()) / "urls.txt").write_text("".join(f"{base}/p/{i}.html\n" for i in range(len(url_pages))))
    n, per_core, outputs = len(html), args.workers, {}
    try:
        for extractor in extractors:
            flags = [f"--workers={args.workers}", f"--extractor={extractor}", "--extract_timeout=60",
                     f"--max_bytes={MAX_BYTES}"]
            importlib.import_module(extract.PRELOAD[extractor])  # imported before the pool forks, as in scrape.py
            alone_runs, rounds = [run_alone(extractor, html, args.workers)], []
            print(f"\n{extractor}, {n:,} pages, {args.rounds} rounds (load {os.getloadavg()[0]:.1f}):")
            for r in range(args.rounds):
                out = f"{tmp}/{extractor}-{r}"
                seconds, cpu, memory, line = run_scrape([f"--warc={warc}", f"--output={out}"] + flags)
                url = None
                if args.url_pages:  # its own reference: the served pages are not the corpus's average
                    url_alone = [run_alone(extractor, url_html, args.workers)]
                    server_cpu = float(urlopen(base + "/cpu").read())
                    url_seconds, url_cpu, _, _ = run_scrape([f"--urls={tmp}/urls.txt", f"--output={tmp}/urls-{extractor}-{r}",
                                                       "--delay=0", "--connections=16", "--per_host=16"] + flags)
                    server_cpu = float(urlopen(base + "/cpu").read()) - server_cpu
                    share = server_cpu / (url_seconds * args.workers)  # of the cores, taken by the server
                    url_alone.append(run_alone(extractor, url_html, args.workers))
                    url = dict(rate=len(url_pages) / url_seconds, share=share, server_ms=server_cpu / len(url_pages) * 1000,
                               main_ms=url_cpu[0] / len(url_pages) * 1000, workers_ms=url_cpu[1] / len(url_pages) * 1000,
                               rate_a=(url_alone[0][0] + url_alone[1][0]) / 2, cpu_a=(url_alone[0][1] + url_alone[1][1]) / 2)
                    shutil.rmtree(f"{tmp}/urls-{extractor}-{r}")
                alone_runs.append(run_alone(extractor, html, args.workers))
                rate_a = (alone_runs[-2][0] + alone_runs[-1][0]) / 2
                if url:
                    url["ratio"] = url["rate"] / (url["rate_a"] * (1 - url["share"]))
                rounds.append(dict(ratio=n / seconds / rate_a, rate_a=rate_a, rate_s=n / seconds, cpu=cpu,
                                   cpu_a=(alone_runs[-2][1] + alone_runs[-1][1]) / 2, memory=memory, line=line, url=url))
                if r == 0:
                    outputs[extractor] = out
                else:
                    shutil.rmtree(out)
                report_round(r, rounds[-1], n, len(url_pages), per_core)
            median = statistics.median(x["ratio"] for x in rounds)
            cpu_median = statistics.median(x["cpu_a"] / (sum(x["cpu"]) / n * 1000) for x in rounds)
            print(f"  median of {len(rounds)} rounds: scrape.py --warc at {median:.2f}x the extractor alone "
                  f"(CPU per page: {cpu_median:.2f}x)"
                  + (f"; --urls at {statistics.median(x['url']['ratio'] for x in rounds):.2f}x counting the server"
                     if args.url_pages else ""))
        server.terminate()
        if len(outputs) > 1:
            compare(outputs, tmp, "bench corpus")
            sample = {}
            for extractor in extractors:
                subprocess.run([sys.executable, str(ROOT / "scrape.py"), f"--warc={ROOT}/data/sample/pages.warc.gz",
                                f"--output={tmp}/sample-{extractor}", f"--extractor={extractor}"],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                sample[extractor] = f"{tmp}/sample-{extractor}"
            compare(sample, tmp, "built-in sample")
    finally:
        server.terminate()
        shutil.rmtree(tmp)


def report_round(r, x, n, url_pages, per_core):
    main_cpu, workers_cpu = x["cpu"]
    print(f"  round {r + 1}: extractor alone {x['rate_a'] / per_core:6.1f} pages/s per core, {x['cpu_a']:.2f} ms CPU "
          f"per page; scrape.py --warc {x['rate_s'] / per_core:6.1f} pages/s per core, "
          f"{(main_cpu + workers_cpu) / n * 1000:.2f} ms CPU per page (main process {main_cpu / n * 1000:.2f}, "
          f"workers {workers_cpu / n * 1000:.2f}): {x['ratio']:.2f}x (CPU: {x['cpu_a'] / ((main_cpu + workers_cpu) / n * 1000):.2f}x)")
    print(f"           peak memory of scrape.py's processes: {x['memory'][0]:.0f} MiB in the first half, "
          f"{x['memory'][1]:.0f} MiB in the second; its last progress line: {x['line']}")
    if x["url"]:
        u = x["url"]
        print(f"           scrape.py --urls {u['rate'] / per_core:6.1f} pages/s per core on {url_pages:,} pages, the extractor "
              f"alone on them {u['rate_a'] / per_core:.1f}, {u['cpu_a']:.2f} ms CPU per page "
              f"({u['rate'] / u['rate_a']:.2f}x the extractor alone; the server took {u['share']:.0%} of the cores, "
              f"{u['server_ms']:.2f} ms per page: {u['ratio']:.2f}x counting it); CPU per page: main process "
              f"{u['main_ms']:.2f} ms (fetching, hand-offs, writing), workers {u['workers_ms']:.2f} ms")


if __name__ == "__main__":
    main()
