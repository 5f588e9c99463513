"""Weaving a page into its fill (proxy/weaving.py): alone until an include turns up, then
through the conductor; the head it gives (Server-Timing) and a shell that breaks off. A
real Weaver in front of a real origin."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.integration.harness import Recorder, html, weaver_stack
from tests.servers import Handler
from weaver.config.schema import IncludeMode
from weaver.proxy import weaving
from weaver.proxy.conductor import BOOTSTRAP, Conductor
from weaver.proxy.weave_events import FragmentRecord, Outcome
from weaver.proxy.weaving import server_timing


async def _fetch(client: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with client.get(url) as resp:
        return resp.status, await resp.text(), resp.headers["X-Weaver-Cache"]


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


@pytest.fixture
def conductors(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The conductors the fills build (each page's weave), counted as they are."""
    built: list[object] = []

    def counted(**kwargs: Any) -> Conductor:
        built.append(kwargs["weave"])
        return Conductor(**kwargs)

    monkeypatch.setattr(weaving, "Conductor", counted)
    return built


class _Awaited(logging.Handler):
    """Sets ``seen`` once a record whose message holds ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def test_a_page_without_includes_is_woven_whole_with_no_conductor(
    conductors: list[object],
) -> None:
    async def page(request: web.Request) -> web.Response:
        shell = '<p>hi</p><esi:vars></esi:vars><weaver-subscribe channel="news"/><p>end</p>'
        return html(shell, Link="</s.css>; rel=preload", **{"Cache-Control": "no-store"})

    async def empty(request: web.Request) -> web.Response:
        return html("", **{"Cache-Control": "no-store"})

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page, "/empty": empty}) as stack,
        aiohttp.ClientSession() as client,
    ):
        dropped = _Awaited("ESI markup removed")
        logging.getLogger("weaver.proxy.weaving").addHandler(dropped)
        try:
            async with client.get(stack.url + "/") as resp:
                body = await resp.read()
                assert resp.headers.getall("Link") == ["</s.css>; rel=preload"]
                assert resp.headers["Server-Timing"].startswith("shell;dur=")
            await dropped.seen.wait()  # logged once the page is whole, fragments included
        finally:
            logging.getLogger("weaver.proxy.weaving").removeHandler(dropped)
        assert body == b"<p>hi</p><p>end</p>" + BOOTSTRAP  # the channel asks for it
        async with client.get(stack.url + "/empty") as resp:
            assert (resp.status, await resp.read()) == (200, b"")  # the head went at its end
            assert resp.headers["Server-Timing"].startswith("shell;dur=")
    assert conductors == []


async def test_a_conductor_is_built_once_the_first_include_turns_up(
    conductors: list[object],
) -> None:
    async def page(request: web.Request) -> web.Response:
        return html('<main><esi:include src="/f"/></main>', **{"Cache-Control": "no-store"})

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page, "/f": lambda request: _html("<b>f</b>")}) as stack,
        aiohttp.ClientSession() as client,
    ):
        assert (await _fetch(client, stack.url + "/"))[:2] == (200, "<main><b>f</b></main>")
    assert len(conductors) == 1
