"""
Reading WARC and WET files (Common Crawl's formats) with fastwarc, for scrape.py: which local files
a --warc path means, the records of a stream as extraction tasks, and a local .warc.gz cut into
chunks that the workers read themselves.

A .warc.gz is one gzip member per record. So a file can be cut anywhere, by byte offset: the chunk
[start, end) holds the records whose member starts in it, and its reader finds its first member
by looking for gzip's magic bytes at or after `start` and checking that a whole member (CRC
included) that begins with 'WARC/' starts there. The same search resumes reading after a damaged
stretch; in an uncompressed .warc, the next 'WARC/1.x' line after a blank one. Chunk boundaries
depend on the file alone, so the output does not depend on --workers.
"""

import contextlib
import glob
import os
import re
import zlib
from pathlib import Path

from fastwarc.warc import ArchiveIterator, WarcHeader, WarcRecordType

from fetch import HTML_TYPES, failure, now_iso

CHUNK_BYTES = 2_000_000  # of compressed WARC per chunk: ~300 documentation pages, ~80 Common Crawl records


def local_warc_files(path):
    """The WARC/WET files at a local path: the file as written (a glob would take 'crawl [2024]/'
    as a pattern), those in a folder and its subfolders (a Common Crawl mirror keeps a folder per
    segment), in any case of name (B.WARC.GZ), or a glob's matches."""
    if os.path.isdir(path):
        return sorted(str(p) for p in Path(path).rglob("*")
                      if re.search(r"\.(warc|wet)(\.gz)?$", p.name, re.I) and p.is_file())
    return [path] if os.path.isfile(path) else sorted(glob.glob(path))


def warc_chunks(path, size, source, max_bytes):
    """A local .warc.gz as chunks for the workers to read, numbered in order."""
    return [{"warc": path, "start": start, "end": start + CHUNK_BYTES, "source": source, "max_bytes": max_bytes,
             "batch": number, "failed": {}} for number, start in enumerate(range(0, size, CHUNK_BYTES))]


def one_member_per_record(f, size):
    """Whether a .warc.gz can be cut into chunks: its first gzip member holds a whole WARC record
    and ends before the file does. A WARC gzipped whole (`gzip crawl.warc`) or a plain WARC named
    .gz cannot (no chunk after the first would find a record: they would be lost); it is read as a
    stream instead. A file of one record, or with its first record damaged, streams as well."""
    end = member_end(f, 0)
    f.seek(0)
    return end is not None and end < size


def read_chunk(chunk):
    """The tasks of a chunk, read in the worker; pages marked failed on an earlier try keep that."""
    with open(chunk["warc"], "rb") as f:
        # the first record that starts here, whole or not: a damaged one is this chunk's to report
        begin = 0 if chunk["start"] == 0 else next_warc_member(f, chunk["start"], whole=False)
        if begin is None or begin >= chunk["end"]:
            return []
        f.seek(begin)
        tasks = list(warc_pages(f, chunk["warc"], chunk["source"], chunk["max_bytes"], begin, chunk["end"]))
        # fastwarc ends without a word at a last record cut in its WARC headers (a response is
        # then "not HTTP", a WET record is not read at all): bytes after the last whole record
        # of the chunk that no error line accounts for are lost, and said so
        last = tasks[-1] if tasks else {"warc_pos": begin, "result": {}}
        reported = last.get("result", {}).get("reason") in ("warc_truncated", "warc_unreadable")
        lost_from = unread_tail(f, last["warc_pos"], chunk["end"], reported)
        if lost_from is not None:
            detail = f"bytes {lost_from} to the end of {chunk['warc']} unreadable (a record cut short)"
            tasks.append({"url": chunk["warc"], "source": chunk["source"], "pages": 0, "warc_pos": lost_from,
                          "result": failure("warc_unreadable", detail)})
    for page, result in chunk["failed"].items():
        if page < len(tasks):
            tasks[page]["result"] = result
    return tasks


PAGE_RECORDS = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion


