"""One page request: route, cache lookup, then replay, follow a running fill, or fill.

``X-Weaver-Cache`` says which: HIT (fresh, replayed), STALE (served stale: in the
stale-while-revalidate window with one background refresh, or stale-if-error while the
origin fails), REVALIDATED (the origin answered 304), COALESCED (followed a fill another
request started), MISS (filled from the origin and stored if allowed) and BYPASS (never
looked up or never storable: unsafe methods, HEAD misses, private answers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

from weaver.cache import freshness as fresh
from weaver.cache.freshness import CacheState, Freshness
from weaver.cache.keys import cache_key, key_prefix, parse_vary, request_vary_values
from weaver.cache.manifest import Manifest, freshness_of
from weaver.cache.store import Entry
from weaver.config.schema import IncludeMode, OriginConfig, RouteConfig
from weaver.proxy.conductor import fetch_suspense
from weaver.proxy.edge import EDGE_KEY, Edge
from weaver.proxy.errors import OriginError
from weaver.proxy.filling import FillPlan, fill_page, variant_of
from weaver.proxy.includes import IncludePlan, fragment_request_headers
from weaver.proxy.origin import strip_hop_by_hop
from weaver.proxy.paint import Fill, FillFailed, FollowerLagged, Head
from weaver.proxy.replay import replay
from weaver.proxy.upgrade import proxy_upgrade
from weaver.proxy.upgrade_head import is_upgrade_request

log = logging.getLogger(__name__)

_SAFE_METHODS = ("GET", "HEAD")

# A fill keeps at most this much of its body for followers behind the fastest one.
FILL_BUFFER_BYTES = 4 * 1024 * 1024

SESSION_KEY = web.RequestKey("weaver_session_id", str)
SUSPENSE_KEY = web.RequestKey("weaver_suspense_tasks", list["asyncio.Task[None]"])


def forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    """X-Forwarded-For/Proto/Host for a request Weaver sends on behalf of ``request``."""
    headers: CIMultiDict[str] = CIMultiDict()
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    return headers


def shell_request_headers(request: web.Request, route: RouteConfig) -> CIMultiDict[str]:
    """The shell is shared between visitors: only the route's vary headers go with it."""
    headers = CIMultiDict(fragment_request_headers(request.headers, route.vary))
    headers.extend(forwarded_headers(request))
    headers["Accept-Encoding"] = "identity"
    return headers


def passthrough_request_headers(request: web.Request) -> CIMultiDict[str]:
    """Everything but hop-by-hop headers and Host, plus the X-Forwarded-* trio."""
    headers = strip_hop_by_hop(request.headers)
    headers.popall("Host", None)
    headers.popall("Content-Length", None)
    headers["Accept-Encoding"] = "identity"
    headers.update(forwarded_headers(request))
    return headers


def error_page(status: int, title: str, detail: str) -> web.Response:
    """A short, clear HTML page; never a traceback (details go to the log)."""
    body = (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{status} {html.escape(title)}</title></head><body>"
        f"<h1>{status} {html.escape(title)}</h1><p>{html.escape(detail, quote=False)}</p>"
        "<hr><p>Weaver</p></body></html>"
    )
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        headers={"X-Weaver-Cache": "BYPASS", "Cache-Control": "no-store"},
    )


def origin_error_page(origin: OriginConfig, exc: OriginError) -> web.Response:
    title = "Gateway Timeout" if exc.status == 504 else "Bad Gateway"
    detail = f'Weaver could not get an answer from the origin "{origin.name}" ({exc.reason}).'
    return error_page(exc.status, title, detail)


def page_key(request: web.Request, route: RouteConfig) -> str:
    vary = request_vary_values(route.vary, (), request.headers)
    return cache_key("GET", request.host, request.path, request.query_string, vary)


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    edge = request.app[EDGE_KEY]
    route = edge.config.route_for(request.path)
    if route is None:
        return error_page(404, "Not Found", f"No route is configured for {request.path}.")
    origin = edge.config.origin(route.origin)
    if is_upgrade_request(request.headers):  # the app's own WebSockets: a byte stream
        return await proxy_upgrade(request, edge, route, origin)
    try:
        if request.method not in _SAFE_METHODS:
            return await _unsafe(request, edge, origin)
        if edge.store is None:
            return await _follow(request, edge, _plan(request, route, origin, key=""))
        return await _cached(request, edge, route, origin)
    except OriginError as exc:
        log.warning("origin %s failed for %s: %s", origin.name, request.path, exc.reason)
        return origin_error_page(origin, exc)


def _plan(
    request: web.Request,
    route: RouteConfig,
    origin: OriginConfig,
    *,
    key: str,
    stale: Manifest | None = None,
) -> FillPlan:
    return FillPlan(
        key=key,
        method="HEAD" if request.method == "HEAD" else "GET",
        url=origin.url + request.rel_url.raw_path_qs,
        headers=shell_request_headers(request, route),
        vary_headers=fragment_request_headers(request.headers, route.vary),
        route=route,
        origin=origin,
        request_headers={k.lower(): v for k, v in request.headers.items()},
        stale=stale,
    )


