"""
scrape.py against local web servers on 127.0.0.1 that serve real pages (read from the built-in
sample, data/sample/pages.warc.gz) and every kind of trouble a crawler meets: robots.txt (a huge one,
a trickling one), a slow server, a trickling one, slow headers, 500s, a 429 with Retry-After, a page
over the size cap, a binary file served as HTML, a redirect loop, legacy and lying charsets, and
pages that hang or crash the extractor; and WARC files cut short or damaged. Each must end as
expected, and no other page may be lost, with either extractor. The reference texts are
data/sample/docs.jsonl.gz (trafilatura, extracted from the same pages independently) and
resiliparse run directly on the correctly decoded page.
"""
import gzip
import io
import itertools
import json
import os
import queue
import re
import socket
import threading
import time
import unicodedata
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import htmldate
import pytest
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

import charset
import crashsafe
import extract
import fetch
import scrape
import warc

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
REAL = {  # served path -> the sample page it serves
    "/pages/abort.html": "https://www.postgresql.org/docs/15/sql-abort.html",
    "/pages/alterroutine.html": "https://www.postgresql.org/docs/15/sql-alterroutine.html",
    "/pages/gittutorial.html": "https://git-scm.com/docs/gittutorial-2",
    "/pages/zoneinfo.html": "https://docs.python.org/3.11/library/zoneinfo.html",
    "/target.html": "https://www.postgresql.org/docs/15/datatype.html",  # reached by a redirect
}
JAPANESE = "https://debian-handbook.info/browse/ja-JP/stable/sect.quotas.html"  # served as Shift_JIS
FLAGS = ["--workers=2", "--connections=8", "--per_host=8", "--delay=0", "--connect_timeout=1",
         "--read_timeout=1.5", "--fetch_timeout=3", "--retries=2", "--backoff=0.01",
         "--max_retry_wait=2", "--max_bytes=200000", "--extract_timeout=3", "--min_chars=100"]


def normalized(text):
    return unicodedata.normalize("NFC", text).strip()


@pytest.fixture(scope="module")
def sample():
    pages = {}
    with open(SAMPLE / "pages.warc.gz", "rb") as f:
        for r in ArchiveIterator(f):
            if r.rec_type == "response":
                pages[r.rec_headers.get_header("WARC-Target-URI")] = (
                    r.http_headers.get_header("Content-Type"), r.content_stream().read())
    with gzip.open(SAMPLE / "docs.jsonl.gz", "rt") as f:
        texts = {d["url"]: normalized(d["text"]) for d in map(json.loads, f)}
    return pages, texts


def paragraphs_page(text, links=()):
    """A synthetic page: real text from the sample, links chosen by the test."""
    body = "".join(f"<p>{p}</p>" for p in text.split("\n") if p.strip())
    anchors = "".join(f'<a href="{href}">link</a> ' for href in links)
    return f"<html><head><title>t</title></head><body><nav>{anchors}</nav><article>{body}</article></body></html>".encode()


@pytest.fixture(scope="module")
def server(sample):
    """A threaded HTTP server. routes: path -> (status, headers, body) or a function(handler, n)
    where n counts earlier requests to that path. Every request is logged with its time."""
    pages, texts = sample
    routes, log = {}, []
    for path, url in REAL.items():
        routes[path] = (200, {"Content-Type": pages[url][0]}, pages[url][1])
    sjis = re.sub(r"(?i)charset=utf-8", "charset=Shift_JIS", pages[JAPANESE][1].decode("utf-8"))
    sjis = re.sub(r'encoding="UTF-8"', 'encoding="Shift_JIS"', sjis)
    routes["/sjis.html"] = (200, {"Content-Type": "text/html"}, sjis.encode("shift_jis", "xmlcharrefreplace"))
    page = pages[REAL["/pages/abort.html"]][1]
    html = {"Content-Type": "text/html; charset=utf-8"}
    routes["/robots.txt"] = (200, {"Content-Type": "text/plain"}, b"User-agent: *\nDisallow: /private/\n")
    routes["/private/secret.html"] = (200, html, page)
    routes["/missing.html"] = (404, html, b"not here")
    routes["/doc.pdf"] = (200, {"Content-Type": "application/pdf"}, b"%PDF-1.4 ...")
    routes["/image.html"] = (200, html, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 20)
    routes["/short.html"] = (200, html, b"<html><body><p>Too short to be worth training on.</p></body></html>")
    routes["/hang.html"] = (200, html, page.replace(b"<body", b"<!-- scrape-test: hang --><body", 1))
    routes["/crash.html"] = (200, html, page.replace(b"<body", b"<!-- scrape-test: crash --><body", 1))
    routes["/loop-a"] = (302, {"Location": "/loop-b"}, b"")
    routes["/loop-b"] = (302, {"Location": "/loop-a"}, b"")
    routes["/moved"] = (301, {"Location": "/target.html"}, b"")
    routes["/flaky.html"] = lambda h, n: (500, html, b"oops") if n < 2 else (200, html, page)
    routes["/busy.html"] = lambda h, n: (429, {"Retry-After": "1"}, b"") if n < 1 else (200, html, page)

    def slow(handler, n):
        time.sleep(3)  # longer than --read_timeout: the scraper must not wait for it
        return 200, html, page

    def trickle(handler, n):  # a byte every 0.2 s: no read timeout fires, only --fetch_timeout
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.end_headers()
        for _ in range(50):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.2)

    def big(handler, n):  # no Content-Length: the cap must stop the stream itself
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.end_headers()
        for _ in range(100):
            handler.wfile.write(b"<p>" + b"x" * 9996 + b"</p>")

    routes.update({"/slow.html": slow, "/trickle.html": trickle, "/big.html": big})

    base, stop = serve(routes, log)
    yield base, routes, log, texts
    stop()


def serve(routes, log):
    """Serve routes on 127.0.0.1 (a port of its own: a host of its own, for robots.txt)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?")[0]
            n = sum(p == path for p, _ in log)
            log.append((path, time.monotonic()))
            route = routes.get(path, (404, {}, b"not found"))
            reply = route(self, n) if callable(route) else route
            if reply is None:
                return
            status, headers, body = reply
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        # a listen backlog like a real server's (nginx: 511): with Python's 5, past the 6th of a
        # burst of --per_host=8 connections a connect waits until the accept thread gets a core,
        # on a loaded machine past --connect_timeout=1: a 'connection' failure took one of
        # /flaky.html's retries in CI
        request_queue_size, daemon_threads = 128, True

    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.handle_error = lambda request, address: None  # the scraper hangs up on slow pages
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd.shutdown


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_shards(folder):
    return [d for p in sorted(Path(folder).glob("*.jsonl.gz")) for d in map(json.loads, gzip.open(p, "rt"))]


def read_errors(folder):
    return [e for p in sorted(Path(folder).glob("errors/*.jsonl.gz")) for e in map(json.loads, gzip.open(p, "rt"))]


EXPECTED_ERRORS = {
    "/private/secret.html": "robots", "/missing.html": "status", "/doc.pdf": "not_html",
    "/image.html": "binary", "/short.html": "too_short", "/hang.html": "extraction_timeout",
    "/crash.html": "extraction_crash", "/loop-a": "redirects", "/slow.html": "timeout",
    "/trickle.html": "timeout", "/big.html": "too_large",
}
EXPECTED_DOCS = ["/pages/abort.html", "/pages/alterroutine.html", "/pages/gittutorial.html",
                 "/pages/zoneinfo.html", "/sjis.html", "/flaky.html", "/busy.html", "/moved"]


def resiliparse_reference(html):
    """DCLM's extraction, run directly on a page decoded with its true charset."""
    return extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False).strip()


def expected_text(sample, extractor, url):
    pages, texts = sample
    if extractor == "trafilatura":
        return texts[url]
    content_type, body = pages[url]
    return resiliparse_reference(body.decode(re.search(r"charset=([\w-]+)", content_type).group(1)))


@pytest.fixture(scope="module", params=extract.EXTRACTORS)
def url_run(request, server, tmp_path_factory):
    """One --urls run over every case, per extractor, shared by the tests that check its outcome."""
    base, routes, log, texts = server
    out = tmp_path_factory.mktemp("urls")
    refused = f"http://127.0.0.1:{closed_port()}/nothing.html"
    urls = [base + p for p in EXPECTED_DOCS + list(EXPECTED_ERRORS)] + [refused, "ftp://example.org/file"]
    (out / "urls.txt").write_text("# test URLs\n" + "\n".join(urls) + "\n\n")
    log.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRAPE_TEST_HOOKS", "1")
        report = scrape.main([f"--urls={out / 'urls.txt'}", f"--output={out / 'raw'}", f"--extractor={request.param}"] + FLAGS)
    return out, urls, refused, report, list(log), request.param


