"""A page not answered from the store (proxy/miss.py): MISS, COALESCED, BYPASS and
stale-if-error, through a real Weaver in front of a real origin; compression as the miss
path wires weaver.proxy.compress.negotiate / apply_encoding and
weaver.proxy.compressors.new_compressor.

What the origin streams reaches the visitor compressed as it arrives (a sync flush per
chunk); what is stored is the identity body, so later hits are compressed from it once.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import zlib
from email.utils import formatdate

import aiohttp
import brotli
from aiohttp import web

from tests.integration.harness import Recorder, html, weaver_stack
from tests.proxy.test_replay import CACHE, PAGE, ROUTES, SCRIPT_GZ, get
from tests.servers import Handler
from weaver.cache.clock import ManualClock


async def test_a_miss_is_compressed_for_the_visitor_and_stored_as_identity() -> None:
    async with (
        asyncio.timeout(10),
        weaver_stack(ROUTES) as stack,
        aiohttp.ClientSession(auto_decompress=False) as client,
    ):
        status, body, headers = await get(client, stack.url + "/", "br")
        assert (status, headers["X-Weaver-Cache"]) == (200, "MISS")
        assert headers["Content-Encoding"] == "br"
        assert headers["Vary"] == "Accept-Encoding"
        assert "Content-Length" not in headers
        assert brotli.decompress(body) == PAGE
        status, hit, headers = await get(client, stack.url + "/", "identity")
        assert (status, hit, headers["X-Weaver-Cache"]) == (200, PAGE, "HIT")
        digest = hashlib.blake2b(PAGE, digest_size=32).hexdigest()
        assert headers["ETag"] == f'"{digest}"'


async def test_an_identity_miss_of_a_compressible_page_still_varies() -> None:
    async with (
        asyncio.timeout(10),
        weaver_stack(ROUTES) as stack,
        aiohttp.ClientSession(auto_decompress=False) as client,
    ):
        status, body, headers = await get(client, stack.url + "/", "identity")
    assert (status, body, headers["X-Weaver-Cache"]) == (200, PAGE, "MISS")
    assert headers["Vary"] == "Accept-Encoding"
    assert "Content-Encoding" not in headers


async def test_a_woven_page_is_compressed_on_a_miss() -> None:
    async def shell(request: web.Request) -> web.Response:
        text = '<html><esi:include src="/f"/>' + PAGE.decode() + "</html>"
        return web.Response(text=text, content_type="text/html", headers=CACHE)

    async def fragment(request: web.Request) -> web.Response:
        return web.Response(text="<b>fragment</b>", content_type="text/html", headers=CACHE)

    routes: dict[str, Handler] = {"/": shell, "/f": fragment}
    async with (
        asyncio.timeout(10),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession(auto_decompress=False) as client,
    ):
        status, body, headers = await get(client, stack.url + "/", "gzip")
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    assert gzip.decompress(body) == b"<html><b>fragment</b>" + PAGE + b"</html>"


async def test_the_visitor_sees_each_chunk_compressed_as_the_origin_sends_it() -> None:
    first_seen = asyncio.Event()
    first = PAGE * 4  # the first write; the rest waits until the visitor decoded it

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={**CACHE, "Content-Type": "text/html"})
        await response.prepare(request)
        await response.write(first)
        await first_seen.wait()  # the rest only once the visitor has decoded the first
        await response.write(b"<p>the end</p>")
        await response.write_eof()
        return response

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": slow}) as stack,
        aiohttp.ClientSession(auto_decompress=False) as client,
        client.get(stack.url + "/", headers={"Accept-Encoding": "gzip"}) as resp,
    ):
        assert resp.headers["Content-Encoding"] == "gzip"
        reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
        seen = b""
        while len(seen) < len(first):
            chunk = await resp.content.readany()
            assert chunk, "the stream ended before the first chunk was decodable"
            seen += reader.decompress(chunk)
        assert seen == first
        first_seen.set()
        seen += reader.decompress(await resp.content.read())
    assert seen == first + b"<p>the end</p>"


async def test_followers_of_one_fill_each_get_their_own_coding() -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(body=PAGE, content_type="text/html", headers=CACHE)

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": held}) as stack,
        aiohttp.ClientSession(auto_decompress=False) as client,
    ):
        async with asyncio.TaskGroup() as tasks:
            first = tasks.create_task(get(client, stack.url + "/", "br"))
            await arrived.wait()
            others = [
                tasks.create_task(get(client, stack.url + "/", accept))
                for accept in ("gzip", "identity")
            ]
            release.set()  # followers that come after the fill get a HIT: as good
        (_, br, h1), (_, gz, h2), (_, plain, h3) = [t.result() for t in (first, *others)]
    assert h1["X-Weaver-Cache"] == "MISS"
    assert {h2["X-Weaver-Cache"], h3["X-Weaver-Cache"]} <= {"COALESCED", "HIT"}
    assert (h1["Content-Encoding"], h2["Content-Encoding"]) == ("br", "gzip")
    assert "Content-Encoding" not in h3
    assert brotli.decompress(br) == PAGE
    assert gzip.decompress(gz) == PAGE
    assert plain == PAGE


async def test_an_origin_encoded_or_no_transform_miss_passes_through() -> None:
    async with (
        asyncio.timeout(10),
        weaver_stack(ROUTES) as stack,
        aiohttp.ClientSession(auto_decompress=False) as client,
    ):
        _, body, headers = await get(client, stack.url + "/app.js", "br")
        assert (body, headers["Content-Encoding"]) == (SCRIPT_GZ, "gzip")
        _, body, headers = await get(client, stack.url + "/as-is", "br")
        assert body == PAGE
        assert "Content-Encoding" not in headers


async def test_a_request_that_joins_a_running_fill_is_coalesced_and_the_origin_asked_once() -> None:
    rec, release = Recorder(), asyncio.Event()

    async def streaming(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={**CACHE, "Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"first ")
        await release.wait()  # the fill runs until both visitors have their heads
        await response.write(b"last")
        await response.write_eof()
        return response

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": streaming}, rec) as stack,
        aiohttp.ClientSession() as client,
        client.get(stack.url + "/") as leader,
        client.get(stack.url + "/") as follower,
    ):
        assert leader.headers["X-Weaver-Cache"] == "MISS"
        assert follower.headers["X-Weaver-Cache"] == "COALESCED"
        release.set()
        assert await leader.read() == await follower.read() == b"first last"
    assert rec.requests == ["/"]


async def test_a_head_miss_asks_the_origin_stores_nothing_and_says_bypass() -> None:
    rec = Recorder()

    async def page(request: web.Request) -> web.Response:
        return html("page", **CACHE)

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page}, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        status, body, headers = await get(client, stack.url + "/", None, "HEAD")
        assert (status, body, headers["X-Weaver-Cache"]) == (200, b"", "BYPASS")
        status, body, headers = await get(client, stack.url + "/", None)
        assert (status, body, headers["X-Weaver-Cache"]) == (200, b"page", "MISS")
    assert rec.requests == ["/", "/"]


async def test_a_private_answer_is_passed_on_as_bypass_and_asked_again() -> None:
    rec = Recorder()

    async def account(request: web.Request) -> web.Response:
        return html("yours", **{"Cache-Control": "private"})

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": account}, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        for _ in range(2):
            status, body, headers = await get(client, stack.url + "/", None)
            assert (status, body, headers["X-Weaver-Cache"]) == (200, b"yours", "BYPASS")
    assert rec.requests == ["/", "/"]


async def test_once_a_page_answered_private_requests_for_it_fetch_at_once_not_coalesced() -> None:
    """Hit-for-miss: a request for a page whose last answer could not be shared does not
    wait for another request's head only to be refused it; it asks the origin at once."""
    rec = Recorder()
    in_flight = 0
    both_asked = asyncio.Event()

    async def account(request: web.Request) -> web.Response:
        nonlocal in_flight
        if len(rec.requests) > 1:  # after the first: answer only once both are at the origin
            in_flight += 1
            if in_flight == 2:
                both_asked.set()
            await both_asked.wait()
        return html("yours", **{"Cache-Control": "private"})

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": account}, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        await get(client, stack.url + "/", None)
        answers = await asyncio.gather(*(get(client, stack.url + "/", None) for _ in range(2)))
    assert [(status, body, h["X-Weaver-Cache"]) for status, body, h in answers] == [
        (200, b"yours", "BYPASS")
    ] * 2
    assert rec.requests == ["/", "/", "/"]


async def test_an_origin_error_after_expiry_serves_the_stored_page_stale_if_error() -> None:
    failing = False

    async def flaky(request: web.Request) -> web.Response:
        if failing:
            return web.Response(status=500, text="broken")
        headers = {
            "Cache-Control": "max-age=10, stale-if-error=60",
            "Date": formatdate(clock.time(), usegmt=True),
        }
        return html("good", **headers)

    clock = ManualClock()
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": flaky}, clock=clock) as stack,
        aiohttp.ClientSession() as client,
    ):
        assert (await get(client, stack.url + "/", None))[1] == b"good"
        clock.advance(20)
        failing = True
        status, body, headers = await get(client, stack.url + "/", None)
        assert (status, body, headers["X-Weaver-Cache"]) == (200, b"good", "STALE")
        clock.advance(60)  # past stale-if-error: the origin's answer goes through
        status, body, _ = await get(client, stack.url + "/", None)
        assert (status, body) == (500, b"broken")
