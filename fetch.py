"""
Getting pages from the web politely, and reading their bytes as text: the HTTP half of scrape.py.

- Fetcher: urllib3's pools of keep-alive connections (one pool per host) shared by the fetch
  threads, with politeness per host (robots.txt fetched once and obeyed, a delay between requests,
  a cap on parallel connections, backing off when the server says it is struggling) and a
  deadline on every request. A server can stall a crawler without ever tripping a read timeout, by
  sending a byte (or a header line) just before it fires; so a watchdog thread shuts the socket of
  any request that is not done --fetch_timeout seconds after it started, whatever phase it is in
  (headers or body), robots.txt included. urllib3 directly, not requests on top of it: requests'
  per-request machinery (merging settings, hooks, cookies, preparing the URL again) doubled the
  fetch threads' CPU (1.0-1.2 against 0.46-0.64 ms per page from 16 threads on a local server, in
  the process that also feeds the extractors: resiliparse itself costs ~2 ms), and importing it
  took ~0.5 s at every start.
- decode_html: bytes to str as a browser decides: byte-order mark, then the HTTP header's charset,
  then the page's own <meta>, then detection with Firefox's detector (chardetng). Two lies are
  common and handled: a page labelled latin-1 whose bytes are valid UTF-8 is UTF-8, and a page
  labelled UTF-8 whose bytes are not goes to detection.
"""

import contextlib
import itertools
import re
import socket
import threading
import time
import urllib.request
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import chardetng_py
import urllib3

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
# the deadline on every request: a watchdog thread shuts the socket of a request past it


WATCHED = {}  # fetch thread id -> its request in flight: deadline, socket, whether it expired


class WatchedConnection:
    """Mixed into urllib3's connections: the socket a thread's request reads headers and body
    from is registered, so that the watchdog can shut it (a blocked recv() then returns)."""

    def getresponse(self, *args, **kwargs):
        watch = WATCHED.get(threading.get_ident())
        if watch is not None:
            watch.sock = self.sock
        return super().getresponse(*args, **kwargs)


class WatchedHTTPConnection(WatchedConnection, urllib3.connection.HTTPConnection):
    pass


class WatchedHTTPSConnection(WatchedConnection, urllib3.connection.HTTPSConnection):
    pass


class WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


def watchdog():
    while True:
        time.sleep(0.05)
        now = time.monotonic()
        for watch in list(WATCHED.values()):
            if now > watch.deadline and not watch.expired and watch.sock is not None:
                watch.expired = True
                with contextlib.suppress(OSError):  # the plain socket's shutdown, under TLS too
                    socket.socket.shutdown(watch.sock, socket.SHUT_RDWR)


threading.Thread(target=watchdog, daemon=True, name="fetch-deadlines").start()


@contextlib.contextmanager
def deadline(seconds):
    """While the block runs, this thread's request (connect, headers, body) is cut at `seconds`."""
    watch = SimpleNamespace(deadline=time.monotonic() + seconds, sock=None, expired=False)
    WATCHED[threading.get_ident()] = watch
    try:
        yield watch
    finally:
        del WATCHED[threading.get_ident()]

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