def test_every_url_ends_as_expected(server, url_run, sample):
    base, routes, _, texts = server
    out, urls, refused, report, log, extractor = url_run
    docs, errors = read_shards(out / "raw"), read_errors(out / "raw")
    # nothing lost, nothing twice: every URL is a document or an error, once
    asked = [d.get("redirected_from", d["url"]) for d in docs] + [e["url"] for e in errors]
    assert sorted(asked) == sorted(urls)
    reasons = {e["url"]: e["reason"] for e in errors}
    assert reasons == {**{base + p: r for p, r in EXPECTED_ERRORS.items()},
                       refused: "connection", "ftp://example.org/file": "bad_url"}
    by_url = {d["url"]: d for d in docs}
    for path, url in REAL.items():  # the same text as the extractor run independently
        assert by_url[base + path]["text"] == expected_text(sample, extractor, url), path
    assert by_url[base + "/sjis.html"]["text"] == expected_text(sample, extractor, JAPANESE)  # charset from <meta>
    assert by_url[base + "/target.html"]["redirected_from"] == base + "/moved"
    for doc in docs:
        assert doc["id"] == scrape.doc_id(doc["url"]) and doc["source"] == "urls"
        assert doc["fetched_at"] and doc["title"] is not None
    assert report["totals"]["pages"] == len(urls) and report["totals"]["docs"] == len(EXPECTED_DOCS)
    written = json.loads((out / "raw" / "report.json").read_text())
    assert written["totals"] == report["totals"]
    # the next stage can tell this folder is whole: the report says complete and lists every part
    assert written["complete"] is True
    assert sorted(s["name"] for s in written["shards"]) == sorted(p.name for p in (out / "raw").glob("*.jsonl.gz"))
    assert crashsafe.check_input(out / "raw", sorted((out / "raw").glob("*.jsonl.gz")))["input_complete"] is True


def test_politeness_and_retries(url_run):
    _, _, _, _, log, _ = url_run
    requested = Counter(path for path, _ in log)
    assert requested["/robots.txt"] == 1  # once per host
    assert "/private/secret.html" not in requested  # robots.txt obeyed
    assert requested["/flaky.html"] == 3  # 500, 500, then OK
    assert requested["/missing.html"] == 1 and requested["/doc.pdf"] == 1  # no retry on 4xx
    times = [t for path, t in log if path == "/busy.html"]
    assert len(times) == 2 and times[1] - times[0] >= 0.95  # Retry-After: 1 honoured


def test_rerun_fetches_only_transient_failures(server, url_run):
    base, _, log, _ = server
    out, urls, _, _, _, extractor = url_run
    before = sorted(d["id"] for d in read_shards(out / "raw"))
    log.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRAPE_TEST_HOOKS", "1")
        scrape.main([f"--urls={out / 'urls.txt'}", f"--output={out / 'raw'}", f"--extractor={extractor}"] + FLAGS)
    assert {path for path, _ in log} == {"/robots.txt", "/slow.html", "/trickle.html"}
    assert sorted(d["id"] for d in read_shards(out / "raw")) == before  # no duplicates


def test_url_list_with_a_byte_order_mark_and_crlf(tmp_path):
    """A list saved by a Windows editor (a byte-order mark, CRLF): every URL is read as written."""
    (tmp_path / "urls.txt").write_bytes(b"\xef\xbb\xbfhttp://a.org/1\r\n# a comment\r\nhttp://b.org/2\r\n")
    args = scrape.parse_args([f"--urls={tmp_path / 'urls.txt'}"])
    assert sorted(scrape.url_list(args)) == [("http://a.org/1", 0), ("http://b.org/2", 0)]


def test_a_gzipped_url_list(tmp_path, capsys):
    """urls.txt.gz is read as its lines (it was lines of gzip noise, each a 'bad_url'); one cut
    short stops with a message that names it."""
    (tmp_path / "urls.txt.gz").write_bytes(gzip.compress(b"http://a.org/1\nhttp://b.org/2\n"))
    args = scrape.parse_args([f"--urls={tmp_path / 'urls.txt.gz'}"])
    assert sorted(scrape.url_list(args)) == [("http://a.org/1", 0), ("http://b.org/2", 0)]
    (tmp_path / "cut.txt.gz").write_bytes((tmp_path / "urls.txt.gz").read_bytes()[:20])
    with pytest.raises(SystemExit):
        scrape.url_list(scrape.parse_args([f"--urls={tmp_path / 'cut.txt.gz'}"]))
    assert "cut.txt.gz" in capsys.readouterr().err


def test_a_malformed_url_in_the_list_is_one_bad_url(tmp_path):
    """One line that does not parse as a URL must not stop the run before its first fetch."""
    (tmp_path / "urls.txt").write_text("http://a.org/1\nhttp://[oops/\n")
    both = [url for shard in ("0", "1") for url in scrape.url_list(scrape.parse_args(
        [f"--urls={tmp_path / 'urls.txt'}", "--num_shards=2", f"--shard={shard}"]))]
    assert sorted(both) == [("http://[oops/", 0), ("http://a.org/1", 0)]
    with pytest.raises(fetch.Failure, match="bad_url"):  # what the fetcher then makes of it
        fetch.Fetcher(scrape.parse_args(["--urls=x"])).fetch_page("http://[oops/")


@pytest.mark.parametrize("flag", ["--workers=0", "--connections=0", "--per_host=0", "--retries=-1",
                                  "--extract_timeout=0", "--max_redirects=-1", "--cc_files=0"])
def test_flags_that_would_hang_or_crash_are_refused(flag, capsys):
    """0 workers, connections or fetches per host wait forever; retries=-1 never tried a WARC;
    extract_timeout=0 (not "no limit") killed the extraction of most pages; max_redirects=-1
    followed a redirect loop forever; cc_files=0 said 'no WARC files found'."""
    with pytest.raises(SystemExit):
        scrape.parse_args(["--warc=x.warc.gz", flag])
    assert flag.split("=")[0] in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["example.org", "http://[oops/"])
def test_a_crawl_seed_that_is_not_a_url_is_refused(seed, tmp_path, capsys):
    """A seed without its scheme gave one 'bad_url' line and nothing else; one that does not
    parse, a traceback."""
    with pytest.raises(SystemExit):
        scrape.main([f"--crawl={seed}", "--workers=1", f"--output={tmp_path}"])
    assert f"--crawl={seed}: the seed must be an http(s) URL" in capsys.readouterr().err


@pytest.mark.parametrize("extractor", extract.EXTRACTORS)
def test_a_malformed_link_costs_only_itself(extractor):
    """Crawling, a page with one href that does not parse (an unclosed IPv6 bracket), in <a> or
    <base>, keeps its text and its other links."""
    html = ("<html><head><base href='http://[bad/'></head><body><article><p>"
            + "Enough text for the page to be kept. " * 20 + "</p><a href='http://[oops/'>x</a>"
            "<a href='/next.html#top'>next</a></article></body></html>").encode()
    task = {"url": "http://e.org/a/", "body": html, "want_links": True,
            "fetched_at": "2026-11-01T00:00:00Z"}
    result = extract.extract_page(task, {"extractor": extractor, "min_chars": 100})
    assert "Enough text" in result["text"] and result["links"] == ["http://e.org/next.html"]


def test_a_page_whose_record_cannot_be_made_is_one_error_line():
    """An exception while a worker writes a chunk's records (here: a task without its source)
    would kill the worker, and the chunk sent again would kill the next one, for ever."""
    html = ("<html><body><article><p>" + "Enough text for the page to be kept. " * 20
            + "</p></article></body></html>").encode()
    good = {"url": "http://e.org/a", "body": html, "fetched_at": "2026-11-01T00:00:00Z", "source": "warc"}
    bad = {k: v for k, v in {**good, "url": "http://e.org/b"}.items() if k != "source"}
    docs, errors, stats = extract.run_batch([good, bad], {"extractor": "resiliparse", "min_chars": 100},
                                            [0.0, 0.0], 0, serialize=True)
    assert [json.loads(line)["url"] for line in gzip.decompress(docs).splitlines()] == ["http://e.org/a"]
    error = json.loads(gzip.decompress(errors))
    assert error["url"] == "http://e.org/b" and error["reason"] == "record_error"
    assert stats["docs"] == 1 and stats["record_error"] == 1


def crawl_site(routes, texts):
    """index -> a, b, a private page, another site, an image; a -> c, index; b -> c, d; c -> e."""
    text = texts[REAL["/pages/alterroutine.html"]]
    graph = {"index": ["a.html", "b.html", "/private/x.html", "http://elsewhere.invalid/", "pic.png"],
             "a": ["c.html", "index.html#top"], "b": ["c.html", "/site/d.html"], "c": ["e.html"], "d": [], "e": []}
    for name, links in graph.items():
        routes[f"/site/{name}.html"] = (200, {"Content-Type": "text/html"}, paragraphs_page(f"{name}\n{text}", links))


