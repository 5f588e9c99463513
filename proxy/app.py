"""The Weaver HTTP application: pages, health, and the operator endpoints.

Run it with ``handler_cancellation=True`` (see :func:`weaver.proxy.serve.start_site`): a
client that goes away cancels its handler, which is what stops the work done for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable

from aiohttp import web
from aiohttp.typedefs import Middleware

from weaver.cache.clock import SYSTEM_CLOCK, Clock
from weaver.cache.fills import Fills
from weaver.cache.purge import apply_broadcast
from weaver.cache.store import Store
from weaver.config.schema import AccessLogFormat, Config
from weaver.proxy import access_log, metrics
from weaver.proxy.admin import add_admin_routes
from weaver.proxy.edge import EDGE_KEY, Edge
from weaver.proxy.errors import ProxyError
from weaver.proxy.handler import handle_page, proxy_handler
from weaver.proxy.hitlane import HitLane
from weaver.proxy.listener import Front, Pages
from weaver.proxy.origin import OriginClient
from weaver.session.buses import make_bus
from weaver.session.http import add_routes as add_session_routes
from weaver.session.hub import SessionHub

log = logging.getLogger(__name__)


def hub_for(config: Config, clock: Clock = SYSTEM_CLOCK) -> SessionHub | None:
    """The session hub ``config`` asks for, on its bus; None without a session secret.
    Its session tokens are issued and checked on ``clock`` (the app's)."""
    if not config.session.secret:
        return None
    return SessionHub(
        config.session,
        bus=make_bus(config.bus),
        log_max_messages=config.bus.session_log,
        channel_history=config.bus.channel_history,
        wall_clock=clock.time,
    )


def lane_front(app: web.Application) -> Front | None:
    """The hit lane ahead of the router and the middlewares, for a started app (see
    :class:`weaver.proxy.listener.EdgeRunner`); it counts what it answers in the metrics
    as the access middleware would. With an access log on, lane hits go through the
    middleware instead, so every request has its line."""
    edge = app.get(EDGE_KEY)
    if (
        edge is None
        or edge.lane is None
        or edge.config.server.access_log is not AccessLogFormat.OFF
    ):
        return None
    lane = edge.lane

    def front(request: web.BaseRequest) -> web.StreamResponse | None:
        answered = lane.answer(request)
        if answered is not None:
            metrics.observe_request(answered.route, "HIT", answered.status)
        return answered

    return front


# Every route of Weaver's own is under this prefix; every other path is a page.
_OWN_PREFIX = "/_weaver/"
_PAGE_METHODS = ("GET", "HEAD")
_ACCESS_KEY: web.AppKey[Middleware] = web.AppKey("weaver_access_middleware")


def page_front(app: web.Application) -> Pages | None:
    """Page requests straight to the page handler, ahead of aiohttp's router and its
    middleware chain built per request (for a started app, see
    :class:`weaver.proxy.listener.EdgeRunner`). The access middleware still logs and
    counts each one: it is called directly. Only GET and HEAD without ``Expect`` (the
    router's expect handler answers ``100-continue``), and only while every route but the
    catch-all is under ``/_weaver/`` and the access middleware is the app's only one."""
    edge = app.get(EDGE_KEY)
    access = app.get(_ACCESS_KEY)
    if edge is None or access is None or list(app.middlewares) != [access]:
        return None
    for resource in app.router.resources():
        if resource.canonical != "/{tail}" and not resource.canonical.startswith(_OWN_PREFIX):
            return None

    async def page(request: web.Request) -> web.StreamResponse:
        return await handle_page(request, edge)

    def pages(request: web.BaseRequest) -> Awaitable[web.StreamResponse] | None:
        if (
            request.method not in _PAGE_METHODS
            or "Expect" in request.headers
            or request.path.startswith(_OWN_PREFIX)
            or not isinstance(request, web.Request)
        ):
            return None  # the router decides
        return access(request, page)

    return pages


def build_app(
    config: Config, *, hub: SessionHub | None = None, clock: Clock = SYSTEM_CLOCK
) -> web.Application:
    """The Weaver application for ``config``; run it with handler cancellation on.

    Without ``hub`` the app makes its own from ``config.session`` (if it has a secret)
    and starts and stops it with the app. With one, the caller owns it (started before,
    stopped after: :class:`weaver.proxy.node.Node` keeps it across reloads).

    ``clock`` is the app's one clock (freshness, ages, expiry); tests pass a
    :class:`~weaver.cache.clock.ManualClock` and advance it instead of sleeping.
    """
    access = access_log.middleware(config)
    app = web.Application(client_max_size=64 * 1024**2, middlewares=[access])
    app[_ACCESS_KEY] = access
    owns_hub = hub is None
    if hub is None:
        hub = hub_for(config, clock)

    async def edge_context(app: web.Application) -> AsyncIterator[None]:
        store = Store(
            config.cache.dir,
            max_size_bytes=config.cache.max_size_bytes,
            memory_max_bytes=config.cache.memory_size_bytes,
        )
        await store.open()
        try:
            async with OriginClient(config) as client:
                fills = Fills(expected=(ProxyError,))
                edge = Edge(
                    config=config,
                    client=client,
                    store=store,
                    fills=fills,
                    hub=hub,
                    lane=HitLane(store, clock=clock.time),
                    clock=clock,
                )
                app[EDGE_KEY] = edge
                if hub is not None:  # purges from other nodes and workers reach this store
                    hub.bus.on_purge(lambda body: apply_broadcast(store, body))
                if hub is not None and owns_hub:
                    await hub.start()
                    log.info("sessions on ws://%s:%d/", config.session.listen.host, hub.port)
                try:
                    yield
                finally:
                    if hub is not None and owns_hub:
                        await hub.stop()  # bye, close 1001, suspense fetches cancelled
                    await fills.aclose()  # shutdown: fills still running stop here
        finally:
            await store.close()

    if hub is None:
        log.warning("session.secret is not set: no sessions; suspense keeps its fallbacks")
    else:
        add_session_routes(app, hub)
    app.cleanup_ctx.append(edge_context)
    add_admin_routes(app)
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    return app