def warc_pages(stream, path, source, max_bytes, offset=0, end=None):
    """One extraction task per page of a WARC stream, record by record: HTML responses (and
    resources), and WET conversion records, whose text is already extracted; with `end`, the pages
    of the records that start before it (a chunk). A record cut short, in its HTTP headers too (its
    status and type are then what was left of them), is a 'warc_truncated' error, never a document
    of any kind. A local WARC that turns unreadable is read again from its next whole record
    (.warc.gz) or next record header (.warc), and the bytes lost are a 'warc_unreadable' error."""
    remote = path.startswith(("http://", "https://"))
    while True:
        position = offset
        try:
            # pages only: fastwarc skips requests, metadata, warcinfo and revisits without making
            # Python objects of them; a chunk still stops at the first page of the next one
            for rec in ArchiveIterator(stream, record_types=PAGE_RECORDS, parse_http=True):
                position = rec.stream_pos  # from the start of the file, wherever reading began
                if end is not None and position >= end:
                    return
                # headers by fastwarc's names for them: a str key costs it ~10x more (~15 us a look-up)
                task = {"url": rec.headers.get(WarcHeader.WARC_TARGET_URI), "source": source, "warc_pos": position,
                        "fetched_at": rec.headers.get(WarcHeader.WARC_DATE) or now_iso()}
                if task["url"] and task["url"][0] == "<" and task["url"][-1] == ">":
                    task["url"] = task["url"][1:-1]  # <http://...>, as wget 1.19 wrote it
                if not task["url"]:  # malformed: no URL to name a document (and its id) by
                    detail = f"no WARC-Target-URI in the record at byte {position}"
                    task.update(url=path, result=failure("no_url", detail))
                    yield task
                    continue
                if rec.record_type == WarcRecordType.conversion:
                    text = rec.reader.read()
                    task["text"] = text.decode("utf-8", errors="replace")
                    if len(text) < rec.content_length:
                        task["result"] = failure("warc_truncated", f"record cut after {len(text)} of "
                                                 f"{rec.content_length} bytes, at byte {position} of {path}")
                    yield task
                    continue
                response = rec.record_type == WarcRecordType.response
                headers = rec.http_headers if response else rec.headers
                status = headers.status_code if response and headers is not None else 200
                content_type = headers.get(WarcHeader.CONTENT_TYPE) if headers is not None else None
                mime = (content_type or "").split(";")[0].strip().lower()
                wanted = headers is not None and status == 200 and mime in HTML_TYPES
                body = rec.reader.read(max_bytes + 1) if wanted else b""
                # whether the record is whole, before what it says is believed: one cut in its HTTP
                # headers reads as 'HTTP 20' or 'text/ht'. The rest is skipped, not copied (fastwarc
                # reads it anyway to reach the next record)
                present = len(body) + rec.reader.consume()
                if present < rec.content_length:
                    task["result"] = failure("warc_truncated", cut_detail(rec, present, position, path))
                elif headers is None:
                    continue  # a response record that is not HTTP (dns:, ftp:)
                elif status != 200:
                    task["result"] = failure("status", f"HTTP {status}")
                elif mime not in HTML_TYPES:
                    task["result"] = failure("not_html", mime)
                elif len(body) > max_bytes:
                    task["result"] = failure("too_large", f"over {max_bytes} bytes")
                elif (body := http_decoded(body, headers, max_bytes)) is None:
                    task["result"] = failure("bad_encoding", "does not decode (or is over "
                                             f"{max_bytes} bytes inflated)")
                else:
                    task.update(body=body, content_type=content_type)
                yield task
            # fastwarc ends quietly at a record cut in its headers (read_chunk checks a .warc.gz)
            if not remote and not path.endswith(".gz") and (lost_from := plain_tail(stream, position)):
                yield {"url": path, "source": source, "pages": 0, "warc_pos": lost_from, "result": failure(
                    "warc_unreadable", f"bytes {lost_from} to the end of {path} unreadable (a record cut short)")}
            return
        except OSError as e:
            if remote:
                raise  # over the network: the download is retried whole
            # lost: from the end of the last good record to the next whole one
            gz = path.endswith(".gz")
            lost_from = (member_end(stream, position) or position) if gz else position
            if end is not None and lost_from >= end:
                return  # the damage starts in the next chunk: it is that chunk's to report
            after = max(lost_from, position + 1)
            resume = next_warc_member(stream, after) if gz else next_plain_record(stream, after)
            lost = f"bytes {lost_from} to {resume if resume is not None else 'the end'}"
            yield {"url": path, "source": source, "pages": 0, "warc_pos": lost_from,
                   "result": failure("warc_unreadable", f"{lost} of {path} unreadable ({e})")}
            if resume is None:
                return
            stream.seek(resume)
            offset = resume


def cut_detail(rec, present, position, path):
    """Where a record was cut, in bytes of its WARC block (Content-Length), HTTP headers included:
    fastwarc's content_length is what it found after the HTTP headers it could parse."""
    try:
        block = int(rec.headers.get(WarcHeader.CONTENT_LENGTH))
    except (TypeError, ValueError):
        block = rec.content_length
    got = block - rec.content_length + present
    return f"record cut after {got} of {block} bytes, at byte {position} of {path}"


