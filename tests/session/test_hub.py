"""The session hub with real websockets clients and real origins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.servers import serve_app
from tests.session.harness import (
    SECRET,
    TOKEN,
    client,
    closed_with,
    receive,
    running_hub,
)
from weaver.session import auth


def ready(html: str) -> Callable[[], Awaitable[str]]:
    async def fetch() -> str:
        return html

    return fetch


def gated(html: str, gate: asyncio.Event) -> Callable[[], Awaitable[str]]:
    async def fetch() -> str:
        await gate.wait()
        return html

    return fetch


async def never() -> str:
    await asyncio.Event().wait()  # never set: until cancelled
    return ""


async def test_hello_then_suspense_results_in_completion_order() -> None:
    gates = {name: asyncio.Event() for name in ("slow", "fast", "mid")}
    async with running_hub() as running:
        session_id, cookie = running.page()
        running.hub.run_suspense(
            session_id, [(f"w_{name}", gated(name, gate)) for name, gate in gates.items()]
        )
        async with client(running, cookie) as ws:
            hello = await receive(ws)
            assert hello["type"] == "hello" and hello["session"] == session_id
            slots = []
            for name in ("fast", "mid", "slow"):  # each completes after the one before
                gates[name].set()
                slots.append(await receive(ws))
    assert [(m["type"], m["id"], m["html"]) for m in slots] == [
        ("slot", "w_fast", "fast"),
        ("slot", "w_mid", "mid"),
        ("slot", "w_slow", "slow"),
    ]
    assert [m["seq"] for m in slots] == [1, 2, 3]


async def test_results_ready_before_the_socket_opens_are_delivered() -> None:
    async with running_hub() as running:
        session_id, cookie = running.page()

        async def failing() -> str:
            raise ConnectionRefusedError

        async def too_slow() -> str:
            raise TimeoutError

        tasks = running.hub.run_suspense(
            session_id, [("a", ready("A")), ("b", failing), ("c", too_slow)]
        )
        await asyncio.wait(tasks)
        async with client(running, cookie) as ws:
            hello = await receive(ws)
            assert hello["seq"] == 3 and hello["resumed"] is False
            got = {m["id"]: m for m in [await receive(ws) for _ in range(3)]}
    assert got["a"]["html"] == "A"
    assert (got["b"]["type"], got["b"]["reason"]) == ("slot-error", "error")
    assert (got["c"]["type"], got["c"]["reason"]) == ("slot-error", "timeout")


async def test_a_session_without_a_socket_is_dropped_and_its_fetches_cancelled() -> None:
    cancelled = asyncio.Event()

    async def forever() -> str:
        try:
            await never()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return ""

    async with running_hub(session_hold_s=0.2) as running:
        session_id, _ = running.page()
        running.hub.run_suspense(session_id, [("w", forever)])
        async with asyncio.timeout(5):
            await cancelled.wait()
        assert session_id not in running.hub.sessions


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda sid: auth.issue("another-secret", sid, 1e9), "signature"),  # foreign
        (lambda sid: auth.issue(SECRET, sid, 1000.0), "session token expired"),
        (lambda sid: sid + ".123.forged", "signature"),  # forged
        (lambda sid: "", "no session token"),  # missing
        (
            lambda sid: auth.issue(SECRET, sid, time.time() + 3600),
            "session token is from the future",
        ),
    ],
)
async def test_bad_tokens_are_refused_with_1008(
    make_token: Callable[[str], str], reason: str
) -> None:
    async with running_hub() as running:
        session_id, _ = running.page()
        token = make_token(session_id)
        cookie = f"weaver_session={token}" if token else None
        async with client(running, cookie) as ws:
            code, got = await closed_with(ws)
    assert code == 1008 and reason in got


async def test_a_planted_session_cookie_never_gets_the_victims_slots() -> None:
    """Session fixation: the attacker plants their own session cookie in the victim's
    browser; the victim's page gets a new session, so the attacker's socket sees none of
    the victim's suspense slots."""
    async with running_hub() as running:
        attacker_id, attacker_cookie = running.page()
        async with client(running, attacker_cookie) as attacker:
            assert (await receive(attacker))["session"] == attacker_id
            victim_id, victim_cookie = running.page(f"{attacker_cookie}; user=victim")
            assert victim_id != attacker_id
            assert victim_cookie != attacker_cookie
            running.hub.run_suspense(victim_id, [("w_account", ready("<p>victim</p>"))])
            async with client(running, victim_cookie) as victim:
                hello = await receive(victim)
                slot = await receive(victim)
            running.hub.publish_session(attacker_id, "marker")
            first = await receive(attacker)
    assert hello["session"] == victim_id
    assert (slot["id"], slot["html"]) == ("w_account", "<p>victim</p>")
    assert (first["type"], first["data"]) == ("message", "marker")  # no slot came before it


