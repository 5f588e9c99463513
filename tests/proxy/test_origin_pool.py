"""The origin pool (proxy/origin_pool.py): keep-alive reuse, the bounds per origin and in
total, FIFO hand-over, waits that give up; against real origins on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.proxy.origin_servers import (
    Transports,
    origin_client,
    origin_config,
    raw_origin,
    read_body,
    until,
)
from tests.servers import serve_app
from weaver.proxy.origin import OriginClient
from weaver.proxy.origin_pool import PoolStats

TIMEOUT_S = 20


async def test_sequential_requests_reuse_one_connection() -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, origin_client() as client:
        for path in ("/", "/chunked", "/", "/nothing"):
            await read_body(client, url + path)
        assert client.pool_stats().idle == 1
    assert len(origin.seen) == 4 and origin.connections == 1


async def test_a_response_that_says_close_is_not_reused() -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, origin_client() as client:
        assert await read_body(client, url + "/close") == (200, b"bye")
        await read_body(client, url + "/")
    assert origin.connections == 2


async def test_the_pool_bounds_connections_per_origin_and_hands_them_over_in_order() -> None:
    release, first_arrived = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        order.append(request.path)
        if request.path == "/first":
            first_arrived.set()
            await release.wait()
        return web.Response(text=request.path)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    config = origin_config()
    async with (
        asyncio.timeout(TIMEOUT_S),
        serve_app(app) as url,
        OriginClient(config, max_per_origin=1) as client,
        asyncio.TaskGroup() as tasks,
    ):
        first = tasks.create_task(read_body(client, url + "/first"))
        await first_arrived.wait()
        second = tasks.create_task(read_body(client, url + "/second"))
        await until(lambda: client.pool_stats().waiting == 1)
        third = tasks.create_task(read_body(client, url + "/third"))
        await until(lambda: client.pool_stats().waiting == 2)
        assert client.pool_stats().open == 1
        release.set()
        assert [await t for t in (first, second, third)] == [
            (200, b"/first"),
            (200, b"/second"),
            (200, b"/third"),
        ]
    assert order == ["/first", "/second", "/third"]


async def test_the_total_bound_closes_an_idle_connection_for_another_origin() -> None:
    one, two = Transports(), Transports()
    async with (
        asyncio.timeout(TIMEOUT_S),
        serve_app(one.app) as url_one,
        serve_app(two.app) as url_two,
        OriginClient(origin_config(), max_connections=1) as client,
    ):
        await read_body(client, url_one + "/")
        assert client.pool_stats().idle == 1
        await read_body(client, url_two + "/")
        assert client.pool_stats().open == 1
        await read_body(client, url_one + "/")
    assert one.connections == 2 and two.connections == 1


async def test_a_request_that_gives_up_waiting_leaves_the_queue_and_the_connection_is_reused() -> (
    None
):
    release, first_arrived = asyncio.Event(), asyncio.Event()
    seen: list[object] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.transport)
        if request.path == "/first":
            first_arrived.set()
            await release.wait()
        return web.Response(text=request.path)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with (
        asyncio.timeout(TIMEOUT_S),
        serve_app(app) as url,
        OriginClient(origin_config(), max_per_origin=1) as client,
        asyncio.TaskGroup() as tasks,
    ):
        first = tasks.create_task(read_body(client, url + "/first"))
        await first_arrived.wait()
        expired = asyncio.get_running_loop().time()  # the deadline has passed already
        with pytest.raises(TimeoutError):
            async with client.request("GET", url + "/late", headers={}, deadline=expired):
                pass
        cancelled = tasks.create_task(read_body(client, url + "/cancelled"))
        await until(lambda: client.pool_stats().waiting == 1)
        cancelled.cancel()
        await until(lambda: client.pool_stats().waiting == 0)
        release.set()
        assert await first == (200, b"/first")
        assert await read_body(client, url + "/next") == (200, b"/next")
        assert client.pool_stats() == PoolStats(open=1, idle=1, waiting=0)
    assert len({id(transport) for transport in seen}) == 1  # one connection carried both


async def test_an_idle_connection_the_origin_closes_leaves_the_pool() -> None:
    origin_closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        origin_closed.set()  # then the connection closes: the origin's idle timeout

    async with asyncio.timeout(TIMEOUT_S), raw_origin(serve) as url, origin_client() as client:
        assert await read_body(client, url + "/") == (200, b"ok")
        await origin_closed.wait()
        await until(lambda: client.pool_stats().open == 0)
        assert client.pool_stats() == PoolStats(open=0, idle=0, waiting=0)
        assert await read_body(client, url + "/") == (200, b"ok")  # a new connection
