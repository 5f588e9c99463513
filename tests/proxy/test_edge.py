"""What every handler shares (proxy/edge.py): the running app's Edge, and its one clock,
which every age and expiry reads; a real Weaver in front of a real origin."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import aiohttp
from aiohttp import web

from tests.integration.harness import html, weaver_stack
from weaver.cache.clock import ManualClock
from weaver.proxy.edge import EDGE_KEY


async def test_the_running_app_has_its_edge_and_every_age_reads_its_one_clock() -> None:
    clock = ManualClock(start=1_700_000_000.0)

    async def page(request: web.Request) -> web.Response:
        date = formatdate(clock.time(), usegmt=True)
        return html("page", **{"Cache-Control": "max-age=60", "Date": date})

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page}, clock=clock) as stack,
        aiohttp.ClientSession() as client,
    ):
        edge = stack.app[EDGE_KEY]
        assert edge.clock is clock and edge.config is stack.config and edge.store is not None
        async with client.get(stack.url + "/") as resp:
            assert (await resp.text(), resp.headers["X-Weaver-Cache"]) == ("page", "MISS")
        clock.advance(42)
        async with client.get(stack.url + "/") as resp:
            assert (resp.headers["X-Weaver-Cache"], resp.headers["Age"]) == ("HIT", "42")
        clock.advance(30)  # 72 s: past max-age on the edge's clock, not the wall's
        async with client.get(stack.url + "/") as resp:
            assert resp.headers["X-Weaver-Cache"] == "MISS"


async def test_session_tokens_are_issued_and_checked_on_the_apps_clock() -> None:
    clock = ManualClock(start=1_700_000_000.0)

    async def page(request: web.Request) -> web.Response:
        return html('<p>x</p><weaver-include src="/slot" mode="suspense">…</weaver-include>')

    async def slot(request: web.Request) -> web.Response:
        return html("<b>mine</b>")

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page, "/slot": slot}, clock=clock) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/") as resp:
            cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
        token = cookie.split("=", 1)[1]
        issued = int(token.split(".")[1])
        assert issued == int(clock.time())  # the app's clock, not the wall's
        clock.advance(8 * 24 * 3600)  # past the token's 7 days on the app's clock
        async with client.get(stack.url + "/_weaver/events", headers={"Cookie": cookie}) as resp:
            assert (resp.status, (await resp.json())["error"]) == (401, "session token expired")
