"""bench_bus: cross-node publish -> receive latency, Redis bus vs in-process bus.

``weaver serve`` nodes run as child processes (loopback only); this process is the
client: it opens a visitor's session (a page with ``<weaver-subscribe>``), keeps its
WebSocket open, and times ``POST /_weaver/publish`` (one at a time) to the message's
arrival on the socket.

- memory: one node; the publish and the socket on the same node (in-process bus);
- redis: two nodes on one redis-server; the publish on node A, the socket on node B.

Prints p50/p99 of each and the ratios. Bounded: ``--messages`` per mode (default 500).
Run: ``python -m loadtests.bench_bus`` (a few seconds; needs redis-server).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from tests.integration.redis_nodes import (
    Node,
    nodes,
    origin,
    session_socket,
    start_node,
    write_config,
)
from tests.redis_server import RedisServer


async def measure(publish_on: Node, receive_on: Node, messages: int) -> list[float]:
    samples: list[float] = []
    async with aiohttp.ClientSession() as http:
        _, _, cookie = await receive_on.get(http, "/")
        async with session_socket(receive_on, cookie) as ws:
            await ws.recv()  # hello
            for i in range(messages + 20):
                started = time.perf_counter()
                await publish_on.post(http, "/_weaver/publish", {"channel": "feed", "data": i})
                async with asyncio.timeout(10):
                    message = orjson.loads(await ws.recv())
                elapsed = time.perf_counter() - started
                assert message["data"] == i
                if i >= 20:  # warm-up excluded
                    samples.append(elapsed * 1000)
    return samples


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


async def main(messages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        redis = RedisServer(root / "redis")
        (root / "redis").mkdir()
        redis.start()
        try:
            async with origin() as origin_url:
                memory_node = await start_node(write_config(root / "mem", origin_url, "memory://"))
                try:
                    memory = await measure(memory_node, memory_node, messages)
                finally:
                    await memory_node.stop()
                async with nodes(root / "redis-nodes", origin_url, redis.url, 2) as (a, b):
                    shared = await measure(a, b, messages)
        finally:
            redis.kill()
    print(f"publish -> receive over {messages} messages (ms), loopback, one at a time")
    for name, samples in (("memory (one node)", memory), ("redis (node A -> node B)", shared)):
        print(f"  {name:26} p50 {p(samples, 50):6.2f}  p99 {p(samples, 99):6.2f}")
    print(
        f"  ratio redis/memory         p50 {p(shared, 50) / p(memory, 50):6.2f}  "
        f"p99 {p(shared, 99) / p(memory, 99):6.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=500)
    asyncio.run(main(parser.parse_args().messages))
