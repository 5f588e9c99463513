"""One page request: route it, look it up, then replay the stored page or hand it on.

A fresh hit is replayed here (with its suspense slots for this visitor); a miss, a
revalidation and stale-if-error go to :mod:`weaver.proxy.miss`, unsafe methods to
:mod:`weaver.proxy.unsafe`, the app's own WebSockets to :mod:`weaver.proxy.upgrade`.

``X-Weaver-Cache`` says which: HIT (fresh, replayed), STALE (served stale: in the
stale-while-revalidate window with one background refresh, or stale-if-error while the
origin fails), REVALIDATED (the origin answered 304), COALESCED (followed a fill another
request started), MISS (filled from the origin and stored if allowed) and BYPASS (never
looked up or never storable: unsafe methods, HEAD misses, private answers).

What goes to the origin is decided in :mod:`weaver.proxy.forwarding`: the visitor's own
request on an ordinary route, the page's canonical request on a ``shared`` one.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from multidict import CIMultiDict

from weaver.cache import freshness as fresh
from weaver.cache.errors import CacheError
from weaver.cache.freshness import CacheState
from weaver.cache.keys import (
    cache_key,
    normalise_authority,
    normalise_target,
    parse_vary,
    request_vary_values,
)
from weaver.cache.manifest import Manifest
from weaver.cache.store import Entry
from weaver.proxy.compress import is_negotiable
from weaver.proxy.edge import EDGE_KEY, Edge
from weaver.proxy.entries import variant_key, variant_of
from weaver.proxy.errors import OriginError
from weaver.proxy.filling import FillPlan
from weaver.proxy.forwarding import ASKED_BY_WEAVER, canonical_headers, visitor_headers
from weaver.proxy.inline import InlineSlots
from weaver.proxy.miss import follow, start_fill
from weaver.proxy.pages import error_page, origin_error_page
from weaver.proxy.replay import replay, replay_inline
from weaver.proxy.unsafe import unsafe
from weaver.proxy.upgrade import proxy_upgrade
from weaver.proxy.upgrade_head import is_upgrade_request
from weaver.proxy.visitor import (
    Visit,
    cancel_suspense,
    is_html,
    is_inline_delivery,
    open_session,
    slot_producers,
    visit_of,
)

log = logging.getLogger(__name__)

_SAFE_METHODS = ("GET", "HEAD")


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    return await handle_page(request, request.app[EDGE_KEY])


async def handle_page(request: web.Request, edge: Edge) -> web.StreamResponse:
    """A page request for ``edge``: what :func:`proxy_handler` does once routed (the
    listener's page front calls it directly, ahead of aiohttp's router)."""
    if edge.lane is not None:
        answered = edge.lane.answer(request)  # a plain, fresh, hot hit: prepared bytes
        if answered is not None:
            return answered
    authority = normalise_authority(request.host, request.scheme)
    if authority is None:
        return error_page(400, "Bad Request", "The Host header is not a valid host[:port].")
    # One normal form (RFC 3986 §6.2.2) is the route's path, the key and the origin's target.
    target = normalise_target(request.rel_url.raw_path_qs)
    path = target.partition("?")[0]
    route = edge.config.route_for(path)
    if route is None:
        return error_page(404, "Not Found", f"No route is configured for {path}.")
    visit = visit_of(request, edge, route, authority, target)
    if is_upgrade_request(request.headers):  # the app's own WebSockets: a byte stream
        return await proxy_upgrade(request, edge, route, visit.origin)
    try:
        if request.method not in _SAFE_METHODS:
            return await unsafe(visit)
        if edge.store is None:
            return await follow(visit, _plan(visit, key=""))
        return await _cached(visit)
    except OriginError as exc:
        log.warning("origin %s failed for %s: %s", visit.origin.name, request.path, exc.reason)
        return origin_error_page(visit.origin, exc)


def page_key(visit: Visit) -> str:
    vary = request_vary_values(visit.route.vary, (), visit.request.headers)
    return cache_key("GET", visit.authority, visit.target, vary)


def _sent_headers(visit: Visit, *, for_fill: bool) -> CIMultiDict[str]:
    """The shell request's headers: canonical on a shared route, the visitor's otherwise."""
    if visit.route.shared:
        return canonical_headers(visit.request.headers, visit.peer, visit.route.vary)
    return visitor_headers(visit.request.headers, visit.peer, for_fill=for_fill)


def _plan(visit: Visit, *, key: str, stale: Manifest | None = None) -> FillPlan:
    request = visit.request
    headers = _sent_headers(visit, for_fill=bool(key))
    return FillPlan(
        key=key,
        method="HEAD" if request.method == "HEAD" else "GET",
        url=visit.origin.url + visit.target,
        headers=headers,
        fragment_headers=_fragment_headers(headers),
        route=visit.route,
        origin=visit.origin,
        host_header=request.host if visit.origin.preserve_host else None,
        stale=stale,
    )


_NOT_FOR_FRAGMENTS = ("host", "content-length", "content-type", *ASKED_BY_WEAVER)
_DROPPED_FOR_FRAGMENTS = tuple(n for n in _NOT_FOR_FRAGMENTS if n != "accept-encoding")


def _fragment_headers(shell: CIMultiDict[str]) -> CIMultiDict[str]:
    """The shell's headers without what a fragment fetch must not carry. Read-only (the
    conductor copies it per fetch): a fill's shell headers that have nothing to drop, as
    a GET's usually are, are shared, not copied."""
    if shell.get("Accept-Encoding") == "identity" and not any(
        name in shell for name in _DROPPED_FOR_FRAGMENTS
    ):
        return shell
    headers = CIMultiDict(shell)
    for name in _NOT_FOR_FRAGMENTS:
        headers.popall(name, None)
    headers["Accept-Encoding"] = "identity"
    return headers


