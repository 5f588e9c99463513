"""Pages and sessions together: one shared paint, each visitor's own suspense and pushes."""

from __future__ import annotations

import asyncio
import re
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from websockets.asyncio.client import connect

from tests.integration.harness import TOKEN, html, weaver_stack

SHELL = (
    "<h1>shop</h1>"
    '<weaver-include src="/cart" mode="suspense" timeout="2s">cart…</weaver-include>'
    '<weaver-include src="/recs" mode="suspense">recs…</weaver-include>'
    '<weaver-subscribe channel="deals"/>'
)


async def shell(request: web.Request) -> web.Response:
    return html(SHELL, **{"Cache-Control": "max-age=60"})


async def cart(request: web.Request) -> web.Response:
    visitor = request.cookies.get("user", "nobody")
    return html(f"<p>{visitor}'s cart</p>")


# The recommendations wait until the test has seen the visitor's cart arrive: the cart
# completes first, exactly (no stopwatch). Visitors the test does not hold wait for nobody.
RECS_GATES: dict[str, asyncio.Event] = {}


async def recs(request: web.Request) -> web.Response:
    gate = RECS_GATES.get(request.cookies.get("user", ""))
    if gate is not None:
        await gate.wait()
    return html("<p>you may like socks</p>")


async def forever() -> None:
    await asyncio.Event().wait()  # never set: until cancelled


ROUTES = {"/": shell, "/cart": cart, "/recs": recs}


async def visit(http: aiohttp.ClientSession, url: str, user: str) -> tuple[str, str, str]:
    """(body, X-Weaver-Cache, session cookie) for a visitor."""
    async with http.get(url, headers={"Cookie": f"user={user}"}) as resp:
        body = await resp.text()
        jar: SimpleCookie = SimpleCookie()
        jar.load(resp.headers["Set-Cookie"])
        return body, resp.headers["X-Weaver-Cache"], jar["weaver_session"].value


async def session_messages(
    ws_url: str, user: str, token: str, count: int, *, release_after: int | None = None
) -> list[dict[str, Any]]:
    """The first ``count`` messages; after ``release_after`` of them the user's recs go."""
    cookie = f"user={user}; weaver_session={token}"
    async with connect(ws_url, additional_headers={"Cookie": cookie}) as ws:
        await ws.send('{"type":"hello","last_seq":0}')
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(5):
            while len(out) < count:
                if len(out) == release_after:
                    RECS_GATES[user].set()
                out.append(orjson.loads(await ws.recv()))
        return out


async def test_paint_is_shared_and_suspense_is_personal_on_miss_and_on_hit() -> None:
    RECS_GATES.update(alice=asyncio.Event(), bob=asyncio.Event())
    async with (
        weaver_stack(ROUTES) as stack,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        alice_body, alice_cache, alice_token = await visit(http, stack.url + "/", "alice")
        bob_body, bob_cache, bob_token = await visit(http, stack.url + "/", "bob")
        assert (alice_cache, bob_cache) == ("MISS", "HIT")
        assert alice_body == bob_body  # the paint is the same for every visitor
        slots = re.findall(r'<weaver-slot id="(w[0-9a-f]{12})"', alice_body)
        assert len(slots) == 2
        assert alice_token != bob_token
        alice = await session_messages(stack.session_url, "alice", alice_token, 3, release_after=2)
        bob = await session_messages(stack.session_url, "bob", bob_token, 3, release_after=2)
    RECS_GATES.clear()
    for name, messages in (("alice", alice), ("bob", bob)):
        assert messages[0]["type"] == "hello"
        by_slot = {m["id"]: m["html"] for m in messages[1:]}
        assert by_slot == {slots[0]: f"<p>{name}'s cart</p>", slots[1]: "<p>you may like socks</p>"}
        # completion order: the cart, then the recommendations (held until it arrived)
        assert [m["id"] for m in messages[1:]] == slots


async def test_a_message_published_before_the_socket_opens_is_delivered() -> None:
    async with (
        weaver_stack(ROUTES) as stack,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        _, _, token = await visit(http, stack.url + "/", "carol")
        async with http.post(
            stack.url + "/_weaver/publish",
            json={"channel": "deals", "data": {"flash": "50% off"}},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert (resp.status, await resp.json()) == (202, {"delivered_to": 1})
        messages = await session_messages(stack.session_url, "carol", token, 4)
    pushed = [m for m in messages if m["type"] == "message"]
    assert pushed == [
        {
            "type": "message",
            "seq": pushed[0]["seq"],
            "channel": "deals",
            "data": {"flash": "50% off"},
        }
    ]


async def test_a_returning_visitor_gets_a_new_session_for_each_page() -> None:
    """Rotation (session fixation): a valid session cookie never joins its session; the
    page gets a new one, and each session holds only its own page's slots."""
    async with (
        weaver_stack(ROUTES) as stack,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        _, _, token = await visit(http, stack.url + "/", "dave")
        headers = {"Cookie": f"user=dave; weaver_session={token}"}
        async with http.get(stack.url + "/", headers=headers) as resp:
            await resp.read()
            jar: SimpleCookie = SimpleCookie()
            jar.load(resp.headers["Set-Cookie"])
            new_token = jar["weaver_session"].value
        assert new_token != token
        first = await session_messages(stack.session_url, "dave", token, 3)
        second = await session_messages(stack.session_url, "dave", new_token, 3)
    assert first[0]["session"] != second[0]["session"]
    for messages in (first, second):
        assert [m["seq"] for m in messages[1:]] == [1, 2]  # one page's two slots each


async def test_a_visitor_leaving_mid_page_cancels_their_suspense_fetches() -> None:
    suspense_started = asyncio.Event()
    suspense_cancelled = asyncio.Event()

    async def page(request: web.Request) -> web.Response:
        return html(
            '<weaver-include src="/personal" mode="suspense">…</weaver-include>'
            '<esi:include src="/slow"/>'
        )

    async def personal(request: web.Request) -> web.Response:
        suspense_started.set()
        try:
            await forever()
        except asyncio.CancelledError:
            suspense_cancelled.set()
            raise
        return html("never")

    async def slow(request: web.Request) -> web.Response:
        await forever()
        return html("never")

    routes = {"/": page, "/personal": personal, "/slow": slow}
    async with weaver_stack(routes) as stack, aiohttp.ClientSession() as http:
        resp = await http.get(stack.url + "/")
        async with asyncio.timeout(5):
            await suspense_started.wait()
        resp.close()  # the visitor goes away before the page is complete
        async with asyncio.timeout(5):
            await suspense_cancelled.wait()
