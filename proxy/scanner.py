"""The include scanner: incremental over bytes, pure, never raises.

It finds ESI 1.0 markup (``<esi:include/>``, ``<esi:remove>…</esi:remove>``,
``<!--esi … -->``, ``<esi:comment/>``) and Weaver's own (``<weaver-include …>fallback
</weaver-include>``, ``<weaver-subscribe channel="c"/>``) in a stream fed in chunks of any
size, and returns events: :class:`Text` for the bytes between tags (byte for byte),
:class:`Include` and :class:`Subscribe` for the tags.

The output does not depend on the chunking: a possible tag at the end of a chunk is held
back until it can be decided, and every limit is measured from the tag's first byte, not
from a chunk boundary. Malformed or unterminated markup passes through as text (logged
once per scanner); held-back bytes are bounded by ``MAX_TAG_BYTES`` for a tag and
``MAX_BODY_BYTES`` for a body (``esi:remove``, a weaver-include's fallback).
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_TAG_BYTES = 16 * 1024
MAX_BODY_BYTES = 256 * 1024

# Where markup may start. Searched by the regex engine, so plain HTML costs one C loop.
_START = re.compile(rb"<(?:/?esi:|!--esi|/?weaver-)", re.IGNORECASE)
_START_IN_COMMENT = re.compile(rb"<(?:/?esi:|!--esi|/?weaver-)|-->", re.IGNORECASE)
_PREFIXES = (b"<esi:", b"</esi:", b"<!--esi", b"<weaver-", b"</weaver-")
_LONGEST_PREFIX = max(map(len, _PREFIXES))

_TAG = re.compile(
    rb"<(/?)((?:esi:|weaver-)[a-z-]+)"
    rb"((?:\s+[^\s=/>\"']+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?)*)"
    rb"\s*(/?)>",
    re.IGNORECASE,
)
_ATTR = re.compile(
    rb"([^\s=/>\"']+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'=<>`]+)))?", re.IGNORECASE
)
_WEAVER_INCLUDE_END = re.compile(rb"</weaver-include\s*>", re.IGNORECASE)
_ESI_REMOVE_END = re.compile(rb"</esi:remove\s*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Text:
    """Bytes outside any tag, exactly as the origin sent them."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Include:
    """An include tag. ``index`` counts the includes of this document from 0."""

    syntax: str  # "esi" or "weaver"
    attrs: tuple[tuple[str, str], ...]
    fallback: bytes
    index: int
    raw: bytes

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.attrs:
            if key == name:
                return value
        return default


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``<weaver-subscribe channel="c"/>``: the page's visitors are subscribed to ``c``."""

    channel: str


Event = Text | Include | Subscribe


def parse_attrs(text: bytes) -> tuple[tuple[str, str], ...]:
    """Attributes of a tag: names lowercased, values HTML-unescaped, booleans ``""``."""
    attrs: list[tuple[str, str]] = []
    for match in _ATTR.finditer(text):
        name = match.group(1).decode("utf-8", "replace").lower()
        raw = next((g for g in match.groups()[1:] if g is not None), b"")
        attrs.append((name, html.unescape(raw.decode("utf-8", "replace"))))
    return tuple(attrs)