async def _lookup(visit: Visit, key: str) -> Entry | None:
    """The stored entry for ``key`` that agrees with this request on the origin's Vary."""
    assert visit.edge.store is not None
    entry = await visit.edge.store.get(key)
    if entry is None:
        return None
    vary = CIMultiDict(entry.manifest.headers).get("Vary")
    if not vary:
        return entry
    if parse_vary(vary) is None:
        return None  # Vary: * is never reused (RFC 9111 §4.1)
    variant = variant_of(_sent_headers(visit, for_fill=True), vary)
    if variant == entry.manifest.variant:
        return entry
    return await visit.edge.store.get(variant_key(key, variant))


async def _cached(visit: Visit) -> web.StreamResponse:
    request, edge = visit.request, visit.edge
    started = time.perf_counter()
    key = page_key(visit)
    entry = await _lookup(visit, key)
    now = edge.clock.time()
    if entry is not None:
        freshness = entry.manifest.freshness
        state = freshness.state(now)
        wants = fresh.request_wants(request.headers)
        if entry.manifest.is_soft_purged:
            state = CacheState.MUST_REVALIDATE
        lookup_s = time.perf_counter() - started
        try:
            if state is CacheState.FRESH and fresh.satisfies(freshness, wants, now):
                return await _replay(visit, entry, "HIT", now, lookup_s, key=key)
            if state is CacheState.STALE_WHILE_REVALIDATE:
                if edge.fills.joinable(key) is None:
                    # One background refresh (RFC 5861 §3); it has no follower, so no
                    # client leaving can cancel it; the app's fill registry owns it.
                    start_fill(edge, _plan(visit, key=key, stale=entry.manifest))
                return await _replay(visit, entry, "STALE", now, lookup_s)
        except CacheError as exc:  # damaged or gone before a byte was sent: a miss
            log.warning("%s: stored body unusable (%s); asking the origin", key, exc)
            entry = None
    if request.method == "HEAD":  # a HEAD miss asks the origin, stores nothing
        return await follow(visit, _plan(visit, key=""))
    stale = entry.manifest if entry is not None else None
    return await follow(visit, _plan(visit, key=key, stale=stale), stale_entry=entry)


async def _replay(
    visit: Visit,
    entry: Entry,
    cache_status: str,
    now: float,
    lookup_s: float,
    *,
    key: str = "",
) -> web.StreamResponse:
    """A stored page: its suspense slots start now for this visitor (a hit starts them too)."""
    manifest = entry.manifest
    stored = CIMultiDict(manifest.headers)
    set_cookie = None
    is_page = is_html(stored) and manifest.status < 400
    if is_page and manifest.slots and is_inline_delivery(visit):
        return await _replay_inline(visit, entry, cache_status, now, lookup_s)
    if is_html(stored):
        set_cookie = open_session(visit, list(manifest.slots), list(manifest.channels))
    try:
        response = await replay(
            visit.request,
            entry,
            cache_status=cache_status,
            age=manifest.freshness.age_header(now),
            set_cookie=set_cookie,
            server_timing=f"cache;desc={cache_status.lower()};dur={lookup_s * 1000:.1f}",
        )
    except BaseException:
        cancel_suspense(visit.request)
        raise
    lane = visit.edge.lane
    if key and lane is not None and isinstance(response, web.Response) and not visit.route.vary:
        vary = parse_vary(stored.get("Vary"))
        if vary is not None and set(vary) <= {"accept-encoding"}:
            negotiable = is_negotiable(stored, status=manifest.status, size=manifest.size)
            lane.record(
                visit.request,
                key,
                manifest,
                response,
                is_negotiable=negotiable,
                route=visit.route.path,
            )
    return response


async def _replay_inline(
    visit: Visit, entry: Entry, cache_status: str, now: float, lookup_s: float
) -> web.StreamResponse:
    """The stored paint, then this visitor's slots inline (:mod:`weaver.proxy.inline`)."""
    manifest = entry.manifest
    slots = list(manifest.slots)
    set_cookie = open_session(visit, slots, list(manifest.channels), is_inline=True)
    async with InlineSlots(slot_producers(visit)) as inline:
        inline.start(slots)
        return await replay_inline(
            visit.request,
            entry,
            inline.tail(),
            cache_status=cache_status,
            age=manifest.freshness.age_header(now),
            set_cookie=set_cookie,
            server_timing=f"cache;desc={cache_status.lower()};dur={lookup_s * 1000:.1f}",
        )
