"""``weaver serve`` and ``weaver demo`` in this process (proxy/serve.py): a site on a free
port, and the demo's config. The commands themselves run as processes in test_cli.py."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from weaver.config.load import build_config
from weaver.config.schema import SuspenseDelivery
from weaver.proxy.serve import DEMO_TOKEN, demo_config, start_site


def _hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


async def test_a_site_on_port_zero_answers_on_the_port_it_returns() -> None:
    server = build_config({"origin": [], "route": []}, "<test>").server
    async with asyncio.timeout(10), aiohttp.ClientSession() as client:
        for limits in (None, server):  # plain aiohttp, and Weaver's listener with its limits
            runner, port = await start_site(_hello_app(), "127.0.0.1", 0, limits)
            try:
                assert port != 0
                async with client.get(f"http://127.0.0.1:{port}/") as resp:
                    assert (resp.status, await resp.text()) == (200, "hello")
            finally:
                await runner.cleanup()


def test_the_demo_shares_its_pages_passes_the_account_through_and_takes_the_next_port() -> None:
    config = demo_config(4321, "127.0.0.1:8080")
    assert config.server.listen.port == 8080 and config.session.listen.port == 8081
    assert config.session.publish_token == DEMO_TOKEN and config.session.secret
    assert config.origin("demo").url == "http://127.0.0.1:4321"
    page, inline, account = (config.route_for(p) for p in ("/", "/inline-demo", "/account"))
    assert page is not None and page.shared
    assert inline is not None and inline.suspense_delivery is SuspenseDelivery.INLINE
    assert account is not None and not account.shared
    assert demo_config(4321, "127.0.0.1:0").session.listen.port == 0  # any free port


def test_each_demo_run_has_its_own_session_secret() -> None:
    assert (
        demo_config(1, "127.0.0.1:0").session.secret != demo_config(1, "127.0.0.1:0").session.secret
    )
