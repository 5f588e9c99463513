"""bench_sessions: memory per idle session, publish latency, fan-out, cancel on disconnect.

A real ``weaver`` app (origin + Weaver with its session listener) runs in a child
process; WebSocket clients run in other processes (a process may hold 20,000 files).
Figures:

- RSS of the Weaver process per idle session at 1k and 10k connected sessions
  (baseline: the same process with no session), target <= 30 KB;
- publish -> receive latency p50/p99 at 1k sessions (POST /_weaver/publish to the
  client's receive), target p99 <= 5 ms;
- time to fan one message out to every one of 10k sessions, target <= 300 ms;
- a visitor leaving mid-page -> the origin sees its suspense fetch cancelled, target
  <= 10 ms.

Run: ``python -m loadtests.bench_sessions`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from loadtests.common import free_port, start_process
from weaver.config.load import build_config
from weaver.proxy.app import build_app
from weaver.session import auth

SECRET = "bench-secret"
TOKEN = "bench-token"
CHANNEL = "bench"


def origin_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text='<p>x</p><weaver-include src="/slow" mode="suspense" timeout="30s">…'
            '</weaver-include><esi:include src="/hold"/>',
            content_type="text/html",
        )

    cancelled_at: list[float] = []

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled_at.append(time.time())
            raise
        return web.Response(text="never")

    async def hold(request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response(text="never")

    async def cancels(request: web.Request) -> web.Response:
        return web.json_response(cancelled_at)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hold", hold)
    app.router.add_get("/_cancels", cancels)
    return app


def weaver_app(origin_port: int, session_port: int, cache_dir: str) -> web.Application:
    raise_open_files_limit()
    config = build_config(
        {
            "session": {
                "listen": f"127.0.0.1:{session_port}",
                "secret": SECRET,
                "publish_token": TOKEN,
            },
            "cache": {"dir": cache_dir},
            "origin": [{"name": "o", "url": f"http://127.0.0.1:{origin_port}"}],
            "route": [{"path": "/", "origin": "o"}],
        },
        "<bench>",
    )
    return build_app(config)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def _clients(port: int, first: int, count: int, tag: int, results: Any) -> None:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    received_at: list[float] = []
    stop = asyncio.Event()

    async def one(index: int) -> None:
        token = auth.issue(SECRET, f"bench-{tag}-{first + index}", time.time())
        async with connect(
            f"ws://127.0.0.1:{port}/",
            max_size=None,
            compression=None,
            open_timeout=60,
            ping_interval=None,  # a busy client process must not time its own pings out
        ) as ws:
            await ws.send(orjson.dumps({"type": "hello", "last_seq": 0, "token": token}).decode())
            await ws.recv()
            await ws.send(orjson.dumps({"type": "subscribe", "channel": CHANNEL}).decode())
            connected.release()
            while True:
                message = orjson.loads(await ws.recv())
                now = time.time()
                if message.get("type") != "message":
                    continue
                data = message["data"]
                if data.get("stop"):
                    stop.set()
                    return
                latencies.append(now - data["t"])
                if data.get("fanout"):
                    received_at.append(now)

    connected = asyncio.Semaphore(0)
    async with asyncio.TaskGroup() as tasks:
        for index in range(count):
            tasks.create_task(one(index))
            if index % 200 == 199:
                await asyncio.sleep(0.05)  # do not overrun the listen backlog
        for _ in range(count):
            await connected.acquire()
        results.put(("ready", count))
        await stop.wait()
    results.put(("done", {"latencies": latencies, "fanout": received_at}))


def _client_process(port: int, first: int, count: int, tag: int, results: Any) -> None:
    import uvloop

    raise_open_files_limit()
    uvloop.run(_clients(port, first, count, tag, results))


def raise_open_files_limit() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def publish(http: aiohttp.ClientSession, url: str, data: dict[str, Any]) -> int:
    async with http.post(
        url, json={"channel": CHANNEL, "data": data}, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        delivered: int = (await resp.json())["delivered_to"]
        return delivered


async def sessions_round(
    weaver_pid: int, weaver_port: int, session_port: int, total: int, publishes: int
) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    per_process = 5000
    procs = []
    before = rss_bytes(weaver_pid)
    for first in range(0, total, per_process):
        count = min(per_process, total - first)
        proc = ctx.Process(
            target=_client_process, args=(session_port, first, count, total, results)
        )
        proc.start()
        procs.append(proc)
    ready = 0
    while ready < total:
        kind, value = await asyncio.to_thread(results.get, True, 300)
        assert kind == "ready"
        ready += value
    await asyncio.sleep(1.0)
    after = rss_bytes(weaver_pid)
    url = f"http://127.0.0.1:{weaver_port}/_weaver/publish"
    fanout_started = 0.0
    async with aiohttp.ClientSession() as http:
        subscribed = total
        for _ in range(publishes):
            subscribed = min(subscribed, await publish(http, url, {"t": time.time()}))
            await asyncio.sleep(0.05)
        fanout_started = time.time()
        await publish(http, url, {"t": fanout_started, "fanout": True})
        await asyncio.sleep(1.0)
        await publish(http, url, {"stop": True})
    latencies: list[float] = []
    fanout: list[float] = []
    for _ in procs:
        kind, value = await asyncio.to_thread(results.get, True, 300)
        assert kind == "done"
        latencies += value["latencies"]
        fanout += value["fanout"]
    for proc in procs:
        proc.join(timeout=30)
    latencies.sort()
    return {
        "per_session_kb": (after - before) / total / 1024,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "fanout_ms": (max(fanout) - fanout_started) * 1000,
        "fanout_count": len(fanout),
        "subscribed": subscribed,
    }


async def disconnect_round(weaver_port: int, origin_port: int, rounds: int) -> list[float]:
    """A visitor leaves mid-page: how long until the origin sees the suspense fetch end."""
    delays = []
    async with aiohttp.ClientSession() as http:
        for _ in range(rounds):
            async with http.get(f"http://127.0.0.1:{origin_port}/_cancels") as resp:
                seen = len(await resp.json())
            resp = await http.get(f"http://127.0.0.1:{weaver_port}/")
            await resp.content.readany()
            await asyncio.sleep(0.05)  # the suspense fetch is under way
            left_at = time.time()
            resp.close()
            for _ in range(200):
                await asyncio.sleep(0.005)
                async with http.get(f"http://127.0.0.1:{origin_port}/_cancels") as check:
                    cancels = await check.json()
                if len(cancels) > seen:
                    delays.append((cancels[-1] - left_at) * 1000)
                    break
    return delays


async def run(sizes: list[int], publishes: int) -> None:
    origin_port, weaver_port, session_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as cache_dir:
        origin = start_process(origin_app, origin_port)
        weaver = start_process(weaver_app, weaver_port, origin_port, session_port, cache_dir)
        try:
            assert weaver.pid is not None
            delays = await disconnect_round(weaver_port, origin_port, 20)
            print(
                f"leave mid-page -> suspense fetch cancelled at the origin: median "
                f"{statistics.median(delays):.1f} ms, max {max(delays):.1f} ms over "
                f"{len(delays)} rounds (target <= 10 ms)"
            )
            for total in sizes:
                figures = await sessions_round(
                    weaver.pid, weaver_port, session_port, total, publishes
                )
                print(
                    f"{total:6d} sessions: RSS {figures['per_session_kb']:.1f} KB per idle "
                    f"session (target <= 30); publish->receive p50 {figures['p50_ms']:.2f} ms "
                    f"p99 {figures['p99_ms']:.2f} ms (target p99 <= 5 at 1k); fan-out to all "
                    f"{figures['fanout_count']:.0f} in {figures['fanout_ms']:.0f} ms "
                    f"(target <= 300 at 10k); {figures['subscribed']:.0f} of {total} "
                    "still subscribed at the end"
                )
        finally:
            weaver.kill()
            origin.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--publishes", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run([int(s) for s in args.sizes.split(",")], args.publishes))


if __name__ == "__main__":
    main()
