"""One line per request on the ``weaver.access`` logger, and the request metrics.

``server.access_log = "text"`` writes a common-log-like line, ``"json"`` one JSON object
per line, ``"off"`` nothing (the metrics are counted either way). Fields: time, method,
path (with query), status, bytes sent, cache status (``X-Weaver-Cache``), duration,
fragments (the includes listed in the page's ``Server-Timing``), session id (of a page
that opened one). Woven pages also get a ``woven`` line there with every include.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from weaver.config.schema import AccessLogFormat, Config
from weaver.proxy import metrics
from weaver.proxy.visitor import SESSION_KEY

# Set on a request whose visitor left while its streamed response was written: 499.
CLIENT_GONE = "weaver.client_gone"

access_log = logging.getLogger("weaver.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _fragments(response: web.StreamResponse) -> int:
    timing = response.headers.get("Server-Timing", "")
    return sum(1 for entry in timing.split(",") if entry.strip()[:2].startswith("f"))


def _session_id(request: web.Request) -> str:
    session_id = request.get(SESSION_KEY)  # the id only, never the signed token
    return session_id if isinstance(session_id, str) else "-"


def _sent_bytes(response: web.StreamResponse) -> int:
    return response.body_length  # written to the connection: head, framing and body


def line(
    fmt: AccessLogFormat,
    request: web.Request,
    status: int,
    response: web.StreamResponse | None,
    duration_s: float,
) -> str:
    cache = response.headers.get("X-Weaver-Cache", "-") if response is not None else "-"
    sent = _sent_bytes(response) if response is not None else 0
    fragments = _fragments(response) if response is not None else 0
    session = _session_id(request)
    when = datetime.now(UTC)
    if fmt is AccessLogFormat.JSON:
        return orjson.dumps(
            {
                "time": when.isoformat(timespec="milliseconds"),
                "method": request.method,
                "path": request.raw_path,
                "status": status,
                "bytes": sent,
                "cache": cache,
                "duration_ms": round(duration_s * 1000, 1),
                "fragments": fragments,
                "session": session,
                "remote": request.remote or "-",
            }
        ).decode()
    return (
        f"{request.remote or '-'} [{when.strftime('%d/%b/%Y:%H:%M:%S %z')}] "
        f'"{request.method} {request.raw_path} HTTP/{request.version.major}.'
        f'{request.version.minor}" {status} {sent} cache={cache} '
        f"dur={duration_s * 1000:.1f}ms fragments={fragments} session={session}"
    )


def configure(fmt: AccessLogFormat) -> None:
    """Send ``weaver.access`` lines, bare, to stdout (``off``: drop them). Call once per
    process before serving (or again on reload)."""
    for handler in list(access_log.handlers):
        access_log.removeHandler(handler)
    if fmt is AccessLogFormat.OFF:
        access_log.setLevel(logging.WARNING)
        access_log.propagate = True
        return
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(out)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


def woven(config: Config, url: str, status: int, timing_of: Callable[[], str]) -> None:
    """The ``woven`` line of a page that was woven: every include's outcome and time
    (``timing_of()``, the Server-Timing text, made only when the line is written)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    timing = timing_of()
    if config.server.access_log is AccessLogFormat.JSON:
        access_log.info(
            "%s", orjson.dumps({"woven": url, "status": status, "timing": timing}).decode()
        )
    else:
        access_log.info("woven %s status=%d %s", url, status, timing)


def middleware(config: Config) -> Middleware:
    """Counts every request (route, cache status, status class) and logs it."""
    fmt = config.server.access_log

    def route_label(request: web.Request) -> str:
        if request.path.startswith("/_weaver/"):
            return "_weaver"
        route = config.route_for(request.path)
        return route.path if route is not None else "-"

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response: web.StreamResponse | None = None
        status = 500
        is_counted = False
        try:
            response = await handler(request)
            status = 499 if request.get(CLIENT_GONE) else response.status
            # Counted before a plain response is sent: a scrape after it sees it.
            cache = response.headers.get("X-Weaver-Cache", "-")
            metrics.observe_request(route_label(request), cache, status)
            is_counted = True
            if not response.prepared:  # send it here: the line has its bytes and time
                try:
                    await response.prepare(request)
                    await response.write_eof()
                except ConnectionResetError:
                    status = 499  # the client went away while it was written
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away first
            raise
        finally:
            if not is_counted:
                metrics.observe_request(route_label(request), "-", status)
            if fmt is not AccessLogFormat.OFF and access_log.isEnabledFor(logging.INFO):
                elapsed = time.perf_counter() - started
                access_log.info("%s", line(fmt, request, status, response, elapsed))

    return access