async def _cached(
    request: web.Request, edge: Edge, route: RouteConfig, origin: OriginConfig
) -> web.StreamResponse:
    assert edge.store is not None
    key = page_key(request, route)
    entry = await edge.store.get(key)
    if entry is not None and not _variant_matches(request, route, entry.manifest):
        entry = None  # stored for other values of the origin's Vary headers: a miss
    now = time.time()
    if entry is not None:
        freshness = _freshness(entry.manifest)
        state = freshness.state(now)
        wants = fresh.request_wants(request.headers)
        if entry.manifest.is_soft_purged:
            state = CacheState.MUST_REVALIDATE
        if state is CacheState.FRESH and fresh.satisfies(freshness, wants, now):
            return await _replay(request, edge, route, origin, entry, "HIT", freshness, now)
        if state is CacheState.STALE_WHILE_REVALIDATE:
            if edge.fills.joinable(key) is None:
                # One background refresh (RFC 5861 §3); it has no follower, so no client
                # leaving can cancel it; the app's fill registry owns it.
                _start(edge, _plan(request, route, origin, key=key, stale=entry.manifest))
            return await _replay(request, edge, route, origin, entry, "STALE", freshness, now)
    if request.method == "HEAD":  # a HEAD miss asks the origin, stores nothing
        return await _follow(request, edge, _plan(request, route, origin, key=""))
    stale = entry.manifest if entry is not None else None
    return await _follow(
        request, edge, _plan(request, route, origin, key=key, stale=stale), stale_entry=entry
    )


async def _replay(
    request: web.Request,
    edge: Edge,
    route: RouteConfig,
    origin: OriginConfig,
    entry: Entry,
    cache_status: str,
    freshness: Freshness,
    now: float,
) -> web.StreamResponse:
    """A stored page: its suspense slots start now for this visitor (a hit starts them too)."""
    manifest = entry.manifest
    set_cookie = None
    if _is_html(CIMultiDict(manifest.headers)):
        set_cookie = visitor_session(
            request, edge, route, origin, list(manifest.slots), list(manifest.channels)
        )
    try:
        return await replay(
            request,
            entry,
            cache_status=cache_status,
            age=freshness.age_header(now),
            set_cookie=set_cookie,
        )
    except BaseException:
        cancel_suspense(request)
        raise


def _is_html(headers: CIMultiDict[str]) -> bool:
    content_type = headers.get("Content-Type", "")
    return content_type.startswith(("text/html", "application/xhtml+xml"))


def visitor_session(
    request: web.Request,
    edge: Edge,
    route: RouteConfig,
    origin: OriginConfig,
    slots: list[tuple[str, str, float]],
    channels: list[str],
    *,
    session_id: str | None = None,
) -> str | None:
    """Open the visitor's session for a page; start its suspense fetches with the
    visitor's cookies; subscribe it to the page's channels. Returns the Set-Cookie value
    for a new session (None for an existing one, or without a session hub)."""
    hub = edge.hub
    if hub is None:
        return None
    set_cookie = None
    if session_id is None:
        events_url = origin.url + origin.events if origin.events else None
        session_id, set_cookie = hub.open_for_page(
            request.headers.get("Cookie"), events_url=events_url
        )
    request[SESSION_KEY] = session_id
    for channel in channels:
        hub.subscribe(session_id, channel)
    visitor = {k: v for k, v in request.headers.items()}
    fetches = [
        (slot, _suspense_fetch(edge, route, slot, url, timeout_s, visitor))
        for slot, url, timeout_s in slots
    ]
    if fetches:
        request.setdefault(SUSPENSE_KEY, []).extend(hub.run_suspense(session_id, fetches))
    return set_cookie


def cancel_suspense(request: web.Request) -> None:
    """The page's client went away before its page arrived: stop its suspense fetches."""
    for task in request.get(SUSPENSE_KEY, ()):
        task.cancel()


def _suspense_fetch(
    edge: Edge,
    route: RouteConfig,
    slot: str,
    url: str,
    timeout_s: float,
    visitor: dict[str, str],
) -> Callable[[], Awaitable[str]]:
    plan = IncludePlan(
        src=url,
        url=url,
        mode=IncludeMode.SUSPENSE,
        timeout_s=timeout_s,
        alt_url=None,
        continue_on_error=False,
        fallback=b"",
        is_primary=False,
    )

    async def fetch() -> str:
        return await fetch_suspense(edge.client, plan, visitor_headers=visitor, vary=route.vary)

    return fetch


def _freshness(manifest: Manifest) -> Freshness:
    return freshness_of(manifest)


