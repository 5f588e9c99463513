"""Fill bodies (proxy/filling.py): what is stored and for how long, revalidation, and the
Server-Timing header; a real Weaver in front of a real origin, the clock injected."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import aiohttp
import pytest
from aiohttp import web

from tests.integration.harness import Recorder, html, weaver_stack
from tests.servers import Handler
from weaver.cache.clock import ManualClock
from weaver.config.schema import IncludeMode
from weaver.proxy.filling import server_timing
from weaver.proxy.weave_events import FragmentRecord, Outcome


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


def _record(src: str, outcome: Outcome, duration_s: float | None = 0.0125) -> FragmentRecord:
    return FragmentRecord(src, IncludeMode.BLOCKING, 0.0, duration_s, outcome)


def test_server_timing_names_the_shell_and_each_ended_include() -> None:
    records = [
        _record("/a", Outcome.OK),
        _record("/still-running", Outcome.PENDING, None),
        _record('/q?x="1"\n', Outcome.TIMEOUT),
    ]
    assert server_timing(0.5, records) == (
        'shell;dur=500.0, f0;desc="/a ok";dur=12.5, f2;desc="/q?x=\\"1\\" timeout";dur=12.5'
    )


def test_server_timing_stays_within_its_bound_and_says_how_many_it_left_out() -> None:
    records = [_record(f"/fragment/{i}", Outcome.OK) for i in range(2000)]
    header = server_timing(0.5, records, max_bytes=300)
    assert len(header) <= 300
    left_out = 2000 - (header.count(", ") - 1)
    assert header.endswith(f'more;desc="{left_out} more in the log"')


def _streamed_shell(first: bytes, rest: bytes | None, sent: asyncio.Event) -> Handler:
    """A shell sent in two writes, the second once the visitor has the first (``sent``);
    ``rest=None`` breaks the body off there instead."""

    async def shell(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        response.content_type = "text/html"
        await response.prepare(request)
        await response.write(first)
        await sent.wait()
        if rest is None:
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write(rest)
        await response.write_eof()
        return response

    return shell


async def test_an_include_after_the_head_went_is_still_fetched_and_woven_in_place() -> None:
    # The fill weaves a page in its own task until an include turns up; this one turns
    # up in the second chunk, after the visitor has the head and the first bytes.
    first_out = asyncio.Event()
    routes: dict[str, Handler] = {
        "/": _streamed_shell(b"<main>" + b"x" * 1000, b'<esi:include src="/f"/></main>', first_out),
        "/f": lambda request: _html("<b>f</b>"),
    }
    async with (
        asyncio.timeout(10),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession() as client,
        client.get(stack.url + "/") as resp,
    ):
        assert resp.headers["X-Weaver-Cache"] == "MISS"
        body = await resp.content.readany()
        first_out.set()
        body += await resp.read()
        assert body == b"<main>" + b"x" * 1000 + b"<b>f</b></main>"
        assert (await _fetch(client, stack.url + "/"))[1:] == (body.decode(), "HIT")


async def test_a_shell_breaking_off_after_its_head_went_is_aborted_and_not_stored() -> None:
    first_out = asyncio.Event()
    rec = Recorder()
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": _streamed_shell(b"<main>begun", None, first_out)}, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/") as resp:
            assert await resp.content.readany() == b"<main>begun"
            first_out.set()
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()  # never ended as if it were whole
        first_out.clear()
        async with client.get(stack.url + "/") as resp:
            assert resp.headers["X-Weaver-Cache"] == "MISS"  # nothing was stored
            first_out.set()
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert rec.requests == ["/", "/"]


async def _html(text: str) -> web.Response:
    return html(text, **{"Cache-Control": "max-age=60"})
