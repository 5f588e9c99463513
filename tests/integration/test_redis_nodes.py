"""Scale-out as operators run it: ``weaver serve`` processes on one real redis-server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.integration.redis_nodes import nodes, origin, session_socket, start_node
from tests.redis_server import RedisServer


async def receive(ws: ClientConnection, timeout_s: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        message: dict[str, Any] = orjson.loads(await ws.recv())
        return message


async def test_a_channel_message_published_on_node_a_reaches_a_session_on_node_b(
    tmp_path: Path, redis: RedisServer
) -> None:
    async with origin() as origin_url, nodes(tmp_path, origin_url, redis.url, 2) as (a, b):
        async with aiohttp.ClientSession() as http:
            status, _, cookie = await b.get(http, "/")
            assert status == 200 and cookie
            async with session_socket(b, cookie) as ws:
                assert (await receive(ws))["type"] == "hello"
                answer = await a.post(http, "/_weaver/publish", {"channel": "feed", "data": 7})
                message = await receive(ws)
    assert answer == {"delivered_to": 0}  # node A holds no subscriber itself
    assert message == {"type": "message", "seq": 1, "channel": "feed", "data": 7}


async def test_a_session_resumes_on_node_b_after_node_a_is_killed_losing_nothing(
    tmp_path: Path, redis: RedisServer
) -> None:
    total = 1000
    async with origin() as origin_url, nodes(tmp_path, origin_url, redis.url, 2) as (a, b):
        async with aiohttp.ClientSession() as http:
            _, _, cookie = await a.get(http, "/")
            received: list[tuple[int, Any]] = []
            async with session_socket(a, cookie) as ws:
                hello = await receive(ws)
                session_id = hello["session"]

                async def publish() -> None:
                    for i in range(total):
                        body = {"session": session_id, "data": i}
                        assert (await b.post(http, "/_weaver/publish", body))["delivered_to"] == 1

                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(publish())
                    try:
                        while True:
                            message = await receive(ws)
                            received.append((message["seq"], message["data"]))
                            if len(received) == total // 3:
                                a.kill()  # SIGKILL: no bye, the socket just drops
                    except ConnectionClosed:
                        pass
                    async with session_socket(b, cookie, last_seq=received[-1][0]) as ws_b:
                        hello_b = await receive(ws_b)
                        while len(received) < total:
                            message = await receive(ws_b)
                            received.append((message["seq"], message["data"]))
    assert hello_b["resumed"] is True
    assert [data for _, data in received] == list(range(total))
    assert [seq for seq, _ in received] == list(range(1, total + 1))


async def test_a_session_resumes_on_the_same_node_after_weaver_serve_restarts(
    tmp_path: Path, redis: RedisServer
) -> None:
    async with origin() as origin_url, nodes(tmp_path, origin_url, redis.url, 1) as (a,):
        async with aiohttp.ClientSession() as http:
            _, _, cookie = await a.get(http, "/")
            async with session_socket(a, cookie) as ws:
                session_id = (await receive(ws))["session"]
                await a.post(http, "/_weaver/publish", {"channel": "feed", "data": "one"})
                first = await receive(ws)
                await a.stop()  # SIGTERM: bye, close 1001
                bye = await receive(ws)
            restarted = await start_node(a.config)
            try:
                body = {"session": session_id, "data": "two"}
                answer = await restarted.post(http, "/_weaver/publish", body)
                async with session_socket(restarted, cookie, last_seq=first["seq"]) as ws:
                    hello = await receive(ws)
                    second = await receive(ws)
            finally:
                await restarted.stop()
    assert first["data"] == "one" and bye["type"] == "bye"
    assert answer == {"delivered_to": 1}
    assert hello["resumed"] is True and hello["seq"] == 2
    assert second == {"type": "message", "seq": 2, "channel": None, "data": "two"}


async def test_a_purge_on_node_a_clears_node_b(tmp_path: Path, redis: RedisServer) -> None:
    async with origin() as origin_url, nodes(tmp_path, origin_url, redis.url, 2) as (a, b):
        async with aiohttp.ClientSession() as http:
            for node in (a, b):
                assert [(await node.get(http, "/cached"))[1] for _ in range(2)] == ["MISS", "HIT"]
            answer = await a.post(http, "/_weaver/purge", {"tags": ["home"]})
            for _ in range(500):  # B applies it when the broadcast arrives (bounded)
                after_b = (await b.get(http, "/cached"))[1]
                if after_b != "HIT":
                    break
                await asyncio.sleep(0.02)
            after_a = (await a.get(http, "/cached"))[1]
    assert answer == {"purged": 1}
    assert after_b == "MISS" and after_a == "MISS"


async def test_redis_killed_pages_still_served_sessions_local_then_recovered(
    tmp_path: Path, redis: RedisServer
) -> None:
    async with origin() as origin_url, nodes(tmp_path, origin_url, redis.url, 2) as (a, b):
        async with aiohttp.ClientSession() as http:
            _, _, cookie = await a.get(http, "/")
            async with session_socket(a, cookie) as ws:
                await receive(ws)
                redis.kill()
                page = await a.get(http, "/")
                other = await b.get(http, "/cached")
                await a.post(http, "/_weaver/publish", {"channel": "feed", "data": "local"})
                local = await receive(ws)
                redis.start()  # same port, empty
                async with asyncio.timeout(30):  # until B's publishes come through Redis
                    while True:
                        await b.post(http, "/_weaver/publish", {"channel": "feed", "data": "p"})
                        try:
                            async with asyncio.timeout(0.2):
                                probe = await receive(ws)
                                break
                        except TimeoutError:
                            continue
            async with session_socket(b, cookie, last_seq=local["seq"]) as ws_b:
                hello_b = await receive(ws_b)
    assert page[0] == 200 and other[0] == 200
    assert local["data"] == "local" and local["seq"] == 1
    assert probe["data"] == "p" and probe["seq"] == 2
    assert hello_b["resumed"] is True and hello_b["seq"] >= 2