async def test_every_page_rotates_the_session_even_with_a_valid_cookie() -> None:
    async with running_hub() as running:
        first_id, first_cookie = running.page()
        second_id, second_set_cookie = running.hub.open_for_page(first_cookie)
    assert second_id != first_id
    assert second_set_cookie.startswith("weaver_session=")
    assert second_set_cookie.split(";", 1)[0] != first_cookie


async def test_over_tls_the_session_cookie_is_host_prefixed_and_opens_the_socket() -> None:
    async with running_hub() as running:
        session_id, set_cookie = running.hub.open_for_page(None, secure=True)
        assert set_cookie.startswith("__Host-weaver_session=")
        assert "; Secure;" in set_cookie and "Domain" not in set_cookie
        async with client(running, set_cookie.split(";", 1)[0]) as ws:
            assert (await receive(ws))["session"] == session_id


async def test_a_token_in_hello_works_for_non_browser_clients() -> None:
    async with running_hub() as running:
        session_id, cookie = running.page()
        token = cookie.split("=", 1)[1]
        async with client(running, token=token) as ws:
            assert (await receive(ws))["session"] == session_id


async def test_one_visitor_never_sees_another_visitors_session() -> None:
    async with running_hub() as running:
        alice, _alice_cookie = running.page()
        bob, bob_cookie = running.page()
        running.hub.publish_session(alice, {"for": "alice"})
        async with client(running, bob_cookie) as ws:
            hello = await receive(ws)
            assert hello["session"] == bob and hello["seq"] == 0
            with pytest.raises(TimeoutError):
                await receive(ws, timeout_s=0.2)


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ("{nope", 1007),
        ('{"type":"subscribe","channel":"c"}', 1008),  # hello must come first
        ('{"type":"hello","last_seq":0,"x":1}', 1008),
    ],
)
async def test_bad_first_messages_close_the_socket(first: str, code: int) -> None:
    from websockets.asyncio.client import connect

    async with running_hub() as running:
        _, cookie = running.page()
        async with connect(running.ws_url, additional_headers={"Cookie": cookie}) as ws:
            await ws.send(first)
            assert (await closed_with(ws))[0] == code


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", 1007),
        ('{"type":"teleport"}', 1008),
        ('{"type":"hello","last_seq":0}', 1008),
        ('{"type":"subscribe","channel":"' + "c" * 70_000 + '"}', 1009),
    ],
)
async def test_bad_messages_close_with_their_code_and_others_are_unaffected(
    message: str, code: int
) -> None:
    async with running_hub() as running:
        _, bad_cookie = running.page()
        good_id, good_cookie = running.page()
        async with client(running, bad_cookie) as bad, client(running, good_cookie) as good:
            await receive(bad)
            await receive(good)
            await bad.send(message)
            assert (await closed_with(bad))[0] == code
            running.hub.publish_session(good_id, "still here")
            assert (await receive(good))["data"] == "still here"


