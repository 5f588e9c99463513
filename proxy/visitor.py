"""The visitor's side of a page: their session, their suspense fetches, their headers.

A page opens a session (and sets ``weaver_session``) only when its paint has suspense
slots or channels: a cookie-less visitor of a plain page creates nothing. Every page that
opens one gets a new session (rotation, see :meth:`SessionHub.open_for_page`), so a
planted cookie never lets anyone else read a visitor's suspense or act with their cookies.
Suspense fragments are always fetched with the visitor's own headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from weaver.config.schema import IncludeMode, OriginConfig, RouteConfig, SuspenseDelivery
from weaver.proxy.edge import Edge
from weaver.proxy.forwarding import Peer, is_trusted, visitor_headers
from weaver.proxy.includes import IncludePlan
from weaver.proxy.slots import is_stream_slot
from weaver.proxy.suspense import SlotFetch, fetch_slot
from weaver.session.slots import Emit, SlotProducer

log = logging.getLogger(__name__)

SESSION_KEY = web.RequestKey("weaver_session_id", str)
SUSPENSE_KEY = web.RequestKey("weaver_suspense_tasks", list["asyncio.Task[None]"])


@dataclass(frozen=True, slots=True)
class Visit:
    """One request and what it was routed to."""

    request: web.Request
    edge: Edge
    route: RouteConfig
    origin: OriginConfig
    peer: Peer
    authority: str  # the normalised Host
    target: str  # the normalised request target: the origin's, and the cache key's


def peer_of(request: web.Request, edge: Edge) -> Peer:
    address = request.remote or ""
    return Peer(
        address=address,
        scheme=request.scheme,
        host=request.host,
        is_trusted=is_trusted(address, edge.config.server.trusted_proxies),
    )


def visit_of(
    request: web.Request, edge: Edge, route: RouteConfig, authority: str, target: str
) -> Visit:
    peer = peer_of(request, edge)
    return Visit(request, edge, route, edge.config.origin(route.origin), peer, authority, target)


def is_inline_delivery(visit: Visit) -> bool:
    """Whether this page request gets its slots inline: a GET of a page on an inline
    route; HEAD and Range requests are answered as with session delivery."""
    request = visit.request
    return (
        visit.route.suspense_delivery is SuspenseDelivery.INLINE
        and request.method == "GET"
        and "Range" not in request.headers
    )


def is_html(headers: CIMultiDict[str]) -> bool:
    """Whether an answer with ``headers`` is a page (HTML): only pages open sessions."""
    content_type = headers.get("Content-Type", "")
    return content_type.startswith(("text/html", "application/xhtml+xml"))


def open_session(
    visit: Visit,
    slots: list[tuple[str, str, float]],
    channels: list[str],
    *,
    is_inline: bool = False,
) -> str | None:
    """Open the visitor's session for a page with suspense slots or channels: start the
    slots' fetches with the visitor's headers, subscribe it to the page's channels.

    ``is_inline``: the slots go inline in the page's response (:mod:`weaver.proxy.inline`),
    so the session opens (for pushes, patches and events) without starting them: nothing
    of them ever goes over the session.

    Returns the Set-Cookie value, or None when the page needs no session (or sessions
    are off). Slots found later (nested in fragments) go to :func:`add_slots`.
    """
    hub = visit.edge.hub
    if hub is None or not (slots or channels):
        return None
    origin = visit.origin
    events_url = origin.url + origin.events if origin.events else None
    session_id, set_cookie = hub.open_for_page(
        visit.request.headers.get("Cookie"), events_url=events_url, secure=visit.request.secure
    )
    visit.request[SESSION_KEY] = session_id
    for channel in channels:
        hub.subscribe(session_id, channel)
    if not is_inline:
        add_slots(visit, slots)
    return set_cookie


def add_slots(visit: Visit, slots: list[tuple[str, str, float]]) -> None:
    """Start suspense fetches for ``slots`` on the visitor's open session, if any."""
    hub = visit.edge.hub
    session_id = visit.request.get(SESSION_KEY)
    if hub is None or not slots:
        return
    if session_id is None:
        log.debug(
            "%d slots found after the head of %s keep their fallbacks",
            len(slots),
            visit.request.path,
        )
        return
    headers = visitor_headers(visit.request.headers, visit.peer, for_fill=True)
    producers = [
        (slot, _producer(visit, slot, url, timeout_s, headers)) for slot, url, timeout_s in slots
    ]
    visit.request.setdefault(SUSPENSE_KEY, []).extend(hub.run_slot_streams(session_id, producers))


def cancel_suspense(request: web.Request) -> None:
    """The page's client went away before its page arrived: stop its suspense fetches."""
    for task in request.get(SUSPENSE_KEY, ()):
        task.cancel()


def slot_producers(visit: Visit) -> Callable[[str, str, float], SlotProducer]:
    """Makes the producer of one slot (id, URL, timeout) for this visitor, as the
    session's fetches are made: for inline delivery (:class:`weaver.proxy.inline.InlineSlots`)."""
    made: list[CIMultiDict[str]] = []  # the visitor's headers, made for the first slot

    def make(slot: str, url: str, timeout_s: float) -> SlotProducer:
        if not made:  # most pages have no inline slot: nothing to make on their way out
            made.append(visitor_headers(visit.request.headers, visit.peer, for_fill=True))
        return _producer(visit, slot, url, timeout_s, made[0])

    return make


def _producer(
    visit: Visit, slot: str, url: str, timeout_s: float, headers: CIMultiDict[str]
) -> SlotProducer:
    """The slot's fetch for this visitor: whole, or streamed when its include asked to
    (its id says so) or it answers text/event-stream (proxy/suspense.py)."""
    plan = IncludePlan(
        src=url,
        url=url,
        mode=IncludeMode.SUSPENSE,
        timeout_s=timeout_s,
        alt_url=None,
        continue_on_error=False,
        fallback=b"",
        is_primary=False,
        is_stream=is_stream_slot(slot),
    )
    edge = visit.edge
    fetch = SlotFetch(edge.client, edge.config, visit.route, visit.origin, plan, headers)

    async def produce(emit: Emit) -> None:
        await fetch_slot(fetch, emit)

    return produce
