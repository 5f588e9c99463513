"""Cache keys (pure): method, host, path, normalised query and the varied headers' values.

A key is readable text, ``GET example.com/p/42?a=1&b=2|accept-language=fr``, so purge by
prefix is a string prefix and logs say what is stored. GET and HEAD share a key: HEAD is
answered from the GET entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, quote, unquote

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


def normalise_path(path: str) -> str:
    """Percent-encoding made canonical: ``/a%7eb`` and ``/a~b`` are one path."""
    return quote(unquote(path), safe="/:@!$&'()*+,;=-._~") or "/"


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
    lowered = {name.lower(): value for name, value in headers.items()}
    names = sorted({n.lower() for n in route_vary} | {n.lower() for n in response_vary})
    return tuple((name, lowered.get(name, "")) for name in names)
