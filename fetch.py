"""
Getting pages from the web politely: the HTTP half of scrape.py.

- Fetcher: a polite crawler on libcurl (pycurl). One thread runs all transfers at once through
  libcurl's multi interface, and keeps the rules per host: robots.txt fetched once and obeyed, a
  delay between requests, a cap on parallel connections, backing off when the server says it is
  struggling, and a deadline on every request. A server can stall a crawler without ever tripping
  a read timeout, by sending a byte (or a header line) just before it fires; libcurl's
  whole-request timeout cuts any request not done --fetch_timeout seconds after it started,
  whatever phase it is in (connect, headers or body), robots.txt included.
  Why libcurl, and one thread: inside scrape.py --urls (10,000 pages from a local server, beside
  the extractors on two cores), fetching cost the main process ~0.8 ms of CPU per page with
  urllib3 in 16 threads, ~0.37 with libcurl in 16 threads (the threads' Python parts fight over
  the GIL), ~0.22 with libcurl's multi interface in one; resiliparse itself costs ~2 ms a page.
(Reading a page's bytes as text, its charset, is charset.py's job.)
"""

import collections
import heapq
import http.client
import io
import itertools
import math
import os
import queue
import re
import ssl
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from urllib.parse import quote, urldefrag, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import idna  # browsers' IDNA (UTS 46); tldextract's dependency too
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
        try:  # a Location such as /café.html comes in UTF-8, and browsers read it so
            text = line.decode("utf-8")
        except UnicodeDecodeError:  # a Location in latin-1 bytes: sent as they came, as browsers do
            text = "".join(chr(byte) if byte < 0x80 else f"%{byte:02X}" for byte in line)
        name, colon, value = text.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return status, headers


# what a browser percent-encodes (as UTF-8) before sending a URL: libcurl refuses a space or a
# control character ("URL rejected: Bad path") and takes ASCII only; tabs and newlines it drops
UNSENDABLE = re.compile(r'[\x00-\x20"<>\x7f-\U0010ffff]+')
DEFAULT_PORTS = {"http": 80, "https": 443}
# a URL that is its own url_key: lower-case scheme and host, a path, no '#', nothing to encode
PLAIN_URL = re.compile(r'(https?)://[a-z0-9.-]+(?::([1-9][0-9]*))?/[^\x00-\x20"#<>\x7f-\U0010ffff]*(?<!\?)\Z')


def idna_host(host):
    """bücher.de -> xn--bcher-kva.de, as browsers map it (UTS 46, IDNA 2008: faß.de is
    xn--fa-hia.de); Python's own codec is IDNA 2003, which sends faß.de to fass.de, another host.
    The 2003 mapping only for what IDNA 2008 refuses (symbols, as browsers still take some)."""
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        return host.encode("idna").decode("ascii")


def wire_url(url):
    """A URL as it is sent: a host such as bücher.de goes to IDNA (xn--bcher-kva.de), a space,
    a control character or a non-ASCII one is percent-encoded as UTF-8, as browsers do.
    ValueError (UnicodeError is one) for a URL that cannot be sent: a NUL byte, a bad host."""
    if "\x00" in url:
        raise ValueError("a NUL byte in the URL")
    url = re.sub(r"[\t\n\r]", "", url)
    if not UNSENDABLE.search(url):
        return url
    parts = urlsplit(url)
    if parts.hostname and not parts.hostname.isascii():
        user, at, _ = parts.netloc.rpartition("@")
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=user + at + idna_host(parts.hostname) + port)
    return UNSENDABLE.sub(lambda m: quote(m.group(), safe=""), urlunsplit(parts))