def test_crawl_breadth_first_same_site_polite(server, tmp_path):
    base, routes, log, texts = server
    crawl_site(routes, texts)
    log.clear()
    flags = [f for f in FLAGS if not f.startswith(("--delay", "--per_host"))] + ["--delay=0.2", "--per_host=2"]
    report = scrape.main([f"--crawl={base}/site/index.html", "--max_depth=2", f"--output={tmp_path}"] + flags)
    docs = {d["url"][len(base):] for d in read_shards(tmp_path)}
    assert docs == {"/site/index.html", "/site/a.html", "/site/b.html", "/site/c.html", "/site/d.html"}
    assert {e["url"][len(base):]: e["reason"] for e in read_errors(tmp_path)} == {"/private/x.html": "robots"}
    assert not any(p.endswith((".png", "e.html")) for p, _ in log)  # skipped type, and beyond max_depth
    assert all(d["source"] == "crawl" for d in read_shards(tmp_path))
    starts = sorted(t for _, t in log)  # as the server saw them: network jitter blurs the 0.2 s
    gaps = [round(b - a, 3) for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.1 and sum(gaps) / len(gaps) >= 0.18, gaps  # --delay between requests
    assert report["totals"]["pages"] == 6


def test_crawl_max_pages_and_resume(server, tmp_path):
    base, routes, log, texts = server
    crawl_site(routes, texts)
    routes["/go"] = (302, {"Location": f"{base}/site/index.html"}, b"")
    seed = base.replace("127.0.0.1", "localhost") + "/go"  # the seed redirects to another host name
    log.clear()
    scrape.main([f"--crawl={seed}", "--max_pages=3", f"--output={tmp_path}"] + FLAGS)
    assert len(read_shards(tmp_path)) + len(read_errors(tmp_path)) == 3
    # the seed spelled another way is the same crawl (it found no frontier, its seed done: no page)
    seed = seed.replace("http://localhost", "HTTP://LocalHost")
    scrape.main([f"--crawl={seed}", "--max_pages=100", f"--output={tmp_path}"] + FLAGS)
    docs = [d["url"][len(base):] for d in read_shards(tmp_path)]
    assert sorted(docs) == [f"/site/{n}.html" for n in "abcde"] + ["/site/index.html"]
    pages = Counter(p for p, _ in log if p != "/robots.txt")
    assert max(pages.values()) == 1  # the second run went on from the frontier: nothing fetched twice


def test_two_spellings_of_one_url_are_one_page(tmp_path):
    """/café.html and /caf%C3%A9.html are one page, as browsers and Common Crawl see it (so are
    HTTP://Host, a default port and a #fragment): a URL list holding both scraped it twice, and
    a rerun fetched it again. The first spelling is the one kept. faß.de is xn--fa-hia.de, as
    browsers send it (Python's IDNA 2003 sent it to fass.de); a space is sent as %20."""
    lines = ["http://h.org/café.html", "http://h.org/caf%C3%A9.html", "HTTP://H.org:80/x#top",
             "http://h.org/x", "http://faß.de/", "http://xn--fa-hia.de/", "http://[oops/"]
    (tmp_path / "urls.txt").write_text("\n".join(lines))
    both = [url for shard in ("0", "1") for url, _ in scrape.url_list(scrape.parse_args(
        [f"--urls={tmp_path / 'urls.txt'}", "--num_shards=2", f"--shard={shard}"]))]
    assert sorted(both) == sorted(lines[0:1] + lines[2:3] + lines[4:5] + lines[6:])
    assert fetch.wire_url("http://faß.de/a b?q=x y") == "http://xn--fa-hia.de/a%20b?q=x%20y"
    assert fetch.url_key("https://Bücher.DE:443") == "https://xn--bcher-kva.de/"
    with scrape.jsonl_members_writer(tmp_path / "out" / "urls-00000-00000.jsonl.gz") as write:
        write({"id": "1", "url": "http://h.org/caf%C3%A9.html", "text": "t"})
    assert fetch.url_key("http://h.org/café.html") in scrape.finished_urls(tmp_path / "out")


def test_url_keys_shortcut_agrees_with_the_full_rule(monkeypatch):
    """url_key returns most URLs as they are (a crawl asks for each link, 10 us each otherwise):
    on every combination of the parts where the two could differ, the shortcut gives the same."""
    parts = [["http://", "https://", "HTTP://"], ["a.org", "A.org", "b-c.d.", "[::1]", "é.de", ""],
             ["", ":80", ":443", ":8080", ":08", ":99999"],
             ["", "/", "//y", "/a b", "/é", "/%41", "/x?", "/x?q", "/?", "/x#f", "/<", "/;p"]]
    urls = ["".join(combo) for combo in itertools.product(*parts)]
    fast = [fetch.url_key(u) for u in urls]
    monkeypatch.setattr(fetch, "PLAIN_URL", re.compile(r"(?!)"))  # matches nothing
    assert fast == [fetch.url_key(u) for u in urls]


def test_a_url_list_with_no_urls_is_refused(tmp_path, capsys):
    """An empty list (or only comments) ran, said complete and wrote nothing: the wrong file?"""
    (tmp_path / "urls.txt").write_text("# to do\n\n")
    with pytest.raises(SystemExit):
        scrape.url_list(scrape.parse_args([f"--urls={tmp_path / 'urls.txt'}"]))
    assert "urls.txt holds no URLs" in capsys.readouterr().err


def test_a_url_list_line_with_a_tab_or_space_inside_is_refused_naming_the_line(tmp_path, capsys):
    """'URL<TAB>label' (a TSV) was fetched as one URL with the tab dropped (as a browser drops one
    from a link): a list of them fetched wrong URLs instead of saying the file is not a URL list."""
    (tmp_path / "urls.txt").write_text("# pages\nhttp://a.example/x.html\nhttp://a.example/y.html\tlabel\n")
    with pytest.raises(SystemExit):
        scrape.url_list(scrape.parse_args([f"--urls={tmp_path / 'urls.txt'}"]))
    assert "urls.txt:3: 'http://a.example/y.html\\tlabel' holds a space or tab" in capsys.readouterr().err


def test_a_crawl_fetches_a_page_linked_two_ways_once(server, tmp_path):
    base, routes, log, texts = server
    text = texts[REAL["/pages/alterroutine.html"]]
    links = ["café.html", "caf%C3%A9.html", "a b.html", "/two/a%20b.html#x"]
    routes["/two/index.html"] = (200, {"Content-Type": "text/html"}, paragraphs_page(text, links))
    for path in ("/two/caf%C3%A9.html", "/two/a%20b.html"):
        routes[path] = (200, {"Content-Type": "text/html"}, paragraphs_page(path + "\n" + text))
    log.clear()
    scrape.main([f"--crawl={base}/two/index.html", f"--output={tmp_path}", "--workers=1",
                 "--extractor=resiliparse"] + FLAGS[1:])
    assert Counter(p for p, _ in log) == {"/robots.txt": 1, "/two/index.html": 1,
                                          "/two/caf%C3%A9.html": 1, "/two/a%20b.html": 1}
    docs = sorted(d["url"][len(base):] for d in read_shards(tmp_path))
    assert docs == ["/two/a b.html", "/two/café.html", "/two/index.html"]
    assert not read_errors(tmp_path)


class Killed(BaseException):
    pass


@pytest.mark.parametrize("mode,kill_at,nth", [
    ("urls", r"\.stats/urls-00000-00000", 1),  # the part's errors are in place, not its documents
    ("urls", r"urls-00000-00000", 1),  # errors and stats in place, not documents
    ("urls", r"report\.json", 2),  # the part whole, its report not written
    ("crawl", r"frontier-", 1),  # a part's frontier saved, not the part
    ("crawl", r"crawl-00000-00001", 1)])  # a second part's errors and stats, not its documents
def test_a_run_killed_between_renames_loses_and_repeats_nothing(server, tmp_path, monkeypatch, mode,
                                                                 kill_at, nth):
    """A part's files are renamed into place one by one. Killed after its errors (old order:
    errors, documents, stats), a rerun wrote its own part of that number over them: those error
    lines were lost. Killed before its stats, the part was in no report for ever. Killed before the
    crawl's frontier was saved, the rerun had the seed done and nothing to crawl. Each kill here
    is the rename it happens at raising; the rerun must end with every page once, a true report."""
    base, routes, log, texts = server
    out, renames, todos = tmp_path / "out", Counter(), []
    real_replace, real_run = os.replace, fetch.Fetcher.run

    def replace(src, dst):
        name = str(Path(dst).relative_to(out)) if Path(dst).is_relative_to(out) else ""
        if re.match(kill_at, name):
            renames[kill_at] += 1
            if renames[kill_at] == nth:
                raise Killed(name)
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(fetch.Fetcher, "run",
                        lambda self, todo, *a: (todos.append(todo), real_run(self, todo, *a))[1])
    flags = [f"--output={out}", "--workers=1", "--extractor=resiliparse"] + FLAGS[1:]
    if mode == "urls":
        paths = ("/pages/abort.html", "/pages/zoneinfo.html", "/missing.html", "/doc.pdf")
        urls = [base + p for p in paths]
        (tmp_path / "urls.txt").write_text("\n".join(urls))
        flags.append(f"--urls={tmp_path / 'urls.txt'}")
    else:
        crawl_site(routes, texts)
        urls = [base + f"/site/{n}.html" for n in ("index", "a", "b", "c", "d")]
        urls.append(base + "/private/x.html")
        flags += [f"--crawl={base}/site/index.html", "--max_depth=2", "--part_docs=2"]
    with pytest.raises(Killed):
        scrape.main(flags)
    for todo in todos:  # the killed run's fetch thread
        todo.put(None)
    assert renames[kill_at] == nth
    report = scrape.main(flags)
    asked = [d["url"] for d in read_shards(out)] + [e["url"] for e in read_errors(out)]
    assert sorted(asked) == sorted(urls)
    assert report["totals"]["pages"] == len(urls) and report["complete"] is True
    assert crashsafe.check_input(out, sorted(out.glob("*.jsonl.gz")))["input_complete"] is True


def write_warc(path, records, gzipped=True):
    """records: (url, content type, body) responses; a WET text when content type is 'wet'."""
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=gzipped)
        for url, content_type, body in records:
            date = {"WARC-Date": "2026-11-01T00:00:00Z"}  # fixed: two files of the same pages, the same documents
            if content_type == "wet":
                rec = writer.create_warc_record(url, "conversion", payload=io.BytesIO(body),
                                                warc_headers_dict={"Content-Type": "text/plain", **date})
            else:
                status = "404 Not Found" if body is None else "200 OK"
                headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
                rec = writer.create_warc_record(url, "response", payload=io.BytesIO(body or b""),
                                                http_headers=headers, warc_headers_dict=date)
            writer.write_record(rec)


