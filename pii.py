"""
pii.py: clean.py's last edit of a page: e-mail addresses and public IP addresses replaced by
placeholders, with datatrove's expressions and placeholders (FineWeb's PIIFormatter).
"""

import ipaddress
import re
from itertools import count

# datatrove's expressions and placeholders (e-mail domains reserved for examples; IPs that
# datatrove picked at random among addresses that did not answer a ping)

EMAIL_RE = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])")
# An address holds no whitespace, so EMAIL_RE runs on the chunks holding an '@' only: the same
# matches, and a chunk of thousands of characters (base64 data) cannot make it take quadratic time.
AT_CHUNK_RE = re.compile(r"(?<!\S)\S*@\S*")
# A longer chunk (a JSON blob, a list joined by commas) is searched between the characters no
# address holds, each run of the others on its own (a separator holds no '@': it is kept as it is);
# only a run of over 2,000 characters is skipped.
NOT_IN_ADDRESS_RE = re.compile(r"([^A-Za-z0-9!#$%&'*+/=?^_`{|}~.@\[\]:-]+)")
MAX_CHUNK = 2000
# unlike datatrove, not inside a longer word or dotted number: versions such as 1.2.3.4.5, v1.2.3.4
# or 2.20.1.155.g426c are no addresses (section numbers such as "14.3.4.3." still look like one)
IPV4_RE = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)(?!\.?\w)")
# a public IPv6 address starts with a non-zero group (2000::/3), never with "::"
IPV6_RE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{1,4}:(?:[0-9A-Fa-f]{0,4}:){1,6}[0-9A-Fa-f]{0,4}(?![\w:.])")
EMAIL_PLACEHOLDERS = ("email@example.com", "firstname.lastname@example.org")
IP_PLACEHOLDERS = ("22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206", "220.127.116.11", "18.104.22.168")


def is_public_ip(text):
    try:
        return ipaddress.ip_address(text).is_global  # private, loopback, reserved... stay as they are
    except ValueError:
        return False


def substitute(regex, text, placeholders, index, stats, key, keep=lambda match: True):
    """Replace each match that `keep` accepts by placeholder number next(index), cycling."""
    def replace(match):
        if not keep(match.group(0)):
            return match.group(0)
        stats[key] += 1
        return placeholders[next(index) % len(placeholders)]
    return regex.sub(replace, text)


def replace_pii(text, stats):
    """The placeholders cycle from the first in each document (datatrove cycles across documents,
    so its output depends on how documents are dealt to workers)."""
    if "@" in text:
        emails = count()

        def replace_emails(chunk):
            runs = [chunk] if len(chunk) <= MAX_CHUNK else NOT_IN_ADDRESS_RE.split(chunk)
            return "".join(substitute(EMAIL_RE, run, EMAIL_PLACEHOLDERS, emails, stats, "pii:email")
                           if "@" in run and len(run) <= MAX_CHUNK else run for run in runs)
        text = AT_CHUNK_RE.sub(lambda chunk: replace_emails(chunk.group()), text)
    ips = count()
    text = substitute(IPV4_RE, text, IP_PLACEHOLDERS, ips, stats, "pii:ip", is_public_ip)
    if "::" in text or text.count(":") >= 7:
        text = substitute(IPV6_RE, text, IP_PLACEHOLDERS, ips, stats, "pii:ip", is_public_ip)
    return text
