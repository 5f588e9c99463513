"""What the session layer counts (session/stats.py) reaches the one listener, once per
event: the listener the proxy's metrics install, or nobody."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest

from tests.session.harness import client, receive, running_hub
from weaver.session import stats
from weaver.session.stats import SessionEvent, count, set_listener


@pytest.fixture
def counted() -> Iterator[list[SessionEvent]]:
    """Every event counted during the test; the listener before it is put back after."""
    before = stats._listener
    seen: list[SessionEvent] = []
    set_listener(seen.append)
    try:
        yield seen
    finally:
        set_listener(before)


def test_each_count_reaches_the_listener_once(counted: list[SessionEvent]) -> None:
    count(SessionEvent.MESSAGE_IN)
    count(SessionEvent.MESSAGE_OUT)
    count(SessionEvent.MESSAGE_OUT)
    assert counted == [SessionEvent.MESSAGE_IN, SessionEvent.MESSAGE_OUT, SessionEvent.MESSAGE_OUT]


def test_without_a_listener_counting_does_nothing(counted: list[SessionEvent]) -> None:
    set_listener(None)
    count(SessionEvent.SOCKET_OPENED)  # no error, nobody told
    assert counted == []


def test_a_new_listener_replaces_the_old_one(counted: list[SessionEvent]) -> None:
    other: list[SessionEvent] = []
    set_listener(other.append)
    count(SessionEvent.CLOSE_1013)
    assert (counted, other) == ([], [SessionEvent.CLOSE_1013])


def test_the_proxy_metrics_count_each_session_event_once() -> None:
    from weaver.proxy import metrics

    before = stats._listener
    set_listener(metrics._on_session_event)
    try:
        out = metrics._MESSAGES_OUT._value.get()
        closes = metrics.CLOSES_1013._value.get()
        count(SessionEvent.MESSAGE_OUT)
        count(SessionEvent.CLOSE_1013)
        assert metrics._MESSAGES_OUT._value.get() == out + 1
        assert metrics.CLOSES_1013._value.get() == closes + 1
    finally:
        set_listener(before)


async def test_a_socket_counts_its_open_messages_and_close_once_each(
    counted: list[SessionEvent],
) -> None:
    read, closed = asyncio.Event(), asyncio.Event()

    def listener(event: SessionEvent) -> None:
        counted.append(event)
        if event is SessionEvent.MESSAGE_IN and counted.count(event) == 2:
            read.set()  # the server acts on the message in the same step, before awaiting
        if event is SessionEvent.SOCKET_CLOSED:
            closed.set()

    set_listener(listener)
    async with asyncio.timeout(10), running_hub() as running:
        session_id, cookie = running.page()
        async with client(running, cookie) as ws:
            await receive(ws)  # hello (not counted as a message out)
            await ws.send(orjson.dumps({"type": "subscribe", "channel": "news"}).decode())
            await ws.send(orjson.dumps({"type": "subscribe", "channel": "deals"}).decode())
            await read.wait()
            assert running.hub.sessions[session_id].channels == {"news", "deals"}
            await running.hub.publish_channel("news", {"n": 1})
            assert (await receive(ws))["data"] == {"n": 1}
        await closed.wait()
    assert counted == [
        SessionEvent.SOCKET_OPENED,
        SessionEvent.MESSAGE_IN,
        SessionEvent.MESSAGE_IN,
        SessionEvent.MESSAGE_OUT,
        SessionEvent.SOCKET_CLOSED,
    ]
