"""Freshness, storability and revalidation for a shared cache (pure).

RFC 9111 (HTTP caching), RFC 5861 (stale-while-revalidate, stale-if-error) and RFC 9213
(targeted cache control). Nothing here reads a clock: ``now`` and the request/response
times are parameters, in seconds since the epoch.

Choices a shared edge cache makes, and why:
- Heuristic freshness (§4.2.2) is off: a response without explicit freshness is stored
  only when its route has a ``ttl``, which then is its lifetime.
- ``Weaver-Cache-Control``, else ``CDN-Cache-Control`` (RFC 9213), replaces
  ``Cache-Control`` when present: the origin can speak to Weaver alone.
- A request's ``no-cache``/``max-age=0`` is honoured (the entry is revalidated), but a
  request cannot make Weaver skip storing what others may use.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from weaver.cache.keys import parse_vary

# RFC 9110 §15.1: statuses cacheable by default (heuristically cacheable).
HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# RFC 9110 §7.6.1 hop-by-hop headers; never stored, never replayed.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed or personal: not part of a stored response.
_NOT_STORED = frozenset({"set-cookie", "age", "server-timing", "x-weaver-cache"})
# RFC 9111 §3.2: a 304 does not update these of the stored response.
_NOT_UPDATED_BY_304 = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "content-range", "etag"}
)


class CacheState(enum.Enum):
    FRESH = "fresh"
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"  # serve stale, refresh once
    STALE_IF_ERROR = "stale-if-error"  # the origin failed: serve stale
    MUST_REVALIDATE = "must-revalidate"  # ask the origin before using it


def _get(headers: Mapping[str, str], name: str) -> str | None:
    """A header of a case-insensitive multidict or of a plain (any case) mapping."""
    value = headers.get(name)
    if value is None and not isinstance(headers, (CIMultiDict, CIMultiDictProxy)):
        lowered = name.lower()
        for key, item in headers.items():
            if key.lower() == lowered:
                return item
    return value


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Directives by lowercased name; the first of a duplicate wins (RFC 9111 §4.2.1)."""
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    for part in _split_commas(value):
        name, sep, arg = part.partition("=")
        name = name.strip().lower()
        if not name or name in directives:
            continue
        arg = arg.strip()
        if sep and len(arg) >= 2 and arg[0] == arg[-1] == '"':
            arg = arg[1:-1]
        directives[name] = arg if sep else None
    return directives


