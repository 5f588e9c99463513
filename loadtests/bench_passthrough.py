"""bench_passthrough: req/s of Weaver proxying a 20 KB page vs the origin served directly.

One process each (origin, Weaver, load). Run: ``python loadtests/bench_passthrough.py``.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from loadtests.common import free_port, load_in_processes, start_process
from weaver.config.load import build_config
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


def weaver_app(origin_port: int) -> web.Application:
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
    origin_port, weaver_port = free_port(), free_port()
    origin = start_process(origin_app, origin_port)
    weaver = start_process(weaver_app, weaver_port, origin_port)
    try:
        print(f"page size {len(PAGE)} bytes, {args.duration}s, concurrency {args.concurrency}")
        results = {}
        for name, url in [
            ("origin direct  /page ", f"http://127.0.0.1:{origin_port}/page"),
            ("weaver (woven) /page ", f"http://127.0.0.1:{weaver_port}/page"),
            ("weaver (bytes) /asset", f"http://127.0.0.1:{weaver_port}/asset"),
        ]:
            results[name] = load_in_processes(
                url, duration_s=args.duration, concurrency=args.concurrency, processes=1
            )
        base = results["origin direct  /page "]
        for name, rps in results.items():
            print(f"{name}  {rps:8.0f} req/s  ratio {rps / base:.2f}")
    finally:
        origin.kill()
        weaver.kill()


if __name__ == "__main__":
    main()
