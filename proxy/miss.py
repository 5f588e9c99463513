"""A page not answered from the store: from a fill, started here or joined (coalesced).

``X-Weaver-Cache`` says which: MISS (this request started the fill; stored if allowed),
COALESCED (followed a fill another request started), BYPASS (never storable: a HEAD miss,
a private answer) and STALE (the origin failed and the stored page may be served
stale-if-error, RFC 5861 §4). The body streams to the visitor as the fill receives it,
compressed for this visitor as it goes; a page's suspense slots start for the visitor
as soon as they are known, or follow the paint inline on an inline route.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial

from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from weaver.cache.errors import FillFailed, FollowerLagged
from weaver.cache.fills import Fill, Follower, Head
from weaver.cache.freshness import CacheState
from weaver.cache.keys import parse_vary
from weaver.cache.store import Entry
from weaver.proxy.access_log import CLIENT_GONE
from weaver.proxy.compress import apply_negotiated, choose_encoding, is_negotiable
from weaver.proxy.compressors import StreamCompressor, new_compressor
from weaver.proxy.edge import Edge
from weaver.proxy.entries import variant_of
from weaver.proxy.errors import OriginError
from weaver.proxy.filling import FillPlan, fill_page
from weaver.proxy.inline import InlineSlots
from weaver.proxy.replay import inline_headers, private_downstream, replay
from weaver.proxy.visitor import (
    Visit,
    add_slots,
    cancel_suspense,
    is_html,
    is_inline_delivery,
    open_session,
    slot_producers,
)

log = logging.getLogger(__name__)

# A fill keeps at most this much of its body for followers behind the fastest one.
FILL_BUFFER_BYTES = 4 * 1024 * 1024


def start_fill(edge: Edge, plan: FillPlan) -> Fill:
    """Start the fill ``plan`` asks for; the app's fill registry owns it."""
    body = partial(fill_page, edge=edge, plan=plan)  # no coroutine frame of its own
    return edge.fills.start(plan.key, body, max_buffer_bytes=FILL_BUFFER_BYTES)


def _may_share(plan: FillPlan, head: Head) -> bool:
    """Whether a follower that sent ``plan.headers`` may have the leader's answer."""
    if not head.is_shareable:
        return False
    vary = head.headers.get("Vary")
    if vary and parse_vary(vary) is None:
        return False
    return variant_of(plan.headers, vary) == head.variant


async def follow(
    visit: Visit, plan: FillPlan, *, stale_entry: Entry | None = None
) -> web.StreamResponse:
    """Answer from the running fill for ``plan.key``, or start one and answer from it."""
    request, edge = visit.request, visit.edge
    fill = edge.fills.to_follow(plan.key) if plan.key else None
    is_coalesced = fill is not None
    if fill is None:
        fill = start_fill(edge, plan)
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
            return await follow(visit, dataclasses.replace(plan, key=""))
        status = head.cache_status
        if status == "MISS":
            status = "COALESCED" if is_coalesced else ("MISS" if head.is_shareable else "BYPASS")
        response = _response(head, status, is_coalesced=is_coalesced)
        # Compressed for this visitor as it streams (a sync flush per chunk); what is
        # stored stays identity, and hits are compressed once from it (replay).
        compressor = None
        if is_negotiable(head.headers, status=head.status):  # so are the response's
            encoding = choose_encoding(request.headers.get("Accept-Encoding"))
            apply_negotiated(response.headers, encoding)
            compressor = new_compressor(encoding) if encoding is not None else None
        started_slots = list(fill.slots)
        is_page = is_html(head.headers) and head.status < 400
        is_inline = is_page and is_inline_delivery(visit)
        if is_page:
            cookie = open_session(visit, started_slots, list(fill.channels), is_inline=is_inline)
            if cookie is not None:
                response.headers.add("Set-Cookie", cookie)
                private_downstream(response.headers)
        if is_inline:  # private even if no slot turns up: nested ones are not known yet
            inline_headers(response.headers)
        if request.version < HttpVersion11:
            response.force_close()  # an HTTP/1.0 client sees the end of a streamed body
        send = partial(_send, visit, response, follower, compressor, is_page, started_slots)
        if not is_inline:  # no slot task group: a plain miss starts no task of its own
            return await send(None)
        async with InlineSlots(slot_producers(visit)) as inline:
            inline.start(started_slots)  # fetched while the paint streams
            return await send(inline)


async def _send(
    visit: Visit,
    response: web.StreamResponse,
    follower: Follower,
    compressor: StreamCompressor | None,
    is_page: bool,
    started_slots: list[tuple[str, str, float]],
    inline: InlineSlots | None,
) -> web.StreamResponse:
    """Send the head and body, then the ``inline`` slots, or start the slots found after
    the head over the session."""
    request, fill = visit.request, follower.fill
    tail = b""
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            tail = await _stream_body(response, follower, fill, compressor, is_last=inline is None)
        fill.mark_started()
        if inline is not None:  # the paint has gone: every slot is known, nested ones too
            inline.start(fill.slots)
            tail = await _stream_inline(response, inline, compressor, tail)
        elif is_page:  # slots found after the head (nested in fragments)
            add_slots(visit, [s for s in fill.slots if s not in started_slots])
    except BaseException as exc:
        cancel_suspense(request)  # the client is gone or the page broke off
        if isinstance(exc, ConnectionResetError):
            return _gone(request, response)
        if not isinstance(exc, FillFailed | FollowerLagged):
            raise
        log.warning("response for %s aborted: %s", request.path, exc)
        if request.transport is not None:
            request.transport.abort()  # never end a broken body as if it were whole
        return response
    try:
        await response.write_eof(tail)
    except ConnectionResetError:
        return _gone(request, response)
    return response


def _gone(request: web.BaseRequest, response: web.StreamResponse) -> web.StreamResponse:
    """The visitor closed the connection before its page was written: nothing is wrong
    with Weaver or the origin, and nobody is left to tell (aiohttp's error log and its
    500 are for a handler that failed)."""
    log.debug("%s: the visitor left before the end of the page", request.path)
    request[CLIENT_GONE] = True  # the access log says 499
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
    while data := await follower.read():
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