def test_warc_gives_the_same_texts_as_fetching(server, url_run, tmp_path):
    base, routes, _, _ = server
    out, _, _, _, _, extractor = url_run
    flags = FLAGS + [f"--extractor={extractor}"]
    fetched = {d["url"]: d for d in read_shards(out / "raw")}
    served = [p for p in REAL if p != "/target.html"] + ["/sjis.html", "/target.html"]
    records = [(base + p, routes[p][1]["Content-Type"], routes[p][2]) for p in served]
    wet_text = "A page of text that Common Crawl already extracted. " * 5
    extra = [(base + "/doc.pdf", "application/pdf", b"%PDF-1.4"), (base + "/gone.html", "text/html", None),
             ("http://example.org/wet", "wet", wet_text.encode())]
    write_warc(tmp_path / "one.warc.gz", records[:3] + extra)
    write_warc(tmp_path / "two.warc", records[3:], gzipped=False)
    scrape.main([f"--warc={tmp_path}/*.warc*", f"--output={tmp_path / 'raw'}"] + flags)
    docs = {d["url"]: d for d in read_shards(tmp_path / "raw")}
    assert sorted(p.name for p in (tmp_path / "raw").glob("*.jsonl.gz")) == ["one.jsonl.gz", "two.jsonl.gz"]
    for url, *_ in records:
        assert docs[url]["text"] == fetched[url]["text"] and docs[url]["title"] == fetched[url]["title"]
        assert docs[url]["source"] == "warc" and docs[url]["id"] == fetched[url]["id"]
    assert docs["http://example.org/wet"]["text"] == wet_text.strip()
    assert {e["url"]: e["reason"] for e in read_errors(tmp_path / "raw")} == {
        base + "/doc.pdf": "not_html", base + "/gone.html": "status"}

    # over HTTP, streamed, gives the same; a local file corrupted midway keeps the records before
    routes["/files/one.warc.gz"] = (200, {"Content-Type": "application/warc"}, (tmp_path / "one.warc.gz").read_bytes())
    scrape.main([f"--warc={base}/files/one.warc.gz", f"--output={tmp_path / 'http'}"] + flags)
    assert read_shards(tmp_path / "http") == read_shards(tmp_path / "raw")[:len(read_shards(tmp_path / "http"))]
    assert len(read_shards(tmp_path / "http")) == 4
    routes["/files/moved.warc.gz"] = (302, {"Location": "/files/one.warc.gz"}, b"")  # a mirror's redirect, followed
    scrape.main([f"--warc={base}/files/moved.warc.gz", f"--output={tmp_path / 'moved'}"] + flags)
    assert read_shards(tmp_path / "moved") == read_shards(tmp_path / "http")
    routes["/files/caf%C3%A9.warc.gz"] = routes["/files/one.warc.gz"]  # a URL not all ASCII
    scrape.main([f"--warc={base}/files/café.warc.gz", f"--output={tmp_path / 'café'}"] + flags)
    assert read_shards(tmp_path / "café") == read_shards(tmp_path / "http")
    whole = (tmp_path / "one.warc.gz").read_bytes()

    def cut_once(handler, n):  # the first download breaks off halfway: retried, from the start
        if n > 0:
            return 200, {}, whole
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(whole)))
        handler.end_headers()
        handler.wfile.write(whole[:len(whole) // 2])
    routes["/files/cut.warc.gz"] = cut_once
    scrape.main([f"--warc={base}/files/cut.warc.gz", f"--output={tmp_path / 'cut'}"] + flags)
    assert read_shards(tmp_path / "cut") == read_shards(tmp_path / "http")


@pytest.mark.parametrize("extractor", extract.EXTRACTORS)
def test_sample_pages_match_the_reference(tmp_path, sample, extractor):
    """Sample records copied byte for byte (the legacy-charset ones, other languages, a few more):
    scrape.py --warc must give the reference documents exactly: id, text and title, with either
    extractor (the same title from both)."""
    planted = json.loads((SAMPLE / "planted.json").read_text())
    wanted = {p["url"] for p in planted["legacy_charset"]} | set(planted["non_english"][::10])
    data, kept = (SAMPLE / "pages.warc.gz").read_bytes(), []
    with open(SAMPLE / "pages.warc.gz", "rb") as f:
        records = ArchiveIterator(f)
        for i, r in enumerate(records):
            url = r.rec_headers.get_header("WARC-Target-URI")
            r.content_stream().read()
            if url in wanted or i % 40 == 1:
                wanted.add(url)
                kept.append(data[records.get_record_offset():][:records.get_record_length()])
    (tmp_path / "subset.warc.gz").write_bytes(b"".join(kept))  # gzip members: each record stands alone
    scrape.main([f"--warc={tmp_path / 'subset.warc.gz'}", f"--output={tmp_path / 'raw'}", "--min_chars=0",
                 f"--extractor={extractor}"] + FLAGS[:1])
    with gzip.open(SAMPLE / "docs.jsonl.gz", "rt") as f:
        reference = {d["url"]: d for d in map(json.loads, f) if d["url"] in wanted}
    docs = {d["url"]: d for d in read_shards(tmp_path / "raw")}
    assert len(reference) >= 14 and docs.keys() == reference.keys()
    for url, ref in reference.items():
        assert docs[url]["text"] == expected_text(sample, extractor, url), url
        assert [docs[url][k] for k in ("id", "title")] == [ref[k] for k in ("id", "title")]


def test_common_crawl_mode_on_a_local_mirror(server, tmp_path):
    base, routes, log, texts = server
    url = REAL["/pages/abort.html"]
    for name in ("a", "b"):
        write_warc(tmp_path / f"{name}.warc.gz", [(f"https://example.org/{name}", "text/html", routes["/pages/abort.html"][2])])
        routes[f"/cc/crawl-data/CC-MAIN-2099-01/segments/1/warc/{name}.warc.gz"] = (
            200, {}, (tmp_path / f"{name}.warc.gz").read_bytes())
    paths = "".join(f"crawl-data/CC-MAIN-2099-01/segments/1/warc/{n}.warc.gz\n" for n in "ab")
    routes["/cc/crawl-data/CC-MAIN-2099-01/warc.paths.gz"] = (200, {}, gzip.compress(paths.encode()))
    flags = ["--cc=CC-MAIN-2099-01", "--cc_files=1", f"--cc_base={base}/cc/", f"--output={tmp_path / 'raw'}"] + FLAGS
    scrape.main(flags)
    docs = read_shards(tmp_path / "raw")
    assert [p.name for p in (tmp_path / "raw").glob("*.jsonl.gz")] == ["a.jsonl.gz"]
    assert [(d["url"], d["source"], d["text"]) for d in docs] == [("https://example.org/a", "cc", texts[url])]
    log.clear()
    report = scrape.main(flags)  # done: skipped, and not downloaded again
    assert report["shards_skipped_done"] == 1 and not any("/warc/" in p for p, _ in log)


def test_decoding_and_sniffing(sample):
    pages, _ = sample
    text = "Ça coûte 5 € — déjà vu"
    html = f"<html><head><meta charset='windows-1252'></head><body>{text}</body></html>"
    assert text in charset.decode_html(html.encode("cp1252"), "text/html")  # from <meta>
    assert text in charset.decode_html(html.encode("utf-8"), "text/html; charset=utf-8")  # header first
    # a real Latin-1 page that lies (says UTF-8), and a Shift_JIS page that says nothing: guessed
    french = pages["https://debian-handbook.info/browse/fr-FR/stable/sect.inetd.html"][1]
    right = french.decode("iso-8859-1")
    lying = re.sub(rb"(?i)charset=iso-8859-1", b"charset=utf-8", french)
    assert right[right.index("<body"):] in charset.decode_html(lying, "text/html; charset=utf-8")
    japanese = re.sub(r"(?i)charset=utf-8|encoding=.UTF-8.", "", pages[JAPANESE][1].decode("utf-8"))
    silent = japanese.encode("shift_jis", "xmlcharrefreplace")
    assert charset.decode_html(silent, "text/html") == silent.decode("shift_jis")
    assert charset.looks_binary(b"\x89PNG\r\n\x1a\n") and charset.looks_binary(b"<html>\x00\x01")
    assert not charset.looks_binary(html.encode("utf-16"))
    assert fetch.retry_after_seconds("7") == 7 and fetch.retry_after_seconds("soon") is None
    assert fetch.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # a date in the past


@pytest.mark.parametrize("label", ["utf-16", "UTF-16LE", "utf-32", "undefined"])
def test_charset_labels_that_cannot_be_true_are_ignored(label):
    """A UTF-8 page whose <meta> says UTF-16 (no BOM, no NUL bytes: it cannot be) is read as
    browsers read it, not as CJK mojibake; a label Python knows but cannot decode with costs
    nothing either."""
    html = f"<html><head><meta charset='{label}'></head><body>Ça coûte 5 € — déjà vu</body>"
    assert charset.decode_html(html.encode("utf-8"), "text/html") == html
    assert charset.decode_html(html.encode("utf-8"), f"text/html; charset={label}") == html


def sample_records(sample, urls):
    pages, _ = sample
    return [(url, pages[url][0], pages[url][1]) for url in urls]


@pytest.mark.parametrize("extractor,count,name", [("trafilatura", 30, "in.warc.gz"), ("resiliparse", 150, "in.warc.gz"),
                                                  ("resiliparse", 150, "in.warc")])
def test_one_or_two_workers_write_the_same_bytes(sample, tmp_path, monkeypatch, extractor, count, name):
    """Chunks (.warc.gz, read by the workers) and batches (plain .warc, read by the main process)
    are cut by input position, never by timing: the shard and its errors are the same bytes
    whatever --workers is (the errors' time is the record's WARC-Date)."""
    monkeypatch.setattr(scrape, "BATCH_PAGES", 8)  # many batches from few pages
    monkeypatch.setattr(warc, "CHUNK_BYTES", 40_000)  # many chunks: about 6 pages each
    pages, _ = sample
    records = sample_records(sample, list(pages)[:count]) + [("http://x.org/pdf", "application/pdf", b"%PDF")]
    write_warc(tmp_path / name, records, gzipped=name.endswith(".gz"))
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        scrape.main([f"--warc={tmp_path / name}", f"--output={out}", f"--workers={workers}",
                     f"--extractor={extractor}"])
        outputs.append([(out / "in.jsonl.gz").read_bytes(), (out / "errors" / "in.jsonl.gz").read_bytes()])
    assert outputs[0] == outputs[1]
    assert len(read_shards(tmp_path / "w1")) > count * 0.8 and len(read_errors(tmp_path / "w1")) >= 1


def test_warc_gzipped_whole_or_misnamed_loses_no_record(sample, tmp_path, monkeypatch):
    """A .warc.gz that is not one gzip member per record (`gzip crawl.warc`, or a plain WARC named
    .gz) cannot be cut into chunks: it is read as a stream, and every record still comes out."""
    monkeypatch.setattr(warc, "CHUNK_BYTES", 20_000)  # several chunks
    pages, _ = sample
    write_warc(tmp_path / "plain.warc", sample_records(sample, list(pages)[:10]), gzipped=False)
    plain = (tmp_path / "plain.warc").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "whole.warc.gz").write_bytes(gzip.compress(plain))
    (tmp_path / "in" / "misnamed.warc.gz").write_bytes(plain)
    flags = ["--workers=1", "--extractor=resiliparse"]
    scrape.main([f"--warc={tmp_path / 'plain.warc'}", f"--output={tmp_path / 'ref'}"] + flags)
    scrape.main([f"--warc={tmp_path / 'in'}", f"--output={tmp_path / 'out'}"] + flags)
    expected = (tmp_path / "ref" / "plain.jsonl.gz").read_bytes()
    assert len(read_shards(tmp_path / "ref")) == 10
    for name in ("whole", "misnamed"):
        assert (tmp_path / "out" / f"{name}.jsonl.gz").read_bytes() == expected


def test_a_rewritten_warc_file_is_scraped_again(sample, tmp_path):
    """A WARC file rewritten under the same name must not leave the old file's shard in place."""
    urls = list(sample[0])[:4]
    flags = [f"--warc={tmp_path / 'in.warc.gz'}", f"--output={tmp_path / 'out'}", "--workers=1",
             "--extractor=resiliparse", "--min_chars=1"]
    write_warc(tmp_path / "in.warc.gz", sample_records(sample, urls[:3]))
    scrape.main(flags)
    write_warc(tmp_path / "in.warc.gz", sample_records(sample, urls[3:]))
    assert scrape.main(flags)["shards_processed"] == 1
    assert [d["url"] for d in read_shards(tmp_path / "out")] == urls[3:]
    assert scrape.main(flags)["shards_skipped_done"] == 1  # unchanged since: done


def test_a_warc_file_given_up_on_leaves_the_report_incomplete(tmp_path):
    """A WARC file that cannot be read (here over HTTP from a closed port) makes no shard: the
    report must not say complete, nor list the shard, so that clean.py warns and a rerun reads it."""
    url = f"http://127.0.0.1:{closed_port()}/lost.warc.gz"
    report = scrape.main([f"--warc={url}", f"--output={tmp_path / 'out'}", "--workers=1", "--retries=0",
                          "--extractor=resiliparse"])
    assert report["complete"] is False and report["warc_failed"] == [url]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["complete"] is False and saved["shards"] == []


def test_warc_payloads_kept_as_sent_are_decoded(sample, tmp_path):
    """wget, Heritrix and warcprox store a response as it came over the wire: chunked, gzipped or
    both. Each must give the page's own text, never 'binary' or chunk sizes in the text, and so must
    a payload stored decoded under those headers; one cut short is an error with its reason."""
    (_, content_type, html), = sample_records(sample, list(sample[0])[:1])

    def chunked(body):
        return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 999]), body[i:i + 999])
                        for i in range(0, len(body), 999)) + b"0\r\n\r\n"
    gzipped, chunks = ("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")
    variants = {"plain": ([], html), "gzip": ([gzipped], gzip.compress(html)),
                "chunked": ([chunks], chunked(html)),
                "both": ([gzipped, chunks], chunked(gzip.compress(html))),
                "cut": ([chunks], chunked(html)[:-1500]),
                "br": ([("Content-Encoding", "br")], b"\x8b\x02"),  # no decoder for it here
                "decoded": ([gzipped, chunks], html)}  # old Common Crawl files: the same headers
    with open(tmp_path / "wire.warc.gz", "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for name, (headers, body) in variants.items():
            http = StatusAndHeaders("200 OK", [("Content-Type", content_type), *headers],
                                    protocol="HTTP/1.1")
            rec = writer.create_warc_record(f"http://x.org/{name}", "response",
                                            payload=io.BytesIO(body), http_headers=http)
            writer.write_record(rec)
    scrape.main([f"--warc={tmp_path / 'wire.warc.gz'}", f"--output={tmp_path / 'out'}",
                 "--workers=1", "--extractor=resiliparse"])
    texts = {d["url"].rsplit("/", 1)[1]: d["text"] for d in read_shards(tmp_path / "out")}
    assert list(texts) == ["plain", "gzip", "chunked", "both", "decoded"]
    assert len(set(texts.values())) == 1
    errors = [(e["url"], e["reason"]) for e in read_errors(tmp_path / "out")]
    assert errors == [("http://x.org/cut", "bad_encoding"), ("http://x.org/br", "bad_encoding")]


def test_a_warc_path_with_glob_characters(sample, tmp_path):
    """A file in a folder such as 'crawl [2024]' is read as named, not taken as a pattern."""
    pages, _ = sample
    (tmp_path / "crawl [2024]").mkdir()
    write_warc(tmp_path / "crawl [2024]" / "a b.warc.gz", sample_records(sample, list(pages)[:1]))
    report = scrape.main([f"--warc={tmp_path / 'crawl [2024]' / 'a b.warc.gz'}", "--workers=1",
                          f"--output={tmp_path / 'out'}", "--extractor=resiliparse"])
    assert report["totals"]["pages"] == 1


def test_a_warc_folder_is_read_with_its_subfolders_and_any_case(sample, tmp_path):
    """A folder such as a Common Crawl mirror (a folder per segment) or files named B.WARC.GZ: both
    were skipped without a word, the run complete on what was left."""
    pages, _ = sample
    first, second = list(pages)[:1], list(pages)[1:2]
    (tmp_path / "in" / "segment-2").mkdir(parents=True)
    write_warc(tmp_path / "in" / "a.warc.gz", sample_records(sample, first))
    write_warc(tmp_path / "in" / "segment-2" / "B.WARC.GZ", sample_records(sample, second))
    report = scrape.main([f"--warc={tmp_path / 'in'}", "--workers=1", f"--output={tmp_path / 'out'}",
                          "--extractor=resiliparse"])
    assert report["totals"]["pages"] == 2
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jsonl.gz")) == ["B.jsonl.gz", "a.jsonl.gz"]


def test_two_warc_files_of_one_name_are_named(tmp_path, capsys):
    """x/a.warc.gz and y/a.warc.gz would write one shard: the message says which two files."""
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        write_warc(tmp_path / folder / "a.warc.gz", [])
    with pytest.raises(SystemExit):
        scrape.main([f"--warc={tmp_path}/*/a.warc.gz", f"--output={tmp_path / 'out'}",
                     "--workers=1", "--extractor=resiliparse"])
    x, y = tmp_path / "x" / "a.warc.gz", tmp_path / "y" / "a.warc.gz"
    assert f"{x} and {y} would both be written as a.jsonl.gz" in capsys.readouterr().err


def test_a_warc_record_without_its_url_is_an_error(tmp_path):
    """A record with no WARC-Target-URI has nothing to make the document's id from: it is an error
    line (before, the worker died on it, again and again, and the run never ended). One in angle
    brackets is the URL inside."""
    path = tmp_path / "in.warc.gz"
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for n in range(3):
            rec = writer.create_warc_record(f"http://x.org/{n}", "conversion",
                                            payload=io.BytesIO(b"Text. " * 50))
            if n == 1:
                rec.rec_headers.remove_header("WARC-Target-URI")
            if n == 2:  # as wget 1.19 wrote it: the URL is the one inside
                rec.rec_headers.replace_header("WARC-Target-URI", "<http://x.org/2>")
            writer.write_record(rec)
    with open(path, "rb") as f:
        tasks = list(warc.warc_pages(f, str(path), "warc", 1000))
    assert [t.get("result", {}).get("reason") for t in tasks] == [None, "no_url", None]
    assert tasks[2]["url"] == "http://x.org/2"
    report = scrape.main([f"--warc={path}", f"--output={tmp_path / 'out'}", "--workers=1",
                          "--min_chars=0", "--extractor=resiliparse"])
    assert report["totals"]["docs"] == 2 and report["totals"]["no_url"] == 1


@pytest.mark.parametrize("extractor", extract.EXTRACTORS)
def test_hostile_pages_in_a_warc_cost_only_themselves(sample, tmp_path, extractor):
    """A page that hangs its worker and one that kills it, inside one batch: each is recorded with
    its reason, and every other page of the batch comes out as if they were not there."""
    pages, _ = sample
    good = sample_records(sample, list(pages)[:6])
    hang = ("http://x.org/hang", "text/html", good[0][2].replace(b"<body", b"<!-- scrape-test: hang --><body", 1))
    crash = ("http://x.org/crash", "text/html", good[1][2].replace(b"<body", b"<!-- scrape-test: crash --><body", 1))
    write_warc(tmp_path / "clean.warc.gz", good)
    write_warc(tmp_path / "hostile.warc.gz", good[:2] + [hang] + good[2:4] + [crash] + good[4:])
    flags = ["--workers=1", "--extract_timeout=1", f"--extractor={extractor}"]
    scrape.main([f"--warc={tmp_path / 'clean.warc.gz'}", f"--output={tmp_path / 'clean'}"] + flags)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRAPE_TEST_HOOKS", "1")
        start = time.monotonic()
        report = scrape.main([f"--warc={tmp_path / 'hostile.warc.gz'}", f"--output={tmp_path / 'hostile'}"] + flags)
    assert time.monotonic() - start < 20
    assert read_shards(tmp_path / "hostile") == read_shards(tmp_path / "clean")
    assert {e["url"]: e["reason"] for e in read_errors(tmp_path / "hostile")} == {
        "http://x.org/hang": "extraction_timeout", "http://x.org/crash": "extraction_crash"}
    assert report["totals"]["pages"] == 8


def test_deadlines_cover_headers_body_and_robots(server, tmp_path):
    """--fetch_timeout bounds a whole request, whatever the server does to stay under the read
    timeout: a body with a Content-Length sent a byte at a time, headers sent a line at a time, a
    robots.txt trickling. And a robots.txt over 500 KiB is obeyed as far as Google reads it."""
    base, routes, log, _ = server
    html = routes["/pages/abort.html"][2]

    def trickle(content_type, byte):  # Content-Length known, then a byte every 0.3 s: 30 s in all
        def respond(handler, n):
            handler.send_response(200)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", "100")
            handler.end_headers()
            for _ in range(100):
                handler.wfile.write(byte)
                handler.wfile.flush()
                time.sleep(0.3)
        return respond

    def slow_headers(handler, n):  # a header line every 0.3 s for 30 s, then the page
        handler.send_response(200)
        for i in range(100):
            handler.send_header(f"X-Slow-{i}", "x")
            handler.flush_headers()
            time.sleep(0.3)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(html)))
        handler.end_headers()
        handler.wfile.write(html)

    routes.update({"/slow-body.html": trickle("text/html", b" "), "/slow-headers.html": slow_headers})
    huge = b"User-agent: *\nDisallow: /\n" + b"# a robots.txt as long as some real ones are\n" * 12_000
    assert len(huge) > 520_000
    page = (200, {"Content-Type": "text/html"}, html)
    hosts = [serve({"/robots.txt": (200, {"Content-Type": "text/plain"}, huge), "/page.html": page}, []),
             serve({"/robots.txt": trickle("text/plain", b"#"), "/page.html": page}, [])]
    urls = [base + "/slow-body.html", base + "/slow-headers.html"] + [h + "/page.html" for h, _ in hosts]
    (tmp_path / "urls.txt").write_text("\n".join(urls))
    flags = [f for f in FLAGS if not f.startswith(("--fetch_timeout", "--retries"))] + ["--fetch_timeout=1.5", "--retries=0"]
    start = time.monotonic()
    scrape.main([f"--urls={tmp_path / 'urls.txt'}", f"--output={tmp_path / 'raw'}"] + flags)
    elapsed = time.monotonic() - start
    for _, stop in hosts:
        stop()
    errors = {e["url"]: (e["reason"], e["detail"]) for e in read_errors(tmp_path / "raw")}
    assert {url: reason for url, (reason, _) in errors.items()} == dict(zip(urls, ["timeout", "timeout", "robots", "timeout"]))
    assert errors[urls[3]][1].startswith("robots.txt: not done in 1.5s")
    assert elapsed < 8, elapsed  # 1.5 s each, in parallel; without the deadline, 30 s


