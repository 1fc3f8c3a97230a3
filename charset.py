"""
A page's bytes as text, as a browser decides: the byte-order mark, then the HTTP header's charset,
then the page's own <meta> (or <?xml encoding>), then detection with Firefox's detector
(chardetng). Labels that the bytes contradict fall through to the next clue. Lies are common:
a page labelled latin-1 whose bytes are valid UTF-8 is UTF-8; a page labelled UTF-8 whose bytes are
not goes to detection; a utf-16 label without a byte-order mark is ignored. And looks_binary: a
body that is no text at all (an image or an archive served as text/html).

Both extractors read what decode_html makes of the same bytes, from a WARC or from the web.
"""

import contextlib
import itertools
import re
from urllib.parse import urlsplit

import chardetng_py

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
        if label.startswith(("utf-16", "utf-32", "utf16", "utf32")):
            continue  # a lie: UTF-16 text has a BOM (above) or NUL bytes. Browsers ignore it too
        with contextlib.suppress(LookupError, UnicodeError):  # UnicodeError: Python's 'undefined'
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
