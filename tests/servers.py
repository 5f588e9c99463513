"""Real servers for tests: aiohttp apps on 127.0.0.1, port 0, port read back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 on a free port; yield its base URL ``http://127.0.0.1:N``."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    async with serve_runner(runner) as url:
        yield url


@asynccontextmanager
async def serve_runner(runner: web.AppRunner) -> AsyncIterator[str]:
    """Serve a set-up ``runner`` on 127.0.0.1 on a free port; yield its base URL; clean
    the runner up at the end."""
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # the asyncio server; aiohttp exposes the port only here
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        port = sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