def pool_manager(args, proxy=None):
    """Keep-alive connections, a pool per host, of the watched kind; through `proxy` if given.
    Retries and redirects are ours (Fetcher.get, fetch_page), so urllib3 does neither."""
    settings = dict(num_pools=64, maxsize=args.connections, retries=False, headers={
        "User-Agent": args.user_agent, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"})
    manager = urllib3.ProxyManager(proxy, **settings) if proxy else urllib3.PoolManager(**settings)
    manager.pool_classes_by_scheme = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}
    return manager


def redirect_target(r):
    return r.headers.get("Location") if r.status in REDIRECTS else None


class Fetcher:
    """HTTP for the URL modes. args: connections, per_host, delay, user_agent, connect_timeout,
    read_timeout, fetch_timeout, retries, backoff, max_retry_wait, max_redirects, max_bytes."""

    def __init__(self, args):
        self.args = args
        self.timeout = urllib3.Timeout(connect=min(args.connect_timeout, args.fetch_timeout), read=args.read_timeout)
        # proxies from the environment (HTTPS_PROXY, NO_PROXY...), read once, and per host below
        self.proxies, self.managers = urllib.request.getproxies(), {None: pool_manager(args)}
        self.hosts, self.lock = {}, threading.Lock()

    def host(self, url):
        parts = urlsplit(url)
        origin = "{0.scheme}://{0.netloc}".format(parts).lower()
        with self.lock:
            if origin not in self.hosts:
                self.hosts[origin] = SimpleNamespace(
                    origin=origin, lock=threading.Lock(), slots=threading.Semaphore(self.args.per_host),
                    next_time=0.0, delay=self.args.delay, robots=None, robots_lock=threading.Lock(),
                    http=self.pools_for(parts))
            return self.hosts[origin]

    def pools_for(self, parts):
        """Direct, or through the scheme's proxy unless NO_PROXY names the host (once per host)."""
        proxy = self.proxies.get(parts.scheme)
        if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
            proxy = None
        if proxy not in self.managers:
            self.managers[proxy] = pool_manager(self.args, proxy)
        return self.managers[proxy]

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
        all. Returns (response, body). Past max_bytes: 'too_large', or the first max_bytes if
        `truncate`."""
        a, h = self.args, self.host(url)
        with h.slots:
            for attempt in range(a.retries + 1):
                self.wait_turn(h)
                with deadline(a.fetch_timeout) as watch:
                    try:
                        r, body = self.get_once(h, url, max_bytes, html_only, truncate)
                    except Failure:
                        if watch.expired:
                            raise Failure("timeout", f"not done in {a.fetch_timeout}s", transient=True) from None
                        raise
                    except (urllib3.exceptions.HTTPError, OSError) as e:
                        if watch.expired:  # whatever the cut socket raised, it was our deadline
                            raise Failure("timeout", f"not done in {a.fetch_timeout}s", transient=True) from None
                        # the server accepted, then went silent (before the headers or in the body): no retry
                        if isinstance(e, urllib3.exceptions.ReadTimeoutError):
                            raise Failure("timeout", e, transient=True) from None
                        if isinstance(e, urllib3.exceptions.LocationValueError):
                            raise Failure("bad_url", e) from None
                        if attempt < a.retries:  # refused, reset, DNS, a cut stream: worth another try
                            self.back_off(h, attempt)
                            continue
                        raise Failure("connection", e, transient=True) from None
                    if watch.expired:  # a cut body can look like a clean end of stream
                        raise Failure("timeout", f"not done in {a.fetch_timeout}s", transient=True)
                if r.status == 429 or r.status >= 500:
                    if attempt < a.retries:
                        self.back_off(h, attempt, r.headers.get("Retry-After"))
                        continue
                    raise Failure("server_error", f"HTTP {r.status}", transient=True)
                return r, body

    def get_once(self, h, url, max_bytes, html_only, truncate):
        r = h.http.urlopen("GET", url, redirect=False, retries=False, timeout=self.timeout, preload_content=False)
        whole = False  # read to its end: the connection goes back to the pool for the next request
        try:
            if r.status >= 400 or redirect_target(r) is not None:
                return r, b""
            mime = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if html_only and mime and mime not in HTML_TYPES:
                raise Failure("not_html", mime)
            if not truncate and int(r.headers.get("Content-Length", "0") or 0) > max_bytes:
                raise Failure("too_large", f"Content-Length {r.headers['Content-Length']}")
            chunks, size = [], 0
            for chunk in r.stream(65536, decode_content=True):  # after decompression: a gzip bomb stops too
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    if truncate:
                        return r, b"".join(chunks)[:max_bytes]
                    raise Failure("too_large", f"over {max_bytes} bytes")
            whole = True
            return r, b"".join(chunks)
        finally:
            if not whole:  # the rest is not wanted: hang up rather than read it
                r.close()
            r.release_conn()

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
                r, body = self.get(url, ROBOTS_MAX_BYTES, html_only=False, truncate=True)
                if redirect_target(r) is None:
                    break
                url = urljoin(url, redirect_target(r))
            if r.status >= 300:
                robots.allow_all = True
                return robots
        except Failure as f:  # for now if the host is failing; for good if robots.txt is odd
            robots.failure, robots.allow_all = (f.result, False) if f.result["transient"] else (None, True)
            return robots
        lines = body.decode("utf-8", errors="replace").splitlines()
        if len(body) == ROBOTS_MAX_BYTES:
            lines = lines[:-1]  # cut at the limit: its last line may be half a rule
        robots.parse(lines)
        crawl_delay = robots.crawl_delay(self.args.user_agent)
        if crawl_delay:
            h.delay = max(h.delay, min(float(crawl_delay), self.args.max_retry_wait))
        return robots

    def open_file(self, url):
        """A whole file streamed (a WARC, a list of paths): redirects followed, no politeness
        (one request per file), the bytes as sent (a .gz stays gzipped); an error status is a
        Failure, transient for 5xx. Use as `with fetcher.open_file(url) as f: f.read(...)`."""
        r = self.host(url).http.urlopen(
            "GET", url, headers={"User-Agent": self.args.user_agent}, preload_content=False, decode_content=False,
            # up to --max_redirects redirects, no retries (total=False would turn redirects off too)
            redirect=True, retries=urllib3.Retry(total=None, connect=0, read=0, other=0, redirect=self.args.max_redirects),
            timeout=urllib3.Timeout(connect=self.args.connect_timeout, read=self.args.read_timeout))
        if r.status >= 400:
            r.close()
            raise Failure("status", f"HTTP {r.status} for {url}", transient=r.status >= 500)
        return r

    def fetch_page(self, url):
        """(final url, content type, body) of an HTML page, following up to --max_redirects."""
        for _ in range(self.args.max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise Failure("bad_url", "only http and https URLs are fetched")
            if not self.allowed(url):
                raise Failure("robots", "disallowed by robots.txt")
            r, body = self.get(url, self.args.max_bytes, html_only=True)
            if redirect_target(r) is not None:
                url = urldefrag(urljoin(url, redirect_target(r)))[0]
                continue
            if r.status >= 300:
                raise Failure("status", f"HTTP {r.status}")
            return url, r.headers.get("Content-Type", ""), body
        raise Failure("redirects", f"more than {self.args.max_redirects} redirects")
