"""Purge through the admin API of a real Weaver in front of a real origin."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.integration.harness import TOKEN, Stack, html, weaver_stack
from tests.servers import Handler


def counted(hits: Counter[str]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        hits[request.path_qs] += 1
        language = request.headers.get("Accept-Language", "")
        return html(f"{request.path_qs} {language}", **{"Cache-Control": "max-age=600"})

    return handler


async def cache_status(
    client: aiohttp.ClientSession, stack: Stack, target: str, host: str = "", language: str = ""
) -> str:
    headers = {"Accept-Language": language}
    if host:
        headers["Host"] = host
    async with client.get(stack.url + target, headers=headers) as resp:
        assert resp.status == 200
        assert await resp.read() == f"{target} {language}".encode()
        return resp.headers["X-Weaver-Cache"]


async def warm(
    client: aiohttp.ClientSession, stack: Stack, target: str, host: str = "", language: str = ""
) -> None:
    """Request until it is a HIT: the entry is stored."""
    assert await cache_status(client, stack, target, host, language) == "MISS"
    assert await cache_status(client, stack, target, host, language) == "HIT"


async def purge(
    client: aiohttp.ClientSession, stack: Stack, body: object
) -> tuple[int, dict[str, object]]:
    async with client.post(
        stack.url + "/_weaver/purge", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        answer: dict[str, object] = await resp.json()
        return resp.status, answer


async def test_purge_by_url_drops_every_variant_of_that_url_and_nothing_else() -> None:
    hits: Counter[str] = Counter()
    routes = {"/p/{n}": counted(hits)}
    async with (
        asyncio.timeout(20),
        weaver_stack(routes, vary=["Accept-Language"]) as stack,
        aiohttp.ClientSession() as client,
    ):
        for host in ("a.example", "b.example"):
            for language in ("fr", "en"):
                await warm(client, stack, "/p/42", host, language)
        await warm(client, stack, "/p/42?x=1", "a.example", "fr")
        await warm(client, stack, "/p/43", "a.example", "fr")

        # A URL with a host: that host's variants; %34%32 is 42 (unreserved escapes).
        assert await purge(client, stack, {"urls": ["http://A.example:80/p/%34%32"]}) == (
            200,
            {"purged": 2},
        )
        for language in ("fr", "en"):
            assert await cache_status(client, stack, "/p/42", "a.example", language) == "MISS"
            assert await cache_status(client, stack, "/p/42", "b.example", language) == "HIT"
        assert await cache_status(client, stack, "/p/42?x=1", "a.example", "fr") == "HIT"
        assert await cache_status(client, stack, "/p/43", "a.example", "fr") == "HIT"
        for language in ("fr", "en"):  # stored again by the misses
            assert await cache_status(client, stack, "/p/42", "a.example", language) == "HIT"

        # A path: on every host; the query is part of the URL, /p/42?x=1 stays.
        assert await purge(client, stack, {"urls": ["/p/42", "/p/nothing"]}) == (
            200,
            {"purged": 4},
        )
        for host in ("a.example", "b.example"):
            for language in ("fr", "en"):
                assert await cache_status(client, stack, "/p/42", host, language) == "MISS"
        assert await cache_status(client, stack, "/p/42?x=1", "a.example", "fr") == "HIT"
        assert hits["/p/42"] == 4 + 2 + 4
        assert hits["/p/42?x=1"] == hits["/p/43"] == 1


async def test_a_prefix_purges_by_path_segments_and_spares_shopping() -> None:
    hits: Counter[str] = Counter()
    routes = {"/shop": counted(hits), "/shop/x": counted(hits), "/shopping": counted(hits)}
    async with (
        asyncio.timeout(20),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession() as client,
    ):
        for target in ("/shop", "/shop/x", "/shop?q=1", "/shopping"):
            await warm(client, stack, target)
        assert await purge(client, stack, {"prefix": "/shop"}) == (200, {"purged": 3})
        for target in ("/shop", "/shop/x", "/shop?q=1"):
            assert await cache_status(client, stack, target) == "MISS"
        assert await cache_status(client, stack, "/shopping") == "HIT"
        assert hits == Counter({"/shop": 2, "/shop/x": 2, "/shop?q=1": 2, "/shopping": 1})


async def test_a_soft_purge_by_url_makes_the_next_request_ask_the_origin() -> None:
    hits: Counter[str] = Counter()
    async with (
        asyncio.timeout(20),
        weaver_stack({"/p/{n}": counted(hits)}) as stack,
        aiohttp.ClientSession() as client,
    ):
        await warm(client, stack, "/p/1")
        assert await purge(client, stack, {"urls": [stack.url + "/p/1"], "soft": True}) == (
            200,
            {"purged": 1},
        )
        assert await cache_status(client, stack, "/p/1") != "HIT"
        assert hits["/p/1"] == 2


# Every refusal's message is tested with purge.py (tests/cache/test_purge.py); here, that
# the admin API answers it as a 400 with the message.
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"urls": ["ftp://h/p"]}, '"urls"[0]'),
        ({"soft": True}, "nothing to purge"),
    ],
)
async def test_a_bad_purge_body_is_a_400_naming_the_field(body: object, message: str) -> None:
    async with (
        asyncio.timeout(20),
        weaver_stack({"/": counted(Counter())}) as stack,
        aiohttp.ClientSession() as client,
    ):
        status, answer = await purge(client, stack, body)
        assert status == 400
        assert message in str(answer["error"])


async def test_a_purge_can_report_its_progress_as_it_goes() -> None:
    """Accept: application/x-ndjson: a line per batch of 500 keys, then the answer."""

    async def page(request: web.Request) -> web.Response:
        return html("p", **{"Cache-Control": "max-age=600"})

    async with (
        asyncio.timeout(30),
        weaver_stack({"/{tail:.*}": page}) as stack,
        aiohttp.ClientSession() as client,
    ):
        for i in range(1200):
            async with client.get(f"{stack.url}/shop/{i}") as resp:
                await resp.read()
        async with client.post(
            stack.url + "/_weaver/purge",
            json={"prefix": "/shop"},
            headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/x-ndjson"},
        ) as resp:
            lines = [orjson.loads(line) for line in (await resp.read()).splitlines()]
    assert lines == [
        {"done": 500, "of": 1200},
        {"done": 1000, "of": 1200},
        {"done": 1200, "of": 1200},
        {"purged": 1200},
    ]
