"""The HTTP listener (proxy/listener.py): the limits a public edge needs, on a real socket.

Each test starts an :class:`EdgeRunner` on 127.0.0.1 port 0 in front of a one-route app
and talks raw HTTP/1.1 to it, so what is asserted is what a client sees on the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.web_request import BaseRequest

from weaver.config.load import build_config
from weaver.config.schema import ServerConfig
from weaver.proxy.listener import EdgeRunner, Front


def _server(**settings: object) -> ServerConfig:
    return build_config({"server": settings, "cache": {"dir": ""}}, "<test>").server


@asynccontextmanager
async def _listening(
    server: ServerConfig, front: Front | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """An EdgeRunner answering ``GET /`` with "ok"; yield one raw connection to it."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = EdgeRunner(app, server, front=None if front is None else lambda _app: front)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            yield reader, writer
        finally:
            writer.close()
    finally:
        await runner.cleanup()


async def test_whole_request_heads_in_time_are_answered_on_one_connection() -> None:
    async with asyncio.timeout(5), _listening(_server(header_timeout="300ms")) as (reader, writer):
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")


async def test_a_slow_request_head_is_cut_at_the_header_timeout() -> None:
    head = b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 100
    sent = 0
    async with asyncio.timeout(5), _listening(_server(header_timeout="300ms")) as (reader, writer):
        # A slowloris head, one byte at a time: each byte arrives well within any idle
        # timeout, the head as a whole does not.
        for byte in head:
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            sent += 1
            await asyncio.sleep(0.02)  # the point of the test: a client this slow
        assert await reader.read() == b""  # closed without an answer
    assert sent < len(head)  # closed while the head was still arriving


async def test_a_head_that_stops_arriving_is_closed_without_an_answer() -> None:
    async with asyncio.timeout(5), _listening(_server(header_timeout="200ms")) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        assert await reader.read() == b""


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() -> None:
    server = _server(keepalive_timeout="200ms")
    async with asyncio.timeout(5), _listening(server) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await reader.readuntil(b"ok")
        assert answer.startswith(b"HTTP/1.1 200")
        assert await reader.read() == b""  # nothing more asked: closed, not held open


async def _status_line(server: ServerConfig, request: bytes) -> bytes:
    async with asyncio.timeout(5), _listening(server) as (reader, writer):
        writer.write(request)
        return await reader.readline()


async def test_a_request_line_over_the_configured_limit_is_refused() -> None:
    server = _server(max_request_line="1KiB")
    under = b"GET /" + b"a" * 900 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    over = b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert await _status_line(server, under) == b"HTTP/1.1 404 Not Found\r\n"  # routed
    assert (await _status_line(server, over)).endswith(b" 400 Bad Request\r\n")


async def test_a_header_field_over_the_configured_limit_is_refused() -> None:
    server = _server(max_header="1KiB")
    under = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 900 + b"\r\n\r\n"
    over = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n"
    assert await _status_line(server, under) == b"HTTP/1.1 200 OK\r\n"
    assert (await _status_line(server, over)).endswith(b" 400 Bad Request\r\n")


async def test_the_front_answers_before_the_router_and_passes_on_what_it_declines() -> None:
    def front(request: BaseRequest) -> web.StreamResponse | None:
        return web.Response(text="from the front") if request.path == "/front" else None

    async with asyncio.timeout(5), _listening(_server(), front) as (reader, writer):
        writer.write(b"GET /front HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"from the front")).startswith(b"HTTP/1.1 200")
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
