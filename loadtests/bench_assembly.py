"""bench_assembly: a page of K fragments each delayed D ms, through Weaver.

Reports Weaver's TTFB and total time against the ideal (the slowest fragment, since they
run in parallel) and against the sequential cost (the sum), as ratios, and the TTFB of the
origin's shell alone. Run: ``python loadtests/bench_assembly.py``.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from weaver.config.load import build_config
from weaver.proxy.app import build_app
from weaver.proxy.cli import start_site

ROUNDS = 20


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


async def scenario(k: int, delay_ms: int) -> None:
    origin_runner, origin_port = await start_site(origin_app(k, delay_ms / 1000), "127.0.0.1", 0)
    config = build_config(
        {
            "origin": [{"name": "o", "url": f"http://127.0.0.1:{origin_port}"}],
            "route": [{"path": "/", "origin": "o", "fragment_timeout": "5s"}],
        },
        "<bench>",
    )
    runner, port = await start_site(build_app(config), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as client:
            await timed_get(client, f"http://127.0.0.1:{port}/")  # warm the pools
            shell = [
                await timed_get(client, f"http://127.0.0.1:{origin_port}/") for _ in range(ROUNDS)
            ]
            woven = [await timed_get(client, f"http://127.0.0.1:{port}/") for _ in range(ROUNDS)]
    finally:
        await runner.cleanup()
        await origin_runner.cleanup()
    shell_ttfb = sorted(t for t, _ in shell)[ROUNDS // 2]
    ttfb = sorted(t for t, _ in woven)[ROUNDS // 2]
    total = sorted(t for _, t in woven)[ROUNDS // 2]
    ideal = delay_ms / 1000
    sequential = k * delay_ms / 1000
    print(
        f"K={k:3d} delay={delay_ms:4d}ms  total {total * 1000:7.1f} ms  "
        f"= {total / ideal:.3f} x ideal (target <= 1.1), {total / sequential:.3f} x sequential;"
        f"  TTFB {ttfb * 1000:.2f} ms vs shell TTFB {shell_ttfb * 1000:.2f} ms "
        f"(+{(ttfb - shell_ttfb) * 1000:.2f} ms, target <= +2 ms)"
    )


async def main() -> None:
    print(f"median of {ROUNDS} requests each")
    await scenario(10, 50)
    await scenario(20, 100)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
