"""The page handler (proxy/handler.py): routing, the cache lookup and hits, through a real
Weaver in front of a real origin on 127.0.0.1. Misses are tests/proxy/test_miss.py's,
unsafe methods tests/proxy/test_unsafe.py's."""

from __future__ import annotations

import asyncio
import socket
import tempfile

import aiohttp
from aiohttp import web

from tests.integration.harness import Recorder, html, weaver_config, weaver_stack
from tests.servers import serve_app
from weaver.proxy.app import build_app

CACHE = {"Cache-Control": "max-age=60"}


async def page(request: web.Request) -> web.Response:
    return html(f"page {request.path_qs}", **CACHE)


async def test_a_host_header_that_is_no_host_is_a_400_and_the_origin_is_not_asked() -> None:
    rec = Recorder()
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page}, rec) as stack,
        aiohttp.ClientSession() as client,
        client.get(stack.url + "/", headers={"Host": "bad host"}) as resp,
    ):
        assert resp.status == 400
        assert "not a valid host" in await resp.text()
    assert rec.requests == []


async def test_a_path_no_route_covers_is_a_404_that_names_it() -> None:
    rec = Recorder()
    async with (
        asyncio.timeout(10),
        weaver_stack({"/shop/{tail:.*}": page}, rec, path="/shop") as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/blog/post") as resp:
            assert resp.status == 404
            assert "/blog/post" in await resp.text()
        async with client.get(stack.url + "/shop/socks") as resp:
            assert (resp.status, await resp.text()) == (200, "page /shop/socks")
    assert rec.requests == ["/shop/socks"]


async def test_a_fresh_stored_page_is_a_hit_without_asking_the_origin() -> None:
    rec = Recorder()
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page}, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        for expected in ("MISS", "HIT", "HIT"):
            async with client.get(stack.url + "/") as resp:
                assert (resp.status, await resp.text()) == (200, "page /")
                assert resp.headers["X-Weaver-Cache"] == expected
        async with client.get(stack.url + "/?q=1") as resp:  # another key
            assert (await resp.text(), resp.headers["X-Weaver-Cache"]) == ("page /?q=1", "MISS")
    assert rec.requests == ["/", "/?q=1"]


async def test_the_same_target_in_another_spelling_is_the_same_stored_page() -> None:
    rec = Recorder()
    async with (
        asyncio.timeout(10),
        weaver_stack({"/{tail:.*}": page}, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/%7Euser") as resp:
            assert resp.headers["X-Weaver-Cache"] == "MISS"
            await resp.read()  # the whole page: then it is stored
        async with client.get(stack.url + "/~user") as resp:  # RFC 3986 §6.2.2: the same
            assert resp.headers["X-Weaver-Cache"] == "HIT"
    assert rec.requests == ["/~user"]


async def test_an_origin_that_refuses_the_connection_is_a_502_page_naming_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with tempfile.TemporaryDirectory(prefix="weaver-cache-") as cache_dir:
            config = weaver_config(f"http://127.0.0.1:{port}", cache_dir)
            async with (
                asyncio.timeout(10),
                serve_app(build_app(config)) as url,
                aiohttp.ClientSession() as client,
                client.get(url + "/") as resp,
            ):
                assert resp.status == 502
                text = await resp.text()
    assert 'from the origin "shop"' in text and "unreachable" in text
