"""The heads of a proxied Upgrade request, pure: what Weaver sends, how it reads the answer.

:mod:`weaver.proxy.upgrade` does the I/O; this module takes bytes and values and returns
bytes and values, never raises on what a peer sent (a malformed head is ``None``), and
holds no state. RFC 9110 §7.8 (Upgrade), §7.6.1 (hop-by-hop), RFC 9112 §4-§7 (message
syntax, body length, chunked coding), RFC 7239 (Forwarded), RFC 6455 §4 (the WebSocket
handshake: its ``Sec-WebSocket-*`` headers pass through untouched).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from multidict import CIMultiDict, MultiMapping

from weaver.proxy.forwarding import Peer, add_forwarding
from weaver.proxy.http1 import BodyFraming
from weaver.session.auth import strip_session_cookie

# Not forwarded from the visitor: the hop-by-hop headers (RFC 9110 §7.6.1) other than
# Upgrade, Connection (Weaver writes its own ``Connection: Upgrade``), Host (the origin's),
# and the forwarding headers, which Weaver replaces so a visitor cannot forge them.
_NOT_FORWARDED = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
    }
)

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[\t ]*(?:;[^\r\n]*)?")
_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """An origin's response head: parsed, and the exact bytes it came as."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    raw: bytes

    def values(self, name: str) -> list[str]:
        lower = name.lower()
        return [value for key, value in self.headers if key.lower() == lower]


def connection_tokens(values: Iterable[str]) -> frozenset[str]:
    """The lower-cased tokens of one or more ``Connection`` header values."""
    return frozenset(
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    )


def is_upgrade_request(headers: MultiMapping[str]) -> bool:
    """Whether a request asks to switch protocols: RFC 9110 §7.8 (an ``Upgrade`` header,
    named in ``Connection`` so that it is meant for this hop)."""
    has_upgrade = any(value.strip() for value in headers.getall("Upgrade", ()))
    return has_upgrade and "upgrade" in connection_tokens(headers.getall("Connection", ()))


def authority(scheme: str, host: str, port: int) -> str:
    """``host[:port]`` for a Host header; the port is left out when it is the default."""
    shown = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
    default = 443 if scheme == "https" else 80
    return shown if port == default else f"{shown}:{port}"


def origin_request_head(
    method: str,
    target: str,
    raw_headers: Sequence[tuple[bytes, bytes]],
    *,
    host: str,
    peer: Peer,
    is_chunked: bool = False,
) -> bytes:
    """The request head Weaver sends the origin for a visitor's upgrade request.

    The visitor's end-to-end headers go byte for byte in their order, with the two that
    make the upgrade (``Connection: Upgrade``, ``Upgrade``); headers named in the
    visitor's ``Connection`` are dropped (RFC 9110 §7.6.1), as is Weaver's session
    cookie. ``X-Forwarded-*`` and ``Forwarded`` describe the visitor's connection to
    Weaver, replacing what the visitor sent.

    Args:
        method: the request method, as received.
        target: the request target, as received (plus the origin's path prefix).
        raw_headers: the visitor's headers as received (name, value) bytes.
        host: the Host header for the origin (see :func:`authority`).
        peer: the visitor's peer address, scheme and Host (and whether it is trusted).
        is_chunked: the body follows in the chunked coding.

    Returns:
        The head, ending with the empty line.
    """
    named: set[bytes] = set()
    for name, value in raw_headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    named.discard(b"upgrade")
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), b"Host: " + host.encode("ascii")]
    for name, value in raw_headers:
        lower = name.lower()
        if lower in _NOT_FORWARDED or lower in named:
            continue
        if lower == b"content-length" and is_chunked:
            continue
        if lower == b"cookie":
            kept = strip_session_cookie(value.decode("latin-1"))
            if kept is None:
                continue
            value = kept.encode("latin-1")
        lines.append(name + b": " + value)
    lines.append(b"Connection: Upgrade")
    if is_chunked:
        lines.append(b"Transfer-Encoding: chunked")
    received = CIMultiDict((n.decode("latin-1"), v.decode("latin-1")) for n, v in raw_headers)
    forwarding: CIMultiDict[str] = CIMultiDict()
    add_forwarding(forwarding, received, peer, include_peer=True)
    for name_text, value_text in forwarding.items():
        lines.append(f"{name_text}: {value_text}".encode("latin-1", "replace"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def parse_response_head(raw: bytes) -> ResponseHead | None:
    """Parse a response head ending with the empty line; ``None`` if it is malformed.

    Obsolete line folding and whitespace before a colon are malformed here (RFC 9112
    §5.1-§5.2 allow a proxy to reject them), as are control characters in values.
    """
    if not raw.endswith(b"\r\n\r\n"):
        return None
    lines = raw[:-4].split(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            return None
        value = value.strip(b" \t")
        if _FIELD_VALUE.fullmatch(value) is None:
            return None
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    reason = (status_line.group(2) or b"").decode("latin-1")
    return ResponseHead(int(status_line.group(1)), reason, tuple(headers), raw)


def response_framing(head: ResponseHead, method: str) -> tuple[BodyFraming, int] | None:
    """How the body of a (non-101) response ends, and its length for ``LENGTH``.

    RFC 9112 §6.3: no body for HEAD, 1xx, 204, 304; chunked when it is the last transfer
    coding; else Content-Length; else until the connection closes. ``None`` for a
    response whose length cannot be known safely (differing or invalid Content-Length).
    """
    if method == "HEAD" or head.status < 200 or head.status in (204, 304):
        return BodyFraming.NONE, 0
    codings = [c.strip().lower() for v in head.values("Transfer-Encoding") for c in v.split(",")]
    if codings:
        if codings[-1] == "chunked":
            return BodyFraming.CHUNKED, 0
        return BodyFraming.UNTIL_CLOSE, 0
    lengths = {v.strip() for value in head.values("Content-Length") for v in value.split(",")}
    if not lengths:
        return BodyFraming.UNTIL_CLOSE, 0
    if len(lengths) > 1:
        return None
    (length,) = lengths
    if _DIGITS.fullmatch(length) is None:
        return None
    return BodyFraming.LENGTH, int(length)


def parse_chunk_size(line: bytes) -> int | None:
    """The size in a chunk-size line (without its CRLF), ignoring extensions; ``None``
    if malformed (RFC 9112 §7.1)."""
    match = _CHUNK_SIZE.fullmatch(line)
    return None if match is None else int(match.group(1), 16)