def url_key(url):
    """What a URL is compared by, for two spellings of one page (/café.html and /caf%C3%A9.html,
    HTTP://Example.org and http://example.org/, a #fragment, which is never sent): the URL as
    sent, with scheme and host in lower case, no default port and "/" for an empty path, as a
    browser's URL parser writes it. A URL that cannot be sent is its own key."""
    if (plain := PLAIN_URL.match(url)) and plain[2] != str(DEFAULT_PORTS[plain[1]]):
        return url  # most are their own key: a crawl asks for each link, in the fetching process
    try:
        parts = urlsplit(wire_url(url))
        port = parts.port
    except ValueError:
        return url
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    user, at, _ = parts.netloc.rpartition("@")
    port = f":{port}" if port and port != DEFAULT_PORTS.get(parts.scheme) else ""
    path = parts.path or ("/" if parts.scheme in DEFAULT_PORTS else "")
    return urlunsplit((parts.scheme, user + at + host + port, path, parts.query, ""))


def url_host(url):
    """The host a URL goes to, as url_key writes it (bücher.de and xn--bcher-kva.de are one)."""
    try:
        return urlsplit(url_key(url)).netloc.lower()
    except ValueError:  # a malformed URL ('http://[oops/'): dealt out too, and failed as bad_url
        return ""


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


def refusal(r, max_bytes, html_only, truncate):
    """Why a response's body is not wanted, seen from its headers, or None."""
    if r.status >= 300:
        return None
    mime = r.headers.get("content-type", "").split(";")[0].strip().lower()
    if html_only and mime and mime not in HTML_TYPES:
        return Failure("not_html", mime)
    if not truncate and int(r.headers.get("content-length", "0") or 0) > max_bytes:
        return Failure("too_large", f"Content-Length {r.headers['content-length']}")
    return None


