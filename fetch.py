"""
Getting pages from the web politely, and reading their bytes as text: the HTTP half of scrape.py.

- Fetcher: libcurl (pycurl), one handle per fetch thread, its connections kept alive and shared
  by all threads, with politeness per host (robots.txt fetched once and obeyed, a delay between
  requests, a cap on parallel connections, backing off when the server says it is struggling) and
  a deadline on every request. A server can stall a crawler without ever tripping a read timeout,
  by sending a byte (or a header line) just before it fires; libcurl's whole-request timeout cuts
  any request not done --fetch_timeout seconds after it started, whatever phase it is in (connect,
  headers or body), robots.txt included. libcurl, not a Python client: the request runs in C,
  without the GIL, and costs the process 0.11-0.13 ms of CPU per page from 16 threads on a local
  server, against 0.8-0.95 for urllib3 and ~0.15 for http.client alone, next to the extractor's
  ~2 ms (resiliparse) in the same two cores.
- decode_html: bytes to str as a browser decides: byte-order mark, then the HTTP header's charset,
  then the page's own <meta>, then detection with Firefox's detector (chardetng). Two lies are
  common and handled: a page labelled latin-1 whose bytes are valid UTF-8 is UTF-8, and a page
  labelled UTF-8 whose bytes are not goes to detection.
"""

import contextlib
import http.client
import io
import itertools
import math
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import chardetng_py
import pycurl

HTML_TYPES = ("text/html", "application/xhtml+xml")
REDIRECTS = (301, 302, 303, 307, 308)
ROBOTS_MAX_BYTES = 500 * 1024  # Google reads the first 500 KiB of a robots.txt and obeys that part


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def failure(reason, detail="", transient=False):
    """How a page that gives no document is recorded. Transient failures are retried by a rerun."""
    return {"reason": reason, "detail": str(detail)[:300], "transient": transient}


class Failure(Exception):
    def __init__(self, reason, detail="", transient=False):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.result = failure(reason, detail, transient)

# -----------------------------------------------------------------------------------------------
# charsets


BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
# what these labels mean on the web (WHATWG Encoding standard): all of them are windows-1252
LATIN1_LABELS = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "us-ascii", "ascii",
                 "windows-1252", "cp1252", "x-cp1252"}
HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.I)
DOCUMENT_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([\w.:-]+)|<\?xml[^>]+encoding\s*=\s*[\"']([\w.:-]+)", re.I)


def decode_html(body, content_type, url=""):
    """Bytes to str: BOM, then the header's label, then the document's (<meta charset>, <meta
    http-equiv>, <?xml encoding>), then detection. A label the bytes contradict falls through."""
    for bom, codec in BOMS:
        if body.startswith(bom):
            return body.decode(codec, errors="replace")
    if body.isascii():
        return body.decode("ascii")  # most pages: every ASCII-compatible label agrees
    # lazily, in the first 4 KB: the first label that decodes the bytes is the answer
    in_document = ((m[1] or m[2]).decode("ascii") for m in DOCUMENT_CHARSET.finditer(body, 0, 4096))
    for label in itertools.chain(HEADER_CHARSET.findall(content_type or ""), in_document):
        label = label.lower()
        if label in LATIN1_LABELS:  # valid UTF-8 with non-ASCII bytes is never latin-1 text in practice
            with contextlib.suppress(UnicodeDecodeError):
                return body.decode("utf-8")
            return body.decode("cp1252", errors="replace")
        with contextlib.suppress(LookupError, UnicodeDecodeError):
            return body.decode(label)
    with contextlib.suppress(UnicodeDecodeError):
        return body.decode("utf-8")
    # no label to trust. Non-ASCII bytes that are all punctuation in windows-1252 (the web's default:
    # a few '«', '¶', '©') give a detector nothing to go on; it would read them as letters of another
    # alphabet. Otherwise, what Firefox does; the top-level domain is its hint (.cz: Central European)
    high = bytes(b for b in set(body) if b > 127).decode("cp1252", errors="replace")
    if not any(c.isalpha() for c in high):
        return body.decode("cp1252", errors="replace")
    tld = (urlsplit(url).hostname or "").rsplit(".", 1)[-1]
    tld = tld.encode() if re.fullmatch(r"[a-z0-9-]+", tld) else None  # anything else makes chardetng panic
    guess = chardetng_py.detect(body, allow_utf8=False, tld=tld)
    try:
        return body.decode(guess, errors="replace")
    except LookupError:
        return body.decode("cp1252", errors="replace")


BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b", b"\x7fELF")


def looks_binary(body):
    head = body[:1024]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False  # UTF-16 has NUL bytes and is still text
    return b"\x00" in head or head.startswith(BINARY_MAGIC)

# -----------------------------------------------------------------------------------------------
# the polite fetcher


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


def parse_head(lines):
    """(status, headers with lower-case names) of the last response in the header lines libcurl
    passed on (a 100 Continue, or a proxy's answer to CONNECT, comes before the real one)."""
    first = max((i for i, line in enumerate(lines) if line.startswith(b"HTTP/")), default=None)
    if first is None:
        return 0, {}
    status, headers = int(lines[first].split()[1]), {}
    for line in lines[first + 1:]:
        name, colon, value = line.decode("latin-1").partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return status, headers


def redirect_target(r):
    return r.headers.get("location") if r.status in REDIRECTS else None


class ResponseStream(io.RawIOBase):
    """An HTTP response read as fastwarc reads a file, which asks where it is (tell); and a body
    cut short of its Content-Length is an error, never a quiet end of file (http.client's
    readinto would end it quietly)."""

    def __init__(self, response):
        super().__init__()
        self.response, self.position = response, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        n = self.response.readinto(buffer)
        if n == 0 and len(buffer) and self.response.length:  # bytes still owed: the connection broke
            raise http.client.IncompleteRead(b"", self.response.length)
        self.position += n
        return n

    def tell(self):
        return self.position

    def close(self):
        self.response.close()
        super().close()