def test_proxies_from_the_environment(server, monkeypatch):
    """http_proxy and no_proxy as the environment gives them: a proxied request goes to the proxy
    in absolute form (the test server plays the proxy), a host that no_proxy names is reached
    directly, and each page keeps its own robots.txt."""
    base, routes, log, _ = server
    page = routes["/pages/abort.html"]
    routes["http://proxied.invalid/a.html"] = page
    monkeypatch.setenv("http_proxy", base)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    fetcher = fetch.Fetcher(scrape.parse_args(["--urls=x"] + FLAGS))
    log.clear()
    assert fetcher.fetch_page("http://proxied.invalid/a.html")[2] == page[2]
    assert fetcher.fetch_page(base + "/pages/abort.html")[2] == page[2]
    assert [p for p, _ in log] == ["http://proxied.invalid/robots.txt", "http://proxied.invalid/a.html",
                                   "/robots.txt", "/pages/abort.html"]


def test_fetcher_caps_connections_per_host_and_in_all(sample):
    """The frontier's caps, as servers see them: three hosts of slow pages, --per_host=2 and
    --connections=5. No host ever has more than 2 requests at once, never more than 5 run in all,
    and both caps are reached (the requests do overlap); every page comes back once."""
    page = (200, {"Content-Type": "text/html"}, sample[0][REAL["/pages/abort.html"]][1])
    in_flight, most, lock = Counter(), Counter(), threading.Lock()

    def slow(name):
        def respond(handler, n):
            with lock:
                in_flight[name] += 1
                most[name], most["all"] = max(most[name], in_flight[name]), max(most["all"], sum(in_flight.values()))
            time.sleep(0.1)
            with lock:
                in_flight[name] -= 1
            return page
        return respond

    hosts = {name: serve({f"/{i}.html": slow(name) for i in range(8)}, []) for name in ("a", "b", "c")}
    fetcher = fetch.Fetcher(scrape.parse_args(["--urls=x", "--per_host=2", "--connections=5"] +
                                              [f for f in FLAGS if not f.startswith(("--per_host", "--connections"))]))
    todo, outcomes = queue.SimpleQueue(), []
    for i in range(8):
        for name, (base, _) in hosts.items():
            todo.put((f"{base}/{i}.html", name))
    todo.put(None)
    fetcher.run(todo, lambda url, name, outcome: outcomes.append((url, outcome)))
    for _, stop in hosts.values():
        stop()
    assert sorted(url for url, _ in outcomes) == sorted(f"{b}/{i}.html" for b, _ in hosts.values() for i in range(8))
    assert all(body == page[2] for _, (_, _, body) in outcomes)
    assert most["a"] == most["b"] == most["c"] == 2 and most["all"] == 5, most


