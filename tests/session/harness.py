"""A real hub on 127.0.0.1 (port 0) with its HTTP endpoints, and real websockets clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

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

    def page(self, cookie: str | None = None, **kwargs: Any) -> tuple[str, str]:
        """Serve a "page" to a browser sending ``cookie``: (session id, the Cookie header
        the browser sends from then on)."""
        session_id, set_cookie = self.hub.open_for_page(cookie, **kwargs)
        return session_id, set_cookie.split(";", 1)[0]


@asynccontextmanager
async def running_hub(
    *,
    allowed_origins: tuple[str, ...] = (),
    max_subscriptions: int = 64,
    max_channel_bytes: int = 256,
    **options: Any,
) -> AsyncIterator[Running]:
    config = SessionConfig(
        listen=HostPort("127.0.0.1", 0),
        secret=SECRET,
        publish_token=TOKEN,
        allowed_origins=allowed_origins,
        max_subscriptions=max_subscriptions,
        max_channel_bytes=max_channel_bytes,
    )
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
    running: Running,
    cookie: str | None = None,
    *,
    last_seq: int = 0,
    token: str | None = None,
    session: str | None = None,
) -> AsyncIterator[ClientConnection]:
    headers = {"Cookie": cookie} if cookie else {}
    async with connect(running.ws_url, additional_headers=headers, max_size=None) as ws:
        hello: dict[str, Any] = {"type": "hello", "last_seq": last_seq}
        if token is not None:
            hello["token"] = token
        if session is not None:
            hello["session"] = session
        await ws.send(orjson.dumps(hello).decode())
        yield ws


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched Server-Sent Event: its ``id`` field if it had one, its data."""

    id: int | None
    data: dict[str, Any]


async def read_sse_event(stream: aiohttp.StreamReader, timeout_s: float = 5.0) -> SseEvent:
    """The next event on an SSE stream, parsed as the WHATWG HTML §9.2.6 event-stream
    grammar says (only the ``id`` and ``data`` fields are used by Weaver)."""
    event_id: int | None = None
    data: list[bytes] = []
    async with asyncio.timeout(timeout_s):
        while True:
            line = await stream.readline()
            if not line:
                raise ConnectionError("the SSE stream ended")
            line = line.rstrip(b"\r\n")
            if not line:
                if data:
                    return SseEvent(event_id, orjson.loads(b"\n".join(data)))
                continue
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"id":
                event_id = int(value)
            elif name == b"data":
                data.append(value)


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


async def closed_with(ws: ClientConnection, timeout_s: float = 5.0) -> tuple[int, str]:
    """The (code, reason) of the close frame the server sends, reading until it comes."""
    async with asyncio.timeout(timeout_s):
        with pytest.raises(ConnectionClosed) as caught:
            while True:
                await ws.recv()
    received = caught.value.rcvd
    assert received is not None, "closed without a close frame"
    return received.code, received.reason
