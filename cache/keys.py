"""Cache keys (pure): method, authority, normalised request target and the varied values.

A key is readable text, ``GET example.com/p/42?b=2&a=1|accept-language=fr``, so logs say
what is stored and purge can read a key back into its parts (:func:`parse_key`).

The request target is normalised once (RFC 3986 §6.2.2) by :func:`normalise_target`, and
that one string is both the key's path and query and the target the origin is sent: two
requests share a key only if the origin sees the same target. So the normal form only
makes changes that name the same resource:

- percent-escapes get upper-case hex (§6.2.2.1); escapes of unreserved characters
  (``ALPHA DIGIT - . _ ~``) are decoded (§6.2.2.2); every other escape is kept, so ``%2F``
  is never ``/`` and ``%E9`` (invalid UTF-8) stays ``%E9``: bytes are never decoded as text;
- characters that may not appear raw in a path or query (space, controls, non-ASCII,
  ``"#<>[\\]^`{|}``, a ``%`` that starts no escape) are percent-encoded as their UTF-8
  bytes (a lone surrogate from a ``surrogateescape`` decoding is its original byte);
- dot-segments are removed from the path (§5.2.4, §6.2.2.3), after decoding, so
  ``/a/%2E%2E/b`` is ``/b``; empty segments are kept (``//x`` is not ``/x``);
- the query keeps its order and its spelling (``+`` is not ``%20``; ``a=1&b=2`` is not
  ``b=2&a=1``): the origin reads it as sent. An empty query (``/p?``) is dropped: aiohttp
  drops it from ``raw_path_qs`` already, and yarl drops it from URLs it builds.

The normal form is a fixed point of yarl's quoting of URLs it is given ``encoded=True``,
so the origin request must be built as ``URL(origin_url + target, encoded=True)``: without
``encoded=True`` yarl decodes ``%2F`` in a query and ``%3A`` in a path, and the origin
would see another target than the key holds.

GET and HEAD share a key: HEAD is answered from the GET entry.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from multidict import CIMultiDict, CIMultiDictProxy

from weaver.cache.errors import BadAuthority

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SUB_DELIMS = frozenset(b"!$&'()*+,;=")
# RFC 3986 §3.3: pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; and "/".
_PATH_RAW = _UNRESERVED | _SUB_DELIMS | frozenset(b":@/")
# §3.4: query = *( pchar / "/" / "?" )
_QUERY_RAW = _PATH_RAW | frozenset(b"?")
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_ESCAPES = tuple(f"%{byte:02X}" for byte in range(256))

# Targets already in normal form, the common case: nothing to decode or encode.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]+")

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# A DNS name or IPv4 address; percent-encoded and sub-delims reg-names are refused (a Host
# header never needs them, and they would make the authority ambiguous in logs).
_REG_NAME = re.compile(r"[a-z0-9._~-]{1,255}")


def _normalise_component(text: str, raw_ok: frozenset[int]) -> str:
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate not from surrogateescape: keep its bytes too
        data = text.encode("utf-8", "surrogatepass")
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        byte = data[i]
        if byte == 0x25 and i + 2 < n and data[i + 1] in _HEX and data[i + 2] in _HEX:
            value = int(data[i + 1 : i + 3], 16)
            out.append(chr(value) if value in _UNRESERVED else _ESCAPES[value])
            i += 3
            continue
        out.append(chr(byte) if byte in raw_ok else _ESCAPES[byte])
        i += 1
    return "".join(out)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path (it starts with ``/``)."""
    segments = path.split("/")[1:]
    if "." not in segments and ".." not in segments:
        return path
    out: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if index == last:
                out.append("")  # "/a/." and "/a/b/.." end in a slash
            continue
        out.append(segment)
    return "/" + "/".join(out)


def _has_dot_segment(path: str) -> bool:
    return "/." in path and any(s in (".", "..") for s in path.split("/"))


def normalise_target(raw_path_qs: str) -> str:
    """The normal form of a request target as received (path and query, origin-form).

    Args:
        raw_path_qs: the target exactly as the request line carried it, e.g. aiohttp's
            ``request.rel_url.raw_path_qs``; a fragment is not part of a target (a raw
            ``#`` is encoded). A target that does not start with ``/`` gets one.

    Returns:
        ASCII text without space or ``|``, starting with ``/``; idempotent.
    """
    path, _, query = raw_path_qs.partition("?")
    if _PLAIN_PATH.fullmatch(path) and not _has_dot_segment(path):
        if not query or _PLAIN_QUERY.fullmatch(query):
            return f"{path}?{query}" if query else path
    if not path.startswith("/"):
        path = "/" + path
    path = remove_dot_segments(_normalise_component(path, _PATH_RAW))
    if not query:
        return path
    return f"{path}?{_normalise_component(query, _QUERY_RAW)}"


