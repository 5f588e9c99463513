"""The include scanner: incremental over bytes, pure, never raises.

This module is its state machine, the one place that decides what a stream of chunks
means; the events it returns are in :mod:`~weaver.proxy.scanner_events`, the byte
grammar it applies in :mod:`~weaver.proxy.scanner_grammar`.

It finds ESI 1.0 markup (``<esi:include/>``, ``<esi:remove>…</esi:remove>``,
``<!--esi … -->``, ``<esi:comment/>``) and Weaver's own (``<weaver-include …>fallback
</weaver-include>``, ``<weaver-subscribe channel="c"/>``) in a stream fed in chunks of any
size, and returns events: :class:`Text` for the bytes between tags (byte for byte),
:class:`Include` and :class:`Subscribe` for the tags.

The output does not depend on the chunking: a possible tag at a chunk's end is held back
until decided, every limit counts from the tag's first byte, held-back bytes are bounded
(``max_tag_bytes`` a tag, ``max_body_bytes`` a fallback); ``esi:remove`` streams.

Decisions, checked against Varnish's ESI parser and its tests (``e00001``, ``e00002``,
``e00007``, ``e00008``, ``e00019``):

- A CDATA section (``<![CDATA[ … ]]>``, case-sensitive as in XML) is opaque: no markup
  inside it is processed. Outside ``esi:remove`` it passes through byte for byte, markers
  included, as Varnish does; inside ``esi:remove`` it is dropped with the rest, and a
  ``</esi:remove>`` inside it does not end the removal. It also hides a
  ``</weaver-include>`` inside a fallback. An unterminated CDATA runs to the end.
- An HTML comment (``<!-- … -->``) is opaque in the same way, as in Varnish: a commented-out
  ``<esi:include>`` is not fetched, and a ``</esi:remove>`` in a comment inside
  ``esi:remove`` does not end it. ``<!--->`` and ``<!-->`` are whole comments (HTML5). Only
  ``<!--esi … -->`` is processed (ESI 1.0 §3.7): its markers are dropped, its content
  scanned.
- Nothing in the ``esi:`` namespace is ever passed through as text. Elements Weaver does
  not implement (``esi:vars``, ``esi:try``, ``esi:incl``…) and malformed ones lose their
  tags (start, end or empty) and keep their content, as in Varnish: ``<esi:vars>`` content
  passes with its ``$(VAR)`` references unexpanded. A malformed esi tag is dropped through
  its first ``>``, or up to the next ``<``, or else to the bound or the end. An
  ``esi:include`` without ``src`` is dropped, as is a ``</esi:include>`` that does not
  directly follow an ``<esi:include …>``. An ``esi:remove`` never closed removes to the end.
  Each drop is counted in :attr:`Scanner.dropped` (see :class:`Drop`) so the caller can log
  once per document; the scanner does not log them itself.
- ``weaver-`` markup Weaver does not handle (``weaver-slot``…) passes through as text, and
  so does malformed or unterminated weaver markup (logged once per scanner): its first byte
  goes out and scanning resumes after it, so esi markup inside it is still handled.
"""

from __future__ import annotations

import logging
import re

from weaver.proxy.scanner_events import (
    Drop,
    DropReason,
    Event,
    Include,
    Subscribe,
    Text,
    format_drops,
)
from weaver.proxy.scanner_grammar import (
    CDATA_OPEN,
    FALLBACK_TOKEN,
    IN_REMOVE,
    IN_REMOVE_IN_COMMENT,
    LONGEST_PREFIX,
    OPAQUE_ENDS,
    START,
    START_CREDIT,
    START_IN_COMMENT,
    TAG,
    find_start,
    malformed_esi,
    may_become_esi,
    parse_attrs,
    safe_end,
    simple_include,
    tag_end,
)

