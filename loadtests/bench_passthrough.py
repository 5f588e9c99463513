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
import statistics

from aiohttp import web

from loadtests.common import (
    Measured,
    free_port,
    load_average,
    measure,
    start_edge_process,
    start_process,
)
from weaver.config.load import build_config
from weaver.config.schema import Config
from weaver.proxy import collector

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
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:
                pass  # the load generator closed its connections at the end
            return response

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/{tail:.*}", proxy)
    return app


def weaver_config(origin_port: int) -> Config:
    collector.tune_for_serving()  # as `weaver serve` does (proxy/worker.py run)
    return build_config(
        {
            "origin": [{"name": "o", "url": f"http://127.0.0.1:{origin_port}"}],
            "route": [{"path": "/", "origin": "o"}],
        },
        "<bench>",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    origin_port, weaver_port, naive_port = free_port(), free_port(), free_port()
    procs = [
        start_process(origin_app, origin_port),
        start_edge_process(weaver_config, weaver_port, origin_port),
        start_process(naive_proxy_app, naive_port, origin_port),
    ]
    pids = [proc.pid for proc in procs]
    try:
        tool = "wrk" if shutil.which("wrk") else "python clients"
        print(
            f"page size {len(PAGE)} bytes, {args.duration}s, concurrency {args.concurrency}, {tool}"
        )
        runs: dict[str, list[Measured]] = {}
        targets = [
            ("origin direct      /page ", f"http://127.0.0.1:{origin_port}/page", pids[0]),
            ("naive aiohttp proxy /page", f"http://127.0.0.1:{naive_port}/page", pids[2]),
            ("weaver (woven)     /page ", f"http://127.0.0.1:{weaver_port}/page", pids[1]),
            ("weaver (bytes)     /asset", f"http://127.0.0.1:{weaver_port}/asset", pids[1]),
        ]
        for _ in range(args.rounds):  # interleaved: a busy spell hits every server
            for name, url, pid in targets:
                got = measure(url, args.duration, args.concurrency, pid)
                runs.setdefault(name, []).append(got)
        results = {name: _median(got) for name, got in runs.items()}
        naive = results["naive aiohttp proxy /page"]
        print(f"medians of {args.rounds}; CPU is the server's own process; {load_average()}")
        for name, got in results.items():
            print(
                f"{name}  {got}  vs naive proxy: {got.rps / naive.rps:.2f}x req/s, "
                f"{naive.cpu_us / got.cpu_us:.2f}x by CPU"
            )
    finally:
        for proc in procs:
            proc.kill()


def _median(runs: list[Measured]) -> Measured:
    return Measured(
        statistics.median(m.rps for m in runs), statistics.median(m.cpu_us for m in runs)
    )


if __name__ == "__main__":
    main()
