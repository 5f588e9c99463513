"""A transparent edge: what reaches the origin, per route mode and per kind of request.

The origin here echoes and records what it receives; each test asserts, from the origin's
side, which classes of visitor header arrived (credentials, content negotiation, custom
headers, forwarding headers) and from the client's side what it got back.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.integration.harness import Recorder, html, recording, weaver_stack
from tests.servers import Handler, serve_app
from weaver.config.load import build_config
from weaver.proxy.app import build_app
from weaver.proxy.edge import EDGE_KEY
from weaver.proxy.listener import EdgeRunner

VISITOR = {
    "Cookie": "sid=secret; weaver_session=abc.1.sig",
    "Authorization": "Bearer visitor-token",
    "User-Agent": "visitor-agent/1",
    "Accept-Language": "fr",
    "Referer": "http://shop.example/from",
    "X-CSRF-Token": "csrf-1",
    "X-Custom": "custom-1",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "gopher",
    "X-Forwarded-For": "6.6.6.6",
    "Forwarded": "for=6.6.6.6",
}
PERSONAL = ("cookie", "authorization", "user-agent", "referer", "x-csrf-token", "x-custom")


def page(text: str, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return html(text, **headers)

    return handler


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition``: what it watches (the origin's view) has no event to wait on."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def seen(rec: Recorder, path: str) -> dict[str, str]:
    return {k.lower(): v for k, v in rec.headers[path].items()}


def assert_forwarding_is_weavers(headers: Mapping[str, str], *, with_peer: bool) -> None:
    assert headers["x-forwarded-proto"] == "http"  # the client's "gopher" is replaced
    assert headers["x-forwarded-host"].startswith("127.0.0.1:")  # not evil.example
    assert "evil.example" not in headers["forwarded"] and "6.6.6.6" not in headers["forwarded"]
    if with_peer:
        assert headers["x-forwarded-for"] == "127.0.0.1"  # replaced: the peer is not trusted
        assert headers["forwarded"].startswith("for=127.0.0.1;proto=http;host=")
    else:
        assert "x-forwarded-for" not in headers


ROUTES: dict[str, Handler] = {
    "/page": page(
        '<p><esi:include src="/frag"/><weaver-include src="/personal" mode="suspense">'
        "…</weaver-include></p>"
    ),
    "/frag": page("fragment"),
    "/personal": page("yours"),
    "/asset.css": page("body{}"),
}


async def _visit_everything(rec: Recorder, **route: object) -> None:
    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"length": request.headers.get("Content-Length"), "n": len(body)})

    routes = {**ROUTES, "/form": post}
    async with (
        asyncio.timeout(10),
        weaver_stack(routes, rec, **route) as stack,
        aiohttp.ClientSession() as client,
    ):
        for path in ("/page", "/asset.css"):
            async with client.get(stack.url + path, headers=VISITOR) as resp:
                assert resp.status == 200
                await resp.read()
        async with client.post(stack.url + "/form", data=b"x" * 1000, headers=VISITOR) as resp:
            assert await resp.json() == {"length": "1000", "n": 1000}  # not re-chunked
        await _until(lambda: "/personal" in rec.finished)


async def test_an_ordinary_route_forwards_every_visitor_header_to_every_request() -> None:
    rec = Recorder()
    await _visit_everything(rec)
    for path in ("/page", "/frag", "/personal", "/asset.css", "/form"):
        headers = seen(rec, path)
        for name in PERSONAL:
            assert name in headers, (path, name)
        assert headers["cookie"] == "sid=secret", path  # weaver_session never forwarded
        assert headers["accept-language"] == "fr"
        assert_forwarding_is_weavers(headers, with_peer=True)
        assert "connection" not in headers or headers["connection"] != "keep-alive, x-custom"


async def test_a_shared_route_sends_its_shell_and_fragments_the_canonical_request() -> None:
    rec = Recorder()
    await _visit_everything(rec, shared=True, vary=["Accept-Language", "Cookie"])
    for path in ("/page", "/frag", "/asset.css"):
        headers = seen(rec, path)
        for name in PERSONAL:
            assert name not in headers, (path, name)  # even when vary names Cookie
        assert headers["accept-language"] == "fr"  # in the key, so in the request
        assert_forwarding_is_weavers(headers, with_peer=False)
    # Suspense is personal: always the visitor's headers; unsafe methods too.
    for path in ("/personal", "/form"):
        headers = seen(rec, path)
        for name in PERSONAL:
            assert name in headers, (path, name)
        assert headers["cookie"] == "sid=secret"
        assert_forwarding_is_weavers(headers, with_peer=True)


async def test_hop_by_hop_and_connection_named_headers_are_not_forwarded() -> None:
    rec = Recorder()
    async with (
        asyncio.timeout(10),
        weaver_stack(ROUTES, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        headers = {"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "TE": "trailers"}
        async with client.get(stack.url + "/asset.css", headers=headers) as resp:
            await resp.read()
    got = seen(rec, "/asset.css")
    assert "x-secret-hop" not in got and "te" not in got


async def test_x_forwarded_for_is_appended_only_for_a_trusted_proxy() -> None:
    rec = Recorder()
    async with (
        asyncio.timeout(10),
        weaver_stack(ROUTES, rec) as stack,
        aiohttp.ClientSession() as client,
    ):
        # The test's weaver_stack has no trusted proxies: replaced.
        async with client.get(stack.url + "/asset.css", headers=VISITOR) as resp:
            await resp.read()
    assert seen(rec, "/asset.css")["x-forwarded-for"] == "127.0.0.1"

    rec = Recorder()
    origin = web.Application()
    origin.router.add_route("*", "/asset.css", recording(rec, ROUTES["/asset.css"]))
    async with serve_app(origin) as origin_url:
        with tempfile.TemporaryDirectory() as cache_dir:
            config = build_config(
                {
                    "server": {"trusted_proxies": ["127.0.0.0/8"]},
                    "cache": {"dir": cache_dir},
                    "origin": [{"name": "o", "url": origin_url, "preserve_host": True}],
                    "route": [{"path": "/", "origin": "o"}],
                },
                "<test>",
            )
            async with (
                serve_app(build_app(config)) as url,
                aiohttp.ClientSession() as client,
            ):
                headers = {"X-Forwarded-For": "10.1.2.3", "Host": "shop.example"}
                async with client.get(url + "/asset.css", headers=headers) as resp:
                    await resp.read()
    got = seen(rec, "/asset.css")
    assert got["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert got["host"] == "shop.example"  # preserve_host
    assert got["x-forwarded-host"] == "shop.example"


def _login_app() -> dict[str, Handler]:
    """A small app with a login, an account page, a JSON API and CSRF checks."""

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("password") != "pw":
            return web.Response(status=403, text="no")
        response = web.HTTPSeeOther("/account")
        response.set_cookie("auth", "alice", httponly=True)
        raise response

    async def account(request: web.Request) -> web.Response:
        if request.cookies.get("auth") != "alice":
            return web.Response(status=401, text="log in first")
        lang = request.headers.get("Accept-Language", "en")
        return html(f"Welcome alice ({lang})", **{"Cache-Control": "private"})

    async def api(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer k":
            return web.json_response({"error": "unauthorized"}, status=401)
        if request.method == "POST" and request.headers.get("X-CSRF-Token") != "t":
            return web.json_response({"error": "csrf"}, status=403)
        return web.json_response({"user": "alice", "method": request.method})

    return {"/login": login, "/account": account, "/api/me": api}


async def _session_walk(base: str) -> list[tuple[int, str]]:
    jar = aiohttp.CookieJar(unsafe=True)
    out: list[tuple[int, str]] = []
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        async with client.get(base + "/account") as resp:
            out.append((resp.status, await resp.text()))
        async with client.post(base + "/login", data={"password": "pw"}) as resp:
            out.append((resp.status, await resp.text()))  # followed the 303
        async with client.get(base + "/account", headers={"Accept-Language": "fr"}) as resp:
            out.append((resp.status, await resp.text()))
        auth = {"Authorization": "Bearer k"}
        async with client.get(base + "/api/me", headers=auth) as resp:
            out.append((resp.status, await resp.text()))
        async with client.post(base + "/api/me", headers=auth) as resp:
            out.append((resp.status, await resp.text()))
        async with client.post(base + "/api/me", headers={**auth, "X-CSRF-Token": "t"}) as resp:
            out.append((resp.status, await resp.text()))
    return out


async def test_an_app_with_a_login_works_through_weaver_exactly_as_directly() -> None:
    async with asyncio.timeout(10), weaver_stack(_login_app()) as stack:
        direct = await _session_walk(stack.origin_url)
        through = await _session_walk(stack.url)
    assert direct[2] == (200, "Welcome alice (fr)")
    assert through == direct


async def test_expect_100_continue_reaches_the_origin_with_its_body() -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async with (
        asyncio.timeout(10),
        weaver_stack({"/up": echo}) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.put(stack.url + "/up", data=b"payload", expect100=True) as resp:
            assert (resp.status, await resp.read()) == (200, b"payload")


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

    async def slow(request: web.Request) -> web.Response:
        langs.append(request.headers.get("Accept-Language", ""))
        await asyncio.wait_for(release.wait(), 5)
        return html(
            f"hello {langs[-1]}",
            **{"Cache-Control": "max-age=60", "Vary": "Accept-Language"},
        )

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": slow}) as stack,
        aiohttp.ClientSession() as client,
    ):

        async def get(lang: str) -> str:
            async with client.get(stack.url + "/", headers={"Accept-Language": lang}) as resp:
                return await resp.text()

        async with asyncio.TaskGroup() as tasks:
            en = tasks.create_task(get("en"))
            await _until(lambda: len(langs) == 1)
            fr = tasks.create_task(get("fr"))
            en2 = tasks.create_task(get("en"))
            await asyncio.sleep(0.05)  # let both join the running fill
            release.set()
    assert (en.result(), fr.result(), en2.result()) == ("hello en", "hello fr", "hello en")
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


async def test_a_slow_request_head_is_cut_at_the_header_timeout() -> None:
    config = build_config(
        {"server": {"header_timeout": "300ms"}, "cache": {"dir": ""}},
        "<test>",
    )
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    runner = EdgeRunner(app, config.server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started
    try:
        async with asyncio.timeout(5):
            # A whole request in time is answered, on the same connection twice.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(2):
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
            writer.close()
            # A slowloris head, one byte at a time, is closed after the timeout.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            loop = asyncio.get_running_loop()
            started = loop.time()
            for byte in b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                if reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(0.02)  # the point of the test: a client this slow
            assert await reader.read() == b""  # closed without an answer
            assert loop.time() - started < 4
            writer.close()
    finally:
        await runner.cleanup()


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