class Scanner:
    """Feed bytes, get events; :meth:`close` at the end of the stream."""

    def __init__(self) -> None:
        self._held = b""
        self._in_esi_comment = False
        self._includes = 0
        self._has_warned = False

    def feed(self, data: bytes) -> list[Event]:
        """Scan ``data``; returns the events it completes (maybe none). Never raises."""
        if self._held:
            data = self._held + data
            self._held = b""
        events: list[Event] = []
        self._scan(data, events, is_final=False)
        return events

    def close(self) -> list[Event]:
        """The end of the stream: whatever is held back passes through as text."""
        data, self._held = self._held, b""
        events: list[Event] = []
        if data:
            self._scan(data, events, is_final=True)
        return events

    def _scan(self, data: bytes, events: list[Event], *, is_final: bool) -> None:
        pos = 0
        size = len(data)
        while pos < size:
            pattern = _START_IN_COMMENT if self._in_esi_comment else _START
            match = pattern.search(data, pos)
            if match is None:
                end = size if is_final else self._safe_end(data, pos)
                if end > pos:
                    events.append(Text(data[pos:end]))
                self._held = data[end:]
                return
            start = match.start()
            if start > pos:
                events.append(Text(data[pos:start]))
            token = match.group().lower()
            if token == b"-->":
                self._in_esi_comment = False  # the end of <!--esi …-->: dropped
                pos = match.end()
            elif token == b"<!--esi":
                self._in_esi_comment = True  # ESI 1.0 §3.7: the contents are processed
                pos = match.end()
            else:
                next_pos = self._tag(data, start, events, is_final=is_final)
                if next_pos is None:
                    self._held = data[start:]
                    return
                pos = next_pos

    def _safe_end(self, data: bytes, pos: int) -> int:
        """Where text can be emitted up to: a possible markup start at the end waits."""
        tail_from = max(pos, len(data) - _LONGEST_PREFIX + 1)
        for index in range(tail_from, len(data)):
            rest = data[index:].lower()
            if rest[:1] == b"<" and any(p.startswith(rest) for p in _PREFIXES):
                return index
            if self._in_esi_comment and b"-->".startswith(rest):
                return index
        return len(data)

    def _tag(self, data: bytes, start: int, events: list[Event], *, is_final: bool) -> int | None:
        """Handle the markup at ``start``; return where scanning goes on, None to wait."""
        end = _tag_end(data, start)
        if end is None:
            if not is_final and len(data) - start < MAX_TAG_BYTES:
                return None
            return self._malformed(data, start, events, "unterminated tag")
        raw = data[start:end]
        tag = _TAG.fullmatch(raw)
        if tag is None:
            return self._malformed(data, start, events, "unreadable tag")
        is_closing, name = tag.group(1) == b"/", tag.group(2).lower()
        is_empty = tag.group(4) == b"/"
        attrs = parse_attrs(tag.group(3))
        if is_closing:
            if name in (b"esi:include", b"weaver-subscribe"):
                return end  # the optional closing tag of an element already handled
            return self._text(raw, events, end)
        if name == b"esi:include":
            return self._include("esi", attrs, b"", raw, events, end)
        if name == b"esi:comment":
            return end
        if name == b"weaver-subscribe":
            channel = dict(attrs).get("channel")
            if not channel:
                return self._malformed(data, start, events, "weaver-subscribe without channel")
            events.append(Subscribe(channel))
            return end
        if name == b"esi:remove":
            return self._body(data, start, end, _ESI_REMOVE_END, events, is_final, None)
        if name == b"weaver-include":
            if is_empty:
                return self._include("weaver", attrs, b"", raw, events, end)
            return self._body(data, start, end, _WEAVER_INCLUDE_END, events, is_final, attrs)
        return self._text(raw, events, end)  # other markup (esi:try, weaver-slot…) is text

    def _body(
        self,
        data: bytes,
        start: int,
        open_end: int,
        closer: re.Pattern[bytes],
        events: list[Event],
        is_final: bool,
        attrs: tuple[tuple[str, str], ...] | None,
    ) -> int | None:
        """An element with a body: ``esi:remove`` (dropped) or a weaver-include's fallback."""
        limit = start + MAX_BODY_BYTES
        close = closer.search(data, open_end, limit)
        if close is None:
            if not is_final and len(data) < limit:
                return None
            return self._malformed(data, start, events, "element without its closing tag")
        if attrs is not None:
            fallback = data[open_end : close.start()]
            raw = data[start : close.end()]
            return self._include("weaver", attrs, fallback, raw, events, close.end())
        return close.end()

    def _include(
        self,
        syntax: str,
        attrs: tuple[tuple[str, str], ...],
        fallback: bytes,
        raw: bytes,
        events: list[Event],
        end: int,
    ) -> int:
        if not dict(attrs).get("src"):
            self._warn("include without src", raw)
            events.append(Text(raw))
            return end
        events.append(Include(syntax, attrs, fallback, self._includes, raw))
        self._includes += 1
        return end

    def _text(self, raw: bytes, events: list[Event], end: int) -> int:
        events.append(Text(raw))
        return end

    def _malformed(self, data: bytes, start: int, events: list[Event], why: str) -> int:
        """Give up on the markup at ``start``: its first byte passes as text, scan on."""
        self._warn(why, data[start : start + 80])
        events.append(Text(data[start : start + 1]))
        return start + 1

    def _warn(self, why: str, sample: bytes) -> None:
        if not self._has_warned:
            self._has_warned = True
            log.warning("malformed markup passed through as text (%s): %r", why, sample)


def _tag_end(data: bytes, start: int) -> int | None:
    """The index after the ``>`` closing the tag at ``start``; a quoted ``>`` is a value."""
    limit = min(len(data), start + MAX_TAG_BYTES)
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
