"""HTTP/1.1 for the origin client, pure: reading the response an origin sends.

:mod:`weaver.proxy.origin_connection` does the I/O; this module takes bytes and returns
events, never raises on what an origin sent (a bad response is a
:class:`ParseError` event), and bounds what it buffers (the head at ``MAX_HEAD_BYTES``,
``MAX_FIELDS`` header fields, a chunk-size or trailer line at ``MAX_LINE_BYTES``). Bodies
pass through without being buffered: each :meth:`ResponseParser.feed` returns the body bytes
it was given, as slices of its input. RFC 9112 §2-§7 (message syntax, status line, fields,
body length, chunked coding), RFC 9110 §7.6.1 (Connection), §15.2 (1xx). The request side is
:mod:`weaver.proxy.http1_request`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from multidict import CIMultiDict, CIMultiDictProxy

MAX_HEAD_BYTES = 64 * 1024
MAX_FIELDS = 100
MAX_LINE_BYTES = 8 * 1024

_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Header fields, each ending in CRLF: a token, a colon, a value without control characters.
_FIELDS = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[\t ]*(?:;[^\r\n]*)?")
_DIGITS = re.compile(r"[0-9]{1,18}")


class BodyFraming(Enum):
    """How a response's body ends (RFC 9112 §6.3)."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A final (non-1xx) response head, and how its body is framed."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    framing: BodyFraming
    length: int  # for LENGTH; 0 otherwise
    is_keep_alive: bool  # the connection may carry another request after this response


class EndOfMessage:
    """The response ended; the connection is at a message boundary."""

    __slots__ = ()


END = EndOfMessage()


class Failure(Enum):
    """Why a response could not be read."""

    MALFORMED = "malformed"  # the origin sent something that is not HTTP/1.1
    CLOSED_BEFORE_HEAD = "closed before answering"  # no byte of a response came
    TRUNCATED = "body broke off"  # the connection closed before the framing said it ends


@dataclass(frozen=True, slots=True)
class ParseError:
    """The response cannot be read further; the connection must be closed."""

    failure: Failure
    detail: str


Event = ResponseHead | bytes | EndOfMessage | ParseError


class _State(Enum):
    HEAD = "head"
    LENGTH = "length"
    CHUNK_SIZE = "chunk-size"
    CHUNK_DATA = "chunk-data"
    CHUNK_END = "chunk-end"
    TRAILERS = "trailers"
    UNTIL_CLOSE = "until-close"
    DONE = "done"
    FAILED = "failed"