def _variant_matches(request: web.Request, route: RouteConfig, manifest: Manifest) -> bool:
    """Whether ``request`` agrees with the stored one on the origin's Vary headers."""
    vary = CIMultiDict(manifest.headers).get("Vary")
    if not vary:
        return True
    if parse_vary(vary) is None:
        return False  # Vary: * is never reused (RFC 9111 §4.1)
    return variant_of(shell_request_headers(request, route), vary) == manifest.variant


def _start(edge: Edge, plan: FillPlan) -> Fill:
    async def body(fill: Fill) -> None:
        await fill_page(fill, edge, plan)

    return edge.fills.start(plan.key, body, max_buffer_bytes=FILL_BUFFER_BYTES)


async def _follow(
    request: web.Request, edge: Edge, plan: FillPlan, *, stale_entry: Entry | None = None
) -> web.StreamResponse:
    """Answer from the running fill for ``plan.key``, or start one and answer from it."""
    fill = edge.fills.joinable(plan.key) if plan.key else None
    is_coalesced = fill is not None
    if fill is None:
        fill = _start(edge, plan)
    with fill.follow() as follower:
        try:
            head = await follower.head()
        except OriginError:
            if stale_entry is not None and _may_serve_stale_on_error(stale_entry):
                return await _stale_on_error(request, stale_entry)
            raise
        if head.status >= 500 and stale_entry is not None:
            if _may_serve_stale_on_error(stale_entry):
                return await _stale_on_error(request, stale_entry)
        if is_coalesced and not head.is_shareable:
            follower.close()  # a private answer is never handed to another visitor
            return await _follow(request, edge, dataclasses.replace(plan, key=""))
        status = head.cache_status
        if status == "MISS":
            status = "COALESCED" if is_coalesced else ("MISS" if head.is_shareable else "BYPASS")
        response = _response(head, status)
        started_slots = list(fill.slots)
        is_page = _is_html(head.headers) and head.status < 400
        if is_page:
            cookie = visitor_session(
                request, edge, plan.route, plan.origin, started_slots, list(fill.channels)
            )
            if cookie is not None:
                response.headers.add("Set-Cookie", cookie)
        try:
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in follower.chunks():
                    await response.write(chunk)
                    fill.mark_started()
            fill.mark_started()
            if is_page and SESSION_KEY in request:  # slots found after the head (nested)
                later = [s for s in fill.slots if s not in started_slots]
                visitor_session(
                    request,
                    edge,
                    plan.route,
                    plan.origin,
                    later,
                    list(fill.channels),
                    session_id=request[SESSION_KEY],
                )
        except BaseException as exc:
            cancel_suspense(request)  # the client is gone or the page broke off
            if not isinstance(exc, FillFailed | FollowerLagged):
                raise
            log.warning("response for %s aborted: %s", request.path, exc)
            if request.transport is not None:
                request.transport.abort()  # never end a broken body as if it were whole
            return response
        await response.write_eof()
        return response


def _response(head: Head, cache_status: str) -> web.StreamResponse:
    headers = CIMultiDict(head.headers)
    headers["X-Weaver-Cache"] = cache_status
    return web.StreamResponse(status=head.status, headers=headers)


def _may_serve_stale_on_error(entry: Entry) -> bool:
    state = _freshness(entry.manifest).state(time.time(), origin_failed=True)
    return state in (CacheState.STALE_IF_ERROR, CacheState.STALE_WHILE_REVALIDATE)


async def _stale_on_error(request: web.Request, entry: Entry) -> web.StreamResponse:
    age = _freshness(entry.manifest).age_header(time.time())
    log.warning("origin failing for %s: serving stale (stale-if-error)", request.path)
    return await replay(request, entry, cache_status="STALE", age=age)


async def _unsafe(request: web.Request, edge: Edge, origin: OriginConfig) -> web.StreamResponse:
    """Unsafe methods always go to the origin; a success invalidates what they name."""
    url = origin.url + request.rel_url.raw_path_qs
    headers = passthrough_request_headers(request)
    body = _body(request) if request.body_exists else None
    async with edge.client.request(request.method, url, headers=headers, body=body) as resp:
        response_headers = strip_hop_by_hop(resp.headers)
        response_headers["X-Weaver-Cache"] = "BYPASS"
        response = web.StreamResponse(status=resp.status, headers=response_headers)
        await response.prepare(request)
        async for chunk in resp.chunks():
            await response.write(chunk)
        await response.write_eof()
        targets = fresh.invalidation_targets(
            request.method, resp.status, str(request.url), resp.headers
        )
    if edge.store is not None and targets:
        await _invalidate(edge, request.host, targets)
    return response


async def _invalidate(edge: Edge, host: str, targets: list[str]) -> None:
    """RFC 9111 §4.4: drop every stored variant of each target path."""
    assert edge.store is not None
    for target in targets:
        path = urlsplit(target).path or "/"
        prefix = key_prefix(host, path)
        for key in await edge.store.keys():
            rest = key[len(prefix) :]
            if key.startswith(prefix) and (not rest or rest[0] in "?|"):
                await edge.store.delete(key)


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(64 * 1024):
        yield chunk
