"""The Weaver application (proxy/app.py): pages, health and sessions wired together, and
what it does without a session secret; a real Weaver in front of a real origin."""

from __future__ import annotations

import asyncio
import tempfile

import aiohttp
from aiohttp import web

from tests.integration.harness import html, weaver_stack
from tests.servers import serve_app
from weaver.config.load import build_config
from weaver.config.schema import Config
from weaver.proxy.app import build_app, hub_for, lane_front
from weaver.proxy.edge import EDGE_KEY

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