class ResponseParser:
    """Reads one response from the bytes a connection receives.

    Feed it what arrives; it returns events: one :class:`ResponseHead` (1xx heads are
    skipped), the body as ``bytes``, then :data:`END`, or a :class:`ParseError`, after
    which it returns nothing more. Bytes after the end are extra (``has_extra``): the
    connection cannot be reused. Chunk-invariant: any split of the input gives the same
    head and the same body bytes.
    """

    __slots__ = ("_has_bytes", "_head_skipped", "_is_head", "_pending", "_remaining", "_state")

    def __init__(self, method: str) -> None:
        self._is_head = method == "HEAD"
        self._state = _State.HEAD
        self._pending = b""  # an incomplete head or line, at most its bound
        self._remaining = 0  # body bytes left in a LENGTH body or the current chunk
        self._has_bytes = False
        self._head_skipped = 0  # bytes of 1xx heads skipped, counted against the bound

    @property
    def is_done(self) -> bool:
        return self._state is _State.DONE

    @property
    def has_bytes(self) -> bool:
        """Whether any byte of a response arrived."""
        return self._has_bytes

    @property
    def has_extra(self) -> bool:
        """Bytes came after the response ended (or it failed): do not reuse the connection."""
        return self._state is _State.FAILED

    def feed(self, data: bytes) -> list[Event]:
        """The events ``data`` completes (body bytes are slices of ``data``)."""
        events: list[Event] = []
        if not data or self._state is _State.FAILED:
            return events
        self._has_bytes = True
        if self._pending:
            data = self._pending + data
            self._pending = b""
        pos, size = 0, len(data)
        while pos < size:
            state = self._state
            if state is _State.LENGTH or state is _State.CHUNK_DATA:
                take = min(self._remaining, size - pos)
                events.append(data if take == size else data[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    if state is _State.LENGTH:
                        self._state = _State.DONE
                        events.append(END)
                    else:
                        self._state = _State.CHUNK_END
            elif state is _State.HEAD:
                pos = self._head(data, pos, events)
            elif state is _State.CHUNK_SIZE or state is _State.TRAILERS:
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > MAX_LINE_BYTES:
                        return self._fail(events, Failure.MALFORMED, "chunk line too long")
                    self._pending = data[pos:]
                    break
                line, pos = data[pos:end], end + 2
                if state is _State.TRAILERS:
                    if not line:
                        self._state = _State.DONE
                        events.append(END)
                    continue
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    return self._fail(events, Failure.MALFORMED, "bad chunk size")
                self._remaining = int(match.group(1), 16)
                self._state = _State.CHUNK_DATA if self._remaining else _State.TRAILERS
            elif state is _State.CHUNK_END:
                if size - pos < 2:
                    self._pending = data[pos:]
                    break
                if data[pos : pos + 2] != b"\r\n":
                    return self._fail(events, Failure.MALFORMED, "chunk not followed by CRLF")
                pos += 2
                self._state = _State.CHUNK_SIZE
            elif state is _State.UNTIL_CLOSE:
                events.append(data if pos == 0 else data[pos:])
                pos = size
            else:  # DONE: the origin sent more than the response
                self._state = _State.FAILED
                break
        return events

    def feed_eof(self) -> list[Event]:
        """The connection closed: the end of an until-close body, else a failure."""
        state = self._state
        if state is _State.UNTIL_CLOSE:
            self._state = _State.DONE
            return [END]
        if state is _State.DONE or state is _State.FAILED:
            return []
        if state is _State.HEAD and not self._has_bytes:
            return self._fail([], Failure.CLOSED_BEFORE_HEAD, "closed before answering")
        if state is _State.HEAD:
            return self._fail([], Failure.MALFORMED, "closed inside the head")
        return self._fail([], Failure.TRUNCATED, "body broke off")

    def _fail(self, events: list[Event], failure: Failure, detail: str) -> list[Event]:
        self._state = _State.FAILED
        self._pending = b""
        events.append(ParseError(failure, detail))
        return events

    def _head(self, data: bytes, pos: int, events: list[Event]) -> int:
        end = data.find(b"\r\n\r\n", pos)
        limit = MAX_HEAD_BYTES - self._head_skipped
        if end < 0:
            if len(data) - pos > limit:
                self._fail(events, Failure.MALFORMED, "head too large")
                return len(data)
            self._pending = data[pos:]
            return len(data)
        if end + 4 - pos > limit:
            self._fail(events, Failure.MALFORMED, "head too large")
            return len(data)
        head = _parse_head(data[pos:end].decode("latin-1"), self._is_head)
        if isinstance(head, str):
            self._fail(events, Failure.MALFORMED, head)
            return len(data)
        if head is None:  # 1xx: skipped, the final head follows (RFC 9110 §15.2)
            self._head_skipped += end + 4 - pos
            return end + 4
        events.append(head)
        framing = head.framing
        if framing is BodyFraming.NONE or (framing is BodyFraming.LENGTH and head.length == 0):
            self._state = _State.DONE
            events.append(END)
        elif framing is BodyFraming.LENGTH:
            self._state = _State.LENGTH
            self._remaining = head.length
        elif framing is BodyFraming.CHUNKED:
            self._state = _State.CHUNK_SIZE
        else:
            self._state = _State.UNTIL_CLOSE
        return end + 4


def _parse_head(text: str, is_head: bool) -> ResponseHead | str | None:
    """A final head, ``None`` for a 1xx, or what is wrong with it.

    Obsolete line folding, whitespace before a colon and control characters in values are
    malformed (RFC 9112 §5.1-§5.2 let a proxy reject them). Values with bytes above 0x7f
    are read as UTF-8 with surrogate escapes, as aiohttp's client reads them.
    """
    status_end = text.find("\r\n")
    status_line = _STATUS_LINE.fullmatch(text if status_end < 0 else text[:status_end])
    if status_line is None:
        return "bad status line"
    minor, code, reason = status_line.groups()
    status = int(code)
    if status < 200:
        return "unexpected 101 Switching Protocols" if status == 101 else None
    fields: list[tuple[str, str]] = []
    if status_end >= 0:
        block = text[status_end + 2 :] + "\r\n"
        if block.count("\r\n") > MAX_FIELDS:
            return "too many header fields"
        if _FIELDS.fullmatch(block) is None:  # one scan for the common, well-formed case
            return _field_problem(block)
        is_ascii = block.isascii()
        for line in block[:-2].split("\r\n"):
            name, _, value = line.partition(":")
            value = value.strip(" \t")
            if not is_ascii and not value.isascii():
                value = value.encode("latin-1").decode("utf-8", "surrogateescape")
            fields.append((name, value))
    headers = CIMultiDictProxy(CIMultiDict(fields))
    framing = _framing(headers, status, is_head)
    if framing is None:
        return "bad Content-Length"
    kind, length = framing
    tokens = (
        {t.strip().lower() for v in headers.getall("Connection") for t in v.split(",")}
        if "Connection" in headers
        else ()
    )
    # HTTP/1.0 and "close" end the connection (RFC 9112 §9.3); so does a body that ends
    # with it, and a message with both framings, whose length an attacker may have
    # smuggled (RFC 9112 §6.3 item 3).
    is_keep_alive = (
        minor == "1"
        and "close" not in tokens
        and kind is not BodyFraming.UNTIL_CLOSE
        and not ("Transfer-Encoding" in headers and "Content-Length" in headers)
    )
    return ResponseHead(status, reason or "", headers, kind, length, is_keep_alive)


def _field_problem(block: str) -> str:
    """What is wrong with a header block that :data:`_FIELDS` refused."""
    for line in block[:-2].split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon or _TOKEN.fullmatch(name) is None:
            return "bad header field"
        if _BAD_VALUE.search(value) is not None:
            return "control character in a header value"
    return "bad header field"  # a bare CR or LF


def _framing(
    headers: CIMultiDictProxy[str], status: int, is_head: bool
) -> tuple[BodyFraming, int] | None:
    """RFC 9112 §6.3: no body for HEAD, 204, 304; chunked when it is the last transfer
    coding; else Content-Length; else until the connection closes. ``None`` when the
    length cannot be known safely (differing or invalid Content-Length)."""
    if is_head or status in (204, 304):
        return BodyFraming.NONE, 0
    if "Transfer-Encoding" in headers:
        codings = [
            c.strip().lower() for v in headers.getall("Transfer-Encoding") for c in v.split(",")
        ]
        if codings and codings[-1] == "chunked":
            return BodyFraming.CHUNKED, 0
        return BodyFraming.UNTIL_CLOSE, 0
    if "Content-Length" not in headers:
        return BodyFraming.UNTIL_CLOSE, 0
    lengths = {v.strip() for value in headers.getall("Content-Length") for v in value.split(",")}
    if len(lengths) != 1:
        return None
    (length,) = lengths
    if _DIGITS.fullmatch(length) is None:
        return None
    return BodyFraming.LENGTH, int(length)
