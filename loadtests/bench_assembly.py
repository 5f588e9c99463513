"""bench_assembly: a page of K fragments each delayed D ms, through Weaver.

Reports Weaver's TTFB and total time against the ideal (the slowest fragment, since they
run in parallel) and against the sequential cost (the sum), as ratios, the TTFB of the
origin's shell alone, and the origin's own time for the K fragments asked at once by a
plain aiohttp client (its late answers are not Weaver's). Origin, Weaver and the client
each run in their own process, as in production: a client on Weaver's own event loop
would be charged for the fragment fetches Weaver starts.
Run: ``python -m loadtests.bench_assembly``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time

import aiohttp
from aiohttp import web

from loadtests.common import free_port, load_average, start_edge_process, start_process
from weaver.config.load import build_config
from weaver.config.schema import Config
from weaver.proxy import collector

ROUNDS = 50


def origin_app(k: int, delay_s: float) -> web.Application:
    shell = (
        "<html><body>"
        + "".join(f'<div><esi:include src="/f/{i}"/></div>' for i in range(k))
        + "</body></html>"
    )

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=shell, content_type="text/html")

    async def frag(request: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        return web.Response(text="<p>" + "x" * 500 + "</p>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/f/{i}", frag)
    return app


async def timed_get(client: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    started = time.perf_counter()
    async with client.get(url) as resp:
        await resp.content.readany()
        ttfb = time.perf_counter() - started
        await resp.read()
        return ttfb, time.perf_counter() - started


async def fanout(port: int, k: int) -> float:
    """The origin alone: its K fragments asked at once by a plain aiohttp client (one
    connection each, kept alive), until the last answer is read. What the origin's own
    late answers cost, measured without Weaver: total minus this is Weaver's part."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one(i: int) -> None:
            async with client.get(f"http://127.0.0.1:{port}/f/{i}") as resp:
                await resp.read()

        for _ in range(2):  # open and warm the connections
            await asyncio.gather(*(one(i) for i in range(k)))
        times = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(k)))
            times.append(time.perf_counter() - started)
    return sorted(times)[ROUNDS // 2]


async def idle_get(client: aiohttp.ClientSession, url: str, idle_s: float) -> float:
    """TTFB of ``url`` asked after ``idle_s`` of quiet, as each woven page is asked (its
    predecessor waited that long for its fragments). On this VM a process woken from
    idle and its cold caches cost several hundred microseconds at every hop, which a
    shell asked back to back never pays."""
    await asyncio.sleep(idle_s)
    ttfb, _ = await timed_get(client, url)
    return ttfb


def weaver_config(origin_port: int, cache_dir: str) -> Config:
    collector.tune_for_serving()  # as `weaver serve` does (proxy/worker.py run)
    return build_config(
        {
            "cache": {"dir": cache_dir},
            "origin": [{"name": "o", "url": f"http://127.0.0.1:{origin_port}"}],
            "route": [{"path": "/", "origin": "o", "fragment_timeout": "5s"}],
        },
        "<bench>",
    )


async def scenario(k: int, delay_ms: int) -> None:
    origin_port, weaver_port = free_port(), free_port()
    cache_dir = tempfile.mkdtemp(prefix="weaver-bench-")
    procs = [start_process(origin_app, origin_port, k, delay_ms / 1000)]
    try:
        procs.append(start_edge_process(weaver_config, weaver_port, origin_port, cache_dir))
        async with aiohttp.ClientSession() as client:
            for port in (origin_port, weaver_port):  # warm the pools
                for _ in range(10):
                    await timed_get(client, f"http://127.0.0.1:{port}/")
            shell = [
                await timed_get(client, f"http://127.0.0.1:{origin_port}/") for _ in range(ROUNDS)
            ]
            shell_idle = [
                await idle_get(client, f"http://127.0.0.1:{origin_port}/", delay_ms / 1000)
                for _ in range(ROUNDS if k else 0)
            ]
            woven = [
                await timed_get(client, f"http://127.0.0.1:{weaver_port}/") for _ in range(ROUNDS)
            ]
        plain = await fanout(origin_port, k) if k else None
    finally:
        for proc in procs:
            proc.kill()
        shutil.rmtree(cache_dir, ignore_errors=True)
    shell_ttfb = sorted(t for t, _ in shell)[ROUNDS // 2]
    ttfb = sorted(t for t, _ in woven)[ROUNDS // 2]
    total = sorted(t for _, t in woven)[ROUNDS // 2]
    ideal = delay_ms / 1000 if k else total
    sequential = k * delay_ms / 1000 if k else total
    print(
        f"K={k:3d} delay={delay_ms:4d}ms  total {total * 1000:7.1f} ms  "
        f"= {total / ideal:.3f} x ideal (target <= 1.1), {total / sequential:.3f} x sequential;"
        f"  TTFB {ttfb * 1000:.2f} ms vs shell TTFB {shell_ttfb * 1000:.2f} ms "
        f"(+{(ttfb - shell_ttfb) * 1000:.2f} ms, target <= +1 ms)  [{load_average()}]"
    )
    if shell_idle:
        idle_ttfb = sorted(shell_idle)[ROUNDS // 2]
        print(
            f"        shell TTFB asked after {delay_ms} ms idle, as the woven pages are:"
            f" {idle_ttfb * 1000:.2f} ms (Weaver +{(ttfb - idle_ttfb) * 1000:.2f} ms)"
        )
    if plain is not None:
        print(
            f"        origin alone, K fragments to a plain aiohttp client: {plain * 1000:.1f} ms"
            f" = {plain / ideal:.3f} x ideal; Weaver's part of total - ideal:"
            f" {(total - plain) * 1000:.1f} ms of {(total - ideal) * 1000:.1f} ms"
        )


async def main() -> None:
    print(f"median of {ROUNDS} requests each, after 10 to warm the pools")
    await scenario(0, 50)
    await scenario(10, 50)
    await scenario(20, 50)
    await scenario(20, 100)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
