"""One page request: route, cache lookup, then replay, follow a running fill, or fill.

``X-Weaver-Cache`` says which: HIT (fresh, replayed), STALE (served stale: in the
stale-while-revalidate window with one background refresh, or stale-if-error while the
origin fails), REVALIDATED (the origin answered 304), COALESCED (followed a fill another
request started), MISS (filled from the origin and stored if allowed) and BYPASS (never
looked up or never storable: unsafe methods, HEAD misses, private answers).

What goes to the origin is decided in :mod:`weaver.proxy.forwarding`: the visitor's own
request on an ordinary route, the page's canonical request on a ``shared`` one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from weaver.cache import freshness as fresh
from weaver.cache.errors import CacheError, FillFailed, FollowerLagged
from weaver.cache.fills import Fill, Follower, Head
from weaver.cache.freshness import CacheState
from weaver.cache.keys import (
    cache_key,
    key_prefix,
    normalise_authority,
    normalise_target,
    parse_vary,
    request_vary_values,
)
from weaver.cache.manifest import Manifest
from weaver.cache.store import Entry
from weaver.config.schema import SuspenseDelivery
from weaver.proxy.compress import (
    StreamCompressor,
    apply_encoding,
    is_negotiable,
    negotiate,
    new_compressor,
)
from weaver.proxy.edge import EDGE_KEY, Edge
from weaver.proxy.entries import variant_key, variant_of
from weaver.proxy.errors import OriginError
from weaver.proxy.filling import FillPlan, fill_page
from weaver.proxy.forwarding import (
    ASKED_BY_WEAVER,
    canonical_headers,
    strip_hop_by_hop,
    visitor_headers,
)
from weaver.proxy.inline import InlineSlots
from weaver.proxy.pages import error_page, origin_error_page
from weaver.proxy.replay import inline_headers, private_downstream, replay, replay_inline
from weaver.proxy.upgrade import proxy_upgrade
from weaver.proxy.upgrade_head import is_upgrade_request
from weaver.proxy.visitor import (
    Visit,
    add_slots,
    cancel_suspense,
    open_session,
    slot_producers,
    visit_of,
)

log = logging.getLogger(__name__)

_SAFE_METHODS = ("GET", "HEAD")

# A fill keeps at most this much of its body for followers behind the fastest one.
FILL_BUFFER_BYTES = 4 * 1024 * 1024


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    edge = request.app[EDGE_KEY]
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
            return await _unsafe(visit)
        if edge.store is None:
            return await _follow(visit, _plan(visit, key=""))
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


def _fragment_headers(shell: CIMultiDict[str]) -> CIMultiDict[str]:
    headers = CIMultiDict(shell)
    for name in ("Host", "Content-Length", "Content-Type", *ASKED_BY_WEAVER):
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
                    _start(edge, _plan(visit, key=key, stale=entry.manifest))
                return await _replay(visit, entry, "STALE", now, lookup_s)
        except CacheError as exc:  # damaged or gone before a byte was sent: a miss
            log.warning("%s: stored body unusable (%s); asking the origin", key, exc)
            entry = None
    if request.method == "HEAD":  # a HEAD miss asks the origin, stores nothing
        return await _follow(visit, _plan(visit, key=""))
    stale = entry.manifest if entry is not None else None
    return await _follow(visit, _plan(visit, key=key, stale=stale), stale_entry=entry)


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
    is_page = _is_html(stored) and manifest.status < 400
    if is_page and manifest.slots and _is_inline(visit):
        return await _replay_inline(visit, entry, cache_status, now, lookup_s)
    if _is_html(stored):
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


def _is_inline(visit: Visit) -> bool:
    """Whether this page request gets its slots inline: a GET of a page on an inline
    route; HEAD and Range requests are answered as with session delivery."""
    request = visit.request
    return (
        visit.route.suspense_delivery is SuspenseDelivery.INLINE
        and request.method == "GET"
        and "Range" not in request.headers
    )


def _is_html(headers: CIMultiDict[str]) -> bool:
    content_type = headers.get("Content-Type", "")
    return content_type.startswith(("text/html", "application/xhtml+xml"))


def _start(edge: Edge, plan: FillPlan) -> Fill:
    async def body(fill: Fill) -> None:
        await fill_page(fill, edge, plan)

    return edge.fills.start(plan.key, body, max_buffer_bytes=FILL_BUFFER_BYTES)


def _may_share(plan: FillPlan, head: Head) -> bool:
    """Whether a follower that sent ``plan.headers`` may have the leader's answer."""
    if not head.is_shareable:
        return False
    vary = head.headers.get("Vary")
    if vary and parse_vary(vary) is None:
        return False
    return variant_of(plan.headers, vary) == head.variant


