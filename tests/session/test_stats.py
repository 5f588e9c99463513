"""What the session layer counts (session/stats.py) reaches the one listener, once per
event (a fan-out's messages out as one count): the listener the proxy's metrics
install, or nobody."""

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
    """Every event counted during the test, once per time it was counted; the listener
    before it is put back after."""
    before = stats._listener
    seen: list[SessionEvent] = []
    set_listener(lambda event, times: seen.extend([event] * times))
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
    set_listener(lambda event, times: other.append(event))
    count(SessionEvent.CLOSE_1013)
    assert (counted, other) == ([], [SessionEvent.CLOSE_1013])


def test_messages_sent_are_reported_as_one_count_when_asked(
    counted: list[SessionEvent],
) -> None:
    calls: list[tuple[SessionEvent, int]] = []
    set_listener(lambda event, times: calls.append((event, times)))
    stats.report_sent()  # nothing tallied: nobody told
    stats.sent()
    stats.sent()
    stats.sent()
    assert calls == []  # a fan-out's writes are tallied, not reported one by one
    stats.report_sent()
    stats.report_sent()
    assert calls == [(SessionEvent.MESSAGE_OUT, 3)]


def test_the_proxy_metrics_count_each_session_event_once() -> None:
    from weaver.proxy import metrics

    before = stats._listener
    set_listener(metrics._on_session_event)
    try:
        out = metrics._MESSAGES_OUT._value.get()
        closes = metrics.CLOSES_1013._value.get()
        count(SessionEvent.MESSAGE_OUT)
        count(SessionEvent.CLOSE_1013)
        count(SessionEvent.MESSAGE_OUT, 1000)  # a fan-out's
        assert metrics._MESSAGES_OUT._value.get() == out + 1001
        assert metrics.CLOSES_1013._value.get() == closes + 1
    finally:
        set_listener(before)


async def test_a_socket_counts_its_open_messages_and_close_once_each(
    counted: list[SessionEvent],
) -> None:
    read, closed = asyncio.Event(), asyncio.Event()

    def listener(event: SessionEvent, times: int) -> None:
        counted.extend([event] * times)
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


async def test_a_fan_out_reports_its_messages_out_as_one_count() -> None:
    calls: list[tuple[SessionEvent, int]] = []
    subscribed = asyncio.Event()

    def listener(event: SessionEvent, times: int) -> None:
        calls.append((event, times))
        if calls.count((SessionEvent.MESSAGE_IN, 1)) == 2:
            subscribed.set()

    before = stats._listener
    set_listener(listener)
    try:
        async with asyncio.timeout(10), running_hub() as running:
            (_, first), (_, second) = running.page(), running.page()
            async with client(running, first) as ws1, client(running, second) as ws2:
                for ws in (ws1, ws2):
                    await receive(ws)  # hello
                    await ws.send(orjson.dumps({"type": "subscribe", "channel": "news"}).decode())
                await subscribed.wait()
                calls.clear()
                assert await running.hub.publish_channel("news", {"n": 1}) == 2
                assert calls == [(SessionEvent.MESSAGE_OUT, 2)]  # once, for both
                for ws in (ws1, ws2):
                    assert (await receive(ws))["data"] == {"n": 1}
    finally:
        set_listener(before)