def test_urls_with_non_ascii_characters_are_fetched(sample):
    """A path with 'é' is sent percent-encoded as UTF-8 and an IDN host in IDNA, as browsers send
    them: libcurl takes ASCII only, and one such URL used to kill the fetch thread and the run.
    A URL that cannot be sent (a NUL byte) fails on its own as bad_url."""
    page = (200, {"Content-Type": "text/html"}, sample[0][REAL["/pages/abort.html"]][1])
    base, stop = serve({"/caf%C3%A9.html": page}, [])
    fetcher = fetch.Fetcher(scrape.parse_args(["--urls=x"] + FLAGS))
    try:
        assert fetcher.fetch_page(f"{base}/café.html")[2] == page[2]
        with pytest.raises(fetch.Failure, match="bad_url"):
            fetcher.fetch_page(f"{base}/a\x00b.html")
    finally:
        stop()
    assert fetch.wire_url("http://bücher.de/ü?q=é") == "http://xn--bcher-kva.de/%C3%BC?q=%C3%A9"


def test_a_redirect_to_a_non_ascii_location(sample):
    """Servers send a Location such as /café.html in raw UTF-8: it is followed as browsers follow
    it (read as latin-1, it led to /cafÃ©.html, a 404)."""
    page = (200, {"Content-Type": "text/html"}, sample[0][REAL["/pages/abort.html"]][1])

    def moved(handler, n):
        handler.wfile.write("HTTP/1.1 301 Moved\r\nLocation: /café.html\r\n"
                            "Content-Length: 0\r\n\r\n".encode())
    def moved_latin1(handler, n):  # not UTF-8: the bytes as they came (it was /caf%C3%A9.html)
        handler.wfile.write(b"HTTP/1.1 301 Moved\r\nLocation: /caf\xe9.html\r\nContent-Length: 0\r\n\r\n")
    base, stop = serve({"/old.html": moved, "/caf%C3%A9.html": page, "/latin.html": moved_latin1,
                        "/caf%E9.html": page}, [])
    try:
        fetcher = fetch.Fetcher(scrape.parse_args(["--urls=x"] + FLAGS))
        url, _, body = fetcher.fetch_page(f"{base}/old.html")
        assert fetcher.fetch_page(f"{base}/latin.html")[0] == f"{base}/caf%E9.html"
    finally:
        stop()
    assert url == f"{base}/café.html" and body == page[2]


