"""One origin connection (proxy/origin_connection.py): a response's end, keep-alive, an
early leaver, PAUSE_READING, and its lifecycle; against real origins on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.proxy.origin_servers import BODY, Transports, origin_client, raw_origin, read_body
from tests.servers import serve_app
from weaver.proxy.origin_connection import HIGH_WATER_BYTES, Connection, ConnectionState
from weaver.proxy.origin_pool import PoolStats

TIMEOUT_S = 20
SOCKET_READ_BYTES = 256 * 1024  # asyncio's largest single read


async def test_a_body_without_framing_ends_when_the_origin_closes() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n")
        writer.write(b"<p>until close</p>")
        await writer.drain()

    async with asyncio.timeout(TIMEOUT_S), raw_origin(serve) as url, origin_client() as client:
        async with client.request("GET", url + "/", headers={}) as resp:
            assert resp.is_html and resp.content_type == "text/html"
            assert b"".join([c async for c in resp.chunks()]) == b"<p>until close</p>"
        assert client.pool_stats().idle == 0  # a connection that ended the body is not kept


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("HEAD", "/", 200), ("GET", "/nothing", 204), ("GET", "/unchanged", 304)],
)
async def test_responses_without_a_body_end_at_once_and_keep_the_connection(
    method: str, path: str, status: int
) -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, origin_client() as client:
        assert await read_body(client, url + path, method) == (status, b"")
        assert await read_body(client, url + "/") == (200, BODY)
    assert origin.connections == 1


async def test_a_consumer_that_stops_early_closes_the_connection_and_cancels_the_origin() -> None:
    cancelled = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            while True:
                await response.write(BODY)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    app = web.Application()
    app.router.add_get("/", endless)
    async with asyncio.timeout(TIMEOUT_S), serve_app(app) as url, origin_client() as client:
        async with client.request("GET", url + "/", headers={}) as resp:
            async for _ in resp.chunks():
                break
        await cancelled.wait()
        assert client.pool_stats() == PoolStats(open=0, idle=0, waiting=0)


async def test_a_large_body_streams_in_bounded_memory_to_a_slow_consumer() -> None:
    total_bytes = 50 * 1024 * 1024

    async def large(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = total_bytes
        await response.prepare(request)
        for _ in range(total_bytes // len(BODY)):
            await response.write(BODY)
        return response

    app = web.Application()
    app.router.add_get("/", large)
    received = peak = 0
    async with asyncio.timeout(TIMEOUT_S * 3), serve_app(app) as url, origin_client() as client:
        async with client.request("GET", url + "/", headers={}) as resp:
            async for chunk in resp.chunks():
                received += len(chunk)
                for _ in range(20):  # the consumer lags: the origin runs ahead meanwhile
                    await asyncio.sleep(0)
                peak = max(peak, resp.buffered_bytes)
    assert received == total_bytes
    assert HIGH_WATER_BYTES < peak <= HIGH_WATER_BYTES + SOCKET_READ_BYTES


async def test_a_lost_connection_tells_its_owner_once_and_is_never_used_again() -> None:
    closed: list[Connection] = []
    conn = Connection(asyncio.get_running_loop(), ("http", "127.0.0.1", 1), closed.append)
    conn.connection_lost(None)
    assert conn.state is ConnectionState.CLOSED and conn.is_lost and closed == [conn]
    assert not conn.is_at_boundary
    with pytest.raises(RuntimeError, match="closed -> busy"):
        conn.take()
