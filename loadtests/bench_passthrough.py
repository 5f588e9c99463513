"""bench_passthrough: req/s of Weaver proxying an uncached 20 KB page, against baselines.

Baselines from the same run: the origin served directly, and a naive aiohttp streaming
proxy (one pooled ClientSession, the response streamed chunk by chunk as it arrives,
no scanning, no cache). Weaver's figures: a woven HTML miss (scanned, no includes) and
a non-HTML passthrough. One process each (origin, proxies, load); wrk when installed.
Run: ``python -m loadtests.bench_passthrough``.
"""

from __future__ import annotations

import argparse
import shutil

from aiohttp import web

from loadtests.common import free_port, rps, start_process
from weaver.config.load import build_config
from weaver.proxy import collector
from weaver.proxy.app import build_app

PAGE = (
    "<!doctype html><html><body>" + "<p>lorem ipsum dolor sit amet</p>" * 620 + "</body></html>"
).encode()


def origin_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    async def asset(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/asset", asset)
    return app


def naive_proxy_app(origin_port: int) -> web.Application:
    """The baseline: what a careful aiohttp user writes in twenty lines."""
    import aiohttp

    base = f"http://127.0.0.1:{origin_port}"
    state: dict[str, aiohttp.ClientSession] = {}

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        state["client"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await state["client"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        async with state["client"].get(base + request.path_qs) as upstream:
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/{tail:.*}", proxy)
    return app


def weaver_app(origin_port: int) -> web.Application:
    collector.tune_for_serving()  # as `weaver serve` does (proxy/worker.py run)
    config = build_config(
        {
            "origin": [{"name": "o", "url": f"http://127.0.0.1:{origin_port}"}],
            "route": [{"path": "/", "origin": "o"}],
        },
        "<bench>",
    )
    return build_app(config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    origin_port, weaver_port, naive_port = free_port(), free_port(), free_port()
    procs = [
        start_process(origin_app, origin_port),
        start_process(weaver_app, weaver_port, origin_port),
        start_process(naive_proxy_app, naive_port, origin_port),
    ]
    try:
        tool = "wrk" if shutil.which("wrk") else "python clients"
        print(
            f"page size {len(PAGE)} bytes, {args.duration}s, concurrency {args.concurrency}, {tool}"
        )
        results = {}
        for name, url in [
            ("origin direct      /page ", f"http://127.0.0.1:{origin_port}/page"),
            ("naive aiohttp proxy /page", f"http://127.0.0.1:{naive_port}/page"),
            ("weaver (woven)     /page ", f"http://127.0.0.1:{weaver_port}/page"),
            ("weaver (bytes)     /asset", f"http://127.0.0.1:{weaver_port}/asset"),
        ]:
            results[name] = rps(url, args.duration, args.concurrency, processes=1)
        naive = results["naive aiohttp proxy /page"]
        for name, measured in results.items():
            print(f"{name}  {measured:8.0f} req/s  vs naive proxy {measured / naive:.2f}x")
    finally:
        for proc in procs:
            proc.kill()


if __name__ == "__main__":
    main()