class Fetcher:
    """HTTP for the URL modes. args: connections, per_host, delay, user_agent, connect_timeout,
    read_timeout, fetch_timeout, retries, backoff, max_retry_wait, max_redirects, max_bytes."""

    def __init__(self, args):
        self.args = args
        # proxies from the environment (HTTPS_PROXY, NO_PROXY...), read once, and per host below
        self.proxies = urllib.request.getproxies()
        self.hosts, self.lock, self.local = {}, threading.Lock(), threading.local()
        self.share = pycurl.CurlShare()  # one DNS cache and one pool of open connections for all threads
        for data in (pycurl.LOCK_DATA_DNS, pycurl.LOCK_DATA_CONNECT, pycurl.LOCK_DATA_SSL_SESSION):
            self.share.setopt(pycurl.SH_SHARE, data)
        ca_file = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().cafile
        self.options = [  # libcurl's settings for every request
            (pycurl.NOSIGNAL, 1), (pycurl.USERAGENT, args.user_agent),
            (pycurl.HTTPHEADER, ["Accept: */*"]), (pycurl.ACCEPT_ENCODING, "gzip, deflate"),
            (pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS),
            # the deadline: the whole request, connect, headers and body, however the server
            # drips them; and "silence" is under a byte a second for --read_timeout (whole seconds)
            (pycurl.TIMEOUT_MS, int(args.fetch_timeout * 1000)),
            (pycurl.CONNECTTIMEOUT_MS, int(min(args.connect_timeout, args.fetch_timeout) * 1000)),
            (pycurl.LOW_SPEED_LIMIT, 1), (pycurl.LOW_SPEED_TIME, max(1, math.ceil(args.read_timeout)))]
        if ca_file and os.path.exists(ca_file):  # the system's certificates, not the wheel's guess
            self.options.append((pycurl.CAINFO, ca_file))

    def curl(self):
        """This thread's libcurl handle, made once: requests from one thread never overlap."""
        curl = getattr(self.local, "curl", None)
        if curl is None:
            curl = self.local.curl = pycurl.Curl()
            for option, value in self.options:
                curl.setopt(option, value)
        return curl

    def host(self, url):
        parts = urlsplit(url)
        origin = "{0.scheme}://{0.netloc}".format(parts).lower()
        with self.lock:
            if origin not in self.hosts:
                self.hosts[origin] = SimpleNamespace(
                    origin=origin, lock=threading.Lock(), slots=threading.Semaphore(self.args.per_host),
                    next_time=0.0, delay=self.args.delay, robots=None, robots_lock=threading.Lock(),
                    proxy=self.proxy_for(parts))
            return self.hosts[origin]

    def proxy_for(self, parts):
        """The scheme's proxy unless NO_PROXY names the host; "" is none (libcurl then ignores the
        environment, whose rules differ from Python's)."""
        proxy = self.proxies.get(parts.scheme, "")
        return "" if proxy and urllib.request.proxy_bypass(parts.hostname or "") else proxy

    def wait_turn(self, h):
        with h.lock:  # requests to one host start at least h.delay seconds apart
            now = time.monotonic()
            start = max(now, h.next_time)
            h.next_time = start + h.delay
        if start > now:
            time.sleep(start - now)

    def back_off(self, h, attempt, retry_after=None):
        wait = retry_after_seconds(retry_after)
        wait = min(self.args.backoff * 2 ** attempt if wait is None else wait, self.args.max_retry_wait)
        with h.lock:  # the whole host waits, not just this request: it asked us to slow down
            h.next_time = max(h.next_time, time.monotonic() + wait)

    def get(self, url, max_bytes, html_only, truncate=False):
        """One GET, redirects not followed, with retries; each try has --fetch_timeout seconds in
        all. Returns the response (status, headers, body). Past max_bytes: 'too_large', or the
        first max_bytes if `truncate`."""
        a, h = self.args, self.host(url)
        with h.slots:
            for attempt in range(a.retries + 1):
                self.wait_turn(h)
                start = time.monotonic()
                try:
                    r = self.get_once(h, url, max_bytes, html_only, truncate)
                except pycurl.error as e:
                    code, message = e.args
                    if time.monotonic() - start >= a.fetch_timeout:
                        raise Failure("timeout", f"not done in {a.fetch_timeout}s", transient=True) from None
                    if code in (pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL):
                        raise Failure("bad_url", message) from None
                    # the request was sent, then the server went silent: no retry
                    if code == pycurl.E_OPERATION_TIMEDOUT and self.curl().getinfo(pycurl.REQUEST_SIZE) > 0:
                        raise Failure("timeout", message, transient=True) from None
                    if attempt < a.retries:  # refused, reset, DNS, a cut stream: worth another try
                        self.back_off(h, attempt)
                        continue
                    raise Failure("connection", message, transient=True) from None
                if r.status == 429 or r.status >= 500:
                    if attempt < a.retries:
                        self.back_off(h, attempt, r.headers.get("retry-after"))
                        continue
                    raise Failure("server_error", f"HTTP {r.status}", transient=True)
                return r

    def get_once(self, h, url, max_bytes, html_only, truncate):
        """The request itself, on this thread's handle (libcurl in C, without the GIL, but for the
        callbacks below). A body is counted after decompression, so a gzip bomb stops too; one
        that is not wanted (an error page, not HTML, too large) is hung up on, not read."""
        curl, lines, chunks = self.curl(), [], []
        r = SimpleNamespace(status=0, headers={}, body=b"", size=0, refused=None)

        def take(chunk):  # returning 0 stops the transfer (libcurl's "write error")
            if not r.status:  # the first bytes of the body: the headers are all in
                r.status, r.headers = parse_head(lines)
                r.refused = refusal(r)
                if r.refused or r.status >= 300:
                    return 0
            chunks.append(chunk)
            r.size += len(chunk)
            return 0 if r.size > max_bytes else None

        def refusal(r):
            if r.status >= 300:
                return None
            mime = r.headers.get("content-type", "").split(";")[0].strip().lower()
            if html_only and mime and mime not in HTML_TYPES:
                return Failure("not_html", mime)
            if not truncate and int(r.headers.get("content-length", "0") or 0) > max_bytes:
                return Failure("too_large", f"Content-Length {r.headers['content-length']}")
            return None

        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.PROXY, h.proxy)
        curl.setopt(pycurl.HEADERFUNCTION, lines.append)
        curl.setopt(pycurl.WRITEFUNCTION, take)
        try:
            curl.perform()
        except pycurl.error as e:
            if e.args[0] != pycurl.E_WRITE_ERROR:  # that one is ours, from take()
                raise
        if not r.status:  # no body at all
            r.status, r.headers = parse_head(lines)
            r.refused = refusal(r)
        if r.refused:
            raise r.refused
        if r.size > max_bytes and r.status < 300:
            if not truncate:
                raise Failure("too_large", f"over {max_bytes} bytes")
            r.body = b"".join(chunks)[:max_bytes]
        elif r.status < 300:
            r.body = b"".join(chunks)
        return r

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
        fetched (5xx, network, past the deadline) forbids everything for now. Up to 5 redirects are
        followed, and the first 500 KiB are obeyed, as Google does."""
        robots, url = RobotFileParser(), h.origin + "/robots.txt"
        robots.failure = None
        try:
            for _ in range(5):
                r = self.get(url, ROBOTS_MAX_BYTES, html_only=False, truncate=True)
                if redirect_target(r) is None:
                    break
                url = urljoin(url, redirect_target(r))
            if r.status >= 300:
                robots.allow_all = True
                return robots
        except Failure as f:  # for now if the host is failing; for good if robots.txt is odd
            robots.failure, robots.allow_all = (f.result, False) if f.result["transient"] else (None, True)
            return robots
        lines = r.body.decode("utf-8", errors="replace").splitlines()
        if len(r.body) == ROBOTS_MAX_BYTES:
            lines = lines[:-1]  # cut at the limit: its last line may be half a rule
        robots.parse(lines)
        crawl_delay = robots.crawl_delay(self.args.user_agent)
        if crawl_delay:
            h.delay = max(h.delay, min(float(crawl_delay), self.args.max_retry_wait))
        return robots

    def open_file(self, url):
        """A whole file streamed (a WARC, a list of paths): redirects followed, no politeness
        (one request per file), the bytes as sent (a .gz stays gzipped); an error status is a
        Failure, transient for 5xx. Use as `with fetcher.open_file(url) as f: f.read(...)`. This is
        Python's own urllib: a stream to read at the reader's pace, where libcurl pushes the bytes;
        proxies from the environment as above."""
        redirects = urllib.request.HTTPRedirectHandler()
        redirects.max_redirections = self.args.max_redirects
        request = urllib.request.Request(url, headers={"User-Agent": self.args.user_agent})
        try:
            return ResponseStream(urllib.request.build_opener(redirects).open(request, timeout=self.args.read_timeout))
        except urllib.error.HTTPError as e:
            e.close()
            raise Failure("status", f"HTTP {e.code} for {url}", transient=e.code >= 500) from None

    def fetch_page(self, url):
        """(final url, content type, body) of an HTML page, following up to --max_redirects."""
        for _ in range(self.args.max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise Failure("bad_url", "only http and https URLs are fetched")
            if not self.allowed(url):
                raise Failure("robots", "disallowed by robots.txt")
            r = self.get(url, self.args.max_bytes, html_only=True)
            if redirect_target(r) is not None:
                url = urldefrag(urljoin(url, redirect_target(r)))[0]
                continue
            if r.status >= 300:
                raise Failure("status", f"HTTP {r.status}")
            return url, r.headers.get("content-type", ""), r.body
        raise Failure("redirects", f"more than {self.args.max_redirects} redirects")
