"""Real origins for the origin client's tests: aiohttp apps, and raw asyncio servers where a
test needs bytes aiohttp would not send; all on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from weaver.config.load import build_config
from weaver.config.schema import Config
from weaver.proxy.origin import OriginClient

BODY = b"0123456789abcdef" * 4096  # 64 KiB


def origin_config(**server: str) -> Config:
    """A config whose ``[server]`` table is ``server`` (timeouts, bounds)."""
    return build_config(
        {
            "server": server,
            "origin": [{"name": "o", "url": "http://127.0.0.1:1"}],
            "route": [{"path": "/", "origin": "o"}],
        },
        "<test>",
    )


@asynccontextmanager
async def origin_client(**server: str) -> AsyncIterator[OriginClient]:
    """An :class:`OriginClient` on :func:`origin_config`, closed on exit."""
    async with OriginClient(origin_config(**server)) as client:
        yield client


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (the caller's asyncio.timeout bounds it)."""
    # The pool has no event for "a request is waiting": yield to the loop until it shows.
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0)


async def read_body(client: OriginClient, url: str, method: str = "GET") -> tuple[int, bytes]:
    """The status and whole body of one request."""
    async with client.request(method, url, headers={}) as resp:
        return resp.status, b"".join([chunk async for chunk in resp.chunks()])


class Transports:
    """An origin app that records which connection carried each request."""

    def __init__(self) -> None:
        self.seen: list[object] = []  # the transports themselves: their ids stay unique
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    @property
    def connections(self) -> int:
        return len({id(transport) for transport in self.seen})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.transport)

        tail = request.match_info["tail"]
        if tail == "chunked":
            response = web.StreamResponse(headers={"X-Kind": "chunked"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for piece in (b"hello", b", ", b"world"):
                await response.write(piece)
            await response.write_eof()
            return response
        if tail == "nothing":
            return web.Response(status=204)
        if tail == "unchanged":
            return web.Response(status=304, headers={"ETag": '"v1"'})
        if tail == "close":
            return web.Response(body=b"bye", headers={"Connection": "close"})
        return web.Response(body=BODY, headers={"X-Kind": "length", "X-Path": request.path_qs})


@asynccontextmanager
async def raw_origin(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]],
) -> AsyncIterator[str]:
    """A raw TCP origin: ``serve(reader, writer, connection_number)`` per connection."""
    count = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        try:
            await serve(reader, writer, count)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed: what these origins expect sooner or later
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()