# Per process, the Host values seen are few: each is normalised once (least recent out).
@lru_cache(maxsize=1024)
def normalise_authority(host_header: str, scheme: str | None = None) -> str | None:
    """The normal form of a ``Host`` header (RFC 3986 §6.2.2.1, §6.2.3), None if invalid.

    The host is lower-cased, an IPv6 address written in its compressed form in brackets,
    the port written without leading zeros; an empty port is dropped, and the scheme's
    default port too when ``scheme`` is given (without it the port is kept, so the
    result is the same whoever calls it). Invalid: empty, non-ASCII, userinfo, a path,
    a port that is not 1..65535 in digits (``h:abc``, ``h:8080:80``), IPv6 zone ids and
    IPvFuture. The caller answers 400 for None.

    Args:
        host_header: the ``Host`` header's value (or a URL's netloc).
        scheme: ``http``, ``https``, ``ws`` or ``wss``, lower case; other values keep
            the port.
    """
    text = host_header.strip(" \t").lower()
    if not text or len(text) > 300 or not text.isascii():
        return None
    if text.startswith("["):
        close = text.find("]")
        inside, rest = text[1:close], text[close + 1 :]
        if close < 0 or "%" in inside or (rest and not rest.startswith(":")):
            return None
        try:
            host = f"[{ipaddress.IPv6Address(inside).compressed}]"
        except ValueError:
            return None
        port_text: str | None = rest[1:] if rest else None
    else:
        host, colon, port_text = text.partition(":")
        if not _REG_NAME.fullmatch(host):
            return None
        port_text = port_text if colon else None
    port: int | None = None
    if port_text:
        if len(port_text) > 5 or not all("0" <= c <= "9" for c in port_text):
            return None
        port = int(port_text)
        if not 1 <= port <= 65535:
            return None
    if port is None or (scheme is not None and port == _DEFAULT_PORTS.get(scheme)):
        return host
    return f"{host}:{port}"


def normalise_url(url: str) -> tuple[str, str] | None:
    """``(authority, target)`` of an absolute ``http(s)``/``ws(s)`` URL, normalised.

    The fragment is dropped; None for another scheme or an invalid authority.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        return None
    rest = rest.partition("#")[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority = normalise_authority(rest[:end], scheme)
    if authority is None:
        return None
    return authority, normalise_target(rest[end:])


def cache_key(
    method: str,
    authority: str,
    target: str,
    vary_values: Sequence[tuple[str, str]],
    *,
    scheme: str | None = None,
) -> str:
    """The key of a request: ``METHOD authority target`` then ``|name=value`` per vary.

    Args:
        authority: the ``Host`` header (normalised here; already normal is unchanged).
        target: the request target, path and query (normalised here; idempotent): pass
            the same normal form the origin is sent.
        vary_values: (lowercase name, value) pairs, sorted; values' whitespace collapses.
        scheme: the request's scheme, so that its default port is dropped.

    Raises:
        BadAuthority: ``authority`` is not a valid host[:port]; check it first with
            :func:`normalise_authority` and answer 400.
    """
    method = "GET" if method.upper() == "HEAD" else method.upper()
    host = normalise_authority(authority, scheme)
    if host is None:
        raise BadAuthority(authority)
    key = f"{method} {host}{normalise_target(target)}"
    for name, value in vary_values:
        key += f"|{name}={' '.join(value.split())}"
    return key


@dataclass(frozen=True, slots=True)
class KeyParts:
    """A key read back: ``target`` is the origin's request target for it."""

    method: str
    authority: str
    target: str
    variant: str  # the "|name=value…" tail without its first "|", "" if none

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


def parse_key(key: str) -> KeyParts:
    """The parts of a key made by :func:`cache_key` (authority and target hold no ``|``)."""
    method, _, rest = key.partition(" ")
    head, _, variant = rest.partition("|")
    slash = head.find("/")
    if slash < 0:
        return KeyParts(method, head, "/", variant)
    return KeyParts(method, head[:slash], head[slash:], variant)


def key_prefix(authority: str, path_prefix: str, *, scheme: str | None = None) -> str:
    """The prefix every key under ``path_prefix`` on ``authority`` starts with."""
    host = normalise_authority(authority, scheme)
    if host is None:
        raise BadAuthority(authority)
    return f"GET {host}{normalise_target(path_prefix.partition('?')[0])}"


def key_path(key: str) -> str:
    """The path part of a key (for purge by path prefix across hosts)."""
    return parse_key(key).path


def key_target(key: str) -> str:
    """The request target (path and query) a key was made from, as the origin got it."""
    return parse_key(key).target


def parse_vary(value: str | None) -> tuple[str, ...] | None:
    """The names in a ``Vary`` header, lowercased; None for ``Vary: *`` (never reusable)."""
    if not value:
        return ()
    names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
    return None if "*" in names else names


def request_vary_values(
    route_vary: Sequence[str], response_vary: Sequence[str], headers: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """The union of the route's and the origin's Vary names with the request's values."""
    if not route_vary and not response_vary:
        return ()
    names = sorted({n.lower() for n in route_vary} | {n.lower() for n in response_vary})
    return tuple((name, _header(headers, name)) for name in names)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is not None or isinstance(headers, (CIMultiDict, CIMultiDictProxy)):
        return value or ""  # multidicts are case-insensitive already
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return ""
