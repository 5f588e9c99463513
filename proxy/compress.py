"""Content-coding negotiation for the visitor (pure): which coding, and the header rules.

Weaver asks its origins for identity and compresses for the visitor by ``Accept-Encoding``
(RFC 9110 §12.5.3); what the origin already encoded passes through untouched. This module
decides whether a response may be encoded (:func:`is_negotiable`), which coding a request
gets (:func:`choose_encoding`, :func:`negotiate`) and what that does to ``Vary``,
``Content-Encoding``, ``ETag`` and the length (:func:`apply_encoding`). The codecs that do
the compressing are :mod:`weaver.proxy.compressors`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from multidict import CIMultiDict, CIMultiDictProxy

from weaver.proxy.compressors import AVAILABLE, Encoding

# Below this a coding's own overhead eats most of the gain (nginx and CDNs use 20 B-1 KiB).
MIN_COMPRESS_BYTES = 1024

# Statuses that have no body to encode, or whose body is part of another (RFC 9110 §15).
_NO_CODING_STATUSES = frozenset({204, 206, 304})

_QVALUE = re.compile(r"^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$")

# Media types worth compressing besides text/*: structured text, and uncompressed fonts.
_COMPRESSIBLE_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/manifest+json",
        "application/ld+json",
        "application/graphql-response+json",
        "image/svg+xml",
        "image/x-icon",
        "image/vnd.microsoft.icon",
        "font/ttf",
        "font/otf",
    }
)
# text/event-stream is text, but a stream of events must reach the client as each is sent.
_NEVER_COMPRESSED = frozenset({"text/event-stream"})


def _parse_accept_encoding(value: str) -> dict[str, float]:
    """Codings by lowercased name with their q-value; a member with a bad q is dropped.

    The first mention of a coding wins; ``x-gzip`` is ``gzip`` (RFC 9110 §8.4.1.3).
    """
    weights: dict[str, float] = {}
    for member in value.split(","):
        name, _, params = member.partition(";")
        coding = name.strip().lower()
        if not coding:
            continue
        if coding == "x-gzip":
            coding = "gzip"
        weight: float | None = 1.0
        for param in params.split(";"):
            key, _, raw = param.partition("=")
            if key.strip().lower() == "q":
                raw = raw.strip()
                weight = float(raw) if _QVALUE.match(raw) else None
        if weight is not None:
            weights.setdefault(coding, weight)
    return weights


def choose_encoding(
    accept_encoding: str | None, *, available: tuple[Encoding, ...] = AVAILABLE
) -> Encoding | None:
    """The coding to answer ``accept_encoding`` with; None for identity (RFC 9110 §12.5.3).

    Each of ``available`` gets the q-value the request gives it, else that of ``*``, else
    0 (not acceptable). The highest non-zero q wins; ties go to the earlier in
    ``available``. Identity wins only when the request ranks it strictly above every
    coding; when it excludes identity too (``identity;q=0``) and accepts nothing we have,
    the caller still sends identity, which RFC 9110 allows instead of a 406.

    Args:
        accept_encoding: the request's header, None when absent. An absent header
            accepts anything, but a client that sends none usually cannot decode any
            (scripts, health checks): it gets identity. An empty one means identity.
        available: the codings the server can produce, in preference order.
    """
    if accept_encoding is None:
        return None
    weights = _parse_accept_encoding(accept_encoding)
    star = weights.get("*", 0.0)
    best: Encoding | None = None
    best_q = 0.0
    for encoding in available:
        q = weights.get(encoding.value, star)
        if q > best_q:
            best, best_q = encoding, q
    identity_q = weights.get("identity")
    if best is None or (identity_q is not None and identity_q > best_q):
        return None
    return best


def media_type(content_type: str | None) -> str:
    """``text/html; charset=utf-8`` → ``text/html``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_compressible(content_type: str | None, size: int | None) -> bool:
    """Whether a body of this type and size (None: unknown, streaming) is worth a coding."""
    if size is not None and size < MIN_COMPRESS_BYTES:
        return False
    kind = media_type(content_type)
    if kind in _NEVER_COMPRESSED:
        return False
    return (
        kind.startswith("text/") or kind in _COMPRESSIBLE_TYPES or kind.endswith(("+json", "+xml"))
    )


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of ``name`` in a multidict or a plain (any case) mapping."""
    if isinstance(headers, CIMultiDict | CIMultiDictProxy):
        return headers.getall(name, [])
    lowered = name.lower()
    return [value for key, value in headers.items() if key.lower() == lowered]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    values = _all(headers, name)
    return values[0] if values else None


def _has_no_transform(headers: Mapping[str, str]) -> bool:
    """RFC 9111 §5.2.2.6: ``no-transform`` forbids an intermediary to change the content."""
    return any(
        part.strip().lower() == "no-transform"
        for value in _all(headers, "Cache-Control")
        for part in value.split(",")
    )


def _content_length(headers: Mapping[str, str]) -> int | None:
    raw = _header(headers, "Content-Length")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw)


def is_negotiable(
    response_headers: Mapping[str, str], *, status: int, size: int | None = None
) -> bool:
    """Whether Weaver may encode this response for the visitor (then it varies on it).

    Not when it is already encoded (passed through as the origin sent it), is a part
    (``Content-Range``), forbids transformation (``no-transform``), has no body to
    encode, or is not worth it (:func:`is_compressible`).

    Args:
        size: the body's size when known otherwise than by ``Content-Length`` (stored).
    """
    if status < 200 or status in _NO_CODING_STATUSES:
        return False
    encoded = _header(response_headers, "Content-Encoding")
    if encoded is not None and encoded.strip().lower() not in ("", "identity"):
        return False
    if _header(response_headers, "Content-Range") is not None:
        return False
    if _has_no_transform(response_headers):
        return False
    if size is None:
        size = _content_length(response_headers)
    return is_compressible(_header(response_headers, "Content-Type"), size)


def negotiate(
    request_headers: Mapping[str, str],
    response_headers: Mapping[str, str],
    *,
    status: int,
    available: tuple[Encoding, ...] = AVAILABLE,
) -> Encoding | None:
    """The coding for a live response, or None to send it as it is.

    Call :func:`apply_encoding` with the result either way: an identity answer to a
    negotiable response still carries ``Vary: Accept-Encoding``.
    """
    if not is_negotiable(response_headers, status=status):
        return None
    return choose_encoding(_header(request_headers, "Accept-Encoding"), available=available)


def add_vary(headers: CIMultiDict[str], name: str) -> None:
    """Add ``name`` to ``Vary`` once (case-insensitive); ``Vary: *`` already covers it.

    Several ``Vary`` lines are merged into one (RFC 9110 §5.3 makes them one list).
    """
    tokens = [
        token.strip()
        for value in headers.getall("Vary", [])
        for token in value.split(",")
        if token.strip()
    ]
    lowered = {token.lower() for token in tokens}
    if "*" in lowered or name.lower() in lowered:
        if len(headers.getall("Vary", [])) > 1:
            headers["Vary"] = ", ".join(tokens)
        return
    headers["Vary"] = ", ".join([*tokens, name])


def variant_etag(etag: str, encoding: Encoding) -> str:
    """The entity tag of ``etag``'s representation in ``encoding``: ``"x"`` → ``"x-br"``.

    Each representation needs its own validator (RFC 9110 §8.8.3.3): a client that cached
    the gzip bytes must not get a 304 for the br ones. A weak tag stays weak.
    """
    tag = etag.strip()
    prefix = ""
    if tag[:2].upper() == "W/":
        prefix, tag = "W/", tag[2:]
    if len(tag) < 2 or not (tag.startswith('"') and tag.endswith('"')):
        return etag  # not an entity tag: leave it alone
    return f'{prefix}"{tag[1:-1]}-{encoding.value}"'


def apply_encoding(
    headers: CIMultiDict[str], encoding: Encoding | None, *, status: int, is_stored: bool = False
) -> None:
    """Headers of a negotiable response as sent in ``encoding`` (None: identity).

    ``Vary`` gains ``Accept-Encoding`` either way. Encoded: ``Content-Encoding`` is set,
    ``ETag`` gets the coding's suffix. A live (streamed) body loses ``Content-Length``
    and ``Accept-Ranges``, as its encoded length is not known in advance; a stored
    variant (``is_stored``) keeps ranges and the caller sets its length.

    Does nothing to a response that is not :func:`is_negotiable`.
    """
    if is_negotiable(headers, status=status):
        apply_negotiated(headers, encoding, is_stored=is_stored)


def apply_negotiated(
    headers: CIMultiDict[str], encoding: Encoding | None, *, is_stored: bool = False
) -> None:
    """:func:`apply_encoding` for a response already known to be :func:`is_negotiable`."""
    add_vary(headers, "Accept-Encoding")
    if encoding is None:
        return
    headers["Content-Encoding"] = encoding.value
    etag = headers.get("ETag")
    if etag is not None:
        headers["ETag"] = variant_etag(etag, encoding)
    if not is_stored:
        headers.popall("Content-Length", None)
        headers.popall("Accept-Ranges", None)
