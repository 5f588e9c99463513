"""Unsafe methods (proxy/unsafe.py): passed to the origin as sent, never stored, and a
success invalidates what it names (RFC 9111 §4.4); a real Weaver before a real origin."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from tests.integration.harness import Recorder, html, weaver_stack

CACHE = {"Cache-Control": "max-age=60"}


async def test_a_post_body_reaches_the_origin_with_its_length_and_the_answer_is_bypass() -> None:
    seen: list[tuple[str | None, bytes]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.headers.get("Content-Length"), body))
        return web.Response(status=201, body=b"got " + body)

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": echo}) as stack,
        aiohttp.ClientSession() as client,
    ):
        for _ in range(2):  # never stored: each one reaches the origin
            async with client.post(stack.url + "/", data=b"order=7") as resp:
                assert (resp.status, await resp.read()) == (201, b"got order=7")
                assert resp.headers["X-Weaver-Cache"] == "BYPASS"
    assert seen == [("7", b"order=7"), ("7", b"order=7")]


async def test_a_successful_post_drops_every_stored_variant_of_its_path_and_no_other() -> None:
    rec = Recorder()

    async def product(request: web.Request) -> web.Response:
        if request.method == "POST":
            return web.Response(status=204)
        return html(f"product {request.path_qs}", **CACHE)

    async with (
        asyncio.timeout(10),
        weaver_stack({"/p": product, "/pq": product}, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        targets = ("/p", "/p?size=9", "/pq")
        for target in targets:
            async with client.get(stack.url + target) as resp:
                assert resp.headers["X-Weaver-Cache"] == "MISS"
                await resp.read()  # the whole page: then it is stored
        async with client.post(stack.url + "/p", data=b"x") as resp:
            assert resp.status == 204
        after = {}
        for target in targets:
            async with client.get(stack.url + target) as resp:
                after[target] = resp.headers["X-Weaver-Cache"]
    assert after == {"/p": "MISS", "/p?size=9": "MISS", "/pq": "HIT"}


async def test_a_failed_post_leaves_the_stored_page() -> None:
    async def product(request: web.Request) -> web.Response:
        if request.method == "POST":
            return web.Response(status=409, text="conflict")
        return html("product", **CACHE)

    async with (
        asyncio.timeout(10),
        weaver_stack({"/p": product}) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/p") as resp:
            assert resp.headers["X-Weaver-Cache"] == "MISS"
            await resp.read()  # the whole page: then it is stored
        async with client.post(stack.url + "/p", data=b"x") as resp:
            assert (resp.status, await resp.text()) == (409, "conflict")
        async with client.get(stack.url + "/p") as resp:
            assert (await resp.text(), resp.headers["X-Weaver-Cache"]) == ("product", "HIT")
