"""What reaches the origin (proxy/forwarding.py), per route mode and per kind of request.

The rules first, as pure functions of the visitor's headers and the peer; then a real
origin that echoes and records what it receives behind a real Weaver: each test asserts,
from the origin's side, which classes of visitor header arrived (credentials, content
negotiation, custom headers, forwarding headers) and from the client's side what it got.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.integration.harness import Recorder, html, recording, weaver_stack
from tests.servers import Handler, serve_app
from weaver.config.load import build_config
from weaver.proxy.app import build_app
from weaver.proxy.forwarding import (
    Peer,
    canonical_headers,
    is_trusted,
    strip_hop_by_hop,
    visitor_headers,
)

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


PEER = Peer(address="203.0.113.7", scheme="https", host="shop.example")


def test_hop_by_hop_headers_and_those_connection_names_are_stripped_in_any_case() -> None:
    headers = CIMultiDict(
        [
            ("Connection", "close, X-Hop"),
            ("connection", "x-other"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic x"),
            ("x-hop", "1"),
            ("X-Other", "2"),
            ("X-Kept", "a"),
            ("X-Kept", "b"),
        ]
    )
    assert list(strip_hop_by_hop(headers).items()) == [("X-Kept", "a"), ("X-Kept", "b")]


def test_a_plain_mapping_is_stripped_like_a_multidict() -> None:
    got = strip_hop_by_hop({"Connection": "X-Hop", "X-Hop": "1", "Accept": "text/html"})
    assert list(got.items()) == [("Accept", "text/html")]


@pytest.mark.parametrize(
    ("address", "trusted", "expected"),
    [
        ("10.1.2.3", ["10.0.0.0/8"], True),
        ("10.1.2.3", ["10.1.2.3"], True),
        ("11.0.0.1", ["10.0.0.0/8"], False),
        ("::1", ["::1/128"], True),
        ("10.1.2.3", [], False),
        ("", ["0.0.0.0/0"], False),
        ("not-an-ip", ["0.0.0.0/0"], False),
        ("10.1.2.3", ["10.1.2.0/8"], True),  # host bits set: read as its network
    ],
)
def test_a_peer_is_trusted_only_inside_a_configured_network(
    address: str, trusted: list[str], expected: bool
) -> None:
    assert is_trusted(address, trusted) is expected


def test_a_visitor_request_keeps_its_headers_but_not_weavers_cookie_or_its_forwarding() -> None:
    got = visitor_headers(
        VISITOR | {"Host": "evil.example", "Expect": "100-continue"}, PEER, for_fill=False
    )
    assert got["Cookie"] == "sid=secret"
    for name in PERSONAL:
        assert name in got, name
    assert "Host" not in got and "Expect" not in got
    assert got["X-Forwarded-For"] == "203.0.113.7"  # the client's 6.6.6.6 replaced
    assert got["X-Forwarded-Proto"] == "https"
    assert got["X-Forwarded-Host"] == "shop.example"
    assert got["Forwarded"] == "for=203.0.113.7;proto=https;host=shop.example"


def test_a_visitor_with_only_weavers_cookie_sends_no_cookie_at_all() -> None:
    got = visitor_headers({"Cookie": "weaver_session=abc.1.sig"}, PEER, for_fill=False)
    assert "Cookie" not in got


def test_a_fill_asks_for_the_whole_identity_body_whatever_the_visitor_asked() -> None:
    asked = {
        "Accept-Encoding": "br, gzip",
        "Range": "bytes=0-9",
        "If-Range": '"e"',
        "If-None-Match": '"e"',
        "If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT",
        "If-Match": '"e"',
        "If-Unmodified-Since": "Wed, 21 Oct 2015 07:28:00 GMT",
    }
    filled = visitor_headers(asked, PEER, for_fill=True)
    assert [name for name in asked if name in filled] == ["Accept-Encoding"]
    assert filled["Accept-Encoding"] == "identity"
    passed = visitor_headers(asked, PEER, for_fill=False)  # a passthrough: the origin answers
    assert all(passed[name] == value for name, value in asked.items())


def test_a_trusted_proxy_s_forwarding_chain_is_extended_not_replaced() -> None:
    trusted = Peer(address="10.0.0.2", scheme="http", host="shop.example", is_trusted=True)
    received = CIMultiDict(
        [
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", "10.0.0.9"),
            ("Forwarded", "for=198.51.100.1"),
        ]
    )
    got = visitor_headers(received, trusted, for_fill=False)
    assert got["X-Forwarded-For"] == "198.51.100.1, 10.0.0.9, 10.0.0.2"
    assert got["Forwarded"] == "for=198.51.100.1, for=10.0.0.2;proto=http;host=shop.example"


@pytest.mark.parametrize(
    ("address", "host", "forwarded"),
    [
        ("2001:db8::1", "shop.example", 'for="[2001:db8::1]";proto=https;host=shop.example'),
        ("", "shop.example", "for=unknown;proto=https;host=shop.example"),
        ("192.0.2.1", "shop.example:8443", 'for=192.0.2.1;proto=https;host="shop.example:8443"'),
        ("192.0.2.1", 'a"b\\c\x01', 'for=192.0.2.1;proto=https;host="a\\"b\\\\c"'),
    ],
)
def test_forwarded_quotes_what_a_token_cannot_hold_rfc_7239(
    address: str, host: str, forwarded: str
) -> None:
    peer = Peer(address=address, scheme="https", host=host)
    assert visitor_headers({}, peer, for_fill=False)["Forwarded"] == forwarded


def test_a_canonical_request_holds_the_key_s_headers_and_no_credentials_or_peer() -> None:
    received = CIMultiDict(VISITOR)
    got = canonical_headers(received, PEER, vary=["Accept-Language", "Cookie", "AUTHORIZATION"])
    assert list(got.items()) == [
        ("accept-language", "fr"),
        ("Accept-Encoding", "identity"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "shop.example"),
        ("Forwarded", "proto=https;host=shop.example"),
    ]


def page(text: str, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return html(text, **headers)

    return handler


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

    personal_answered = asyncio.Event()

    async def personal(request: web.Request) -> web.Response:
        personal_answered.set()  # the recorder has its headers by now
        return html("yours")

    routes = {**ROUTES, "/form": post, "/personal": personal}
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
        await personal_answered.wait()  # asked by the visitor's session, after the page


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
