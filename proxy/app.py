"""The Weaver HTTP application: pages, health, and the operator endpoints.

Run it with ``handler_cancellation=True`` (see :func:`weaver.proxy.cli.start_site`): a
client that goes away cancels its handler, which is what stops the work done for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from weaver.cache.purge import apply_broadcast
from weaver.cache.store import Store
from weaver.config.schema import Config
from weaver.proxy.admin import add_admin_routes
from weaver.proxy.edge import EDGE_KEY, Edge
from weaver.proxy.handler import proxy_handler
from weaver.proxy.hitlane import HitLane
from weaver.proxy.origin import OriginClient
from weaver.proxy.paint import Fills
from weaver.session.bus import make_bus
from weaver.session.http import add_routes as add_session_routes
from weaver.session.hub import SessionHub

log = logging.getLogger(__name__)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(config: Config) -> web.Application:
    """The Weaver application for ``config``; run it with handler cancellation on."""
    app = web.Application(client_max_size=64 * 1024**2)

    async def edge_context(app: web.Application) -> AsyncIterator[None]:
        store = Store(
            config.cache.dir,
            max_size_bytes=config.cache.max_size_bytes,
            memory_max_bytes=config.cache.memory_size_bytes,
        )
        await store.open()
        try:
            async with OriginClient(config) as client:
                fills = Fills()
                edge = Edge(
                    config=config,
                    client=client,
                    store=store,
                    fills=fills,
                    hub=hub,
                    lane=HitLane(store),
                )
                app[EDGE_KEY] = edge
                if hub is not None:
                    hub.bus.on_purge(lambda body: apply_broadcast(store, body))
                    await hub.start()
                    log.info("sessions on ws://%s:%d/", config.session.listen.host, hub.port)
                try:
                    yield
                finally:
                    if hub is not None:
                        await hub.stop()  # bye, close 1001, suspense fetches cancelled
                    await fills.aclose()  # shutdown: fills still running stop here
        finally:
            await store.close()

    hub = (
        SessionHub(
            config.session,
            bus=make_bus(config.bus),
            log_max_messages=config.bus.session_log,
            channel_history=config.bus.channel_history,
        )
        if config.session.secret
        else None
    )
    if hub is None:
        log.warning("session.secret is not set: no sessions; suspense keeps its fallbacks")
    else:
        add_session_routes(app, hub)
    app.cleanup_ctx.append(edge_context)
    app.router.add_get("/_weaver/health", health)
    add_admin_routes(app)
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    return app
