"""bench_coalesce: origin fetches per 1,000 concurrent misses of one key (target: 1).

The baseline in the same run is the same burst sent to the origin directly (1,000
fetches). Run: ``python -m loadtests.bench_coalesce``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter

import aiohttp
from aiohttp import web

from loadtests.common import free_port, start_process
from weaver.config.load import build_config
from weaver.proxy.app import build_app


def origin_app(delay_s: float) -> web.Application:
    counts: Counter[str] = Counter()

    async def page(request: web.Request) -> web.Response:
        counts[request.path] += 1
        await asyncio.sleep(delay_s)
        return web.Response(
            text="<p>" + "x" * 10_000 + "</p>",
            content_type="text/html",
            headers={"Cache-Control": "max-age=3600"},
        )

    async def count(request: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application()
    app.router.add_get("/_count", count)
    app.router.add_get("/{name}", page)
    return app


def weaver_app(origin_port: int, cache_dir: str) -> web.Application:
    config = build_config(
        {
            "cache": {"dir": cache_dir},
            "origin": [{"name": "o", "url": f"http://127.0.0.1:{origin_port}"}],
            "route": [{"path": "/", "origin": "o"}],
        },
        "<bench>",
    )
    return build_app(config)


async def burst(url: str, n: int) -> tuple[float, Counter[str]]:
    statuses: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one() -> None:
            async with client.get(url) as resp:
                await resp.read()
                statuses[resp.headers.get("X-Weaver-Cache", "origin")] += 1

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for _ in range(n):
                tasks.create_task(one())
        return time.perf_counter() - started, statuses


async def origin_count(origin_port: int, name: str) -> int:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://127.0.0.1:{origin_port}/_count") as resp:
            counts: dict[str, int] = await resp.json()
    return counts.get(f"/{name}", 0)


async def run(n: int, delay_s: float) -> None:
    origin_port, weaver_port = free_port(), free_port()
    procs = [start_process(origin_app, origin_port, delay_s)]
    with tempfile.TemporaryDirectory() as cache_dir:
        try:
            procs.append(start_process(weaver_app, weaver_port, origin_port, cache_dir))
            direct_s, _ = await burst(f"http://127.0.0.1:{origin_port}/direct", n)
            direct = await origin_count(origin_port, "direct")
            woven_s, statuses = await burst(f"http://127.0.0.1:{weaver_port}/coalesced", n)
            through = await origin_count(origin_port, "coalesced")
        finally:
            for proc in procs:
                proc.kill()
    print(f"{n} concurrent requests for one key, origin answers after {delay_s * 1000:.0f} ms")
    print(f"  origin direct: {direct} origin fetches in {direct_s:.2f}s")
    print(f"  through Weaver: {through} origin fetch(es) in {woven_s:.2f}s  {dict(statuses)}")
    print(f"  origin fetches per {n} misses: {through} (ratio vs direct {through / direct:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.delay))


if __name__ == "__main__":
    main()
