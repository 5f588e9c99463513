"""The visitor's side of a page (proxy/visitor.py): a session only for a page that needs
one, a new one on every such page, suspense fetched with the visitor's own headers, and
inline delivery only for a whole GET; a real Weaver in front of a real origin."""

from __future__ import annotations

import asyncio
from http.cookies import SimpleCookie

import aiohttp
from aiohttp import web

from tests.integration.harness import html, weaver_stack

SHELL = '<h1>shop</h1><weaver-include src="/cart" mode="suspense">cart…</weaver-include>'
CACHE = {"Cache-Control": "max-age=60"}


def _session(resp: aiohttp.ClientResponse) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    for value in resp.headers.getall("Set-Cookie", []):
        jar.load(value)
    morsel = jar.get("weaver_session")
    return morsel.value if morsel is not None else None


async def test_a_plain_page_opens_no_session() -> None:
    async def plain(request: web.Request) -> web.Response:
        return html("<h1>about</h1>", **CACHE)

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": plain}) as stack,
        aiohttp.ClientSession() as client,
    ):
        for expected in ("MISS", "HIT"):
            async with client.get(stack.url + "/") as resp:
                assert resp.headers["X-Weaver-Cache"] == expected
                assert "Set-Cookie" not in resp.headers
                await resp.read()


async def test_every_page_with_suspense_opens_a_new_session_fetched_with_the_visitors_cookie() -> (
    None
):
    cookies: list[str] = []
    two_fetches = asyncio.Event()

    async def shell(request: web.Request) -> web.Response:
        return html(SHELL, **CACHE)

    async def cart(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("Cookie", ""))
        if len(cookies) == 2:
            two_fetches.set()
        return html("<p>cart</p>")

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": shell, "/cart": cart}) as stack,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
    ):
        async with client.get(stack.url + "/", headers={"Cookie": "user=alice"}) as resp:
            first = _session(resp)
            await resp.read()
        planted = f"user=alice; weaver_session={first}"
        async with client.get(stack.url + "/", headers={"Cookie": planted}) as resp:
            second = _session(resp)
            await resp.read()
        await two_fetches.wait()
    assert first is not None and second is not None and first != second  # rotated
    assert all(cookie.startswith("user=alice") for cookie in cookies)


async def test_an_inline_route_sends_slots_inline_to_a_get_but_not_to_a_range_request() -> None:
    async def shell(request: web.Request) -> web.Response:
        return html(SHELL, **CACHE)

    async def cart(request: web.Request) -> web.Response:
        return html("<p>your cart</p>")

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": shell, "/cart": cart}, suspense_delivery="inline", shared=True) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/") as resp:
            body = await resp.text()
            assert "your cart" in body and "__weaverSwap(" in body  # after the paint
        async with client.get(stack.url + "/", headers={"Range": "bytes=0-3"}) as resp:
            assert (resp.status, await resp.text()) == (206, "<h1>")
