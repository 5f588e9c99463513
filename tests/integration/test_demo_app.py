"""The bundled demo behind Weaver as the demo runs it: shared pages, a personal account."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.servers import serve_app
from weaver.proxy.app import build_app
from weaver.proxy.demo.origin import build_origin
from weaver.proxy.serve import demo_config


async def test_the_demo_account_and_api_work_through_weaver_while_pages_are_shared() -> None:
    async with asyncio.timeout(20), serve_app(build_origin()) as origin_url:
        port = int(origin_url.rsplit(":", 1)[1])
        config = demo_config(port, "127.0.0.1:0")
        assert [(r.path, r.shared) for r in config.routes] == [
            ("/", True),
            ("/inline-demo", True),
            ("/account", False),
            ("/api", False),
        ]
        async with (
            serve_app(build_app(config)) as url,
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client,
        ):
            async with client.get(url + "/api/cart") as resp:
                assert resp.status == 401
            async with client.post(url + "/account/login", data={"name": "alice"}) as resp:
                assert "Signed in as <b>alice</b>" in await resp.text()
                assert resp.headers["X-Weaver-Cache"] == "BYPASS"  # private: not stored
            async with client.get(url + "/api/cart") as resp:
                assert await resp.json() == {"user": "alice", "items": []}
            async with client.get(url + "/") as resp:
                page = await resp.text()
                assert "Weaver demo shop" in page and "alice" not in page  # shared paint
