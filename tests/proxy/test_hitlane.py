"""The hit lane: prepared answers for plain, fresh, hot hits, and when it must step aside."""

from __future__ import annotations

import asyncio
import tempfile
import time

import aiohttp
from aiohttp import web

from tests.integration.harness import TOKEN, html, weaver_config, weaver_stack
from tests.servers import Handler, serve_app, serve_runner
from weaver.proxy.app import build_app, lane_front
from weaver.proxy.edge import EDGE_KEY
from weaver.proxy.hitlane import HitLane
from weaver.proxy.listener import EdgeRunner

PAGE = "<p>" + "lane " * 400 + "</p>"
_IGNORED = {"date", "age", "server-timing", "server"}


def counted(count: dict[str, int], text: str, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        count[request.path] = count.get(request.path, 0) + 1
        return html(text.replace("{n}", str(count[request.path])), **headers)

    return handler


async def _get(
    client: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, bytes, dict[str, str]]:
    async with client.get(url, headers=headers) as resp:
        kept = {k.lower(): v for k, v in resp.headers.items() if k.lower() not in _IGNORED}
        return resp.status, await resp.read(), kept


async def test_a_lane_hit_answers_what_the_ordinary_hit_answered() -> None:
    count: dict[str, int] = {}
    routes = {"/": counted(count, PAGE, **{"Cache-Control": "max-age=600"})}
    async with (
        asyncio.timeout(10),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession(auto_decompress=False) as client,
    ):
        for coding in ("identity", "gzip", "br"):
            await _get(client, stack.url + "/", **{"Accept-Encoding": coding})  # miss/variant
            ordinary = await _get(client, stack.url + "/", **{"Accept-Encoding": coding})
            for _ in range(3):
                async with client.get(stack.url + "/", headers={"Accept-Encoding": coding}) as resp:
                    assert resp.headers["Server-Timing"] == "cache;desc=hit"  # the lane's
                    assert int(resp.headers["Age"]) >= 0 and "Date" in resp.headers
                assert await _get(client, stack.url + "/", **{"Accept-Encoding": coding}) == (
                    ordinary
                )
        assert count == {"/": 1}


async def test_the_lane_steps_aside_for_conditionals_ranges_and_purges() -> None:
    count: dict[str, int] = {}
    routes = {"/": counted(count, "v{n}" + PAGE, **{"Cache-Control": "max-age=600"})}
    async with (
        asyncio.timeout(10),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession() as client,
    ):
        for _ in range(3):
            status, body, headers = await _get(client, stack.url + "/")
        etag = headers["etag"]
        assert (await _get(client, stack.url + "/", **{"If-None-Match": etag}))[0] == 304
        status, body, headers = await _get(
            client, stack.url + "/", Range="bytes=0-1", **{"Accept-Encoding": "identity"}
        )
        assert (status, body) == (206, b"v1")
        async with client.post(
            stack.url + "/_weaver/purge",
            json={"urls": ["/"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert resp.status == 200
        status, body, headers = await _get(client, stack.url + "/")
        assert (body[:2], headers["x-weaver-cache"]) == (b"v2", "MISS")


async def test_the_lane_never_answers_an_entry_past_its_freshness() -> None:
    routes = {"/": counted({}, "v{n}", **{"Cache-Control": "max-age=60"})}
    async with (
        asyncio.timeout(10),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession() as client,
    ):
        edge = stack.app[EDGE_KEY]
        assert edge.store is not None
        now = [time.time()]
        edge.lane = HitLane(edge.store, clock=lambda: now[0])
        for _ in range(3):
            async with client.get(stack.url + "/") as resp:
                assert await resp.read() == b"v1"
        assert resp.headers["Server-Timing"] == "cache;desc=hit"  # the lane answered
        now[0] += 3600  # past max-age by the lane's clock: it steps aside
        async with client.get(stack.url + "/") as resp:
            assert resp.headers["Server-Timing"].startswith("cache;desc=hit;dur=")


async def test_pages_with_suspense_never_take_the_lane() -> None:
    routes = {
        "/": counted(
            {},
            '<weaver-include src="/p" mode="suspense">…</weaver-include>',
            **{"Cache-Control": "max-age=600"},
        ),
        "/p": counted({}, "yours"),
    }
    async with (
        asyncio.timeout(10),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
    ):
        for _ in range(3):
            async with client.get(stack.url + "/") as resp:
                await resp.read()
                assert "weaver_session=" in resp.headers["Set-Cookie"]


async def test_the_listener_answers_lane_hits_ahead_of_the_router_and_counts_them() -> None:
    count: dict[str, int] = {}
    origin = web.Application()
    origin.router.add_get("/", counted(count, PAGE, **{"Cache-Control": "max-age=600"}))
    async with serve_app(origin) as origin_url:
        with tempfile.TemporaryDirectory() as cache_dir:
            config = weaver_config(origin_url, cache_dir)
            runner = EdgeRunner(build_app(config), config.server, front=lane_front)
            await runner.setup()
            async with serve_runner(runner) as url:
                async with asyncio.timeout(10), aiohttp.ClientSession() as client:
                    async with client.get(url + "/_weaver/metrics") as resp:
                        before = _hits(await resp.text())
                    timings = []
                    for _ in range(4):
                        async with client.get(url + "/") as resp:
                            assert await resp.read() == PAGE.encode()
                            timings.append(resp.headers["Server-Timing"])
                    async with client.get(url + "/_weaver/metrics") as resp:
                        after = _hits(await resp.text())
    assert count == {"/": 1}
    assert timings[2:] == ["cache;desc=hit", "cache;desc=hit"]  # the lane, at the listener
    assert after - before == 3.0  # the ordinary hit and the two lane hits (counters are
    # process-wide: other tests' hits are in both figures)


def _hits(metrics_text: str) -> float:
    prefix = 'weaver_requests_total{cache="HIT",route="/",status="2xx"} '
    found = [line for line in metrics_text.splitlines() if line.startswith(prefix)]
    return float(found[0].removeprefix(prefix)) if found else 0.0