def _split_commas(value: str) -> list[str]:
    """Split on commas outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _seconds(value: str | None) -> float | None:
    """A delta-seconds argument; invalid is None (RFC 9111 §1.2.2)."""
    if value is None:
        return None
    try:
        seconds = int(value.strip())
    except ValueError:
        return None
    return float(max(0, seconds))


def http_date(value: str | None) -> float | None:
    if not value:
        return None
    return _parsed_date(value)


@functools.lru_cache(maxsize=256)
def _parsed_date(value: str) -> float | None:
    """Parsed once per distinct text: the answers of one second share their ``Date``."""
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def response_directives(headers: Mapping[str, str]) -> dict[str, str | None]:
    """The cache directives that apply to Weaver: targeted fields first (RFC 9213 §2.2)."""
    for name in ("Weaver-Cache-Control", "CDN-Cache-Control"):
        targeted = _get(headers, name)
        if targeted is not None:
            return parse_cache_control(targeted)
    return parse_cache_control(_get(headers, "Cache-Control"))


def has_explicit_freshness(headers: Mapping[str, str]) -> bool:
    cc = response_directives(headers)
    return "s-maxage" in cc or "max-age" in cc or _get(headers, "Expires") is not None


def storable(
    *,
    method: str,
    status: int,
    request_headers: Mapping[str, str],
    response_headers: Mapping[str, str],
    route_allows_private: bool,
    route_ttl_s: float | None,
    allow_set_cookie: bool = False,
) -> str | None:
    """None if a shared cache may store the response (RFC 9111 §3), else the reason.

    ``allow_set_cookie``: the route opted in to storing responses that set cookies; the
    Set-Cookie itself is never stored (see :func:`filter_stored_headers`).
    """
    if method.upper() not in ("GET", "HEAD"):
        return f"method {method.upper()}"
    if status < 200:
        return "1xx"
    cc = response_directives(response_headers)
    request_cc = parse_cache_control(_get(request_headers, "Cache-Control"))
    if "no-store" in cc or "no-store" in request_cc:
        return "no-store"
    if "private" in cc and not route_allows_private:
        return "private"
    if _get(response_headers, "Set-Cookie") is not None and not (
        route_allows_private or allow_set_cookie
    ):
        return "set-cookie"
    if _get(request_headers, "Authorization") is not None and not route_allows_private:
        # §3.5: only with an explicit permission for shared caches.
        if not ({"s-maxage", "must-revalidate", "public"} & cc.keys()):
            return "authorization"
    if parse_vary(_get(response_headers, "Vary")) is None:
        return "vary *"
    explicit = has_explicit_freshness(response_headers)
    if status not in HEURISTICALLY_CACHEABLE and not explicit:
        return f"status {status} not cacheable"
    if status == 206:
        return "status 206 not cacheable"
    if not explicit and route_ttl_s is None:
        return "no freshness information"
    return None


def freshness_lifetime(
    headers: Mapping[str, str], *, route_ttl_s: float | None, response_time: float | None = None
) -> float:
    """RFC 9111 §4.2.1: s-maxage, then max-age, then Expires - Date, then the route ttl."""
    cc = response_directives(headers)
    for name in ("s-maxage", "max-age"):
        if name in cc:
            seconds = _seconds(cc[name])
            return 0.0 if seconds is None else seconds
    expires_text = _get(headers, "Expires")
    if expires_text is not None:
        expires = http_date(expires_text)
        if expires is None:
            return 0.0  # §5.3: an invalid Expires ("0") means already expired
        date = http_date(_get(headers, "Date"))
        base = date if date is not None else response_time
        if base is None:
            return 0.0
        return max(0.0, expires - base)
    return route_ttl_s if route_ttl_s is not None else 0.0


def current_age(
    *,
    response_headers: Mapping[str, str],
    request_time: float,
    response_time: float,
    now: float,
) -> float:
    """RFC 9111 §4.2.3."""
    age_value = _seconds(_get(response_headers, "Age")) or 0.0
    date = http_date(_get(response_headers, "Date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    corrected_initial_age = max(apparent_age, age_value + response_delay)
    resident_time = max(0.0, now - response_time)
    return corrected_initial_age + resident_time


@dataclass(frozen=True, slots=True)
class Freshness:
    """What a stored response's freshness depends on, fixed when it was stored."""

    stored_at: float
    initial_age_s: float
    lifetime_s: float
    stale_while_revalidate_s: float = 0.0
    stale_if_error_s: float = 0.0
    must_revalidate: bool = False
    no_cache: bool = False

    def age(self, now: float) -> float:
        return self.initial_age_s + max(0.0, now - self.stored_at)

    def is_fresh(self, now: float) -> bool:
        return not self.no_cache and self.age(now) < self.lifetime_s

    def state(self, now: float, *, origin_failed: bool = False) -> CacheState:
        if self.is_fresh(now):
            return CacheState.FRESH
        if self.no_cache or self.must_revalidate:
            return CacheState.MUST_REVALIDATE  # §4.2.4: no stale use at all
        staleness = self.age(now) - self.lifetime_s
        if staleness < self.stale_while_revalidate_s:
            return CacheState.STALE_WHILE_REVALIDATE
        if origin_failed and staleness < self.stale_if_error_s:
            return CacheState.STALE_IF_ERROR
        return CacheState.MUST_REVALIDATE

    def age_header(self, now: float) -> str:
        """RFC 9111 §5.1: whole seconds."""
        return str(int(self.age(now)))


def freshness_from_response(
    *,
    request_time: float,
    response_time: float,
    response_headers: Mapping[str, str],
    route_ttl_s: float | None,
) -> Freshness:
    cc = response_directives(response_headers)
    initial_age = current_age(
        response_headers=response_headers,
        request_time=request_time,
        response_time=response_time,
        now=response_time,
    )
    return Freshness(
        stored_at=response_time,
        initial_age_s=initial_age,
        lifetime_s=freshness_lifetime(
            response_headers, route_ttl_s=route_ttl_s, response_time=response_time
        ),
        stale_while_revalidate_s=_seconds(cc.get("stale-while-revalidate")) or 0.0,
        stale_if_error_s=_seconds(cc.get("stale-if-error")) or 0.0,
        # §5.2.2.8: s-maxage implies proxy-revalidate for a shared cache.
        must_revalidate=bool({"must-revalidate", "proxy-revalidate", "s-maxage"} & cc.keys()),
        no_cache="no-cache" in cc and not cc["no-cache"],
    )


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    no_cache: bool = False
    max_age_s: float | None = None
    min_fresh_s: float | None = None
    only_if_cached: bool = False


