"""Operator endpoints on the HTTP listener: purge (and, with the session weaver, publish),
health (liveness), ready (readiness) and metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from weaver.cache import purge
from weaver.cache.errors import CacheError
from weaver.cache.purge import PurgeRequest
from weaver.config.schema import OriginConfig
from weaver.proxy import metrics
from weaver.proxy.edge import EDGE_KEY
from weaver.proxy.metrics import metrics_handler

# Called after a purge applied here, with what was purged: the bus sends it to the other
# workers and nodes, whose memory tiers (and disks) then purge it too.
PurgeListener = Callable[[PurgeRequest], Awaitable[None]]
PURGE_LISTENERS_KEY = web.AppKey("purge_listeners", list[PurgeListener])

READY_CACHE_S = 3.0  # a readiness answer is reused this long
ORIGIN_PROBE_TIMEOUT_S = 1.0


@dataclass(slots=True)
class Readiness:
    """Whether this worker should get traffic; the origin check is cached for a while.

    ``draining`` is set when shutdown begins, so a load balancer stops sending first.
    """

    draining: bool = False
    checked_at: float = -1e9
    origins: dict[str, bool] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def origin_states(self, origins: tuple[OriginConfig, ...]) -> dict[str, bool]:
        """Each origin's reachability (a TCP connect within a second), cached a few
        seconds; concurrent callers share one check."""
        async with self.lock:
            if time.monotonic() - self.checked_at < READY_CACHE_S:
                return self.origins
            results = await asyncio.gather(*(_reachable(o) for o in origins))
            self.origins = {o.name: ok for o, ok in zip(origins, results, strict=True)}
            self.checked_at = time.monotonic()
            return self.origins


READINESS_KEY = web.AppKey("readiness", Readiness)


async def _reachable(origin: OriginConfig) -> bool:
    try:
        async with asyncio.timeout(ORIGIN_PROBE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(origin.host, origin.port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


async def health_handler(request: web.Request) -> web.Response:
    """``GET /_weaver/health``: 200 while the process serves (liveness)."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def ready_handler(request: web.Request) -> web.Response:
    """``GET /_weaver/ready``: 200 if the origins are reachable, the bus is connected and
    the store is open and this worker is not draining; else 503 naming what is not."""
    edge = request.app[EDGE_KEY]
    readiness = request.app[READINESS_KEY]
    origins = await readiness.origin_states(edge.config.origins)
    bus = edge.hub.bus if edge.hub is not None else None
    # The in-process bus always is; a shared one while Redis answers.
    bus_ok = bus is None or bus.shared is None or bus.shared.is_up
    metrics.BUS_CONNECTED.set(1 if bus_ok else 0)
    checks = {
        "origins": origins,
        "bus": bus_ok,
        "store": edge.store is not None,
        "draining": readiness.draining,
    }
    ok = all(origins.values()) and bus_ok and edge.store is not None and not readiness.draining
    return web.json_response(
        {"status": "ready" if ok else "unavailable", **checks},
        status=200 if ok else 503,
        headers={"Cache-Control": "no-store"},
    )


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


async def purge_handler(request: web.Request) -> web.StreamResponse:
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
    streamed: web.StreamResponse | None = None
    progress: purge.Progress | None = None
    if "application/x-ndjson" in request.headers.get("Accept", ""):
        # Progress as it goes: one JSON line per batch, then the answer's line.
        streamed = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await streamed.prepare(request)
        response = streamed

        async def progress(done: int, total: int) -> None:
            await response.write(orjson.dumps({"done": done, "of": total}) + b"\n")

    count = 0 if edge.store is None else await purge.apply(edge.store, wanted, progress=progress)
    log.info("purged %d entries (%s)", count, wanted)
    for listener in request.app.get(PURGE_LISTENERS_KEY, ()):
        await listener(wanted)
    answer: dict[str, object] = {"purged": count}
    if not is_broadcast:
        answer["warning"] = "purged on this node only: the bus is down"
    if streamed is None:
        return web.json_response(answer)
    await streamed.write(orjson.dumps(answer) + b"\n")
    await streamed.write_eof()
    return streamed


def add_admin_routes(app: web.Application) -> None:
    app[PURGE_LISTENERS_KEY] = []
    app[READINESS_KEY] = Readiness()
    app.router.add_post("/_weaver/purge", purge_handler)
    app.router.add_get("/_weaver/health", health_handler)
    app.router.add_get("/_weaver/ready", ready_handler)
    app.router.add_get("/_weaver/metrics", metrics_handler)