def test_mislabelled_charsets_on_real_pages(sample, tmp_path):
    """Real pages as servers really mislabel them: UTF-8 bytes declared iso-8859-1 (header and
    <meta>), and windows-1252 bytes declared nowhere. Both extractors must see the true text."""
    pages, _ = sample
    cases = {}
    for url in ["https://www.postgresql.org/docs/15/sql-alterroutine.html",
                "https://debian-handbook.info/browse/de-DE/stable/sect.inetd.html"]:
        lying = re.sub(rb"(?i)charset=utf-8", b"charset=iso-8859-1", pages[url][1])
        cases[url] = ("text/html; charset=iso-8859-1", lying)
    for url in ["https://debian-handbook.info/browse/pt-BR/stable/sect.quotas.html",
                "https://debian-handbook.info/browse/es-ES/stable/sect.quotas.html",
                "https://www.postgresql.org/docs/15/release-15-8.html",
                "https://docs.python.org/3.11/genindex-A.html"]:
        html = pages[url][1].decode("utf-8")
        unlabelled = re.sub(r"(?i)<meta[^>]*charset[^>]*>|<\?xml[^>]*\?>", "", html)
        cases[url] = ("text/html", unlabelled.encode("cp1252"))
    for url, (content_type, body) in cases.items():  # decoded as the page was written
        true_text = re.sub(r"(?i)<meta[^>]*charset[^>]*>|<\?xml[^>]*\?>", "", pages[url][1].decode("utf-8"))
        assert re.sub(r"(?i)<meta[^>]*charset[^>]*>|<\?xml[^>]*\?>", "", charset.decode_html(body, content_type, url)) == true_text, url
    write_warc(tmp_path / "lies.warc.gz", [(url, ct, body) for url, (ct, body) in cases.items()])
    for extractor in extract.EXTRACTORS:
        scrape.main([f"--warc={tmp_path / 'lies.warc.gz'}", f"--output={tmp_path / extractor}", "--min_chars=0",
                     f"--extractor={extractor}"] + FLAGS[:1])
        docs = {d["url"]: d["text"] for d in read_shards(tmp_path / extractor)}
        assert docs == {url: expected_text(sample, extractor, url) for url in cases if url in docs}
        assert len(docs) >= len(cases) - 1  # an index page may have no main text for one extractor