def http_decoded(body, headers, max_bytes):
    """The payload as the page: a WARC written from the wire (wget, Heritrix, warcprox) keeps it as
    the server sent it, chunked and gzipped. Bytes that are not encoded stay as they are, whatever
    the headers say: older Common Crawl files hold the payload decoded under the original headers
    (newer ones rename them X-Crawler-*). None if it is cut short, or inflates to over max_bytes."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        body = unchunked(body)
        if body is None:
            return None
    coding = (headers.get("Content-Encoding") or "").strip().lower()
    if coding in ("gzip", "x-gzip", "deflate"):
        inflated = None
        with contextlib.suppress(zlib.error):  # 47: a gzip or zlib header; -15: raw deflate
            inflate = zlib.decompressobj(wbits=47 if body[:1] in (b"\x1f", b"\x78") else -15)
            inflated = inflate.decompress(body, max_bytes + 1)
        if inflated is not None and inflate.eof and len(inflated) <= max_bytes:
            return inflated
        if body[:2] == b"\x1f\x8b" or body[:1] == b"\x78":  # compressed, and broken or too large
            return None
    elif coding not in ("", "identity") and body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] != b"<":
        return None  # br, zstd: no decoder here, and these bytes are not HTML as they are
    return body


def unchunked(body):
    """The bytes of a chunked body; the body as it is if it does not start as one; None if it is
    cut short."""
    chunks, i = [], 0
    while True:  # size in hex (maybe ';extensions'), CRLF, the bytes, CRLF; a size 0 ends it
        j = body.find(b"\n", i)
        try:
            size = int(body[i:j].split(b";")[0], 16) if j >= 0 else -1
        except ValueError:
            size = -1
        if size == 0:
            return b"".join(chunks)
        end = body.find(b"\n", j + 1 + size) if size > 0 else -1  # the CRLF after the bytes
        if end < 0:
            return None if chunks or size > 0 else body
        chunks.append(body[j + 1:j + 1 + size])
        i = end + 1


def next_warc_member(f, start, whole=True):
    """Where the first gzip member holding a WARC record starts, at or after `start`, or None. A
    candidate (gzip's magic bytes) must inflate to bytes that begin with 'WARC/'; with `whole`, to
    its end with a good CRC too, so that a damaged member is passed over. (The magic bytes occur by
    chance inside compressed data; inflating to 'WARC/' from there does not.)"""
    while True:
        f.seek(start)
        window = f.read(1 << 20)
        if len(window) < 3:
            return None
        i = window.find(b"\x1f\x8b\x08")
        while i >= 0:
            if (member_end(f, start + i) if whole else member_head(f, start + i)) is not None:
                return start + i
            i = window.find(b"\x1f\x8b\x08", i + 1)
        start += len(window) - 2


def next_plain_record(f, start):
    """Where the next record of an uncompressed WARC starts, at or after `start`, or None: a
    'WARC/1.x' line after the blank line that ends every record. (A page quoting a WARC could hold
    one; reading from there fails again, and the search goes on past it.)"""
    marker = b"\r\n\r\nWARC/1."
    while True:
        f.seek(start)
        window = f.read(1 << 20)
        if len(window) < len(marker):
            return None
        i = window.find(marker)
        if i >= 0:
            return start + i + 4
        start += len(window) - len(marker) + 1


def unread_tail(f, position, end, reported):
    """Where the bytes of a .warc.gz chunk that were never read begin, or None: after the record
    at `position` (its own loss already `reported`, if it is cut), and past the whole members that
    follow it (requests, metadata), the rest up to `end` (the next chunk's, after that)."""
    size = f.seek(0, 2)
    following = member_end(f, position)
    if following is None:
        return None if reported or position >= size else position
    while following < min(size, end) and (after := member_end(f, following)) is not None:
        following = after
    return following if following < min(size, end) else None


def plain_tail(f, position):
    """Where a record of an uncompressed WARC that fastwarc stopped at in silence starts (cut in
    its header), or None: the header of the last record read from `position`, whatever its type,
    must end (a record cut later is warc_truncated, or no page)."""
    last = None
    f.seek(position)
    with contextlib.suppress(OSError):  # damage is warc_pages's to report
        for rec in ArchiveIterator(f, parse_http=False):
            last = rec.stream_pos, rec.content_length
    if last is None:
        return None
    f.seek(last[0])
    return last[0] if b"\r\n\r\n" not in f.read(1 << 16) else None


def member_head(f, offset):
    """The first bytes of the gzip member at `offset`, if they begin a WARC record; else None."""
    f.seek(offset)
    with contextlib.suppress(zlib.error):
        head = zlib.decompressobj(wbits=31).decompress(f.read(4096), 8)
        return head if head.startswith(b"WARC/") else None
    return None


def member_end(f, offset):
    """Where the gzip member at `offset` ends, if it is whole and holds a WARC record; else None."""
    f.seek(offset)
    inflate, head, read = zlib.decompressobj(wbits=31), b"", 0  # 31: one gzip member, CRC checked
    while not inflate.eof:
        data = f.read(65536)
        if not data:
            return None
        read += len(data)
        try:
            while data and not inflate.eof:  # at most 1 MB out at a time: a gzip bomb stays small
                head = head or inflate.decompress(data, 1 << 20)[:8]
                data = inflate.unconsumed_tail
        except zlib.error:
            return None
    return offset + read - len(inflate.unused_data) if head.startswith(b"WARC/") else None
