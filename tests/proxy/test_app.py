"""The Weaver application (proxy/app.py): pages, health and sessions wired together, and
what it does without a session secret; a real Weaver in front of a real origin."""

from __future__ import annotations

import asyncio
import tempfile

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from tests.integration.harness import html, weaver_stack
from tests.servers import serve_app, serve_runner
from weaver.config.load import build_config
from weaver.config.schema import Config
from weaver.proxy.app import build_app, hub_for, lane_front, page_front
from weaver.proxy.edge import EDGE_KEY
from weaver.proxy.listener import EdgeRunner

SHELL = '<h1>shop</h1><weaver-include src="/cart" mode="suspense">cart…</weaver-include>'


async def shell(request: web.Request) -> web.Response:
    return html(SHELL, **{"Cache-Control": "max-age=60"})


async def cart(request: web.Request) -> web.Response:
    return html("<p>your cart</p>")


def _config(origin_url: str, cache_dir: str, **server: str) -> Config:
    return build_config(
        {
            "server": server,
            "cache": {"dir": cache_dir},
            "origin": [{"name": "shop", "url": origin_url}],
            "route": [{"path": "/", "origin": "shop"}],
        },
        "<test>",
    )


async def test_one_app_serves_pages_health_and_a_session_for_a_page_with_suspense() -> None:
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": shell, "/cart": cart}) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/_weaver/health") as resp:
            assert resp.status == 200
        async with client.get(stack.url + "/") as resp:
            assert resp.status == 200 and "<h1>shop</h1>" in await resp.text()
            assert "weaver_session" in resp.cookies
        assert stack.app[EDGE_KEY].hub is not None


async def test_without_a_session_secret_pages_keep_their_fallbacks_and_set_no_cookie() -> None:
    origin = web.Application()
    origin.router.add_get("/", shell)
    origin.router.add_get("/cart", cart)
    with tempfile.TemporaryDirectory(prefix="weaver-cache-") as cache_dir:
        async with asyncio.timeout(10), serve_app(origin) as origin_url:
            config = _config(origin_url, cache_dir)
            assert hub_for(config) is None
            app = build_app(config)
            async with serve_app(app) as url, aiohttp.ClientSession() as client:
                async with client.get(url + "/") as resp:
                    body = await resp.text()
                    assert resp.status == 200 and "Set-Cookie" not in resp.headers
                assert app[EDGE_KEY].hub is None
    assert "cart…" in body and "your cart" not in body


async def test_the_hit_lane_fronts_the_app_only_when_no_access_log_needs_every_line() -> None:
    with tempfile.TemporaryDirectory(prefix="weaver-cache-") as cache_dir:
        for access_log, has_front in (("off", True), ("text", False)):
            config = _config("http://127.0.0.1:1", cache_dir, access_log=access_log)
            app = build_app(config)
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
            await runner.setup()  # the edge exists once the app has started
            try:
                assert (lane_front(app) is not None) is has_front
            finally:
                await runner.cleanup()
        assert lane_front(web.Application()) is None  # not Weaver's app: no front


async def test_the_page_front_proxies_pages_past_the_router_and_leaves_it_the_rest() -> None:
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        return html(f"page {request.method}")

    origin = web.Application()
    origin.router.add_route("*", "/{tail:.*}", page)
    async with serve_app(origin) as origin_url:
        with tempfile.TemporaryDirectory() as cache_dir:
            config = _config(origin_url, cache_dir, access_log="off")
            app = build_app(config)
            runner = EdgeRunner(app, config.server, front=lane_front, pages=page_front)
            await runner.setup()
            pages = page_front(app)  # started: Weaver's own routes, one middleware
            assert pages is not None
            for method, path, headers in (
                ("POST", "/b", {}),  # not a page fetch: the router's
                ("GET", "/_weaver/health", {}),  # Weaver's own route
                ("GET", "/a", {"Expect": "100-continue"}),  # the router's expect handler
            ):
                assert pages(make_mocked_request(method, path, headers, app=app)) is None
            async with serve_runner(runner) as url:
                async with asyncio.timeout(10), aiohttp.ClientSession() as client:
                    async with client.get(url + "/_weaver/metrics") as resp:
                        before = _bypassed(await resp.text())
                    async with client.get(url + "/a") as resp:
                        assert (resp.status, await resp.text()) == (200, "page GET")
                        assert resp.headers["X-Weaver-Cache"] == "BYPASS"
                    async with client.post(url + "/b", data=b"x") as resp:  # the router's
                        assert await resp.text() == "page POST"
                    async with client.get(url + "/_weaver/health") as resp:
                        assert resp.status == 200
                    async with client.get(url + "/_weaver/metrics") as resp:
                        after = _bypassed(await resp.text())
    assert seen == ["GET /a", "POST /b"]
    assert after - before == 2.0  # both counted by the access middleware, front or not
    assert page_front(web.Application()) is None  # not Weaver's app: no front


def _bypassed(metrics_text: str) -> float:
    prefix = 'weaver_requests_total{cache="BYPASS",route="/",status="2xx"} '
    found = [line for line in metrics_text.splitlines() if line.startswith(prefix)]
    return float(found[0][len(prefix) :]) if found else 0.0