# The events and the grammar live in their own modules; their names stay importable here.
__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DROP_KINDS",
    "MAX_TAG_BYTES",
    "Drop",
    "DropReason",
    "Event",
    "Include",
    "Scanner",
    "Subscribe",
    "Text",
    "format_drops",
    "parse_attrs",
]

log = logging.getLogger(__name__)

MAX_TAG_BYTES = 16 * 1024
MAX_BODY_BYTES = 256 * 1024
MAX_DROP_KINDS = 32  # distinct entries in Scanner.dropped; more are counted under "esi:*"


class Scanner:
    """Feed bytes, get events; :meth:`close` at the end of the stream.

    Args:
        max_tag_bytes: the longest tag waited for, from its ``<``.
        max_body_bytes: the longest weaver-include (tags and fallback) waited for.
    """

    def __init__(
        self, *, max_tag_bytes: int = MAX_TAG_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.max_tag_bytes = max_tag_bytes
        self.max_body_bytes = max(max_body_bytes, max_tag_bytes, LONGEST_PREFIX)
        self._held = b""
        self._in_esi_comment = False
        self._in_remove = False
        self._opaque_end: bytes | None = None  # inside CDATA or an HTML comment: its end
        self._is_include_open = False  # just after <esi:include …>: </esi:include> may follow
        self._includes = 0
        self._dropped: dict[Drop, int] = {}
        self._has_warned = False

    @property
    def held_bytes(self) -> int:
        """Bytes held back undecided; below ``max_body_bytes`` between calls."""
        return len(self._held)

    @property
    def dropped(self) -> dict[Drop, int]:
        """What was removed from the output so far, with counts, in first-seen order."""
        return dict(self._dropped)

    def feed(self, data: bytes) -> list[Event]:
        """Scan ``data``; returns the events it completes (maybe none). Never raises."""
        if self._held:
            data = self._held + data
            self._held = b""
        events: list[Event] = []
        self._scan(data, events, is_final=False)
        return events

    def close(self) -> list[Event]:
        """The end of the stream: what is held back is decided as if nothing followed."""
        data, self._held = self._held, b""
        events: list[Event] = []
        if data:
            self._scan(data, events, is_final=True)
        if self._in_remove:
            self._in_remove = False
            self._drop("esi:remove", DropReason.UNCLOSED)
        return events

    def _scan(self, data: bytes, events: list[Event], *, is_final: bool) -> None:
        pos = 0
        size = len(data)
        credit = START_CREDIT
        while pos < size:
            if self._opaque_end is not None:
                next_pos = self._opaque(data, pos, pos, events, is_final=is_final)
                if next_pos is None:
                    return
                pos = next_pos
                continue
            match, credit = find_start(self._pattern(), data, pos, credit)
            if match is None:
                end = size if is_final else safe_end(data, pos)
                self._emit(data[pos:end], events)
                self._held = data[end:]
                return
            start = match.start()
            if start > pos:
                self._emit(data[pos:start], events)
            token = match.group().lower()
            if token != b"</esi:":
                self._is_include_open = False
            if token == b"-->":
                self._in_esi_comment = False  # the end of <!--esi …-->: dropped
                pos = match.end()
            elif token == b"<!--esi":
                self._in_esi_comment = True  # ESI 1.0 §3.7: the contents are processed
                pos = match.end()
            elif token == b"<!--" and not is_final and may_become_esi(data, match.end()):
                self._held = data[start:]  # "<!--" "esi" split across chunks
                return
            elif token in OPAQUE_ENDS:
                self._opaque_end = OPAQUE_ENDS[token]
                # From "<!" on, so that "<!-->" and "<!--->" are whole comments (HTML5).
                search_from = start + 2 if token == b"<!--" else match.end()
                next_pos = self._opaque(data, start, search_from, events, is_final=is_final)
                if next_pos is None:
                    return
                pos = next_pos
            else:
                handle = self._remove_end if self._in_remove else self._tag
                next_pos = handle(data, start, events, is_final=is_final)
                if next_pos is None:
                    self._held = data[start:]
                    return
                pos = next_pos

    def _pattern(self) -> re.Pattern[bytes]:
        if self._in_remove:
            return IN_REMOVE_IN_COMMENT if self._in_esi_comment else IN_REMOVE
        return START_IN_COMMENT if self._in_esi_comment else START

    def _emit(self, data: bytes, events: list[Event]) -> None:
        """Text out, unless inside esi:remove; any text ends an open ``<esi:include>``."""
        if data:
            self._is_include_open = False
            if not self._in_remove:
                events.append(Text(data))

    def _opaque(
        self, data: bytes, start: int, search_from: int, events: list[Event], *, is_final: bool
    ) -> int | None:
        """Inside CDATA or a comment from ``start``: pass (or drop) up to its end; None
        when the data ran out first."""
        closer = self._opaque_end or b""
        close = data.find(closer, search_from)
        if close >= 0:
            self._opaque_end = None
            self._emit(data[start : close + len(closer)], events)
            return close + len(closer)
        end = len(data)
        if not is_final:  # "]" or "]]" ("-" or "--") at the end may begin the closer
            while end > search_from and closer.startswith(data[end - 1 : len(data)]):
                end -= 1
        self._emit(data[start:end], events)
        self._held = data[end:]
        return None

    def _remove_end(
        self, data: bytes, start: int, events: list[Event], *, is_final: bool
    ) -> int | None:
        """``</esi:…`` inside esi:remove: ``</esi:remove>`` ends it, anything else is content."""
        end = tag_end(data, start, self.max_tag_bytes)
        if end is None:
            if not is_final and len(data) - start < self.max_tag_bytes:
                return None
            return start + 1
        tag = TAG.fullmatch(data, start, end)
        if tag is not None and tag.group(2).lower() == b"esi:remove":
            self._in_remove = False
            return end
        return start + 1

    def _tag(self, data: bytes, start: int, events: list[Event], *, is_final: bool) -> int | None:
        """Handle the markup at ``start``; return where scanning goes on, None to wait."""
        is_esi = data[start + 1 : start + 3].lower() in (b"es", b"/e")
        if is_esi and (simple := simple_include(data, start, self.max_tag_bytes)) is not None:
            return self._esi(b"esi:include", *simple, events, is_closing=False, is_empty=True)
        end = tag_end(data, start, self.max_tag_bytes)
        if end is None:
            if not is_final and len(data) - start < self.max_tag_bytes:
                return None
            if is_esi:
                return self._drop_malformed(data, start)
            return self._malformed(data, start, events, "unterminated tag")
        raw = data[start:end]
        tag = TAG.fullmatch(raw)
        if tag is None:
            if is_esi:
                return self._drop_malformed(data, start)
            return self._malformed(data, start, events, "unreadable tag")
        is_closing, name = tag.group(1) == b"/", tag.group(2).lower()
        is_empty = tag.group(4) == b"/"
        attrs = parse_attrs(tag.group(3))
        if is_esi:
            return self._esi(
                name, attrs, raw, end, events, is_closing=is_closing, is_empty=is_empty
            )
        if is_closing:
            if name == b"weaver-subscribe":
                return end  # the optional closing tag of an element already handled
            return self._pass(data, start, events)
        if name == b"weaver-subscribe":
            channel = dict(attrs).get("channel")
            if not channel:
                return self._malformed(data, start, events, "weaver-subscribe without channel")
            events.append(Subscribe(channel))
            return end
        if name == b"weaver-include":
            if is_empty:
                return self._include(attrs, b"", data, start, end, events)
            return self._fallback(data, start, end, events, attrs, is_final=is_final)
        return self._pass(data, start, events)  # other weaver markup (weaver-slot…) is text

    def _esi(
        self,
        name: bytes,
        attrs: tuple[tuple[str, str], ...],
        raw: bytes,
        end: int,
        events: list[Event],
        *,
        is_closing: bool,
        is_empty: bool,
    ) -> int:
        """A well-formed tag in the esi: namespace: never text (ESI 1.0 §3)."""
        text = name.decode("ascii")
        if name == b"esi:include":
            if is_closing:
                if not self._is_include_open:
                    self._drop("/" + text, DropReason.STRAY_END_TAG)
                self._is_include_open = False
                return end
            self._is_include_open = not is_empty
            if not dict(attrs).get("src"):
                self._drop(text, DropReason.NO_SRC)
                return end
            events.append(Include("esi", attrs, b"", self._includes, raw))
            self._includes += 1
            return end
        self._is_include_open = False
        if name not in (b"esi:comment", b"esi:remove"):
            self._drop("/" + text if is_closing else text, DropReason.NOT_IMPLEMENTED)
        elif is_closing:
            self._drop("/" + text, DropReason.STRAY_END_TAG)
        elif name == b"esi:comment":
            if not is_empty:  # ESI 1.0 §3.4: an empty element
                self._drop(text, DropReason.MALFORMED)
        elif is_empty:  # esi:remove: an element with content
            self._drop(text, DropReason.MALFORMED)
        else:
            self._in_remove = True
        return end

    def _fallback(
        self,
        data: bytes,
        start: int,
        open_end: int,
        events: list[Event],
        attrs: tuple[tuple[str, str], ...],
        *,
        is_final: bool,
    ) -> int | None:
        """A weaver-include's fallback, up to its ``</weaver-include>`` outside CDATA and
        comments."""
        limit = start + self.max_body_bytes
        pos = open_end
        while True:
            token = FALLBACK_TOKEN.search(data, pos, limit)
            if token is not None and token.group() in (CDATA_OPEN, b"<!--"):
                is_comment = token.group() == b"<!--"
                closer = b"-->" if is_comment else b"]]>"
                close = data.find(closer, token.start() + 2 if is_comment else token.end(), limit)
                if close >= 0:
                    pos = close + len(closer)
                    continue
                token = None
            if token is None:
                if not is_final and len(data) < limit:
                    return None
                return self._malformed(data, start, events, "element without its closing tag")
            fallback = data[open_end : token.start()]
            return self._include(attrs, fallback, data, start, token.end(), events)

    def _include(
        self,
        attrs: tuple[tuple[str, str], ...],
        fallback: bytes,
        data: bytes,
        start: int,
        end: int,
        events: list[Event],
    ) -> int:
        """A weaver-include from ``start`` to ``end`` (its fallback included)."""
        if not dict(attrs).get("src"):
            return self._malformed(data, start, events, "include without src")
        events.append(Include("weaver", attrs, fallback, self._includes, data[start:end]))
        self._includes += 1
        return end

    def _pass(self, data: bytes, start: int, events: list[Event]) -> int:
        """Markup passed as text: its first byte goes out and what follows is scanned, so
        esi markup inside it (say in an attribute value) is handled like anywhere else."""
        events.append(Text(data[start : start + 1]))
        return start + 1

    def _drop_malformed(self, data: bytes, start: int) -> int:
        """Drop an esi tag that cannot be read (see :func:`malformed_esi`)."""
        name, end = malformed_esi(data, start, self.max_tag_bytes)
        self._drop(name, DropReason.MALFORMED)
        return end

    def _drop(self, name: str, reason: DropReason) -> None:
        drop = Drop(name[:40], reason)
        if drop not in self._dropped and len(self._dropped) >= MAX_DROP_KINDS:
            drop = Drop("esi:*", reason)
        self._dropped[drop] = self._dropped.get(drop, 0) + 1

    def _malformed(self, data: bytes, start: int, events: list[Event], why: str) -> int:
        """Give up on the weaver markup at ``start``: its first byte passes as text (the
        first time, a warning says why)."""
        if not self._has_warned:
            self._has_warned = True
            sample = data[start : start + 80]
            log.warning("malformed markup passed through as text (%s): %r", why, sample)
        return self._pass(data, start, events)