@pytest.mark.parametrize("chunk_bytes", [2_000_000, 15_000])
def test_damaged_warc_loses_only_the_damaged_records(sample, tmp_path, monkeypatch, chunk_bytes):
    """A WARC cut mid-record: the cut record is an error, never a document. A .warc.gz damaged in
    the middle: reading resumes at the next whole gzip member, so only the damaged record is lost,
    and errors/ says which bytes, once, however the file is cut into chunks; a plain .warc resumes
    at the next record header. A .warc.gz (or WET) cut in its last record's WARC headers lost that
    record without a word (fastwarc just ends): now the bytes lost are an error line."""
    monkeypatch.setattr(warc, "CHUNK_BYTES", chunk_bytes)
    pages, _ = sample
    records = sample_records(sample, list(pages)[:8])
    write_warc(tmp_path / "whole.warc.gz", records)
    scrape.main([f"--warc={tmp_path / 'whole.warc.gz'}", f"--output={tmp_path / 'whole'}", "--extractor=resiliparse"])
    whole = {d["url"]: d for d in read_shards(tmp_path / "whole")}
    assert len(whole) == 8
    data = (tmp_path / "whole.warc.gz").read_bytes()
    with open(tmp_path / "whole.warc.gz", "rb") as f:  # where each record's gzip member starts
        starts = [(it.get_record_offset(), r.rec_headers.get_header("WARC-Target-URI"))
                  for it in [ArchiveIterator(f)] for r in it if not r.content_stream().read(0)]
    (tmp_path / "damaged").mkdir()
    cut_at = starts[-1][0] + (len(data) - starts[-1][0]) // 2  # halfway through the last member
    (tmp_path / "damaged" / "cut.warc.gz").write_bytes(data[:cut_at])
    plain = gzip.decompress(data)
    (tmp_path / "damaged" / "plain.warc").write_bytes(plain[:len(plain) - 3000])
    broken = bytearray(data)
    middle = starts[4][0]  # the 5th record's member: its bytes garbled, its header intact
    for i in range(middle + 200, middle + 1200):
        broken[i] ^= 0x5A
    (tmp_path / "damaged" / "garbled.warc.gz").write_bytes(broken)
    plain_starts = [0] + [m.start() + 4 for m in re.finditer(rb"\r\n\r\nWARC/1\.", plain)]
    assert len(plain_starts) == 8
    header_garbled = bytearray(plain)  # the 5th record's header unreadable: reading resumes at the 6th
    header_garbled[plain_starts[4]:plain_starts[4] + 40] = b"X" * 40
    (tmp_path / "damaged" / "plain_garbled.warc").write_bytes(header_garbled)
    (tmp_path / "damaged" / "headcut.warc.gz").write_bytes(data[:starts[-1][0] + 60])
    (tmp_path / "damaged" / "plainheadcut.warc").write_bytes(plain[:plain_starts[-1] + 60])
    numbers = " ".join(str(n * 7919 % 100003) for n in range(3000)).encode()  # compresses little
    write_warc(tmp_path / "wet.warc.wet.gz", [(f"http://x.org/{n}", "wet", b"Text. " * 50) for n in range(2)]
               + [("http://x.org/2", "wet", numbers)])
    wet = (tmp_path / "wet.warc.wet.gz").read_bytes()
    with open(tmp_path / "wet.warc.wet.gz", "rb") as f:
        wet_last = warc.member_end(f, warc.member_end(f, 0))
    (tmp_path / "damaged" / "wetcut.warc.wet.gz").write_bytes(wet[:wet_last + 60])
    (tmp_path / "damaged" / "wetbody.warc.wet.gz").write_bytes(wet[:(wet_last + len(wet)) // 2])
    report = scrape.main([f"--warc={tmp_path / 'damaged'}", f"--output={tmp_path / 'out'}", "--extractor=resiliparse"])
    names = ("cut", "plain", "garbled", "plain_garbled", "headcut", "plainheadcut", "wetcut", "wetbody")
    docs = {name: [d["url"] for d in map(json.loads, gzip.open(tmp_path / "out" / f"{name}.jsonl.gz", "rt"))]
            for name in names}
    errors = {name: [(e["url"], e["reason"], e["detail"]) for e in
                     map(json.loads, gzip.open(tmp_path / "out" / "errors" / f"{name}.jsonl.gz", "rt"))]
              for name in names}
    urls = [url for _, url in starts]
    errors = {name: [e[:2] for e in lines] for name, lines in errors.items()} | {
        f"{name} detail": lines[0][2] for name, lines in errors.items() if lines}
    assert docs["cut"] == urls[:7] and errors["cut"] == [(urls[7], "warc_truncated")]
    assert docs["plain"] == urls[:7] and errors["plain"] == [(urls[7], "warc_truncated")]
    assert docs["garbled"] == urls[:4] + urls[5:]
    assert errors["garbled"] == [(str(tmp_path / "damaged" / "garbled.warc.gz"), "warc_unreadable")]
    assert errors["garbled detail"].startswith(f"bytes {middle} to {starts[5][0]} of ")
    assert docs["plain_garbled"] == urls[:4] + urls[5:]
    assert errors["plain_garbled"] == [(str(tmp_path / "damaged" / "plain_garbled.warc"), "warc_unreadable")]
    cut_in_headers = {"headcut.warc.gz": (starts[-1][0], urls[:7]), "plainheadcut.warc": (plain_starts[-1], urls[:7]),
                      "wetcut.warc.wet.gz": (wet_last, ["http://x.org/0", "http://x.org/1"])}
    for file, (lost_from, kept) in cut_in_headers.items():
        name = file.split(".")[0]
        assert docs[name] == kept and errors[name] == [(str(tmp_path / "damaged" / file), "warc_unreadable")]
        assert errors[f"{name} detail"].startswith(f"bytes {lost_from} to the end of ")
    assert docs["wetbody"] == ["http://x.org/0", "http://x.org/1"]  # not the first half of the third
    assert errors["wetbody"] == [("http://x.org/2", "warc_truncated")]
    for doc in read_shards(tmp_path / "out"):
        assert doc["url"].startswith("http://x.org/") or doc == whole[doc["url"]]
    assert report["totals"]["warc_truncated"] == 3 and report["totals"]["warc_unreadable"] == 5


def test_a_warc_cut_in_its_last_records_http_headers_is_one_warc_truncated_line(sample, tmp_path):
    """The WARC headers whole, the HTTP status line or headers cut: the record read as 'HTTP 20',
    'HTTP None' or a type of 'text/ht' (a 'status' or 'not_html' error), and in a .warc.gz the bytes
    after it were one more error line. A record cut there is cut short like any other: one
    warc_truncated line with its URL, whatever kind of page it was (HTML, a 404, a PDF)."""
    urls = list(sample[0])[:2]
    last_records = {"html": sample_records(sample, list(sample[0])[2:3])[0],
                    "404": ("http://x.org/missing", "text/html", None),
                    "pdf": ("http://x.org/doc.pdf", "application/pdf", b"%PDF-1.4 " * 50)}
    (tmp_path / "in").mkdir()
    expected = {}  # file name -> where its last record starts
    for kind, last in last_records.items():
        write_warc(tmp_path / f"{kind}.warc", sample_records(sample, urls) + [last], gzipped=False)
        plain = (tmp_path / f"{kind}.warc").read_bytes()
        start = plain.rfind(b"\r\n\r\nWARC/1.") + 4  # the last record
        http_start = plain.index(b"\r\n\r\n", start) + 4  # after its WARC headers
        http_end = plain.index(b"\r\n\r\n", http_start) + 4  # after its HTTP headers
        for cut in sorted({*range(http_start, http_end, 11), http_end - 1}):
            (tmp_path / "in" / f"{kind}_{cut}.warc").write_bytes(plain[:cut])
            expected[f"{kind}_{cut}"] = start
        write_warc(tmp_path / f"{kind}.warc.gz", sample_records(sample, urls) + [last])
        data = (tmp_path / f"{kind}.warc.gz").read_bytes()
        with open(tmp_path / f"{kind}.warc.gz", "rb") as f:
            member = warc.member_end(f, warc.member_end(f, 0))  # the last record's gzip member
        inflated = gzip.decompress(data[member:])
        http_start = inflated.index(b"\r\n\r\n") + 4
        http_end = inflated.index(b"\r\n\r\n", http_start) + 4
        cuts = {}  # by how much of the record the cut file inflates to, inside the HTTP headers
        for cut in range(member + 1, len(data)):
            length = len(zlib.decompressobj(wbits=31).decompress(data[member:cut]))
            if http_start <= length < http_end:
                cuts.setdefault(length, cut)
            elif length >= http_end:
                break
        assert len(cuts) >= 3, kind
        for cut in list(cuts.values())[::max(1, len(cuts) // 8)]:  # a few, from first to last
            (tmp_path / "in" / f"{kind}_{cut}.warc.gz").write_bytes(data[:cut])
            expected[f"{kind}_{cut}"] = member
    scrape.main([f"--warc={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", "--workers=1",
                 "--extractor=resiliparse", "--min_chars=1"])
    for name, start in expected.items():
        kind = name.split("_")[0]
        docs = [d["url"] for d in map(json.loads, gzip.open(tmp_path / "out" / f"{name}.jsonl.gz", "rt"))]
        errors = [(e["url"], e["reason"], e["detail"]) for e in
                  map(json.loads, gzip.open(tmp_path / "out" / "errors" / f"{name}.jsonl.gz", "rt"))]
        assert docs == urls, name
        assert [e[:2] for e in errors] == [(last_records[kind][0], "warc_truncated")], (name, errors)
        assert f"at byte {start} of " in errors[0][2], (name, errors)


def test_dates_from_markup_agree_with_htmldate(sample):
    """The date each kind of markup declares, as htmldate (trafilatura's date finder) reads it; a
    date after the fetch is refused; a modification date is the last resort."""
    pages, _ = sample
    html = pages["https://www.postgresql.org/docs/15/sql-abort.html"][1].decode("utf-8")
    url, fetched = "https://example.org/docs/page.html", "2026-11-01"
    assert htmldate.find_date(html, extensive_search=False, original_date=True, max_date=fetched) is None
    in_head = ['<meta property="article:published_time" content="2021-03-04T10:00:00+00:00">',
               '<meta content="2019-07-08" name="date">',
               '<script type="application/ld+json">{"@type": "Article", "datePublished": "2018-02-03"}</script>',
               '<meta property="article:modified_time" content="2020-01-02">']
    for markup in in_head:
        page = html.replace("</head>", markup + "</head>", 1)
        ours = extract.page_date(page, url, fetched)
        assert ours == htmldate.find_date(page, url=url, extensive_search=False, original_date=True, max_date=fetched), markup
        assert ours is not None
    both = html.replace("</head>", in_head[3] + in_head[1] + "</head>", 1)
    assert extract.page_date(both, url, fetched) == "2019-07-08"  # published beats modified
    future = html.replace("</head>", '<meta name="date" content="2030-01-01"></head>', 1)
    assert extract.page_date(future, url, fetched) is None
    assert extract.page_date(html, "https://example.org/2016/05/06/news.html", fetched) == "2016-05-06"
    timed = html.replace("<body", '<body><time datetime="2015-04-03" pubdate>3 April</time', 1)
    assert extract.page_date(timed, url, fetched) == "2015-04-03"
