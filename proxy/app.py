"""The Weaver HTTP application: pages, health, and the operator endpoints.

Run it with ``handler_cancellation=True`` (see :func:`weaver.proxy.cli.start_site`): a
client that goes away cancels its handler, which is what stops the work done for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from weaver.cache.store import Store
from weaver.config.schema import Config
from weaver.proxy.admin import add_admin_routes
from weaver.proxy.edge import EDGE_KEY, Edge
from weaver.proxy.handler import proxy_handler
from weaver.proxy.origin import OriginClient
from weaver.proxy.paint import Fills

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
                app[EDGE_KEY] = Edge(config=config, client=client, store=store, fills=fills)
                try:
                    yield
                finally:
                    await fills.aclose()  # shutdown: fills still running stop here
        finally:
            await store.close()

    app.cleanup_ctx.append(edge_context)
    app.router.add_get("/_weaver/health", health)
    add_admin_routes(app)
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    return app
