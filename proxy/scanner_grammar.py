"""The byte grammar of include markup: where it may start, how a tag reads, its attributes.

Compiled patterns and small pure functions over ``bytes`` that
:class:`~weaver.proxy.scanner.Scanner` applies; they hold no state and decide nothing
about chunking (the scanner does). Names are matched case-insensitively, CDATA markers
case-sensitively as in XML.
"""

from __future__ import annotations

import html
import re

CDATA_OPEN = b"<![CDATA["
_CDATA = rb"(?-i:!\[CDATA\[)"  # XML: case-sensitive, unlike the tag names
_COMMENT = rb"!--(?:esi)?"  # an HTML comment, or an ESI one (ESI 1.0 §3.7)
# An opaque section's opening token, lowercased, to the bytes that end it.
OPAQUE_ENDS = {b"<![cdata[": b"]]>", b"<!--": b"-->"}

# Where markup may start. Searched by the regex engine, so plain HTML costs one C loop (as
# long as every branch sits under the one leading "<": a top-level "|" costs a third).
START = re.compile(rb"<(?:/?esi:|" + _COMMENT + rb"|/?weaver-|" + _CDATA + rb")", re.I)
START_IN_COMMENT = re.compile(
    rb"<(?:/?esi:|" + _COMMENT + rb"|/?weaver-|" + _CDATA + rb")|-->", re.I
)
# Inside esi:remove only its end matters, and what could hide it or end an ESI comment.
IN_REMOVE = re.compile(rb"<(?:/esi:|" + _COMMENT + rb"|" + _CDATA + rb")", re.I)
IN_REMOVE_IN_COMMENT = re.compile(rb"<(?:/esi:|" + _COMMENT + rb"|" + _CDATA + rb")|-->", re.I)
# Every token the patterns above find holds one of these bytes, at most MARKER_REACH bytes
# after its first ("</weaver-": "-" 8 on; "-->": at 0), and is at most LONGEST_TOKEN long.
MARKERS = (b":", b"!", b"-")
MARKER_REACH = 8
LONGEST_TOKEN = 9  # "<![CDATA[", "</weaver-"
# find_start's credit, in bytes: each window that found nothing costs MISS_COST, each byte
# passed over earns one; below zero the regex runs alone (markers are too dense to pay).
START_CREDIT = 2048
MISS_COST = 512


def find_start(
    pattern: re.Pattern[bytes], data: bytes, pos: int, credit: int
) -> tuple[re.Match[bytes] | None, int]:
    """``pattern.search(data, pos)`` for the patterns above, found faster; and the credit left.

    The regex engine tries every ``<``, and HTML is mostly tags: 20 KB of it costs some
    50 µs. Every token holds a marker byte (:data:`MARKERS`), and ``bytes.find`` of one byte
    is a memchr: plain HTML is passed in a few µs. Each marker is looked at through a window
    that holds every token it may belong to: one starting at most :data:`MARKER_REACH`
    bytes before it (none can start earlier, since the marker is the first one from
    ``pos``), taken only if it starts at or before the marker (a later one may be cut off
    by the window; a later marker's window holds it whole). Where markers are dense (CSS,
    ``data-`` attributes), windows that find nothing would cost more than the regex: past
    ``credit`` the regex searches alone, and the credit returned is negative, so the
    caller stops asking for this chunk. The match is the one ``pattern.search`` finds.
    """
    if credit < 0:
        return pattern.search(data, pos), credit
    origin = pos
    colon, bang, dash = data.find(b":", pos), data.find(b"!", pos), data.find(b"-", pos)
    size = len(data)
    while True:
        marker = size
        if 0 <= colon < marker:
            marker = colon
        if 0 <= bang < marker:
            marker = bang
        if 0 <= dash < marker:
            marker = dash
        if marker == size:
            return None, credit + marker - origin
        low = max(pos, marker - MARKER_REACH)
        match = pattern.search(data, low, marker + LONGEST_TOKEN)
        if match is not None and match.start() <= marker:
            return match, credit + match.start() - origin
        credit -= MISS_COST
        if credit + marker - origin < 0:
            return pattern.search(data, low), -1
        pos = marker + 1
        if colon == marker:
            colon = data.find(b":", pos)
        if bang == marker:
            bang = data.find(b"!", pos)
        if dash == marker:
            dash = data.find(b"-", pos)


# Every token the patterns above find, lowercased: a chunk ending in a prefix of one waits.
PREFIXES = (b"<esi:", b"</esi:", b"<!--esi", b"<weaver-", b"</weaver-", b"<![cdata[", b"-->")
LONGEST_PREFIX = max(map(len, PREFIXES))

