"""Inline suspense delivery end to end: a real origin, a real Weaver, real HTTP clients.

A route with ``suspense_delivery = "inline"`` sends each visitor the stored paint and
then, in the same response, their slots as they complete. The origin's slow slot waits
until the client has read the fast slot's template: the order is the test's, not a clock's.
"""

from __future__ import annotations

import asyncio
import html as html_lib
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie

import aiohttp
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict
from websockets.asyncio.client import connect

from tests.integration.harness import TOKEN, html
from tests.servers import Handler, serve_app
from weaver.config.load import build_config
from weaver.proxy import inline as inline_module
from weaver.proxy.app import build_app
from weaver.proxy.conductor import BOOTSTRAP
from weaver.proxy.edge import EDGE_KEY
from weaver.proxy.inline import SWAP_SCRIPT, InlineSlots
from weaver.session.slots import Append, Emit, SlotEnd, SlotProducer

SHELL = (
    "<!doctype html><html><body><h1>shop</h1>"
    '<weaver-include src="/slow" mode="suspense" timeout="5s">slow…</weaver-include>'
    '<weaver-include src="/fast" mode="suspense" timeout="5s">fast…</weaver-include>'
    "</body></html>"
)
STREAM_SHELL = (
    "<!doctype html><html><body><h1>ask</h1>"
    '<weaver-include src="/answer" mode="suspense" stream timeout="5s">thinking…</weaver-include>'
    "</body></html>"
)
TIMEOUT_SHELL = (
    "<!doctype html><html><body>"
    '<weaver-include src="/fast" mode="suspense" timeout="5s">fast…</weaver-include>'
    '<weaver-include src="/never" mode="suspense" timeout="200ms">'
    "<p>no deals</p></weaver-include></body></html>"
)


class Origin:
    """Pages and fragments; every slow fragment waits for the test to release it."""

    def __init__(self) -> None:
        self.releases: dict[str, asyncio.Event] = {}  # by the visit's X-Visit header
        self.never_closed = asyncio.Event()
        self.slow_cancelled = asyncio.Event()

    def release_of(self, visit: str) -> asyncio.Event:
        return self.releases.setdefault(visit, asyncio.Event())

    def app(self) -> web.Application:
        app = web.Application()
        for path, body in (
            ("/", SHELL),
            ("/session", SHELL),
            ("/ask", STREAM_SHELL),
            ("/deals", TIMEOUT_SHELL),
        ):
            app.router.add_get(path, self._page(body))
        app.router.add_get("/fast", self.fast)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/answer", self.answer)
        app.router.add_get("/never", self.never)
        return app

    @staticmethod
    def _page(body: str) -> Handler:
        async def page(request: web.Request) -> web.Response:
            return html(body, **{"Cache-Control": "max-age=60"})

        return page

    async def fast(self, request: web.Request) -> web.Response:
        return html("<b>fast & fine</b>")

    async def slow(self, request: web.Request) -> web.Response:
        try:
            await self.release_of(request.headers.get("X-Visit", "")).wait()
        except asyncio.CancelledError:
            self.slow_cancelled.set()
            raise
        return html("<i>slow</i> <textarea>")  # a stray tag cannot break the document

    async def answer(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        await response.write(b"<p>first</p><p cla")  # a chunk that ends inside a tag
        await self.release_of(request.headers.get("X-Visit", "")).wait()
        for chunk in (b'ss="x">second</p>', b"<p>third</p>"):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def never(self, request: web.Request) -> web.Response:
        try:
            await asyncio.Event().wait()
        finally:
            self.never_closed.set()
        raise AssertionError("unreachable")


@dataclass
class Stack:
    url: str
    app: web.Application


@asynccontextmanager
async def weaver(origin: Origin) -> AsyncIterator[Stack]:
    """Weaver in front of ``origin``: ``/`` and the others inline, ``/session`` not."""
    with tempfile.TemporaryDirectory(prefix="weaver-cache-") as cache_dir:
        async with serve_app(origin.app()) as origin_url:
            route = {"origin": "shop", "fragment_timeout": "2s"}
            config = build_config(
                {
                    "session": {
                        "publish_token": TOKEN,
                        "secret": "test-secret",
                        "listen": "127.0.0.1:0",
                    },
                    "cache": {"dir": cache_dir},
                    "origin": [{"name": "shop", "url": origin_url}],
                    "route": [
                        {"path": "/", "suspense_delivery": "inline", **route},
                        {"path": "/session", **route},
                    ],
                },
                "<test>",
            )
            app = build_app(config)
            async with serve_app(app) as url:
                yield Stack(url, app)


@dataclass
class Page:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    cookie: str | None


def slot_of(body: bytes, src: str) -> str | None:
    found = re.search(rb'<weaver-slot id="(ws?[0-9a-f]+)" data-src="' + src.encode(), body)
    return found.group(1).decode() if found else None


async def visit(
    origin: Origin, url: str, *, release_after: str | None = None, **headers: str
) -> Page:
    """GET ``url``, reading as it comes; when ``release_after``'s first template has
    arrived, release this visit's waiting fragment."""
    visit_id = str(len(origin.releases))
    origin.release_of(visit_id)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(url, headers={"X-Visit": visit_id, **headers}) as resp,
    ):
        body = b""
        is_released = release_after is None
        async for chunk in resp.content.iter_any():
            body += chunk
            slot = None if is_released else slot_of(body, release_after or "")
            if slot is not None and b'<template data-weaver-for="%s"' % slot.encode() in body:
                origin.release_of(visit_id).set()
                is_released = True
        cookie = None
        if "Set-Cookie" in resp.headers:
            jar: SimpleCookie = SimpleCookie()
            jar.load(resp.headers["Set-Cookie"])
            cookie = jar["weaver_session"].value
        return Page(resp.status, CIMultiDict(resp.headers), body, cookie)


