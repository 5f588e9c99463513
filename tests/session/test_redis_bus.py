"""Two hubs on one real redis-server: two nodes in one process, real websockets clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer
from tests.session.harness import Running, client, receive, receive_until, running_hub
from weaver.config.schema import BusConfig
from weaver.session.bus import ChannelMessage
from weaver.session.redis_bus import RedisBus, log_key, session_key


def bus_config(redis: RedisServer, **limits: Any) -> BusConfig:
    return BusConfig(url=redis.url, **limits)


@asynccontextmanager
async def nodes(redis: RedisServer, count: int = 2, **limits: Any) -> AsyncIterator[list[Running]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(running_hub(bus=RedisBus(bus_config(redis, **limits))))
            for _ in range(count)
        ]


async def data_of(ws: Any, count: int) -> list[Any]:
    return [(await receive_until(ws, "message"))[-1]["data"] for _ in range(count)]


async def test_a_channel_message_published_on_one_node_reaches_a_session_on_another(
    redis: RedisServer,
) -> None:
    async with nodes(redis) as (a, b):
        session_id, cookie = b.page()
        b.hub.subscribe(session_id, "deals")
        async with client(b, cookie) as ws:
            assert (await receive(ws))["type"] == "hello"
            await a.hub.publish_channel("deals", {"sale": 1})
            message = await receive(ws)
    assert message == {"type": "message", "seq": 1, "channel": "deals", "data": {"sale": 1}}


async def test_a_message_to_more_sessions_than_a_redis_pool_holds_reaches_each_through_redis(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Each subscribed session writes the message to its shared log: 150 writes at once
    # took 150 connections of redis-py's pool of 100 (MaxConnectionsError: the bus was
    # marked down mid-fan-out, sessions delivered locally, then were cut off with 1013).
    count = 150
    async with nodes(redis) as (a, b), AsyncExitStack() as sockets:
        clients = []
        for _ in range(count):
            session_id, cookie = b.page()
            b.hub.subscribe(session_id, "deals")
            ws = await sockets.enter_async_context(client(b, cookie))
            assert (await receive(ws))["type"] == "hello"
            clients.append(ws)
        with caplog.at_level(logging.WARNING, logger="weaver.session"):
            await a.hub.publish_channel("deals", {"sale": 1})
            messages = [await receive(ws) for ws in clients]
    expected = {"type": "message", "seq": 1, "channel": "deals", "data": {"sale": 1}}
    assert messages == [expected] * count
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_session_resumes_on_another_node_from_its_last_seq(redis: RedisServer) -> None:
    async with nodes(redis) as (a, b):
        session_id, cookie = a.page()
        a.hub.subscribe(session_id, "news")
        async with client(a, cookie) as ws:
            await receive(ws)
            for i in range(5):
                await a.hub.publish_channel("news", i)
            seen = await data_of(ws, 3)
        for i in range(5, 8):  # published while the visitor is between sockets
            await b.hub.publish_channel("news", i)
        async with client(b, cookie, last_seq=3) as ws:
            hello = await receive(ws)
            rest = await data_of(ws, 5)
            await a.hub.publish_to_session(session_id, "direct")  # a node the socket is not on
            direct = await receive(ws)
    assert seen == [0, 1, 2]
    assert hello["resumed"] is True and hello["seq"] >= 3
    assert rest == [3, 4, 5, 6, 7]
    assert direct["data"] == "direct" and direct["seq"] == 9


async def test_a_session_opened_on_one_node_gets_its_suspense_results_on_another(
    redis: RedisServer,
) -> None:
    gate = asyncio.Event()

    async def fetch() -> str:
        await gate.wait()
        return "<b>for you</b>"

    async with nodes(redis) as (a, b):
        session_id, cookie = a.page()
        a.hub.run_suspense(session_id, [("w_1", fetch)])
        async with client(b, cookie) as ws:
            assert (await receive(ws))["type"] == "hello"
            gate.set()
            slot = await receive(ws)
    assert slot == {"type": "slot", "seq": 1, "id": "w_1", "html": "<b>for you</b>"}


async def test_a_resume_older_than_the_stream_bound_gets_reset_and_the_state(
    redis: RedisServer,
) -> None:
    async with nodes(redis, session_log=5) as (a, b):
        session_id, cookie = a.page()
        for i in range(300):  # MAXLEN ~ trims whole stream nodes: well past the bound
            a.hub.publish_session(session_id, i)
        writer = a.hub.sessions[session_id].writer
        assert writer is not None
        await writer  # all 300 are in the shared log before B is asked
        async with client(b, cookie, last_seq=1) as ws:
            hello = await receive(ws)
            reset = await receive(ws)
    assert hello["resumed"] is False and hello["seq"] == 300
    assert reset == {"type": "reset", "seq": 301}


async def test_session_keys_expire_after_the_configured_ttl(redis: RedisServer) -> None:
    async with nodes(redis, count=1, session_ttl_s=90) as (a,):
        session_id, cookie = a.page()
        async with client(a, cookie) as ws:
            await receive(ws)
            a.hub.publish_session(session_id, "x")
            await receive(ws)
    client_ = aioredis.Redis.from_url(redis.url)
    try:
        ttls = [await client_.ttl(key) for key in (session_key(session_id), log_key(session_id))]
        length = await client_.xlen(log_key(session_id))
    finally:
        await client_.aclose()
    assert all(0 < ttl <= 90 for ttl in ttls) and length == 1


async def test_redis_down_sessions_deliver_locally_and_come_back_through_redis(
    redis: RedisServer,
) -> None:
    async with nodes(redis, timeout_s=0.5) as (a, b):
        session_id, cookie = a.page()
        a.hub.subscribe(session_id, "feed")
        async with client(a, cookie) as ws:
            await receive(ws)
            await a.hub.publish_channel("feed", "before")
            assert (await receive(ws))["data"] == "before"
            redis.kill()
            await a.hub.publish_channel("feed", "during")  # local: this node's sessions
            during = await receive(ws)
            a.hub.publish_session(session_id, "still")
            still = await receive(ws)
            redis.start()  # same port, empty: the node writes its sessions back
            await wait_until_up(a, b)
            await b.hub.publish_channel("feed", "after")
            after = await receive(ws)
        async with client(b, cookie, last_seq=2) as ws:  # the other node: written back
            hello = await receive(ws)
            replayed = [await receive(ws) for _ in range(2)]
    assert during["data"] == "during" and during["seq"] == 2
    assert still["data"] == "still" and still["seq"] == 3
    assert after["data"] == "after" and after["seq"] == 4
    assert hello["resumed"] is True
    assert [m["data"] for m in replayed] == ["still", "after"]


async def wait_until_up(*nodes_: Running) -> None:
    """Until every node's bus reconnected (its reader's backoff has run its course)."""
    async with asyncio.timeout(30):
        for node in nodes_:
            assert isinstance(node.hub.bus, RedisBus)
            await node.hub.bus.wait_up()


async def test_calls_once_redis_is_back_do_not_fail_on_connections_from_before_the_outage(
    redis: RedisServer,
) -> None:
    """A regression: pooled connections to the killed Redis were handed out after it
    came back, so the first calls failed and sessions went to local delivery (their
    seq then ran ahead of the shared log: tests/integration/test_redis_nodes.py)."""
    ups = 0
    came_back = asyncio.Event()

    async def on_up() -> None:
        nonlocal ups
        ups += 1
        if ups == 2:
            came_back.set()

    def ignore(message: ChannelMessage) -> None:
        pass

    bus = RedisBus(bus_config(redis, timeout_s=0.5))
    await bus.start(ignore, on_up=on_up)
    try:
        ids = [f"s{i}" for i in range(4)]
        await asyncio.gather(*(bus.load(i) for i in ids))  # four connections in the pool
        redis.kill()
        redis.start()  # same port
        async with asyncio.timeout(30):
            await came_back.wait()
        loaded = await asyncio.gather(*(bus.load(i) for i in ids), return_exceptions=True)
        is_up = bus.is_up
    finally:
        await bus.stop()
    assert loaded == [None, None, None, None]
    assert is_up
