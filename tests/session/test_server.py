"""The WebSocket listener: the Origin check at the handshake and the subscription bounds."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.session.harness import client, closed_with, receive, running_hub


async def test_a_handshake_from_a_foreign_origin_is_refused_with_403() -> None:
    async with asyncio.timeout(10), running_hub() as running:
        _, cookie = running.page()
        with pytest.raises(InvalidStatus) as caught:
            async with connect(
                running.ws_url,
                origin=Origin("https://evil.example"),
                additional_headers={"Cookie": cookie},
            ):
                pass
    response = caught.value.response
    assert response.status_code == 403
    assert b"session.allowed_origins" in response.body


@pytest.mark.parametrize(
    "origin",
    [
        None,  # a non-browser client with a token
        "http://127.0.0.1:8080",  # the session's own host, the page's port
        "https://shop.example",  # listed in session.allowed_origins
    ],
)
async def test_a_handshake_from_the_same_host_an_allowed_origin_or_none_opens(
    origin: str | None,
) -> None:
    async with asyncio.timeout(10), running_hub(allowed_origins=("https://shop.example",)) as r:
        session_id, cookie = r.page()
        async with connect(
            r.ws_url,
            origin=Origin(origin) if origin else None,
            additional_headers={"Cookie": cookie},
        ) as ws:
            await ws.send('{"type":"hello","last_seq":0}')
            assert (await receive(ws))["session"] == session_id


async def test_a_client_over_max_subscriptions_is_closed_with_1008() -> None:
    async with asyncio.timeout(10), running_hub(max_subscriptions=64) as running:
        session_id, cookie = running.page()
        async with client(running, cookie) as ws:
            await receive(ws)
            for i in range(65):
                await ws.send(orjson.dumps({"type": "subscribe", "channel": f"c{i}"}).decode())
            code, reason = await closed_with(ws)
        channels = running.hub.sessions[session_id].channels
        assert channels == {f"c{i}" for i in range(64)}
        assert sum(running.hub.presence(f"c{i}") for i in range(65)) == 64
    assert code == 1008
    assert reason == "session is at 64 subscriptions; the limit is session.max_subscriptions = 64"


async def test_a_client_subscribing_to_an_over_long_channel_is_closed_with_1008() -> None:
    async with asyncio.timeout(10), running_hub(max_channel_bytes=256) as running:
        session_id, cookie = running.page()
        async with client(running, cookie) as ws:
            await receive(ws)
            await ws.send(orjson.dumps({"type": "subscribe", "channel": "é" * 129}).decode())
            code, reason = await closed_with(ws)
        assert running.hub.sessions[session_id].channels == set()
    assert code == 1008
    assert reason == "channel name is 258 bytes; the limit is session.max_channel_bytes = 256"


async def test_resubscribing_a_channel_at_the_limit_is_not_refused() -> None:
    async with asyncio.timeout(10), running_hub(max_subscriptions=2) as running:
        session_id, cookie = running.page()
        async with client(running, cookie) as ws:
            await receive(ws)
            for channel in ("a", "b", "a", "b"):
                await ws.send(orjson.dumps({"type": "subscribe", "channel": channel}).decode())
            running.hub.publish_session(session_id, "still open")
            # the socket reads in order: the marker arrives after all four subscribes
            while (message := await receive(ws))["type"] != "message":
                pass
            assert message["data"] == "still open"
            await ws.send('{"type":"event","id":"e","name":"n"}')  # the reader is alive
        assert running.hub.sessions[session_id].channels == {"a", "b"}


async def test_a_page_over_the_bounds_is_served_and_its_extra_channels_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_hub(max_subscriptions=3, max_channel_bytes=10) as running:
        session_id, _ = running.page()
        with caplog.at_level(logging.WARNING, logger="weaver.session.hub"):
            results = [
                running.hub.subscribe(session_id, name)
                for name in ("a", "x" * 11, "b", "c", "d", "a")
            ]
        assert results == [True, False, True, True, False, True]
        assert running.hub.sessions[session_id].channels == {"a", "b", "c"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"subscribe ignored for session {session_id}: channel name is 11 bytes; "
        "the limit is session.max_channel_bytes = 10",
        f"subscribe ignored for session {session_id}: session is at 3 subscriptions; "
        "the limit is session.max_subscriptions = 3",
    ]


async def test_a_tab_whose_cookie_a_second_tab_rotated_gets_the_new_session_from_its_start() -> (
    None
):
    """Tab A learned session A and saw its seqs 1-3; tab B's page rotated the cookie to
    session B (one message so far). A's socket reconnects with B's cookie: its hello says
    it expects A, so it is not resumed at seq 3 of B's log (which would skip B's
    message) but gets B from the start, told so by the hello."""
    async with asyncio.timeout(10), running_hub() as running:
        first_id, first_cookie = running.page()
        for n in range(3):
            running.hub.publish_session(first_id, {"tab": "A", "n": n})
        async with client(running, first_cookie) as ws:
            assert (await receive(ws))["session"] == first_id
            assert [(await receive(ws))["seq"] for _ in range(3)] == [1, 2, 3]
        second_id, second_cookie = running.page(first_cookie)  # the second tab's page
        running.hub.publish_session(second_id, {"tab": "B"})

        async with client(running, second_cookie, last_seq=3, session=first_id) as ws:
            hello = await receive(ws)
            message = await receive(ws)

    assert (hello["session"], hello["resumed"], hello["seq"]) == (second_id, False, 1)
    assert (message["seq"], message["data"]) == (1, {"tab": "B"})


async def test_a_hello_naming_its_own_session_resumes_as_before() -> None:
    async with asyncio.timeout(10), running_hub() as running:
        session_id, cookie = running.page()
        for n in range(3):
            running.hub.publish_session(session_id, n)
        async with client(running, cookie, last_seq=2, session=session_id) as ws:
            hello = await receive(ws)
            message = await receive(ws)
    assert (hello["session"], hello["resumed"], hello["seq"]) == (session_id, True, 3)
    assert (message["seq"], message["data"]) == (3, 2)


async def test_an_old_client_without_session_in_its_hello_resumes_from_last_seq() -> None:
    """Old clients are unchanged: no ``session`` field, resumed from ``last_seq`` of
    whatever session the cookie names."""
    async with asyncio.timeout(10), running_hub() as running:
        _, first_cookie = running.page()
        second_id, second_cookie = running.page(first_cookie)
        for n in range(3):
            running.hub.publish_session(second_id, n)
        async with client(running, second_cookie, last_seq=2) as ws:
            hello = await receive(ws)
            message = await receive(ws)
    assert (hello["session"], hello["resumed"]) == (second_id, True)
    assert message["seq"] == 3


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_pre_encoded_frame_is_the_text_frame_websockets_would_send(size: int) -> None:
    from websockets.frames import OP_TEXT, Frame

    from weaver.session.server import text_frame_header

    payload = b"x" * size
    expected = Frame(OP_TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame_header(size) + payload == expected


async def test_a_channel_message_reaches_many_sockets_as_one_text_frame_each() -> None:
    async with asyncio.timeout(10), running_hub() as running:
        pages = [running.page() for _ in range(3)]
        for session_id, _ in pages:
            running.hub.subscribe(session_id, "news")
        async with (
            client(running, pages[0][1]) as a,
            client(running, pages[1][1]) as b,
            client(running, pages[2][1]) as c,
        ):
            for ws in (a, b, c):
                await receive(ws)
            running.hub.publish_session(pages[1][0], "first for b")
            await running.hub.publish_channel("news", {"headline": "é" * 200})
            got = [await a.recv(), await b.recv(), await b.recv(), await c.recv()]
    assert all(isinstance(text, str) for text in got)  # text frames, valid UTF-8
    assert [orjson.loads(text)["seq"] for text in got] == [1, 1, 2, 1]
    assert orjson.loads(got[2])["data"] == {"headline": "é" * 200}
