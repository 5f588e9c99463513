"""Operator endpoints on the HTTP listener: purge (and, with the session weaver, publish)."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from weaver.cache import purge
from weaver.cache.errors import CacheError
from weaver.proxy.edge import EDGE_KEY

log = logging.getLogger(__name__)


def bearer_ok(request: web.Request, token: str) -> bool:
    """Whether ``request`` carries ``Authorization: Bearer <token>`` (constant time)."""
    if not token:
        return False  # no token configured: the endpoint is closed, not open
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


def unauthorized() -> web.Response:
    return web.json_response(
        {"error": "a valid 'Authorization: Bearer <publish_token>' header is required"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="weaver"'},
    )


async def purge_handler(request: web.Request) -> web.Response:
    """``POST /_weaver/purge`` ``{"urls"|"prefix"|"tags"|"keys", "soft"?}`` → ``{"purged": n}``.

    See :mod:`weaver.cache.purge` for what each field names; a bad body is a 400 whose
    ``error`` names the field.
    """
    edge = request.app[EDGE_KEY]
    if not bearer_ok(request, edge.config.session.publish_token):
        return unauthorized()
    body = await request.read()
    try:
        wanted = purge.parse_purge_body(body)
    except CacheError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    # Every other node gets it through the bus (a no-op with one process); if the bus
    # is down the answer says so, so the operator knows other nodes still serve it.
    is_broadcast = edge.hub is None or await edge.hub.bus.publish_purge(body)
    count = 0 if edge.store is None else await purge.apply(edge.store, wanted)
    log.info("purged %d entries (%s)", count, wanted)
    answer: dict[str, object] = {"purged": count}
    if not is_broadcast:
        answer["warning"] = "purged on this node only: the bus is down"
    return web.json_response(answer)


def add_admin_routes(app: web.Application) -> None:
    app.router.add_post("/_weaver/purge", purge_handler)
