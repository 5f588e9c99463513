"""The driver against a real origin and store: what only sockets and disks show.

The weave's rules are in tests/proxy/test_weave.py; these check that the conductor carries
its commands out: fragments fetched into their parts, committed to the store and read back
without a request, a given-up fetch's connection closed, a broken shell failing the
response where it broke.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.servers import serve_app
from weaver.cache.store import Store
from weaver.config.load import build_config
from weaver.config.schema import Config
from weaver.proxy.conductor import BOOTSTRAP, Conductor, new_sequencer
from weaver.proxy.origin import OriginClient
from weaver.proxy.weave import Weave
from weaver.proxy.weave_events import FragmentRecord, Outcome, SetHead, WeaveRecord


def config(origin: str) -> Config:
    return build_config(
        {
            "origin": [{"name": "shop", "url": origin}],
            "route": [{"path": "/", "origin": "shop", "fragment_timeout": "2s"}],
        },
        "<test>",
    )


async def chunks(parts: Iterable[bytes], error: Exception | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if error is not None:
        raise error


async def weave_page(
    cfg: Config,
    body: AsyncIterator[bytes],
    *,
    store: Store | None = None,
    heads: list[SetHead] | None = None,
    out: bytearray | None = None,
    fragment_headers: CIMultiDict[str] | None = None,
    host_header: str | None = None,
    ended: list[FragmentRecord] | None = None,
) -> tuple[bytes, WeaveRecord]:
    """Conduct ``body`` as a page and read its output (into ``out``) as a consumer would."""
    origin = cfg.origins[0]
    weave = Weave(config=cfg, route=cfg.routes[0], origin=origin, base_url=origin.url + "/")
    out = bytearray() if out is None else out
    async with OriginClient(cfg) as client, asyncio.TaskGroup() as tasks:
        conductor = Conductor(
            weave=weave,
            client=client,
            config=cfg,
            route=cfg.routes[0],
            origin=origin,
            fragment_headers=CIMultiDict() if fragment_headers is None else fragment_headers,
            host_header=host_header,
            tasks=tasks,
            root=new_sequencer(cfg, tasks),
            store=store,
            on_head=heads.append if heads is not None else None,
            on_fragment_end=ended.append if ended is not None else None,
            is_started=True,
        )
        tasks.create_task(conductor.conduct(body))
        try:
            async for chunk in conductor.root:
                out += chunk
        finally:
            conductor.close()
    return bytes(out), weave.record()


async def test_fragments_are_committed_and_the_next_weave_reads_them_without_a_request(
    tmp_path: Path,
) -> None:
    requests: list[str] = []

    async def fragment(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.Response(
            text=f"<b>{request.path}</b>",
            content_type="text/html",
            headers={"Cache-Control": "max-age=60"},
        )

    app = web.Application()
    app.router.add_get("/{name}", fragment)
    shell = b'<p><esi:include src="/a"/>|<esi:include src="/b"/></p>'
    async with asyncio.timeout(10), serve_app(app) as url:
        cfg = config(url)
        async with Store(str(tmp_path), max_size_bytes=10**8) as store:
            heads: list[SetHead] = []
            first, record = await weave_page(cfg, chunks([shell]), store=store, heads=heads)
            second, again = await weave_page(cfg, chunks([shell]), store=store)
    assert first == second == b"<p><b>/a</b>|<b>/b</b></p>"
    assert requests == ["/a", "/b"]
    assert [r.outcome for r in record.fragments] == [Outcome.OK, Outcome.OK]
    assert [r.is_cached for r in again.fragments] == [True, True]
    assert [h.status for h in heads] == [None]


async def test_each_include_is_reported_once_as_it_ends_or_is_cut() -> None:
    async def fragment(request: web.Request) -> web.Response:
        if request.path == "/bad":
            raise web.HTTPServiceUnavailable()
        return web.Response(text=request.path, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name}", fragment)
    shell = (
        b'<esi:include src="/a"/><esi:include src="/bad"/>'
        b'<esi:include src="/s" mode="suspense"/><esi:include src="/a"/>'
    )
    ended: list[FragmentRecord] = []
    async with asyncio.timeout(10), serve_app(app) as url:
        _, record = await weave_page(config(url), chunks([shell]), ended=ended)
    assert sorted((r.src, r.outcome) for r in ended) == sorted(
        (r.src, r.outcome) for r in record.fragments
    )
    assert sorted(r.outcome for r in ended) == sorted(
        [Outcome.OK, Outcome.OK, Outcome.ERROR, Outcome.SUSPENSE]
    )
    assert all(r.duration_s is not None for r in ended)


async def test_fragments_go_with_the_page_s_headers_and_the_preserved_host() -> None:
    seen: list[tuple[str, str, str]] = []

    async def fragment(request: web.Request) -> web.Response:
        seen.append((request.path, request.host, request.headers.get("X-Visitor", "")))
        return web.Response(text=request.path, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name}", fragment)
    shell = b'<esi:include src="/a"/>|<esi:include src="/b"/>'
    sent = CIMultiDict({"X-Visitor": "v"})
    async with asyncio.timeout(10), serve_app(app) as url:
        page, _ = await weave_page(config(url), chunks([shell]), fragment_headers=sent)
        kept, _ = await weave_page(
            config(url), chunks([shell]), fragment_headers=sent, host_header="shop.example"
        )
    assert page == kept == b"/a|/b"
    host = url.removeprefix("http://")
    assert sorted(seen) == [
        ("/a", host, "v"),
        ("/a", "shop.example", "v"),
        ("/b", host, "v"),
        ("/b", "shop.example", "v"),
    ]
    assert sent == CIMultiDict({"X-Visitor": "v"})  # shared by every fetch, never changed


async def test_a_fragment_answering_an_error_is_cut_and_its_connection_closed() -> None:
    closed = asyncio.Event()

    async def failing(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=500, headers={"Content-Type": "text/html"})
        await response.prepare(request)
        try:
            await asyncio.Event().wait()  # a body that never ends, unless Weaver hangs up
        except asyncio.CancelledError:
            closed.set()
            raise
        return response

    app = web.Application()
    app.router.add_get("/f", failing)
    async with asyncio.timeout(10), serve_app(app) as url:
        body, record = await weave_page(
            config(url), chunks([b'<weaver-include src="/f">fb</weaver-include>!'])
        )
        await closed.wait()
    assert body == b"<!-- weaver: fragment /f cut (error) -->fb!"
    assert [r.status for r in record.fragments] == [500]


async def test_a_shell_that_breaks_off_fails_the_response_after_its_bytes() -> None:
    async with asyncio.timeout(10), serve_app(web.Application()) as url:
        out = bytearray()
        with pytest.raises(ExceptionGroup) as caught:
            body = chunks([b"<p>before"], ConnectionResetError("gone"))
            await weave_page(config(url), body, out=out)
    assert caught.group_contains(ConnectionResetError)
    assert out == b"<p>before"


class _Seen(list[FragmentRecord]):
    """The records reported, and an event set at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.first = asyncio.Event()

    def append(self, record: FragmentRecord) -> None:
        super().append(record)
        self.first.set()


async def test_an_include_that_ended_before_the_shell_broke_off_is_still_reported() -> None:
    async def fragment(request: web.Request) -> web.Response:
        return web.Response(text="<b>a</b>", content_type="text/html")

    ended = _Seen()

    async def body() -> AsyncIterator[bytes]:
        yield b'<p><esi:include src="/a"/>'
        await ended.first.wait()
        raise ConnectionResetError("gone")

    app = web.Application()
    app.router.add_get("/a", fragment)
    async with asyncio.timeout(10), serve_app(app) as url:
        with pytest.raises(ExceptionGroup) as caught:
            await weave_page(config(url), body(), ended=ended)
    assert caught.group_contains(ConnectionResetError)
    assert [(r.src, r.outcome) for r in ended] == [("/a", Outcome.OK)]


async def test_a_page_with_a_suspense_slot_ends_with_the_bootstrap_script() -> None:
    async with asyncio.timeout(10), serve_app(web.Application()) as url:
        body, record = await weave_page(
            config(url), chunks([b'<esi:include src="/s" mode="suspense"/>'])
        )
    [slot] = record.suspense
    assert (
        body == f'<weaver-slot id="{slot.slot}" data-src="/s"></weaver-slot>'.encode() + BOOTSTRAP
    )