class Fetcher:
    """HTTP for the URL modes: one thread runs every transfer through libcurl's multi interface
    (all of them at once, in C) and keeps the rules per host, as a crawler's frontier does: each
    host has a queue of requests, and a heap says whose turn comes next. args: connections,
    per_host, delay, user_agent, connect_timeout, read_timeout, fetch_timeout, retries, backoff,
    max_retry_wait, max_redirects, max_bytes.

    A page's way through: submit (robots.txt first, fetched once per host, the pages waiting on
    it) -> the host's queue -> its turn (--delay apart, at most --per_host at once, --connections
    in all) -> libcurl -> finish: retried later (connection errors, 429, 5xx), followed (a
    redirect: submitted again), or done."""

    def __init__(self, args):
        self.args = args
        # proxies from the environment (HTTPS_PROXY, NO_PROXY...), read once, and per host below
        self.proxies, self.hosts = urllib.request.getproxies(), {}
        ca_file = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().cafile
        options = [  # libcurl's settings for every request
            (pycurl.NOSIGNAL, 1), (pycurl.USERAGENT, args.user_agent), (pycurl.HTTPHEADER, ["Accept: */*"]),
            (pycurl.ACCEPT_ENCODING, "gzip, deflate"), (pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS),
            # the deadline: the whole request, connect, headers and body, however the server
            # drips them; and "silence" is under a byte a second for --read_timeout (whole seconds)
            (pycurl.TIMEOUT_MS, int(args.fetch_timeout * 1000)),
            (pycurl.CONNECTTIMEOUT_MS, int(min(args.connect_timeout, args.fetch_timeout) * 1000)),
            (pycurl.LOW_SPEED_LIMIT, 1), (pycurl.LOW_SPEED_TIME, max(1, math.ceil(args.read_timeout)))]
        if ca_file and os.path.exists(ca_file):  # the system's certificates, not the wheel's guess
            options.append((pycurl.CAINFO, ca_file))
        self.idle = []  # one handle per connection: each keeps its connections alive between requests
        for _ in range(args.connections):
            self.idle.append(pycurl.Curl())
            for option, value in options:
                self.idle[-1].setopt(option, value)
        self.multi, self.running = pycurl.CurlMulti(), 0
        self.turns, self.order = [], itertools.count()  # heap of (time, n, host): hosts with requests waiting
        self.unfinished = 0  # pages taken in and not yet done

    def host(self, url):
        parts = urlsplit(url)
        origin = "{0.scheme}://{0.netloc}".format(parts).lower()
        if origin not in self.hosts:
            proxy = self.proxies.get(parts.scheme, "")  # "" is none: libcurl then ignores the environment
            if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
                proxy = ""
            self.hosts[origin] = SimpleNamespace(
                origin=origin, queue=collections.deque(), active=0, next_time=0.0, delay=self.args.delay,
                in_turns=False, robots=None, waiting=[], proxy=proxy)
        return self.hosts[origin]

    # the loop --------------------------------------------------------------------------------

    def run(self, todo, done, room=lambda: True):
        """Fetch what comes from `todo` ((url, payload) pairs; None: stop once they are done), calling
        done(url, payload, outcome) for each, with outcome (final url, content type, body) or a
        Failure. room() says whether more may start: the caller's backlog of fetched pages."""
        self.done, stopping = done, False
        while not stopping or self.unfinished:
            while not stopping:  # new pages; wait for them only when there is nothing else to do
                try:
                    item = todo.get(timeout=0.05) if not (self.running or self.turns) else todo.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    self.unfinished += 1
                    self.submit(SimpleNamespace(url=item[0], asked=item[0], payload=item[1], kind="page",
                                                attempt=0, redirects=0))
            self.transfer(self.start_turns(room))

    def start_turns(self, room):
        """Start the requests whose turn has come; seconds until the next one's, at most 0.05."""
        now = time.monotonic()
        while self.turns and self.running < self.args.connections and room():
            when, _, h = self.turns[0]
            if when > now:
                return min(when - now, 0.05)
            heapq.heappop(self.turns)
            h.in_turns = False
            if h.next_time > now:  # pushed back since (it asked us to slow down)
                self.take_turn(h)
                continue
            if h.queue and h.active < self.args.per_host:
                self.start(h.queue.popleft())
                h.next_time = now + h.delay  # requests to one host start at least h.delay seconds apart
            self.take_turn(h)
        return 0.05

    def take_turn(self, h):
        """Put a host with requests waiting and a free slot in line for its next turn."""
        if not h.in_turns and h.queue and h.active < self.args.per_host:
            heapq.heappush(self.turns, (h.next_time, next(self.order), h))
            h.in_turns = True

    def transfer(self, timeout):
        """Let libcurl move bytes, waiting up to `timeout` for some; then handle what finished."""
        if not self.running:
            time.sleep(timeout)
            return
        while self.multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        finished = 0
        while True:
            left, ok, failed = self.multi.info_read()
            for curl in ok:
                self.finish(curl, 0, "")
            for curl, code, message in failed:
                self.finish(curl, code, message)
            finished += len(ok) + len(failed)
            if not left:
                break
        if not finished and self.multi.select(timeout) == 0:
            time.sleep(0.001)  # timed out, or no socket to wait on yet (then it returns at once)

    # one request -----------------------------------------------------------------------------

    def submit(self, job):
        """A page to fetch (new, or where a redirect points): after its host's robots.txt."""
        try:
            parts = urlsplit(job.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return self.page_done(job, Failure("bad_url", "only http and https URLs are fetched"))
        except ValueError as e:  # a malformed URL (a bad IPv6 address, a bad port)
            return self.page_done(job, Failure("bad_url", e))
        h = self.host(job.url)
        if h.robots is None:  # the host's first page: its robots.txt comes first
            h.robots = "loading"
            robots = SimpleNamespace(url=h.origin + "/robots.txt", kind="robots", for_host=h, attempt=0, redirects=0)
            self.enqueue(robots)
        if h.robots == "loading":
            h.waiting.append(job)
        elif h.robots.failure:  # the host is down or failing: its pages fail the same way, for now
            self.page_done(job, Failure(h.robots.failure["reason"], "robots.txt: " + h.robots.failure["detail"],
                                        transient=True))
        elif not h.robots.can_fetch(self.args.user_agent, job.url):
            self.page_done(job, Failure("robots", "disallowed by robots.txt"))
        else:
            self.enqueue(job)

    def enqueue(self, job):
        job.host = self.host(job.url)
        job.host.queue.append(job)
        self.take_turn(job.host)

    def start(self, job):
        """Hand a request to libcurl. take() receives the body as it comes and stops it at the cap
        (counted after decompression: a gzip bomb stops too) or when it is not wanted (an error
        page, not HTML, too large): the transfer is then hung up on, not read to its end."""
        max_bytes, html_only, truncate = ((ROBOTS_MAX_BYTES, False, True) if job.kind == "robots"
                                          else (self.args.max_bytes, True, False))
        r = job.response = SimpleNamespace(status=0, headers={}, body=b"", lines=[], chunks=[], size=0, refused=None)

        def take(chunk):  # returning 0 stops the transfer (libcurl's "write error")
            if not r.status:  # the first bytes of the body: the headers are all in
                r.status, r.headers = parse_head(r.lines)
                r.refused = refusal(r, max_bytes, html_only, truncate)
                if r.refused or r.status >= 300:
                    return 0
            r.chunks.append(chunk)
            r.size += len(chunk)
            return 0 if r.size > max_bytes else None

        try:
            url = wire_url(job.url)
        except ValueError as e:  # not sent: it costs this request, never the fetch thread
            done = self.robots_done if job.kind == "robots" else self.page_fetched
            return done(job, Failure("bad_url", e))
        job.limits = max_bytes, html_only, truncate
        curl = self.idle.pop()
        curl.job = job
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.PROXY, job.host.proxy)
        curl.setopt(pycurl.HEADERFUNCTION, r.lines.append)
        curl.setopt(pycurl.WRITEFUNCTION, take)
        self.multi.add_handle(curl)
        self.running += 1
        job.host.active += 1

    def finish(self, curl, code, message):
        """A transfer is over: try again later, or go on with what it gave."""
        job, h, a = curl.job, curl.job.host, self.args
        self.multi.remove_handle(curl)
        self.idle.append(curl)
        self.running -= 1
        h.active -= 1
        try:
            r, retry_after = self.outcome(job, curl, code, message), None
            if isinstance(r, Failure):
                failing = r.result["reason"] == "connection"  # refused, reset, DNS, a cut stream
            else:
                failing, retry_after = r.status == 429 or r.status >= 500, r.headers.get("retry-after")
            if failing and job.attempt < a.retries:  # worth another try, after a wait
                wait = retry_after_seconds(retry_after)
                wait = min(a.backoff * 2 ** job.attempt if wait is None else wait, a.max_retry_wait)
                h.next_time = max(h.next_time, time.monotonic() + wait)  # the whole host waits: it is struggling
                job.attempt += 1
                h.queue.appendleft(job)
            else:
                if failing and not isinstance(r, Failure):
                    r = Failure("server_error", f"HTTP {r.status}", transient=True)
                (self.robots_done if job.kind == "robots" else self.page_fetched)(job, r)
        except Exception as e:  # a bug here must cost a page (or a robots.txt), never the loop
            (self.robots_done if job.kind == "robots" else self.page_done)(job, Failure("fetch_error", repr(e)))
        self.take_turn(h)

    def outcome(self, job, curl, code, message):
        """The response (status, headers, body) or a Failure. Only a 'connection' failure, a 429
        or a 5xx is tried again."""
        a, r = self.args, job.response
        if code not in (0, pycurl.E_WRITE_ERROR):  # E_WRITE_ERROR: take() stopped it
            if code == pycurl.E_OPERATION_TIMEDOUT and curl.getinfo(pycurl.TOTAL_TIME) >= a.fetch_timeout - 0.01:
                return Failure("timeout", f"not done in {a.fetch_timeout}s", transient=True)
            if code in (pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL):
                return Failure("bad_url", message)
            # the request was sent, then the server went silent: no retry
            if code == pycurl.E_OPERATION_TIMEDOUT and curl.getinfo(pycurl.REQUEST_SIZE) > 0:
                return Failure("timeout", message, transient=True)
            return Failure("connection", message, transient=True)
        max_bytes, html_only, truncate = job.limits
        if not r.status:  # no body at all
            r.status, r.headers = parse_head(r.lines)
            r.refused = refusal(r, max_bytes, html_only, truncate)
        if r.refused:
            return r.refused
        if r.status < 300 and r.size > max_bytes and not truncate:
            return Failure("too_large", f"over {max_bytes} bytes")
        if r.status < 300:
            r.body = b"".join(r.chunks)[:max_bytes]
        return r

    def robots_done(self, job, r):
        """RFC 9309: a robots.txt that does not exist (4xx) allows everything; one that cannot be
        fetched (5xx, network, past the deadline) forbids everything for now. Up to 5 redirects are
        followed, and the first 500 KiB are obeyed, as Google does. The pages waiting go on."""
        robots, h = RobotFileParser(), job.for_host
        robots.failure = None
        if isinstance(r, Failure):  # for now if the host is failing; for good if robots.txt is odd
            robots.failure, robots.allow_all = (r.result, False) if r.result["transient"] else (None, True)
        elif redirect_target(r) is not None and job.redirects < 5:
            job.url, job.redirects, job.attempt = urljoin(job.url, redirect_target(r)), job.redirects + 1, 0
            return self.enqueue(job)
        elif r.status >= 300:
            robots.allow_all = True
        else:
            lines = r.body.decode("utf-8", errors="replace").splitlines()
            if len(r.body) == ROBOTS_MAX_BYTES:
                lines = lines[:-1]  # cut at the limit: its last line may be half a rule
            robots.parse(lines)
            crawl_delay = robots.crawl_delay(self.args.user_agent)
            if crawl_delay:
                h.delay = max(h.delay, min(float(crawl_delay), self.args.max_retry_wait))
        h.robots, waiting, h.waiting = robots, h.waiting, []
        for page in waiting:
            self.submit(page)

    def page_fetched(self, job, r):
        """Done, unless the page redirects (up to --max_redirects): then the new URL is submitted."""
        if not isinstance(r, Failure) and redirect_target(r) is not None:
            if job.redirects == self.args.max_redirects:
                return self.page_done(job, Failure("redirects", f"more than {self.args.max_redirects} redirects"))
            job.url, job.redirects, job.attempt = urldefrag(urljoin(job.url, redirect_target(r)))[0], job.redirects + 1, 0
            return self.submit(job)
        if not isinstance(r, Failure) and r.status >= 300:
            r = Failure("status", f"HTTP {r.status}")
        self.page_done(job, r if isinstance(r, Failure) else (job.url, r.headers.get("content-type", ""), r.body))

    def page_done(self, job, outcome):
        self.unfinished -= 1
        self.done(job.asked, job.payload, outcome)

    def open_file(self, url):
        """A whole file streamed (a WARC, a list of paths): redirects followed, no politeness
        (one request per file), the bytes as sent (a .gz stays gzipped); an error status is a
        Failure, transient for 5xx. Use as `with fetcher.open_file(url) as f: f.read(...)`. This is
        Python's own urllib: a stream to read at the reader's pace, where libcurl pushes the bytes;
        proxies from the environment as above."""
        redirects = urllib.request.HTTPRedirectHandler()
        redirects.max_redirections = self.args.max_redirects
        try:  # urllib, as libcurl, sends ASCII only
            request = urllib.request.Request(wire_url(url),
                                             headers={"User-Agent": self.args.user_agent})
        except ValueError as e:
            raise Failure("bad_url", f"{url}: {e}") from None
        try:
            return ResponseStream(urllib.request.build_opener(redirects).open(request, timeout=self.args.read_timeout))
        except urllib.error.HTTPError as e:
            e.close()
            raise Failure("status", f"HTTP {e.code} for {url}", transient=e.code >= 500) from None

    def fetch_page(self, url):
        """One page on its own, through the loop above: (final url, content type, body)."""
        todo, outcomes = queue.SimpleQueue(), []
        todo.put((url, None))
        todo.put(None)
        self.run(todo, lambda url, payload, outcome: outcomes.append(outcome))
        if isinstance(outcomes[0], Failure):
            raise outcomes[0]
        return outcomes[0]
