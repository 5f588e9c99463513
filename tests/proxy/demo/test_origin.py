"""The demo shop's origin on its own (proxy/demo/origin.py): what Weaver fronts in
``weaver demo``. Real server on 127.0.0.1; Weaver in front is tests/integration/
test_demo_app.py and tests/browser/test_demo.py."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.servers import serve_app
from weaver.proxy.demo.origin import USER_COOKIE, build_origin


async def test_the_shell_and_its_shared_fragments_say_how_long_they_may_be_cached() -> None:
    async with asyncio.timeout(10), serve_app(build_origin()) as url, aiohttp.ClientSession() as c:
        async with c.get(url + "/") as shell:
            page = await shell.text()
            assert shell.headers["Cache-Control"] == "max-age=60"
        assert "/fragments/header" in page and "/fragments/cart" in page
        async with c.get(url + "/fragments/header") as header:
            assert header.headers["Surrogate-Key"] == "header"
        async with c.get(url + "/fragments/deals") as deals:
            assert deals.status == 500  # failing on purpose: its fallback stays


async def test_an_add_to_cart_event_is_counted_once_however_often_it_is_delivered() -> None:
    event = {"id": "e1", "name": "add-to-cart", "target": "cart", "data": {"product": "p1"}}
    body = {"session": "s1", "event": event}
    async with asyncio.timeout(10), serve_app(build_origin()) as url, aiohttp.ClientSession() as c:
        answers = []
        for _ in range(2):  # delivery is at least once: the same id twice
            async with c.post(url + "/_events", json=body) as resp:
                answers.append(await resp.json())
    assert answers[0] == answers[1]
    assert "1 item(s) in your cart" in answers[0]["patches"]["cart"]


async def test_signing_in_sets_the_apps_own_cookie_and_the_cart_api_needs_it() -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        asyncio.timeout(10),
        serve_app(build_origin()) as url,
        aiohttp.ClientSession(cookie_jar=jar) as c,
    ):
        async with c.get(url + "/api/cart") as anonymous:
            assert anonymous.status == 401
        async with c.get(url + "/account") as account:
            assert account.headers["Cache-Control"] == "private"
        async with c.post(url + "/account/login", data={"name": "ada"}) as signed_in:
            assert signed_in.status == 200 and "ada" in await signed_in.text()
        assert any(cookie.key == USER_COOKIE for cookie in jar)
        async with c.get(url + "/api/cart") as cart:
            assert await cart.json() == {"user": "ada", "items": []}