async def _follow(
    visit: Visit, plan: FillPlan, *, stale_entry: Entry | None = None
) -> web.StreamResponse:
    """Answer from the running fill for ``plan.key``, or start one and answer from it."""
    request, edge = visit.request, visit.edge
    fill = edge.fills.joinable(plan.key) if plan.key else None
    is_coalesced = fill is not None
    if fill is None:
        fill = _start(edge, plan)
    with fill.follow() as follower:
        try:
            head = await follower.head()
        except OriginError:
            if stale_entry is not None and _may_serve_stale_on_error(edge, stale_entry):
                return await _stale_on_error(edge, request, stale_entry)
            raise
        if head.status >= 500 and stale_entry is not None:
            if _may_serve_stale_on_error(edge, stale_entry):
                return await _stale_on_error(edge, request, stale_entry)
        if is_coalesced and not _may_share(plan, head):
            follower.close()  # another visitor's answer, or one that varies: our own fetch
            return await _follow(visit, dataclasses.replace(plan, key=""))
        status = head.cache_status
        if status == "MISS":
            status = "COALESCED" if is_coalesced else ("MISS" if head.is_shareable else "BYPASS")
        response = _response(head, status, is_coalesced=is_coalesced)
        # Compressed for this visitor as it streams (a sync flush per chunk); what is
        # stored stays identity, and hits are compressed once from it (replay).
        encoding = negotiate(request.headers, head.headers, status=head.status)
        apply_encoding(response.headers, encoding, status=head.status)
        compressor = new_compressor(encoding) if encoding is not None else None
        started_slots = list(fill.slots)
        is_page = _is_html(head.headers) and head.status < 400
        is_inline = is_page and _is_inline(visit)
        if is_page:
            cookie = open_session(visit, started_slots, list(fill.channels), is_inline=is_inline)
            if cookie is not None:
                response.headers.add("Set-Cookie", cookie)
                private_downstream(response.headers)
        if is_inline:  # private even if no slot turns up: nested ones are not known yet
            inline_headers(response.headers)
        if request.version < HttpVersion11:
            response.force_close()  # an HTTP/1.0 client sees the end of a streamed body
        tail = b""
        async with InlineSlots(slot_producers(visit)) as inline:
            if is_inline:
                inline.start(started_slots)  # fetched while the paint streams
            try:
                await response.prepare(request)
                if request.method != "HEAD":
                    tail = await _stream_body(
                        response, follower, fill, compressor, is_last=not is_inline
                    )
                fill.mark_started()
                if is_inline:  # the paint has gone: every slot is known, nested ones too
                    inline.start(fill.slots)
                    tail = await _stream_inline(response, inline, compressor, tail)
                elif is_page:  # slots found after the head (nested in fragments)
                    add_slots(visit, [s for s in fill.slots if s not in started_slots])
            except BaseException as exc:
                cancel_suspense(request)  # the client is gone or the page broke off
                if not isinstance(exc, FillFailed | FollowerLagged):
                    raise
                log.warning("response for %s aborted: %s", request.path, exc)
                if request.transport is not None:
                    request.transport.abort()  # never end a broken body as if it were whole
                return response
            await response.write_eof(tail)
        return response


async def _stream_inline(
    response: web.StreamResponse,
    inline: InlineSlots,
    compressor: StreamCompressor | None,
    held: bytes,
) -> bytes:
    """Send the paint's last bytes with the first inline markup, then the rest as it
    comes (each piece flushed); return the end of the body, unwritten."""
    async for data in inline.tail():
        if compressor is not None:
            data = compressor.compress(data) + compressor.flush()
        await response.write(held + data)  # nothing is known to follow soon: send it now
        held = b""
    return held + (compressor.finish() if compressor is not None else b"")


