"""Cache keys (pure): method, host, path, normalised query and the varied headers' values.

A key is readable text, ``GET example.com/p/42?a=1&b=2|accept-language=fr``, so purge by
prefix is a string prefix and logs say what is stored. GET and HEAD share a key: HEAD is
answered from the GET entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, quote, unquote

from multidict import CIMultiDict, CIMultiDictProxy

_DEFAULT_PORTS = (":80", ":443")


def normalise_host(host: str) -> str:
    host = host.strip().lower()
    for suffix in _DEFAULT_PORTS:
        if host.endswith(suffix):
            return host[: -len(suffix)]
    return host


def normalise_query(query: str) -> str:
    """Sort the parameters by name (stable), re-encode them the one canonical way."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    pairs.sort(key=lambda pair: pair[0])
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_CANONICAL_PATH = re.compile(r"[A-Za-z0-9/:@!$&'()*+,;=\-._~]+")


def normalise_path(path: str) -> str:
    """Percent-encoding made canonical: ``/a%7eb`` and ``/a~b`` are one path."""
    if _CANONICAL_PATH.fullmatch(path):
        return path  # the common case: nothing to decode or encode
    return quote(unquote(path), safe=_PATH_SAFE) or "/"


def cache_key(
    method: str, host: str, path: str, query: str, vary_values: Sequence[tuple[str, str]]
) -> str:
    """The key of a request; ``vary_values`` are (lowercase name, value) pairs, sorted."""
    method = "GET" if method.upper() == "HEAD" else method.upper()
    key = f"{method} {normalise_host(host)}{normalise_path(path)}"
    normalised = normalise_query(query)
    if normalised:
        key += "?" + normalised
    for name, value in vary_values:
        key += f"|{name}={' '.join(value.split())}"
    return key


def key_prefix(host: str, path_prefix: str) -> str:
    """The prefix every key under ``path_prefix`` on ``host`` starts with."""
    return f"GET {normalise_host(host)}{normalise_path(path_prefix)}"


def key_path(key: str) -> str:
    """The path part of a key (for purge by path prefix across hosts)."""
    _, _, rest = key.partition(" ")
    slash = rest.find("/")
    path = rest[slash:] if slash >= 0 else "/"
    for mark in ("?", "|"):
        path = path.split(mark, 1)[0]
    return path


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