# A whole tag: group 1 "/" if closing, 2 the name, 3 the attributes, 4 "/" if empty.
TAG = re.compile(
    rb"<(/?)((?:esi:|weaver-)[a-z-]+)"
    rb"((?:\s+[^\s=/>\"'<]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?)*)"
    rb"\s*(/?)>",
    re.IGNORECASE,
)
_ATTR = re.compile(
    rb"([^\s=/>\"']+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'=<>`]+)))?", re.IGNORECASE
)
ESI_NAME = re.compile(rb"<(/?esi:[a-z-]*)", re.IGNORECASE)
TAG_STOP = re.compile(rb"[<>]")
# Inside a weaver-include: its end tag, or what could hide one (a comment, CDATA).
FALLBACK_TOKEN = re.compile(rb"<(?:/weaver-include\s*>|!--|" + _CDATA + rb")", re.I)


# The common tag, read in one match: an empty esi:include whose attributes are all
# double-quoted, holding nothing to unescape or decode. :func:`simple_include` reads it
# exactly as tag_end, TAG and parse_attrs would; anything else goes their way.
SIMPLE_INCLUDE = re.compile(
    rb'<esi:include((?:[ \t\r\n]+[a-z][a-z-]*="[^"<>&\x80-\xff]*")+)[ \t\r\n]*/>', re.I
)
_SIMPLE_ATTR = re.compile(rb'([a-z][a-z-]*)="([^"]*)"', re.I)


def simple_include(
    data: bytes, start: int, max_bytes: int
) -> tuple[tuple[tuple[str, str], ...], bytes, int] | None:
    """The attributes, bytes and end of a simple ``<esi:include …/>``
    (:data:`SIMPLE_INCLUDE`) at ``start`` ending within ``max_bytes``; None for any other
    markup."""
    match = SIMPLE_INCLUDE.match(data, start, start + max_bytes)
    if match is None:
        return None
    pairs = _SIMPLE_ATTR.findall(match.group(1))
    attrs = tuple((name.decode("ascii").lower(), value.decode("ascii")) for name, value in pairs)
    return attrs, match.group(), match.end()


def parse_attrs(text: bytes) -> tuple[tuple[str, str], ...]:
    """Attributes of a tag: names lowercased, values HTML-unescaped, booleans ``""``."""
    attrs: list[tuple[str, str]] = []
    for match in _ATTR.finditer(text):
        name = match.group(1).decode("utf-8", "replace").lower()
        raw = next((g for g in match.groups()[1:] if g is not None), b"")
        attrs.append((name, html.unescape(raw.decode("utf-8", "replace"))))
    return tuple(attrs)


def may_become_esi(data: bytes, end: int) -> bool:
    """After ``<!--`` at ``end``: could more data make it ``<!--esi``?"""
    rest = data[end:].lower()
    return len(rest) < 3 and b"esi".startswith(rest)


def tag_end(data: bytes, start: int, max_bytes: int) -> int | None:
    """The index after the ``>`` closing the tag at ``start``; a quoted ``>`` is a value.
    None if there is none within ``max_bytes`` of ``start`` (or before the data ends)."""
    limit = min(len(data), start + max_bytes)
    quote = 0
    for index in range(start + 1, limit):
        byte = data[index]
        if quote:
            if byte == quote:
                quote = 0
        elif byte == 0x3E:  # >
            return index + 1
        elif byte in (0x22, 0x27) and data[index - 1] in b" \t\r\n=":  # a value opens
            quote = byte
    return None


def safe_end(data: bytes, pos: int) -> int:
    """Where text from ``pos`` can be emitted up to: a possible markup start at the end of
    ``data`` (a prefix of a token in :data:`PREFIXES`) waits for more."""
    tail_from = max(pos, len(data) - LONGEST_PREFIX + 1)
    for index in range(tail_from, len(data)):
        rest = data[index:].lower()
        if rest[:1] in b"<-" and any(p.startswith(rest) for p in PREFIXES):
            return index
    return len(data)


def malformed_esi(data: bytes, start: int, max_bytes: int) -> tuple[str, int]:
    """An esi tag at ``start`` that cannot be read: its name (lowercased, ``"esi:"`` if
    none) and where it ends: through its first ``>``, or up to the next ``<``, or else at
    the bound (or the end of ``data``). Only the bytes within the bound are read, so the
    result does not depend on the chunking."""
    window_end = min(len(data), start + max_bytes)
    name = ESI_NAME.match(data, start, window_end)
    stop = TAG_STOP.search(data, start + 1, window_end)
    if stop is None:
        end = window_end
    else:
        end = stop.end() if stop.group() == b">" else stop.start()
    return (name.group(1).decode("ascii").lower() if name else "esi:"), end
