"""
How fast does scrape.py go, against the fastest its extractor could go, on a WARC of 20,000+ real
pages? The ceiling is the extractor alone: the same pages, already in memory, extracted by a plain
multiprocessing.Pool on the same cores (trafilatura.extract with FineWeb's settings, or resiliparse
as DCLM ran it). scrape.py must read and decompress the WARC, decode, find title and date, hand
pages to its workers and back, and write gzip shards; all of that must cost under a tenth.

    python bench/scrape.py [--records=21000] [--extractors=trafilatura,resiliparse] [--url_pages=2000]
                           [--workers=2] [--cache=~/.cache/webgpt-bench]

The corpus: the Debian documentation packages (python3.11-doc, postgresql-doc-15, debian-handbook,
git-doc, debian-reference-en, developers-reference, maint-guide: ~5,250 HTML files), each page at
several URLs, copy k with every (k+1)-th paragraph, list item, table row or code block dropped, so
no two records are the same page; one gzip member per record and a request record before each
response, as in Common Crawl. Built once into --cache, never into the repository.

For each extractor it prints pages/s per core of the extractor alone and of scrape.py --warc
(and their ratio), CPU ms per page, the peak memory of scrape.py's processes together in the
first and second half of the run (flat: it does not grow with the pages), and scrape.py's last
progress line; scrape.py --urls against a local server (its own process, on the same cores) on
--url_pages pages, with the ratio counting the server's CPU; then what each extractor keeps
(characters, agreement between the two, documents and GPT-2 tokens clean.py's FineWeb chain keeps),
on the bench corpus and on the built-in sample.
"""
import argparse
import gzip
import io
import json
import multiprocessing
import os
import re
import resource
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


def read_pages(path, limit=None):
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    pages = []
    for r in ArchiveIterator(str(path), record_types=WarcRecordType.response, parse_http=True):
        pages.append((r.headers.get("WARC-Target-URI"), r.http_headers.get("Content-Type"), r.reader.read()))
        if limit and len(pages) == limit:
            break
    return pages

# -----------------------------------------------------------------------------------------------
# the extractors alone


EXTRACTOR = "trafilatura"
BODIES = []  # filled before the pool forks: the workers read them from memory


def alone(i):
    if EXTRACTOR == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree
        return len(extract_plain_text(HTMLTree.parse_from_bytes(BODIES[i]), main_content=True, alt_texts=False))
    import trafilatura
    return len(trafilatura.extract(BODIES[i], favor_precision=True, include_comments=False) or "")


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_alone(extractor, bodies, workers):
    """pages/s and CPU ms/page of the extractor alone, in a Pool of `workers` (chunks of 16: no
    hand-off cost to speak of)."""
    global EXTRACTOR
    EXTRACTOR = extractor
    BODIES[:] = bodies
    cpu = children_cpu()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(alone, range(workers))  # imports done
        start = time.perf_counter()
        for _ in pool.imap_unordered(alone, range(len(bodies)), chunksize=16):
            pass
        seconds = time.perf_counter() - start
        pool.close()
        pool.join()
    BODIES.clear()
    return len(bodies) / seconds, (children_cpu() - cpu) / len(bodies) * 1000

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
    """Run scrape.py; returns wall seconds, CPU seconds of all its processes (sampled every 0.25 s:
    the last moments are missed), peak memory in the first and second half of the run, and its
    last progress line."""
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
        time.sleep(0.25)
    reader.join()
    seconds = time.perf_counter() - start
    if process.returncode:
        sys.exit(f"scrape.py failed: {errors[0][-2000:]}")
    first = max([m for t, m in samples if t < seconds / 2], default=0)
    second = max([m for t, m in samples if t >= seconds / 2], default=0)
    lines = [line.strip() for line in re.split(r"[\r\n]", errors[0]) if line.strip().startswith("scrape:") and "page" in line]
    return seconds, sum(cpu.values()), (first, second), lines[-1] if lines else ""


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

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=21_000, help="pages in the bench WARC (>= 20,000)")
    p.add_argument("--extractors", default="trafilatura,resiliparse")
    p.add_argument("--url_pages", type=int, default=2000, help="pages fetched in the --urls run (0: none)")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/webgpt-bench"))
    args = p.parse_args()
    extractors = args.extractors.split(",")
    warc = Path(args.cache) / f"debian-docs-{args.records}.warc.gz"
    warc.parent.mkdir(parents=True, exist_ok=True)
    if not warc.exists():
        build_corpus(warc, args.records)
    pages = read_pages(warc)
    print(f"{warc}: {len(pages):,} pages, {sum(len(b) for *_, b in pages) / 1e6:.0f} MB of HTML, "
          f"{warc.stat().st_size / 1e6:.0f} MB gzipped; {args.workers} workers; load {os.getloadavg()[0]:.1f}")

    port_queue = multiprocessing.get_context("fork").Queue()
    url_pages = pages[:args.url_pages]
    server = multiprocessing.get_context("fork").Process(target=serve, args=(url_pages, port_queue), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port_queue.get()}"
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for extractor in extractors:
            flags = [f"--workers={args.workers}", f"--extractor={extractor}", "--extract_timeout=60"]
            # mirror order (alone, scrape, scrape, alone): a steady drift in the machine's load cancels
            rate_a, cpu_a = run_alone(extractor, [b for *_, b in pages], args.workers)
            seconds, cpu, memory, line = run_scrape([f"--warc={warc}", f"--output={tmp}/{extractor}"] + flags)
            outputs[extractor] = f"{tmp}/{extractor}"
            rate_s = len(pages) / seconds
            rate_a2, cpu_a2 = run_alone(extractor, [b for *_, b in pages], args.workers)
            rate_a, cpu_a = (rate_a + rate_a2) / 2, (cpu_a + cpu_a2) / 2
            per_core = args.workers
            print(f"\n{extractor}, {len(pages):,} pages:")
            print(f"  extractor alone:   {rate_a / per_core:7.1f} pages/s per core, {cpu_a:.2f} ms CPU per page "
                  f"(runs: {rate_a / per_core:.1f} avg)")
            print(f"  scrape.py --warc:  {rate_s / per_core:7.1f} pages/s per core, {cpu / len(pages) * 1000:.2f} ms CPU "
                  f"per page (all its processes): {rate_s / rate_a:.2f}x the extractor alone")
            print(f"  peak memory of scrape.py's processes: {memory[0]:.0f} MiB in the first half, {memory[1]:.0f} MiB "
                  f"in the second half")
            print(f"  its last progress line: {line}")
            if args.url_pages:
                (Path(tmp) / "urls.txt").write_text("".join(f"{base}/p/{i}.html\n" for i in range(len(url_pages))))
                server_cpu = float(urlopen(base + "/cpu").read())
                url_flags = flags + ["--delay=0", "--connections=16", "--per_host=16"]
                seconds, cpu, _, _ = run_scrape([f"--urls={tmp}/urls.txt", f"--output={tmp}/urls-{extractor}"] + url_flags)
                server_cpu = float(urlopen(base + "/cpu").read()) - server_cpu
                rate_u = len(url_pages) / seconds
                share = server_cpu / (seconds * args.workers)  # of the cores, taken by the server
                print(f"  scrape.py --urls:  {rate_u / per_core:7.1f} pages/s per core on {len(url_pages):,} pages "
                      f"({rate_u / rate_a:.2f}x the extractor alone; the server took {share:.0%} of the cores, "
                      f"{server_cpu / len(url_pages) * 1000:.2f} ms per page: {rate_u / (rate_a * (1 - share)):.2f}x "
                      f"counting it)")
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


if __name__ == "__main__":
    main()
