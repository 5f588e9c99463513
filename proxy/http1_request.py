"""HTTP/1.1 for the origin client, pure: the request head and body framing Weaver sends.

:mod:`weaver.proxy.origin` writes what this module builds: the head (the caller's headers in
their order, ``Host``, and the framing Weaver decides) and the chunked coding of a streamed
body. The response side is :mod:`weaver.proxy.http1`. RFC 9112 §3 (request line), §6-§7
(body length, chunked coding), §11.1 (request splitting); RFC 9110 §9.2.2 (idempotent).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum
from functools import lru_cache

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]{1,18}")

# Methods a client may send again when the connection died before any answer (RFC 9110
# §9.2.2 idempotent methods; RFC 9112 §9.3.1 retrying requests).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods whose request a server expects to carry content: without a body they get
# ``Content-Length: 0`` (RFC 9110 §8.6, "SHOULD send" for a user agent).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Framing is Weaver's to decide: these from the caller never go out as given.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


class RequestBody(Enum):
    """How a request's body is framed on the wire."""

    NONE = "none"  # no body (``Content-Length: 0`` for POST/PUT/PATCH)
    LENGTH = "length"  # a known length: bytes, or a stream the caller gave a length for
    CHUNKED = "chunked"  # a stream of unknown length, in the chunked coding


def request_head(
    method: str,
    target: str,
    host: str,
    headers: Iterable[tuple[str, str]],
    body: RequestBody,
    length: int | None = None,
) -> bytes | None:
    """The request head, ending with the empty line; ``None`` if a header would break it.

    The caller's headers go in their order. ``Host`` is ``host`` unless the caller gave
    one. ``Content-Length`` and ``Transfer-Encoding`` are Weaver's: ``length`` for
    :attr:`RequestBody.LENGTH` (the caller's own Content-Length when ``length`` is
    ``None``), ``chunked`` for :attr:`RequestBody.CHUNKED`.

    Args:
        method: the request method.
        target: the request target, sent exactly as given (already normalised).
        host: the Host header for the origin.
        headers: the caller's headers.
        body: how the body is framed.
        length: the body's length for :attr:`RequestBody.LENGTH`.

    Returns:
        The head, or ``None`` when a name is not a token or a value holds a line break
        (sending it would split the request: RFC 9112 §11.1).
    """
    lines = [f"{method} {target} HTTP/1.1"]
    has_host = False
    caller_length: str | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in _FRAMING_HEADERS:
            if lower == "content-length":
                caller_length = value
            continue
        if lower == "host":
            has_host = True
        if "\n" in value or "\r" in value or not _is_token(name):
            return None
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.insert(1, f"Host: {host}")
    if body is RequestBody.LENGTH:
        if length is None:
            if caller_length is None or _DIGITS.fullmatch(caller_length.strip()) is None:
                return None
            length = int(caller_length.strip())
        lines.append(f"Content-Length: {length}")
    elif body is RequestBody.CHUNKED:
        lines.append("Transfer-Encoding: chunked")
    elif method in _BODY_METHODS:
        lines.append("Content-Length: 0")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


@lru_cache(maxsize=512)  # the header names a process sends are few: each checked once
def _is_token(name: str) -> bool:
    return _TOKEN.fullmatch(name) is not None


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of the chunked coding (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
