"""A real hub on 127.0.0.1 (port 0) with its HTTP endpoints, and real websockets clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect

from tests.servers import serve_app
from weaver.config.schema import HostPort, SessionConfig
from weaver.session.http import add_routes
from weaver.session.hub import SessionHub

SECRET = "test-secret"
TOKEN = "test-publish-token"


@dataclass
class Running:
    hub: SessionHub
    ws_url: str
    http_url: str

    def page(self, **kwargs: Any) -> tuple[str, str]:
        """Serve a "page": (session id, the Cookie header the browser would send)."""
        session_id, set_cookie = self.hub.open_for_page(None, **kwargs)
        assert set_cookie is not None
        return session_id, set_cookie.split(";", 1)[0]


@asynccontextmanager
async def running_hub(**options: Any) -> AsyncIterator[Running]:
    config = SessionConfig(listen=HostPort("127.0.0.1", 0), secret=SECRET, publish_token=TOKEN)
    hub = SessionHub(config, **options)
    app = web.Application()
    add_routes(app, hub)
    await hub.start()
    try:
        async with serve_app(app) as http_url:
            yield Running(hub, f"ws://127.0.0.1:{hub.port}/", http_url)
    finally:
        await hub.stop()


@asynccontextmanager
async def client(
    running: Running, cookie: str | None = None, *, last_seq: int = 0, token: str | None = None
) -> AsyncIterator[ClientConnection]:
    headers = {"Cookie": cookie} if cookie else {}
    async with connect(running.ws_url, additional_headers=headers, max_size=None) as ws:
        hello: dict[str, Any] = {"type": "hello", "last_seq": last_seq}
        if token is not None:
            hello["token"] = token
        await ws.send(orjson.dumps(hello).decode())
        yield ws


async def receive(ws: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        message: dict[str, Any] = orjson.loads(await ws.recv())
        return message


async def receive_until(
    ws: ClientConnection, message_type: str, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """Every message up to and including the first of ``message_type``."""
    seen = []
    async with asyncio.timeout(timeout_s):
        while True:
            message = await receive(ws, timeout_s)
            seen.append(message)
            if message["type"] == message_type:
                return seen
