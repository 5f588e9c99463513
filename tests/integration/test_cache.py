"""The cache in front of a real origin that counts its hits."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Mapping
from email.utils import formatdate

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from tests.integration.harness import TOKEN, Recorder, html, weaver_stack
from tests.servers import Handler
from weaver.cache.clock import ManualClock
from weaver.cache.keys import key_path
from weaver.cache.store import Store
from weaver.proxy.edge import EDGE_KEY


def page(text: str, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return html(text, **headers)

    return handler


def counted(counter: Counter[str], text: str, cache_control: str, delay_s: float = 0.0) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        counter[request.path] += 1
        if delay_s:
            await asyncio.sleep(delay_s)
        body = text.replace("{n}", str(counter[request.path]))
        return html(body, **{"Cache-Control": cache_control})

    return handler


async def fetch(
    client: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes, CIMultiDictProxy[str]]:
    async with client.get(url, headers=headers or {}) as resp:
        return resp.status, await resp.read(), resp.headers


async def stored_keys(cache_dir: str) -> list[str]:
    store = Store(cache_dir, max_size_bytes=1024**3)
    await store.open()
    try:
        return await store.keys()
    finally:
        await store.close()


async def test_miss_then_hit_replays_the_assembled_bytes() -> None:
    hits: Counter[str] = Counter()
    routes = {
        "/": counted(hits, 'shell<esi:include src="/f"/>', "max-age=60"),
        "/f": counted(hits, "frag", "max-age=60"),
    }
    async with asyncio.timeout(10), weaver_stack(routes) as stack, aiohttp.ClientSession() as c:
        status, first, headers = await fetch(c, stack.url + "/")
        assert (status, first, headers["X-Weaver-Cache"]) == (200, b"shellfrag", "MISS")
        status, second, headers = await fetch(c, stack.url + "/")
        assert (status, second, headers["X-Weaver-Cache"]) == (200, b"shellfrag", "HIT")
        assert headers["ETag"] == f'"{hashlib.blake2b(first, digest_size=32).hexdigest()}"'
        assert int(headers["Age"]) >= 0
        assert hits == Counter({"/": 1, "/f": 1})


async def test_if_none_match_range_and_head_are_answered_from_the_store() -> None:
    routes = {"/": page("0123456789", **{"Cache-Control": "max-age=60"})}
    async with asyncio.timeout(10), weaver_stack(routes) as stack, aiohttp.ClientSession() as c:
        _, _, headers = await fetch(c, stack.url + "/")
        _, _, headers = await fetch(c, stack.url + "/")
        etag = headers["ETag"]
        async with c.get(stack.url + "/", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
            assert await resp.read() == b""
        async with c.get(stack.url + "/", headers={"Range": "bytes=2-5"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == "bytes 2-5/10"
            assert await resp.read() == b"2345"
        async with c.get(stack.url + "/", headers={"Range": "bytes=-3"}) as resp:
            assert (resp.status, await resp.read()) == (206, b"789")
        async with c.get(stack.url + "/", headers={"Range": "bytes=50-"}) as resp:
            assert resp.status == 416
        async with c.head(stack.url + "/") as resp:
            assert resp.status == 200
            assert resp.headers["X-Weaver-Cache"] == "HIT"
            assert resp.headers["Content-Length"] == "10"


async def test_a_hundred_concurrent_misses_make_one_origin_fetch() -> None:
    hits: Counter[str] = Counter()
    routes = {"/": counted(hits, "slow page", "max-age=60", 0.3)}
    async with (
        asyncio.timeout(20),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as c,
    ):
        results = await asyncio.gather(*(fetch(c, stack.url + "/") for _ in range(100)))
    assert hits["/"] == 1
    assert {body for _, body, _ in results} == {b"slow page"}
    statuses = Counter(headers["X-Weaver-Cache"] for _, _, headers in results)
    assert statuses["MISS"] == 1
    assert statuses["COALESCED"] + statuses["HIT"] == 99


async def test_stale_while_revalidate_serves_stale_and_refreshes_once() -> None:
    hits: Counter[str] = Counter()
    refresh_may_answer = asyncio.Event()

    async def page(request: web.Request) -> web.Response:
        hits[request.path] += 1
        if hits[request.path] > 1:
            await refresh_may_answer.wait()  # the refresh runs while visitors get stale
        headers = {
            "Cache-Control": "max-age=1, stale-while-revalidate=60",
            "Date": formatdate(clock.time(), usegmt=True),  # the origin keeps Weaver's time
        }
        return html(f"v{hits[request.path]}", **headers)

    clock = ManualClock(start=1_700_000_000.0)
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page}, clock=clock) as stack,
        aiohttp.ClientSession() as c,
    ):
        assert (await fetch(c, stack.url + "/"))[1] == b"v1"
        clock.advance(1.2)
        results = await asyncio.gather(*(fetch(c, stack.url + "/") for _ in range(5)))
        assert {r[1] for r in results} == {b"v1"}
        assert {r[2]["X-Weaver-Cache"] for r in results} == {"STALE"}
        refresh_may_answer.set()
        await stack.app[EDGE_KEY].fills.idle()  # the refresh is stored
        _, body, headers = await fetch(c, stack.url + "/")
        assert (body, headers["X-Weaver-Cache"]) == (b"v2", "HIT")
        assert hits["/"] == 2  # exactly one background refresh


async def test_stale_if_error_serves_stale_while_the_origin_fails() -> None:
    state = {"failing": False}

    async def flaky(request: web.Request) -> web.Response:
        if state["failing"]:
            return web.Response(status=503, text="down")
        return html("good", **{"Cache-Control": "max-age=1, stale-if-error=60"})

    clock = ManualClock()
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": flaky}, clock=clock) as stack,
        aiohttp.ClientSession() as c,
    ):
        assert (await fetch(c, stack.url + "/"))[1] == b"good"
        clock.advance(1.2)
        state["failing"] = True
        status, body, headers = await fetch(c, stack.url + "/")
        assert (status, body, headers["X-Weaver-Cache"]) == (200, b"good", "STALE")


async def test_a_page_assembled_with_a_fallback_is_not_stored() -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    routes = {
        "/": page('a<esi:include src="/broken"/>', **{"Cache-Control": "max-age=60"}),
        "/broken": broken,
    }
    async with asyncio.timeout(10), weaver_stack(routes) as stack, aiohttp.ClientSession() as c:
        await fetch(c, stack.url + "/")
        _, _, headers = await fetch(c, stack.url + "/")
        assert headers["X-Weaver-Cache"] == "MISS"
        assert await stored_keys(stack.cache_dir) == []


async def test_fifty_visitors_share_one_entry_and_identical_bytes() -> None:
    routes = {
        "/": page('p<esi:include src="/f"/>', **{"Cache-Control": "max-age=60"}),
        "/f": page("f", **{"Cache-Control": "max-age=60"}),
    }
    async with (
        asyncio.timeout(20),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as c,
    ):
        bodies = set()
        for i in range(50):
            headers = {"Cookie": f"sid={i}", "User-Agent": f"agent {i}", "X-Trace": str(i)}
            bodies.add((await fetch(c, stack.url + "/", headers))[1])
        assert bodies == {b"pf"}
        # One entry for the page and one for its fragment, whoever asked.
        paths = sorted(key_path(k) for k in await stored_keys(stack.cache_dir))
        assert paths == ["/", "/f"]


async def test_fragments_are_cached_under_their_own_keys() -> None:
    hits: Counter[str] = Counter()
    routes = {
        # The shell may not be stored, the fragment may: pages re-weave from it.
        "/a": counted(hits, 'A<esi:include src="/price"/>', "no-store"),
        "/b": counted(hits, 'B<esi:include src="/price"/>', "no-store"),
        "/price": counted(hits, "$1", "max-age=60"),
    }
    async with asyncio.timeout(10), weaver_stack(routes) as stack, aiohttp.ClientSession() as c:
        assert (await fetch(c, stack.url + "/a"))[1] == b"A$1"
        assert (await fetch(c, stack.url + "/b"))[1] == b"B$1"
        assert (await fetch(c, stack.url + "/a"))[1] == b"A$1"
    assert hits == Counter({"/a": 2, "/b": 1, "/price": 1})


async def test_a_page_lives_no_longer_than_its_shortest_fragment() -> None:
    hits: Counter[str] = Counter()
    routes = {
        "/": counted(hits, 'p<esi:include src="/f"/>', "max-age=600"),
        "/f": counted(hits, "f{n}", "max-age=1"),
    }
    clock = ManualClock()
    async with (
        asyncio.timeout(10),
        weaver_stack(routes, clock=clock) as stack,
        aiohttp.ClientSession() as c,
    ):
        assert (await fetch(c, stack.url + "/"))[2]["X-Weaver-Cache"] == "MISS"
        assert (await fetch(c, stack.url + "/"))[2]["X-Weaver-Cache"] == "HIT"
        clock.advance(1.2)
        _, body, headers = await fetch(c, stack.url + "/")
    assert (headers["X-Weaver-Cache"], body) == ("MISS", b"pf2")


async def test_a_stale_plain_page_is_revalidated_with_its_validators() -> None:
    seen: list[str | None] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"Cache-Control": "max-age=60", "ETag": '"v1"'})
        return web.Response(
            body=b"data",
            content_type="application/json",
            headers={"Cache-Control": "max-age=1", "ETag": '"v1"'},
        )

    clock = ManualClock()
    async with (
        asyncio.timeout(10),
        weaver_stack({"/d": page}, clock=clock) as stack,
        aiohttp.ClientSession() as c,
    ):
        await fetch(c, stack.url + "/d")
        clock.advance(1.2)
        status, body, headers = await fetch(c, stack.url + "/d")
        assert (status, body, headers["X-Weaver-Cache"]) == (200, b"data", "REVALIDATED")
        assert (await fetch(c, stack.url + "/d"))[2]["X-Weaver-Cache"] == "HIT"  # 60 s now
    assert seen == [None, '"v1"']


async def test_a_private_page_is_never_shared() -> None:
    hits: Counter[str] = Counter()
    routes = {"/": counted(hits, "yours {n}", "private, max-age=60")}
    async with asyncio.timeout(10), weaver_stack(routes) as stack, aiohttp.ClientSession() as c:
        first = await fetch(c, stack.url + "/")
        second = await fetch(c, stack.url + "/")
    assert (first[1], second[1]) == (b"yours 1", b"yours 2")
    assert second[2]["X-Weaver-Cache"] == "BYPASS"


def _greeting(seen: list[str]) -> Handler:
    async def greeting(request: web.Request) -> web.Response:
        lang = request.headers.get("Accept-Language", "none")
        agent = request.headers.get("User-Agent", "none")
        seen.append(f"{lang} {agent}")
        headers = {"Cache-Control": "max-age=60", "Vary": "Accept-Language, User-Agent"}
        return html(f"hello {lang} {agent}", **headers)

    return greeting


async def test_vary_on_forwarded_headers_keeps_each_variant_apart() -> None:
    seen: list[str] = []
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": _greeting(seen)}) as stack,
        aiohttp.ClientSession() as c,
    ):
        for round_ in range(2):
            for lang in ("en", "fr"):
                for agent in ("a", "b"):
                    headers = {"Accept-Language": lang, "User-Agent": agent}
                    _, body, got = await fetch(c, stack.url + "/", headers)
                    # Both headers reach the origin, which varies on both: four variants.
                    assert body == f"hello {lang} {agent}".encode()
                    assert got["X-Weaver-Cache"] == ("MISS" if round_ == 0 else "HIT")
    assert sorted(seen) == ["en a", "en b", "fr a", "fr b"]


async def test_vary_star_is_never_reused() -> None:
    calls: list[int] = []

    async def star(request: web.Request) -> web.Response:
        calls.append(1)
        return html(f"n{len(calls)}", **{"Cache-Control": "max-age=60", "Vary": "*"})

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": star}) as stack,
        aiohttp.ClientSession() as c,
    ):
        bodies = [(await fetch(c, stack.url + "/"))[1] for _ in range(3)]
    assert bodies == [b"n1", b"n2", b"n3"]


async def test_a_shared_route_sends_only_its_vary_headers_so_other_varies_match_all() -> None:
    seen: list[str] = []
    stack_cm = weaver_stack({"/": _greeting(seen)}, vary=["Accept-Language"], shared=True)
    async with asyncio.timeout(10), stack_cm as stack, aiohttp.ClientSession() as c:
        for round_ in range(2):
            for lang in ("en", "fr"):
                headers = {"Accept-Language": lang, "User-Agent": f"agent {round_}"}
                _, body, got = await fetch(c, stack.url + "/", headers)
                # User-Agent is not a route vary header: never sent, so never varied on.
                assert body == f"hello {lang} none".encode()
                assert got["X-Weaver-Cache"] == ("MISS" if round_ == 0 else "HIT")
    assert seen == ["en none", "fr none"]


async def test_purge_by_tag_needs_the_token_and_purges_pages_holding_the_fragment() -> None:
    routes = {
        "/a": page('A<esi:include src="/price"/>', **{"Cache-Control": "max-age=60"}),
        "/b": page("B", **{"Cache-Control": "max-age=60"}),
        "/price": page("$1", **{"Cache-Control": "max-age=60", "Surrogate-Key": "price"}),
    }
    async with asyncio.timeout(10), weaver_stack(routes) as stack, aiohttp.ClientSession() as c:
        for path in ("/a", "/b"):
            await fetch(c, stack.url + path)
        async with c.post(stack.url + "/_weaver/purge", json={"tags": ["price"]}) as resp:
            assert resp.status == 401
        async with c.post(
            stack.url + "/_weaver/purge",
            json={"tags": ["price"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            # the fragment's own entry and the page holding it; not /b
            assert (resp.status, await resp.json()) == (200, {"purged": 2})
        assert (await fetch(c, stack.url + "/a"))[2]["X-Weaver-Cache"] == "MISS"
        assert (await fetch(c, stack.url + "/b"))[2]["X-Weaver-Cache"] == "HIT"


async def test_a_successful_post_invalidates_the_stored_page() -> None:
    rec = Recorder()

    async def product(request: web.Request) -> web.Response:
        if request.method == "POST":
            return web.Response(status=204)
        return html("product", **{"Cache-Control": "max-age=60"})

    async with (
        asyncio.timeout(10),
        weaver_stack({"/p": product}, rec) as stack,
        aiohttp.ClientSession() as c,
    ):
        await fetch(c, stack.url + "/p")
        assert (await fetch(c, stack.url + "/p"))[2]["X-Weaver-Cache"] == "HIT"
        async with c.post(stack.url + "/p", data=b"x") as resp:
            assert resp.status == 204
        assert (await fetch(c, stack.url + "/p"))[2]["X-Weaver-Cache"] == "MISS"


async def test_the_visitors_validators_are_answered_from_the_cache() -> None:
    modified = "Tue, 01 Sep 2026 10:00:00 GMT"
    routes = {"/": page("body", **{"Cache-Control": "max-age=60", "Last-Modified": modified})}
    async with asyncio.timeout(10), weaver_stack(routes) as stack, aiohttp.ClientSession() as c:
        await fetch(c, stack.url + "/")  # the miss stores it; a hit names its ETag
        _, _, first = await fetch(c, stack.url + "/")
        etag = first["ETag"]
        cases = [
            ({"If-None-Match": etag}, 304),
            ({"If-None-Match": '"other"'}, 200),
            ({"If-Modified-Since": modified}, 304),
            ({"If-Modified-Since": "Mon, 31 Aug 2026 10:00:00 GMT"}, 200),
            # If-None-Match decides when both are sent (RFC 9110 §13.2.2).
            ({"If-None-Match": '"other"', "If-Modified-Since": modified}, 200),
        ]
        for headers, expected in cases:
            status, _, got = await fetch(c, stack.url + "/", headers)
            assert (status, got["X-Weaver-Cache"]) == (expected, "HIT"), headers
