"""The HTTP listener: aiohttp's server with the limits a public edge needs.

aiohttp bounds the request line and each header field, closes idle keep-alive
connections, and on shutdown waits for in-flight requests up to a deadline, then cancels
them: those are configured from ``[server]``. It has no bound on how long a client may
take to *send* a request head, so a slowloris client holds a connection for as long as
the keep-alive timeout. :class:`_HeadTimedHandler` adds that bound: once the first byte
of a request head arrives, the whole head must follow within ``server.header_timeout``
or the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from weaver.config.schema import ServerConfig

log = logging.getLogger(__name__)


class _HeadTimedHandler(RequestHandler):
    """aiohttp's connection handler with a deadline on each request head."""

    __slots__ = ("_head_timer", "_header_timeout_s")

    def __init__(self, manager: Server, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        requests_before = self._request_count
        super().data_received(data)
        if self._request_count > requests_before or self._upgraded:
            self._stop_timer()  # a whole head arrived (or the connection was upgraded)
        elif self._head_timer is None and not self._request_in_progress:
            loop = asyncio.get_running_loop()
            self._head_timer = loop.call_later(self._header_timeout_s, self._head_too_slow)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._request_in_progress or self._messages:
            return  # the bytes were a body or a pipelined request: not a slow head
        log.info("closing a connection whose request head took over %.1f s", self._header_timeout_s)
        self.force_close()


# Answers a request before the router and the middlewares, or None to pass it on.
Front = Callable[[BaseRequest], web.StreamResponse | None]
# Takes a request the app's router would give its catch-all page handler: the answer to
# await; None for a request the app's own routes may answer (the router decides those).
Pages = Callable[[BaseRequest], Awaitable[web.StreamResponse] | None]


class _Server(Server):
    def __init__(
        self, made: Server, header_timeout_s: float, front: Front | None, pages: Pages | None
    ) -> None:
        handler = made.request_handler
        if front is not None or pages is not None:
            app_handler = handler

            async def handler(request: BaseRequest) -> web.StreamResponse:
                if front is not None:
                    answered = front(request)
                    if answered is not None:
                        return answered
                if pages is not None:
                    page = pages(request)
                    if page is not None:
                        return await page
                return await app_handler(request)

        super().__init__(
            handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        return _HeadTimedHandler(
            self, loop=self._loop, header_timeout_s=self._header_timeout_s, **self._kwargs
        )


class EdgeRunner(web.AppRunner):
    """An AppRunner whose connections have the limits of ``server`` config.

    ``front(app)``, called once the app has started, may give a :data:`Front`: the hit
    lane answers there, ahead of aiohttp's router and middlewares (built per request).
    ``pages(app)`` likewise may give :data:`Pages`: page requests go to the page handler
    without the router's resolution and the middleware chain built per request.
    """

    def __init__(
        self,
        app: web.Application,
        server: ServerConfig,
        *,
        front: Callable[[web.Application], Front | None] | None = None,
        pages: Callable[[web.Application], Pages | None] | None = None,
    ) -> None:
        super().__init__(
            app,
            handler_cancellation=True,  # a client that leaves cancels the work for it
            access_log=None,
            keepalive_timeout=server.keepalive_timeout_s,
            max_line_size=server.max_request_line_bytes,
            max_field_size=server.max_header_bytes,
            shutdown_timeout=server.drain_timeout_s,
        )
        self._header_timeout_s = server.header_timeout_s
        self._front = front
        self._pages = pages

    async def _make_server(self) -> Server:
        made = await super()._make_server()  # the app has started: its edge exists
        front = self._front(self.app) if self._front is not None else None
        pages = self._pages(self.app) if self._pages is not None else None
        return _Server(made, self._header_timeout_s, front, pages)