async def _stream_body(
    response: web.StreamResponse,
    follower: Follower,
    fill: Fill,
    compressor: StreamCompressor | None,
    *,
    is_last: bool = True,
) -> bytes:
    """Write the fill's bytes as they come; return the last chunk, unwritten.

    Writes are coalesced without delaying a byte: the head goes with the first chunk, a
    chunk is held back only while the next one is already there, and the last one goes
    out with the end of the body, so a page that arrived whole is one write.
    ``is_last=False``: more follows (inline slots), the compressor is not finished.
    """
    held = b""
    if not follower.is_ready():
        await response.write(b"")  # nothing to send yet: the head goes now, alone
    async for data in follower.chunks():
        chunk = data if compressor is None else compressor.compress(data) + compressor.flush()
        if held:
            await response.write(held)
            fill.mark_started()
        held = chunk
        if not follower.is_ready():
            await response.write(held)  # the next bytes are not here: send what we have
            held = b""
            fill.mark_started()  # the first bytes are out: fragment fetches may start
    if compressor is not None and is_last:
        held += compressor.finish()
    return held


class _Streamed(web.StreamResponse):
    """A streamed response whose head goes out with its first bytes (one write, not
    two); :func:`_stream_body` sends it alone when no bytes are ready."""

    _send_headers_immediately = False


def _response(head: Head, cache_status: str, *, is_coalesced: bool) -> web.StreamResponse:
    headers = CIMultiDict(head.headers)
    if is_coalesced:
        headers.popall("Set-Cookie", None)  # the leader's cookies are the leader's
    headers["X-Weaver-Cache"] = cache_status
    return _Streamed(status=head.status, headers=headers)


def _may_serve_stale_on_error(edge: Edge, entry: Entry) -> bool:
    state = entry.manifest.freshness.state(edge.clock.time(), origin_failed=True)
    return state in (CacheState.STALE_IF_ERROR, CacheState.STALE_WHILE_REVALIDATE)


async def _stale_on_error(edge: Edge, request: web.Request, entry: Entry) -> web.StreamResponse:
    age = entry.manifest.freshness.age_header(edge.clock.time())
    log.warning("origin failing for %s: serving stale (stale-if-error)", request.path)
    return await replay(request, entry, cache_status="STALE", age=age)


async def _unsafe(visit: Visit) -> web.StreamResponse:
    """Unsafe methods always go to the origin as the visitor sent them (a body keeps its
    Content-Length); a success invalidates what they name (RFC 9111 §4.4) as soon as its
    status is known, so a client that leaves at once does not keep stale entries."""
    request, edge = visit.request, visit.edge
    url = visit.origin.url + visit.target
    headers = visitor_headers(request.headers, visit.peer, for_fill=False)
    if visit.origin.preserve_host:
        headers["Host"] = request.host
    body = _body(request) if request.body_exists else None
    async with edge.client.request(request.method, url, headers=headers, body=body) as resp:
        targets = fresh.invalidation_targets(
            request.method, resp.status, str(request.url), resp.headers
        )
        if edge.store is not None and targets:
            await _invalidate(edge, visit.authority, targets)
        response_headers = strip_hop_by_hop(resp.headers)
        response_headers["X-Weaver-Cache"] = "BYPASS"
        response = web.StreamResponse(status=resp.status, headers=response_headers)
        if request.version < HttpVersion11:
            response.force_close()
        await response.prepare(request)
        async for chunk in resp.chunks():
            await response.write(chunk)
        await response.write_eof()
    return response


async def _invalidate(edge: Edge, host: str, targets: list[str]) -> None:
    """RFC 9111 §4.4: drop every stored variant of each target path."""
    assert edge.store is not None
    for target in targets:
        path = normalise_target(urlsplit(target).path or "/")
        prefix = key_prefix(host, path)
        for key in await edge.store.keys():
            rest = key[len(prefix) :]
            if key.startswith(prefix) and (not rest or rest[0] in "?|"):
                await edge.store.delete(key)


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(64 * 1024):
        yield chunk