async def test_resume_after_a_forced_disconnect_loses_and_duplicates_nothing() -> None:
    """Messages in flight when the network drops, published while the client is away,
    and published after it is back: each arrives once, in order (an outbox holds 256)."""
    total = 1000
    async with running_hub(log_max_messages=2000, log_max_bytes=10**7) as running:
        session_id, cookie = running.page()
        seen: list[int] = []
        last = 0

        def publish(numbers: range) -> None:
            for i in numbers:
                running.hub.publish_session(session_id, i)

        async with client(running, cookie) as ws:
            await receive(ws)
            publish(range(200))
            while len(seen) < 150:  # the rest are in flight when the network drops
                message = await receive(ws)
                seen.append(message["data"])
                last = message["seq"]
            ws.transport.abort()  # the network drops, no close frame
        publish(range(200, 400))  # while the client is away: to the log
        async with client(running, cookie, last_seq=last) as ws:
            hello = await receive(ws)
            assert hello["resumed"] is True
            for start in range(400, total + 100, 100):
                publish(range(start, min(start + 100, total)))  # live, a batch at a time
                while len(seen) < start:
                    message = await receive(ws)
                    assert message["seq"] == last + 1
                    last = message["seq"]
                    seen.append(message["data"])
    assert seen == list(range(total))


async def test_a_resume_the_log_no_longer_reaches_gets_reset_and_the_state() -> None:
    async with running_hub(log_max_messages=5) as running:
        session_id, cookie = running.page()
        await asyncio.wait(running.hub.run_suspense(session_id, [("w_recs", ready("<p>recs</p>"))]))
        for i in range(20):
            running.hub.publish_session(session_id, i)
        async with client(running, cookie, last_seq=1) as ws:
            hello = await receive(ws)
            assert hello["resumed"] is False
            reset = await receive(ws)
            state = await receive(ws)
    assert reset["type"] == "reset" and reset["seq"] == hello["seq"] + 1
    assert (state["type"], state["id"], state["html"]) == ("slot", "w_recs", "<p>recs</p>")


async def test_a_slow_consumer_is_closed_with_1013_and_others_keep_receiving() -> None:
    async with running_hub(outbound_max_messages=50, outbound_max_bytes=10**6) as running:
        slow_id, slow_cookie = running.page()
        fast_id, fast_cookie = running.page()
        channel = "firehose"
        for session_id in (slow_id, fast_id):
            assert running.hub.subscribe(session_id, channel)
        async with client(running, slow_cookie) as slow, client(running, fast_cookie) as fast:
            await receive(slow)
            await receive(fast)
            slow.transport.pause_reading()  # a client that stops reading
            payload = "x" * 20_000
            received = 0
            for i in range(400):
                await running.hub.publish_channel(channel, {"i": i, "pad": payload})
                if i % 10 == 0:
                    while received < i:
                        await receive(fast)
                        received += 1
            slow.transport.resume_reading()
            code, _ = await closed_with(slow, timeout_s=10)
            assert code == 1013
            sizes = [len(o._items) for s in running.hub.sessions.values() for o in s.outboxes]
            assert all(size <= 50 for size in sizes)  # memory stayed bounded
            assert running.hub.presence(channel) == 2
            assert fast_id in running.hub.sessions


