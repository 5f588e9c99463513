"""Fill bodies (proxy/filling.py): what is stored and for how long, and revalidation; a
real Weaver in front of a real origin, the clock injected."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import aiohttp
from aiohttp import web

from tests.integration.harness import Recorder, html, weaver_stack
from weaver.cache.clock import ManualClock


async def _fetch(client: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with client.get(url) as resp:
        return resp.status, await resp.text(), resp.headers["X-Weaver-Cache"]


async def test_a_woven_page_is_stored_for_as_long_as_its_shortest_lived_part() -> None:
    clock = ManualClock(start=1_700_000_000.0)

    def dated(text: str, max_age: int) -> web.Response:
        date = formatdate(clock.time(), usegmt=True)
        return html(text, **{"Cache-Control": f"max-age={max_age}", "Date": date})

    async def shell(request: web.Request) -> web.Response:
        return dated('<main><esi:include src="/price"/></main>', 600)

    async def price(request: web.Request) -> web.Response:
        return dated("<b>9 EUR</b>", 5)

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": shell, "/price": price}, clock=clock) as stack,
        aiohttp.ClientSession() as client,
    ):
        assert await _fetch(client, stack.url + "/") == (200, "<main><b>9 EUR</b></main>", "MISS")
        clock.advance(4)
        assert (await _fetch(client, stack.url + "/"))[2] == "HIT"
        clock.advance(2)  # 6 s: the price is stale, so is the page
        assert (await _fetch(client, stack.url + "/"))[2] == "MISS"


async def test_an_origin_304_refreshes_the_stored_answer_and_replays_its_body() -> None:
    rec = Recorder()
    clock = ManualClock(start=1_700_000_000.0)

    async def page(request: web.Request) -> web.Response:
        date = formatdate(clock.time(), usegmt=True)
        headers = {"Cache-Control": "max-age=10", "ETag": '"v1"', "Date": date}
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers=headers)
        return web.Response(text="stored body", headers=headers)  # text/plain: not woven

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page}, rec, clock=clock) as stack,
        aiohttp.ClientSession() as client,
    ):
        assert await _fetch(client, stack.url + "/") == (200, "stored body", "MISS")
        clock.advance(11)
        assert await _fetch(client, stack.url + "/") == (200, "stored body", "REVALIDATED")
        clock.advance(5)  # fresh again for 10 s from the 304
        assert await _fetch(client, stack.url + "/") == (200, "stored body", "HIT")
    assert rec.requests == ["/", "/"]
    assert rec.headers["/"].get("If-None-Match") == '"v1"'  # the second one asked


async def _html(text: str) -> web.Response:
    return html(text, **{"Cache-Control": "max-age=60"})