def request_wants(headers: Mapping[str, str]) -> RequestDirectives:
    """RFC 9111 §5.2.1; ``Pragma: no-cache`` counts only without Cache-Control (§5.4)."""
    cc_text = _get(headers, "Cache-Control")
    if cc_text is None and _get(headers, "Pragma") is None:
        return _NO_REQUEST_DIRECTIVES
    cc = parse_cache_control(cc_text)
    no_cache = "no-cache" in cc
    if cc_text is None and "no-cache" in (_get(headers, "Pragma") or "").lower():
        no_cache = True
    return RequestDirectives(
        no_cache=no_cache,
        max_age_s=_seconds(cc.get("max-age")) if "max-age" in cc else None,
        min_fresh_s=_seconds(cc.get("min-fresh")) if "min-fresh" in cc else None,
        only_if_cached="only-if-cached" in cc,
    )


_NO_REQUEST_DIRECTIVES = RequestDirectives()


def satisfies(freshness: Freshness, wants: RequestDirectives, now: float) -> bool:
    """Whether a fresh stored response may answer a request with these directives."""
    if wants.no_cache:
        return False
    age = freshness.age(now)
    if wants.max_age_s is not None and age > wants.max_age_s:
        return False
    return not (wants.min_fresh_s is not None and freshness.lifetime_s - age < wants.min_fresh_s)


def conditional_headers(stored_headers: Mapping[str, str]) -> dict[str, str]:
    """RFC 9111 §4.3.1: validators of the stored response for a conditional request."""
    headers: dict[str, str] = {}
    etag = _get(stored_headers, "ETag")
    if etag:
        headers["If-None-Match"] = etag
    last_modified = _get(stored_headers, "Last-Modified")
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


def merge_304(
    stored: Iterable[tuple[str, str]], not_modified: Mapping[str, str]
) -> list[tuple[str, str]]:
    """RFC 9111 §3.2/§4.3.4: the 304's fields replace the stored ones of the same name."""
    fresh_names = {name.lower() for name in not_modified if name.lower() not in _NOT_UPDATED_BY_304}
    merged = [(n, v) for n, v in stored if n.lower() not in fresh_names]
    for name, value in not_modified.items():
        if name.lower() in fresh_names and name.lower() not in _HOP_BY_HOP:
            merged.append((name, value))
    return merged


def filter_stored_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop hop-by-hop fields, those named in Connection (§3.1), and per-response ones."""
    items = list(headers)
    named = set(_HOP_BY_HOP)
    for name, value in items:
        if name.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(","))
    return [
        (str(name), str(value))  # plain str: multidict's istr names do not serialise
        for name, value in items
        if name.lower() not in named
        and name.lower() not in _NOT_STORED
        and not name.lower().startswith("x-weaver-")
    ]


def invalidation_targets(
    method: str, status: int, request_url: str, response_headers: Mapping[str, str]
) -> list[str]:
    """RFC 9111 §4.4: what a successful unsafe request invalidates (same origin only)."""
    if method.upper() in SAFE_METHODS or not 200 <= status < 400:
        return []
    base = urlsplit(request_url)
    targets = [request_url]
    for name in ("Location", "Content-Location"):
        value = _get(response_headers, name)
        if not value:
            continue
        url = urljoin(request_url, value)
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc.lower()) == (base.scheme, base.netloc.lower()):
            targets.append(url)
    return list(dict.fromkeys(targets))


def tags_from_headers(headers: Mapping[str, str]) -> tuple[str, ...]:
    """Purge tags: ``Surrogate-Key`` (space separated) and ``Cache-Tag`` (commas)."""
    tags: list[str] = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "surrogate-key":
            tags.extend(value.split())
        elif lowered == "cache-tag":
            tags.extend(t.strip() for t in value.split(","))
    return tuple(dict.fromkeys(t for t in tags if t))