async def test_events_reach_the_origin_in_order_retried_acked_and_patched() -> None:
    attempts: dict[str, int] = {}
    delivered: list[str] = []
    cookies: list[str | None] = []

    async def events(request: web.Request) -> web.Response:
        body = await request.json()
        event_id = body["event"]["id"]
        attempts[event_id] = attempts.get(event_id, 0) + 1
        cookies.append(request.headers.get("Cookie"))
        if event_id == "e2" and attempts[event_id] < 3:
            return web.Response(status=500)
        if event_id not in delivered:  # the origin dedupes by id
            delivered.append(event_id)
        if event_id == "e4":
            return web.Response(status=400)
        return web.json_response(
            {
                "patches": {"w_cart": f"<p>{len(delivered)} items</p>"},
                "publish": [{"channel": "stock", "data": event_id}],
            }
        )

    origin = web.Application()
    origin.router.add_post("/_events", events)
    async with serve_app(origin) as origin_url, running_hub() as running:
        _, old_cookie = running.page()  # the visitor's cookie from an earlier page
        session_id, set_cookie = running.hub.open_for_page(
            f"sid=visitor-1; {old_cookie}", events_url=origin_url + "/_events"
        )
        running.hub.subscribe(session_id, "stock")
        cookie = set_cookie.split(";", 1)[0]
        async with client(running, cookie) as ws:
            await receive(ws)
            for i in range(1, 5):
                await ws.send(
                    orjson.dumps(
                        {"type": "event", "id": f"e{i}", "name": "add-to-cart", "data": {"p": i}}
                    ).decode()
                )
            messages: list[dict[str, Any]] = []
            while sum(m["type"] == "ack" for m in messages) < 4:
                messages.append(await receive(ws, timeout_s=10))
    assert delivered == ["e1", "e2", "e3", "e4"]
    assert attempts["e2"] == 3
    acks = [(m["event"], m["ok"]) for m in messages if m["type"] == "ack"]
    assert acks == [("e1", True), ("e2", True), ("e3", True), ("e4", False)]
    patches = [m["html"] for m in messages if m["type"] == "patch"]
    assert patches == ["<p>1 items</p>", "<p>2 items</p>", "<p>3 items</p>"]
    assert [m["data"] for m in messages if m["type"] == "message"] == ["e1", "e2", "e3"]
    assert set(cookies) == {"sid=visitor-1"}  # the visitor's own, without weaver_session


async def test_publish_needs_the_token_and_reaches_page_time_subscribers() -> None:
    async with running_hub() as running, aiohttp.ClientSession() as http:
        session_id, cookie = running.page()
        running.hub.subscribe(session_id, "deals")  # at page time, before any socket
        url = running.http_url + "/_weaver/publish"
        body = {"channel": "deals", "data": {"sale": 50}}
        async with http.post(url, json=body) as resp:
            assert resp.status == 401
        async with http.post(url, json=body, headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401
        auth_header = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(url, json=body, headers=auth_header) as resp:
            assert (resp.status, await resp.json()) == (202, {"delivered_to": 1})
        async with http.post(url, json={"channel": "deals"}, headers=auth_header) as resp:
            assert resp.status == 400 and "data" in (await resp.json())["error"]
        async with http.get(
            running.http_url + "/_weaver/presence?channel=deals", headers=auth_header
        ) as resp:
            assert await resp.json() == {"channel": "deals", "sessions": 1}
        async with client(running, cookie) as ws:
            await receive(ws)
            message = await receive(ws)
    assert (message["type"], message["channel"], message["data"]) == (
        "message",
        "deals",
        {"sale": 50},
    )


async def test_sse_serves_the_same_stream_and_resumes_with_last_event_id() -> None:
    async with (
        running_hub() as running,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        session_id, cookie = running.page()
        for i in range(5):
            running.hub.publish_session(session_id, i)
        url = running.http_url + "/_weaver/events"
        async with http.get(url, headers={"Cookie": cookie, "Last-Event-ID": "3"}) as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            events: list[bytes] = []
            async with asyncio.timeout(5):
                while len(events) < 3:
                    block = b""
                    while not block.endswith(b"\n\n"):
                        block += await resp.content.readline()
                    events.append(block)
        async with http.get(url) as resp:
            assert resp.status == 401
    ids = [
        int(e.split(b"\n")[0].removeprefix(b"id: ")) if e.startswith(b"id:") else None
        for e in events
    ]
    assert ids == [None, 4, 5]  # the hello carries no id (see sse.py), then 4 and 5
    assert orjson.loads(events[1].split(b"data: ")[1])["data"] == 3


async def test_stop_sends_bye_and_closes_1001() -> None:
    async with running_hub() as running:
        _, cookie = running.page()
        async with client(running, cookie) as ws, asyncio.TaskGroup() as tasks:
            await receive(ws)
            tasks.create_task(running.hub.stop())
            bye = await receive(ws)
            code, _ = await closed_with(ws)
    assert bye["type"] == "bye"
    assert code == 1001