def whole(slot: str, markup: str) -> bytes:
    escaped = html_lib.escape(markup, quote=False).encode()
    return b'<template data-weaver-for="%s">%s</template><script>__weaverSwap("%s",0)</script>' % (
        slot.encode(),
        escaped,
        slot.encode(),
    )


async def stored_paint(stack: Stack, path: str) -> tuple[bytes, str]:
    """The stored paint and its ETag, as a Range request gets them (no inline tail)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(stack.url + path, headers={"Range": "bytes=0-"}) as resp,
    ):
        assert resp.status == 206
        assert resp.headers["X-Weaver-Cache"] == "HIT"
        return await resp.read(), resp.headers["ETag"]


async def test_the_paint_is_followed_by_the_fast_slot_then_the_slow_one_then_the_end() -> None:
    origin = Origin()
    async with asyncio.timeout(15), weaver(origin) as stack:
        first = await visit(origin, stack.url + "/", release_after="/fast")
        paint, etag = await stored_paint(stack, "/")
        second = await visit(origin, stack.url + "/", release_after="/fast")
    fast, slow = slot_of(paint, "/fast"), slot_of(paint, "/slow")
    assert fast is not None and slow is not None
    expected = (
        paint
        + SWAP_SCRIPT
        + whole(fast, "<b>fast & fine</b>")
        + whole(slow, "<i>slow</i> <textarea>")
    )
    assert first.headers["X-Weaver-Cache"] == "MISS"
    assert first.body == expected
    assert paint.endswith(b"</html>" + BOOTSTRAP)  # the stored entry is the paint alone
    assert b"<template" not in paint and b"<i>slow</i>" not in paint
    assert second.headers["X-Weaver-Cache"] == "HIT"
    assert second.body == expected  # the same paint, then this visitor's own slots
    assert etag.strip('"') not in str(second.headers)
    assert second.cookie is not None and second.cookie != first.cookie


async def test_an_inline_response_is_private_and_has_no_etag_on_miss_and_hit() -> None:
    origin = Origin()
    async with asyncio.timeout(15), weaver(origin) as stack:
        pages = [await visit(origin, stack.url + "/", release_after="/fast") for _ in range(2)]
    assert [p.headers["X-Weaver-Cache"] for p in pages] == ["MISS", "HIT"]
    for page in pages:
        assert page.status == 200
        assert page.headers["Cache-Control"].startswith("private")
        assert "ETag" not in page.headers and "Last-Modified" not in page.headers
        assert "Content-Length" not in page.headers
        assert page.headers.get("Accept-Ranges") in (None, "none")


async def test_the_store_holds_the_same_paint_as_a_session_delivery_route() -> None:
    origin = Origin()
    async with asyncio.timeout(15), weaver(origin) as stack:
        await visit(origin, stack.url + "/", release_after="/fast")
        inline_paint, inline_etag = await stored_paint(stack, "/")
        session_page = await visit(origin, stack.url + "/session")
        session_paint, session_etag = await stored_paint(stack, "/session")
        store = stack.app[EDGE_KEY].store
        assert store is not None
        entries = [await store.get(key) for key in await store.keys()]
    assert session_page.body == session_paint  # session delivery: the paint alone
    assert session_page.headers["X-Weaver-Cache"] == "MISS"
    assert inline_paint == session_paint and inline_etag == session_etag  # one blob
    manifests = [e.manifest for e in entries if e is not None]
    assert len(manifests) == 2 and manifests[0].blob == manifests[1].blob
    assert manifests[0].size == len(session_paint)
    assert manifests[0].slots == manifests[1].slots and len(manifests[0].slots) == 2


async def test_a_compressed_inline_response_streams_each_slot_as_it_comes() -> None:
    origin = Origin()
    async with asyncio.timeout(15), weaver(origin) as stack:
        url = stack.url + "/"
        miss = await visit(origin, url, release_after="/fast", **{"Accept-Encoding": "gzip"})
        hit = await visit(origin, url, release_after="/fast", **{"Accept-Encoding": "br"})
        plain = await visit(origin, url, release_after="/fast", **{"Accept-Encoding": "identity"})
    # The slow slot was released only once the fast one had been decompressed: each
    # piece was flushed as it came.
    assert miss.headers["Content-Encoding"] == "gzip"
    assert hit.headers["Content-Encoding"] == "br"
    assert hit.headers["X-Weaver-Cache"] == "HIT"
    assert "Content-Encoding" not in plain.headers
    assert miss.body == hit.body == plain.body
    assert "Accept-Encoding" in hit.headers["Vary"]


async def test_a_streaming_slot_appends_its_chunks_in_order_then_ends_done() -> None:
    origin = Origin()
    async with asyncio.timeout(15), weaver(origin) as stack:
        page = await visit(origin, stack.url + "/ask", release_after="/answer")
    slot = slot_of(page.body, "/answer")
    assert slot is not None and slot.startswith("ws")
    paint, _, tail = page.body.partition(SWAP_SCRIPT)
    assert paint.endswith(b"</html>" + BOOTSTRAP)
    chunks = re.findall(
        rb'<template data-weaver-for="%s" data-weaver-append>(.*?)</template>'
        rb'<script>__weaverSwap\("%s",1\)</script>' % (slot.encode(), slot.encode()),
        tail,
    )
    assert len(chunks) >= 2  # one before the origin was released, more after
    text = "".join(html_lib.unescape(c.decode()) for c in chunks)
    assert text == '<p>first</p><p class="x">second</p><p>third</p>'
    assert b"<p" not in tail.replace(b"<progress", b"")  # chunks are text, not markup
    assert tail.endswith(b'<script>__weaverSwap("%s",3)</script>' % slot.encode())


async def test_a_slot_that_times_out_keeps_its_fallback_and_the_document_ends() -> None:
    origin = Origin()
    async with asyncio.timeout(15), weaver(origin) as stack:
        page = await visit(origin, stack.url + "/deals")
        await origin.never_closed.wait()  # its origin request was cancelled
    fast, never = slot_of(page.body, "/fast"), slot_of(page.body, "/never")
    assert fast is not None and never is not None
    paint, _, tail = page.body.partition(SWAP_SCRIPT)
    assert b"<p>no deals</p>" in paint
    assert tail == whole(fast, "<b>fast & fine</b>") + (
        b'<script>__weaverSwap("%s",4,"timeout")</script>' % never.encode()
    )


async def test_head_and_range_requests_get_no_inline_tail() -> None:
    origin = Origin()
    async with asyncio.timeout(15), weaver(origin) as stack:
        await visit(origin, stack.url + "/", release_after="/fast")
        async with aiohttp.ClientSession() as http:
            async with http.head(stack.url + "/") as resp:
                head_headers = CIMultiDict(resp.headers)
                assert await resp.read() == b""
            async with http.get(stack.url + "/", headers={"Range": "bytes=0-9"}) as resp:
                assert resp.status == 206
                assert await resp.read() == b"<!doctype "
                assert "ETag" in resp.headers
    assert head_headers["X-Weaver-Cache"] == "HIT"
    assert "ETag" in head_headers


async def test_the_session_opens_but_carries_nothing_of_the_inline_slots() -> None:
    origin = Origin()
    async with asyncio.timeout(15), weaver(origin) as stack:
        page = await visit(origin, stack.url + "/", release_after="/fast")
        assert page.cookie is not None
        hub = stack.app[EDGE_KEY].hub
        assert hub is not None
        headers = {"Cookie": f"weaver_session={page.cookie}"}
        async with connect(f"ws://127.0.0.1:{hub.port}/", additional_headers=headers) as ws:
            await ws.send(orjson.dumps({"type": "hello", "last_seq": 0}).decode())
            hello = orjson.loads(await ws.recv())
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    stack.url + "/_weaver/publish",
                    json={"session": hello["session"], "data": "after the page"},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as resp,
            ):
                assert resp.status == 202
            first = orjson.loads(await ws.recv())
    assert hello["seq"] == 0  # nothing was logged on the session for its slots
    assert first == {"type": "message", "seq": 1, "channel": None, "data": "after the page"}


async def test_a_visitor_who_leaves_mid_tail_cancels_the_slot_fetches() -> None:
    origin = Origin()
    async with asyncio.timeout(15), weaver(origin) as stack:
        async with (
            aiohttp.ClientSession() as http,
            http.get(stack.url + "/", headers={"X-Visit": "gone"}) as resp,
        ):
            body = b""
            async for chunk in resp.content.iter_any():
                body += chunk
                if b'__weaverSwap("' in body.partition(SWAP_SCRIPT)[2]:
                    break  # the fast slot came; the visitor leaves before the slow one
        await origin.slow_cancelled.wait()  # Weaver closed the slow slot's origin request
    assert not origin.release_of("gone").is_set()


async def test_a_slot_that_queues_too_many_events_fails_and_the_others_still_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tiny appends stay far under the byte bound; the count bound fails the slot instead
    # (FAIL_SLOT: its end says "error"), and every slot's end still fits in the queue.
    monkeypatch.setattr(inline_module, "MAX_PENDING_EVENTS", 5)

    def make(slot: str, url: str, timeout_s: float) -> SlotProducer:
        async def produce(emit: Emit) -> None:
            for i in range(10 if slot == "chatty" else 1):
                emit(Append(f"<i>{i}</i>"))

        return produce

    async with asyncio.timeout(5), InlineSlots(make) as inline:
        inline.start([("quiet", "/q", 1.0), ("chatty", "/c", 1.0)])
        tail = b"".join([chunk async for chunk in inline.tail()])
    assert inline_module.end_call("chatty", SlotEnd.ERROR, was_whole=False) in tail
    assert inline_module.end_call("quiet", None, was_whole=False) in tail
    assert b"<i>9</i>" not in tail  # the chatty slot was cut at the bound
