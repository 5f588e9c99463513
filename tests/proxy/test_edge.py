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
