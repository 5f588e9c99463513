"""Compression for the visitor on cache hits, through a real Weaver in front of a real origin.

A stored page keeps its identity bytes; each coding a visitor asks for is compressed
once, stored beside it, and replayed with its own ETag, length and ranges.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import AsyncIterator, Mapping

import aiohttp
import brotli
import pytest
import zstandard
from aiohttp import web
from multidict import CIMultiDictProxy

from tests.integration.harness import Stack, weaver_stack
from tests.servers import Handler
from weaver.cache.store import VARIANT_MAX_BYTES, Store
from weaver.proxy.edge import EDGE_KEY

PAGE = b"".join(
    b'<li class="product" data-id="%d"><a href="/p/%d">Handmade item %d</a>'
    b'<p class="price">%d.%02d EUR</p></li>\n' % (i * 7919 % 10007, i, i, i * 37 % 500, i % 100)
    for i in range(200)
)
assert 19_000 < len(PAGE) < 23_000
DIGEST = hashlib.blake2b(PAGE, digest_size=32).hexdigest()
CACHE = {"Cache-Control": "max-age=600"}
# An asset the origin compressed itself (as for a build's pre-compressed bundle).
SCRIPT = b"function hello() { return 'hello'; }\n" * 200
SCRIPT_GZ = gzip.compress(SCRIPT, mtime=0)


def decode(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "br":
        return brotli.decompress(data)
    assert encoding == "zstd"
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def page_handler(body: bytes, headers: Mapping[str, str]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html", headers=headers)

    return handler


async def script(request: web.Request) -> web.Response:
    headers = {**CACHE, "Content-Encoding": "gzip", "Content-Type": "application/javascript"}
    return web.Response(body=SCRIPT_GZ, headers=headers)


ROUTES: dict[str, Handler] = {
    "/": page_handler(PAGE, CACHE),
    "/small": page_handler(b"<p>short</p>", CACHE),
    "/as-is": page_handler(PAGE, {"Cache-Control": "max-age=600, no-transform"}),
    "/app.js": script,
}


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with weaver_stack(ROUTES) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    # auto_decompress off: the test sees the bytes on the wire.
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def get(
    client: aiohttp.ClientSession,
    url: str,
    accept: str | None,
    method: str = "GET",
    **headers: str,
) -> tuple[int, bytes, CIMultiDictProxy[str]]:
    sent = dict(headers)
    if accept is not None:
        sent["Accept-Encoding"] = accept
    skip = () if accept is not None else ("Accept-Encoding",)
    async with client.request(method, url, headers=sent, skip_auto_headers=skip) as resp:
        return resp.status, await resp.read(), resp.headers


async def stored(stack: Stack, client: aiohttp.ClientSession, path: str = "/") -> None:
    """Fill the cache with ``path`` (a miss answers as the fill goes)."""
    status, _, headers = await get(client, stack.url + path, "identity")
    assert (status, headers["X-Weaver-Cache"]) == (200, "MISS")


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
async def test_a_stored_page_is_replayed_in_the_coding_the_visitor_accepts(
    stack: Stack, client: aiohttp.ClientSession, encoding: str
) -> None:
    async with asyncio.timeout(10):
        await stored(stack, client)
        status, body, headers = await get(client, stack.url + "/", encoding)
    assert (status, headers["X-Weaver-Cache"]) == (200, "HIT")
    assert headers["Content-Encoding"] == encoding
    assert decode(body, encoding) == PAGE
    assert len(body) < len(PAGE) // 3
    assert headers["Content-Length"] == str(len(body))
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["ETag"] == f'"{DIGEST}-{encoding}"'


async def test_a_visitor_who_accepts_several_codings_gets_br(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        await stored(stack, client)
        _, body, headers = await get(client, stack.url + "/", "gzip, deflate, br, zstd")
        assert headers["Content-Encoding"] == "br"
        _, _, headers = await get(client, stack.url + "/", "gzip;q=1, br;q=0.5")
        assert headers["Content-Encoding"] == "gzip"
    assert brotli.decompress(body) == PAGE


@pytest.mark.parametrize("accept", [None, "identity", "", "deflate", "br;q=0, gzip;q=0"])
async def test_a_visitor_who_accepts_no_coding_gets_the_stored_bytes_and_vary(
    stack: Stack, client: aiohttp.ClientSession, accept: str | None
) -> None:
    async with asyncio.timeout(10):
        await stored(stack, client)
        status, body, headers = await get(client, stack.url + "/", accept)
    assert (status, body, headers["X-Weaver-Cache"]) == (200, PAGE, "HIT")
    assert "Content-Encoding" not in headers
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["ETag"] == f'"{DIGEST}"'


async def test_a_stored_page_is_compressed_once_however_many_visitors_ask(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    store = stack.app[EDGE_KEY].store
    assert store is not None
    async with asyncio.timeout(20):
        await stored(stack, client)
        answers = await asyncio.gather(*(get(client, stack.url + "/", "br") for _ in range(50)))
        assert {(status, body) for status, body, _ in answers} == {(200, answers[0][1])}
        assert brotli.decompress(answers[0][1]) == PAGE
        assert store.variants_made == 1
        await get(client, stack.url + "/", "gzip")
        await get(client, stack.url + "/", "gzip")
        assert store.variants_made == 2


async def test_a_variant_is_found_again_after_a_restart(stack: Stack) -> None:
    async with asyncio.timeout(10), aiohttp.ClientSession(auto_decompress=False) as c:
        await stored(stack, c)
        _, body, _ = await get(c, stack.url + "/", "br")
    async with Store(stack.cache_dir, max_size_bytes=1024**3) as store:
        assert await store.get_variant(DIGEST, "br") == body
        assert await store.check_variants() == []


async def test_range_on_a_compressed_variant_counts_its_bytes(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        await stored(stack, client)
        _, whole, _ = await get(client, stack.url + "/", "br")
        status, part, headers = await get(client, stack.url + "/", "br", Range="bytes=100-199")
        assert (status, part) == (206, whole[100:200])
        assert headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
        assert headers["Content-Encoding"] == "br"
        status, tail, _ = await get(client, stack.url + "/", "br", Range="bytes=-10")
        assert (status, tail) == (206, whole[-10:])
        status, _, headers = await get(client, stack.url + "/", "br", Range=f"bytes={len(whole)}-")
        assert (status, headers["Content-Range"]) == (416, f"bytes */{len(whole)}")
        # If-Range with the identity's tag does not hold for the br variant: all of it.
        status, body, _ = await get(
            client, stack.url + "/", "br", Range="bytes=0-9", **{"If-Range": f'"{DIGEST}"'}
        )
        assert (status, body) == (200, whole)


async def test_if_none_match_compares_against_the_variant_s_own_etag(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    br_etag, identity_etag = f'"{DIGEST}-br"', f'"{DIGEST}"'
    async with asyncio.timeout(10):
        await stored(stack, client)
        status, body, headers = await get(
            client, stack.url + "/", "br", **{"If-None-Match": br_etag}
        )
        assert (status, body) == (304, b"")
        assert headers["ETag"] == br_etag
        assert headers["Vary"] == "Accept-Encoding"
        assert "Content-Encoding" not in headers
        status, body, _ = await get(
            client, stack.url + "/", "br", **{"If-None-Match": identity_etag}
        )
        assert status == 200
        assert brotli.decompress(body) == PAGE
        status, body, _ = await get(
            client, stack.url + "/", "identity", **{"If-None-Match": br_etag}
        )
        assert (status, body) == (200, PAGE)


async def test_head_of_a_compressed_variant_gives_its_length(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        await stored(stack, client)
        _, whole, _ = await get(client, stack.url + "/", "gzip")
        status, body, headers = await get(client, stack.url + "/", "gzip", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(len(whole))
    assert headers["Content-Encoding"] == "gzip"


async def test_what_the_origin_encoded_passes_through_untouched(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(10):
        status, miss, headers = await get(client, stack.url + "/app.js", "br, gzip")
        assert (status, miss, headers["Content-Encoding"]) == (200, SCRIPT_GZ, "gzip")
        status, hit, headers = await get(client, stack.url + "/app.js", "br, gzip")
    assert (status, hit, headers["X-Weaver-Cache"]) == (200, SCRIPT_GZ, "HIT")
    assert headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" not in headers.get("Vary", "")


@pytest.mark.parametrize("path", ["/small", "/as-is"])
async def test_a_small_or_no_transform_page_is_replayed_as_stored(
    stack: Stack, client: aiohttp.ClientSession, path: str
) -> None:
    async with asyncio.timeout(10):
        await stored(stack, client, path)
        status, body, headers = await get(client, stack.url + path, "br, gzip")
    assert status == 200
    assert body == (b"<p>short</p>" if path == "/small" else PAGE)
    assert "Content-Encoding" not in headers
    assert "Vary" not in headers


async def test_a_body_too_large_for_a_variant_is_compressed_as_it_streams() -> None:
    large = PAGE * (VARIANT_MAX_BYTES // len(PAGE) + 2)
    routes = {"/big": page_handler(large, CACHE)}
    async with (
        asyncio.timeout(30),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession(auto_decompress=False) as client,
    ):
        await stored(stack, client, "/big")
        status, body, headers = await get(client, stack.url + "/big", "br", Range="bytes=0-9")
        store = stack.app[EDGE_KEY].store
        assert store is not None
        assert store.variants_made == 0
    assert (status, headers["X-Weaver-Cache"]) == (200, "HIT")  # the Range is ignored
    assert headers["Content-Encoding"] == "br"
    assert headers["Accept-Ranges"] == "none"
    assert "Content-Length" not in headers
    assert brotli.decompress(body) == large
