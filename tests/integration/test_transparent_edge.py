"""A transparent edge, end to end: what visitors get from a real Weaver in front of a real
origin, where the answer depends on several modules at once (handler, fills, weave, store).

The forwarding rules themselves (which headers reach the origin) are in
tests/proxy/test_forwarding.py; the listener's limits in tests/proxy/test_listener.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.integration.harness import Recorder, html, weaver_stack
from tests.servers import Handler
from weaver.proxy.edge import EDGE_KEY


def page(text: str, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return html(text, **headers)

    return handler


async def test_a_post_invalidates_even_when_its_client_closes_at_once() -> None:
    count = {"n": 0}

    async def item(request: web.Request) -> web.Response:
        if request.method == "POST":
            return web.Response(status=204)
        count["n"] += 1
        return html(f"v{count['n']}", **{"Cache-Control": "max-age=600"})

    async with asyncio.timeout(10), weaver_stack({"/item": item}) as stack:
        async with aiohttp.ClientSession() as client:
            for _ in range(2):
                async with client.get(stack.url + "/item") as resp:
                    assert await resp.text() == "v1"
        host, port = stack.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"POST /item HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the status line and headers, then gone
        writer.close()
        async with aiohttp.ClientSession() as client:
            async with client.get(stack.url + "/item") as resp:
                assert (await resp.text(), resp.headers["X-Weaver-Cache"]) == ("v2", "MISS")


async def test_a_progressively_flushed_page_shows_its_first_half_before_the_rest() -> None:
    second_half = asyncio.Event()

    async def flushing(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        await response.write(b"<h1>first half</h1>")
        await asyncio.wait_for(second_half.wait(), 5)  # the client must see it first
        await response.write(b"<p>second half</p>")
        await response.write_eof()
        return response

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": flushing}) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/") as resp:
            first = await resp.content.readuntil(b"</h1>")
            assert first == b"<h1>first half</h1>"
            second_half.set()
            assert await resp.read() == b"<p>second half</p>"


async def test_large_cacheable_pages_all_answer() -> None:
    """Regression: pages over 256 KiB hung (5 of 6 distinct ones never answered)."""

    async def blob(request: web.Request) -> web.Response:
        size = int(request.query["kb"]) * 1024
        text = ("x" * 1023 + "\n") * (size // 1024)
        return html(text, **{"Cache-Control": "public, max-age=600"})

    async with (
        asyncio.timeout(20),
        weaver_stack({"/blob": blob}) as stack,
        aiohttp.ClientSession() as client,
    ):
        for i in range(6):
            async with client.get(stack.url + f"/blob?kb=300&i={i}") as resp:
                assert resp.status == 200
                assert len(await resp.read()) == 300 * 1024


async def test_an_http_1_0_keep_alive_client_sees_where_a_streamed_page_ends() -> None:
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page('a<esi:include src="/f"/>c'), "/f": page("b")}) as stack,
    ):
        host, port = stack.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        data = await reader.read()  # returns only if the server closes (or sent a length)
        writer.close()
    assert data.endswith(b"\r\n\r\nabc")


async def test_cookie_less_visitors_of_a_plain_page_create_no_session() -> None:
    routes = {"/": page("plain", **{"Cache-Control": "max-age=60"})}
    async with asyncio.timeout(10), weaver_stack(routes) as stack:
        hub = stack.app[EDGE_KEY].hub
        assert hub is not None
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
            for _ in range(20):
                async with client.get(stack.url + "/") as resp:
                    assert "Set-Cookie" not in resp.headers
                    await resp.read()
        assert len(hub.sessions) == 0


async def test_a_page_with_suspense_sets_the_cookie_and_says_private_downstream() -> None:
    routes = {
        "/": page(
            '<weaver-include src="/p" mode="suspense">…</weaver-include>',
            **{"Cache-Control": "public, s-maxage=60, max-age=30"},
        ),
        "/p": page("yours"),
    }
    async with asyncio.timeout(10), weaver_stack(routes) as stack:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
            for expected in ("MISS", "HIT"):
                async with client.get(stack.url + "/") as resp:
                    await resp.read()
                    assert resp.headers["X-Weaver-Cache"] == expected
                    assert "weaver_session=" in resp.headers["Set-Cookie"]
                    assert resp.headers["Cache-Control"] == "private, max-age=30"


@pytest.mark.parametrize("opt_in", [False, True])
async def test_set_cookie_responses_are_stored_only_when_the_route_opts_in(opt_in: bool) -> None:
    count = {"n": 0}

    async def cookie_page(request: web.Request) -> web.Response:
        count["n"] += 1
        response = html(f"n{count['n']}", **{"Cache-Control": "max-age=60"})
        response.set_cookie("tracking", f"t{count['n']}")
        return response

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": cookie_page}, store_set_cookie=opt_in) as stack,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
    ):
        got = []
        for _ in range(2):
            async with client.get(stack.url + "/") as resp:
                got.append((await resp.text(), resp.headers.get("Set-Cookie", "")))
    if opt_in:
        assert got[0][0] == got[1][0] == "n1"
        assert "tracking=t1" in got[0][1] and got[1][1] == ""  # the cookie is never stored
    else:
        assert [g[0] for g in got] == ["n1", "n2"]


async def test_authorization_responses_are_stored_only_when_rfc_9111_allows() -> None:
    count: dict[str, int] = {}

    def counted(cache_control: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            count[request.path] = count.get(request.path, 0) + 1
            return html(f"n{count[request.path]}", **{"Cache-Control": cache_control})

        return handler

    routes = {"/plain": counted("max-age=60"), "/public": counted("public, max-age=60")}
    async with (
        asyncio.timeout(10),
        weaver_stack(routes) as stack,
        aiohttp.ClientSession() as client,
    ):
        auth = {"Authorization": "Bearer k"}
        bodies: dict[str, list[str]] = {}
        for path in routes:
            bodies[path] = []
            for _ in range(2):
                async with client.get(stack.url + path, headers=auth) as resp:
                    bodies[path].append(await resp.text())
    assert bodies == {"/plain": ["n1", "n2"], "/public": ["n1", "n1"]}


async def test_a_coalesced_follower_that_varies_gets_its_own_fetch() -> None:
    release = asyncio.Event()
    langs: list[str] = []

    async def slow(request: web.Request) -> web.StreamResponse:
        lang = request.headers.get("Accept-Language", "")
        langs.append(lang)
        headers = {"Content-Type": "text/html", "Cache-Control": "max-age=60"}
        response = web.StreamResponse(headers={**headers, "Vary": "Accept-Language"})
        await response.prepare(request)
        await response.write(b"hello ")
        await asyncio.wait_for(release.wait(), 5)  # the rest once every client has the start
        await response.write(lang.encode())
        await response.write_eof()
        return response

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": slow}) as stack,
        aiohttp.ClientSession() as client,
    ):

        async def get(lang: str, started: asyncio.Event) -> tuple[str, str]:
            async with client.get(stack.url + "/", headers={"Accept-Language": lang}) as resp:
                first = await resp.content.readexactly(len(b"hello "))
                started.set()  # streaming: a follower reads what the fill holds so far
                rest = await resp.read()
                return (first + rest).decode(), resp.headers["X-Weaver-Cache"]

        started = {name: asyncio.Event() for name in ("en", "fr", "en2")}
        async with asyncio.TaskGroup() as tasks:
            en = tasks.create_task(get("en", started["en"]))
            await started["en"].wait()  # the fill is running and streaming
            fr = tasks.create_task(get("fr", started["fr"]))
            en2 = tasks.create_task(get("en", started["en2"]))
            await started["fr"].wait()
            await started["en2"].wait()  # before the fill ends: en2 can only be following it
            release.set()
    assert (en.result(), fr.result(), en2.result()) == (
        ("hello en", "MISS"),
        ("hello fr", "BYPASS"),  # its own fetch, private to it
        ("hello en", "COALESCED"),
    )
    assert sorted(langs) == ["en", "fr"]  # en2 followed the leader; fr fetched its own


async def test_a_page_of_10000_includes_makes_a_bounded_number_of_origin_requests() -> None:
    rec = Recorder()
    shell = "".join(f'<esi:include src="/f/{i}"/>' for i in range(10_000))
    routes = {"/": page(shell), "/f/{n}": page("x")}
    async with (
        asyncio.timeout(60),
        weaver_stack(routes, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/") as resp:
            body = await resp.text()
            timing = resp.headers["Server-Timing"]
    # server.max_includes = 256: the rest get their fallback (a cut marker, no request).
    assert len(rec.requests) == 1 + 256
    assert body.startswith("x" * 256 + "<!-- weaver: fragment /f/256 cut (limit) -->")
    assert len(timing) <= 2048


async def test_a_self_including_fragment_costs_one_request_per_level() -> None:
    rec = Recorder()
    routes = {
        "/": page('<esi:include src="/me"/>'),
        "/me": page("me" + '<esi:include src="/me"/>' * 10),
    }
    async with (
        asyncio.timeout(10),
        weaver_stack(routes, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/") as resp:
            assert resp.status == 200
            assert (await resp.text()).startswith("me<!-- weaver: fragment /me cut (loop) -->")
    assert rec.requests == ["/", "/me"]  # was 1,113 requests before loops were cut


async def test_fragment_requests_per_page_view_are_bounded_across_nesting() -> None:
    rec = Recorder()
    # 20 + 20 * 20 distinct nested fragments = 420 requests wanted; the bound is 100 here.
    shell = "".join(f'<esi:include src="/a/{i}"/>' for i in range(20))
    leaf = "".join(f'<esi:include src="/b/{{n}}/{j}"/>' for j in range(20))

    async def level_a(request: web.Request) -> web.Response:
        return html(leaf.replace("{n}", request.match_info["n"]))

    routes = {"/": page(shell), "/a/{n}": level_a, "/b/{n}/{m}": page("y")}
    async with (
        asyncio.timeout(20),
        weaver_stack(routes, rec, server={"max_fragment_requests": 100}) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/") as resp:
            assert resp.status == 200
            body = await resp.text()
    assert len(rec.requests) == 1 + 100
    assert body.count("y") == 100 - 20 and "cut (limit)" in body


async def test_targets_that_differ_for_the_origin_never_share_an_entry() -> None:
    async def echo(request: web.Request) -> web.Response:
        return html(request.raw_path, **{"Cache-Control": "max-age=60"})

    async with (
        asyncio.timeout(10),
        weaver_stack({"/{tail:.*}": echo}) as stack,
        aiohttp.ClientSession() as client,
    ):

        async def get(target: str, **headers: str) -> tuple[int, str, str]:
            url = URL(stack.url + target, encoded=True)  # sent exactly as written
            async with client.get(url, headers=headers) as resp:
                return resp.status, await resp.text(), resp.headers.get("X-Weaver-Cache", "")

        for target in ("/p%2Fq", "/p/q", "/caf%E9", "/caf%E8"):
            assert (await get(target))[:2] == (200, target)
        for target in ("/p%2Fq", "/caf%E9"):
            assert await get(target) == (200, target, "HIT")  # its own entry, not the other
        # Escapes of unreserved characters name one resource: one entry, one target.
        assert await get("/%7Euser") == (200, "/~user", "MISS")
        assert await get("/~user") == (200, "/~user", "HIT")
        for bad in ("h:8080:80", "h:abc", "h:99999"):
            assert (await get("/p/q", Host=bad))[0] == 400, bad


# The identity body (a compressed variant is a blob of its own, intact here).
IDENTITY = {"Accept-Encoding": "identity"}


def _damage_largest_blob(cache_dir: Path) -> None:
    (blob,) = [p for p in cache_dir.rglob("*.val") if p.stat().st_size > 10**6]
    with blob.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"X")


async def test_a_stored_body_damaged_on_disk_is_fetched_again_never_served() -> None:
    text = "".join(f"line {i:07d}\n" for i in range(200_000))  # 2.6 MB: streamed from disk

    async def big(request: web.Request) -> web.Response:
        return html(text, **{"Cache-Control": "max-age=600"})

    async with (
        asyncio.timeout(20),
        weaver_stack({"/big": big}) as stack,
        aiohttp.ClientSession() as client,
    ):
        for expected in ("MISS", "HIT"):
            async with client.get(stack.url + "/big", headers=IDENTITY) as resp:
                assert (await resp.text(), resp.headers["X-Weaver-Cache"]) == (text, expected)
        await asyncio.to_thread(_damage_largest_blob, Path(stack.cache_dir))
        for expected in ("MISS", "HIT"):
            async with client.get(stack.url + "/big", headers=IDENTITY) as resp:
                assert (await resp.text(), resp.headers["X-Weaver-Cache"]) == (text, expected)
