"""Client events to the origin (session/delivery.py), against a real aiohttp origin on
127.0.0.1: in order, each at least once, acked; retries on 5xx and network errors with
their bound, none on 4xx; the full queue pauses the reader (PAUSE_READING); ending the
session cancels delivery. The origin is gated on asyncio.Event: no sleeps order events."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.servers import serve_app
from weaver.config.schema import SessionConfig
from weaver.session import delivery
from weaver.session.delivery import EventDelivery
from weaver.session.live import Session
from weaver.session.messages import ClientEvent
from weaver.session.outbox import Outbox


def spawn(coro: Coroutine[Any, Any, None], owner: set[asyncio.Task[None]]) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(coro)
    owner.add(task)
    task.add_done_callback(owner.discard)
    return task


class Origin:
    """An events endpoint: records each POST body and Cookie, answers what the test set;
    each request may wait on :attr:`gate`."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.cookies: list[str | None] = []
        self.statuses: list[int] = []  # answered in turn; then 200
        self.answer = b""
        self.gate: asyncio.Event | None = None
        self.arrived = asyncio.Event()

    async def events(self, request: web.Request) -> web.Response:
        self.bodies.append(orjson.loads(await request.read()))
        self.cookies.append(request.headers.get("Cookie"))
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, body=self.answer, content_type="application/json")

    def event_ids(self) -> list[str]:
        return [body["event"]["id"] for body in self.bodies]


class Published:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    async def __call__(self, channel: str, data: Any) -> int:
        self.items.append((channel, data))
        return 1


class Consumer:
    """What the session's one consumer receives (decoded), and a wait for its acks."""

    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def write(self, message: bytes) -> bool:
        self.written.append(orjson.loads(message))
        self.changed.set()
        return True

    def acks(self) -> list[tuple[str, bool, str | None]]:
        return [(m["event"], m["ok"], m["error"]) for m in self.written if m["type"] == "ack"]

    async def until_acks(self, count: int) -> list[tuple[str, bool, str | None]]:
        async with asyncio.timeout(10):
            while len(self.acks()) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.acks()


@asynccontextmanager
async def delivering(
    origin: Origin, *, max_pending: int = 8, timeout_s: float = 5.0, url: str | None = None
) -> AsyncIterator[tuple[EventDelivery, Session, Consumer, Published]]:
    """An EventDelivery posting to ``origin`` for one session, what its consumer
    receives, and what the origin's answers published. Ends the session's tasks after."""
    app = web.Application()
    app.router.add_post("/_events", origin.events)
    published = Published()
    async with serve_app(app) as base, aiohttp.ClientSession() as http:
        events = EventDelivery(spawn, published, max_pending=max_pending, timeout_s=timeout_s)
        events.http = http
        session = Session(
            "sid-1", SessionConfig(secret="s"), log_max_messages=99, log_max_bytes=10**5, now=0
        )
        session.state.events_url = url or base + "/_events"
        consumer = Consumer()
        box = Outbox(max_messages=99, max_bytes=10**5)
        box.direct = consumer.write
        session.outboxes.add(box)
        try:
            yield events, session, consumer, published
        finally:
            if origin.gate is not None:
                origin.gate.set()  # let the origin's handlers finish
            tasks = list(session.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def no_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry bound stays (3 retries after the first attempt); the waits between are
    zero so the test does not take 1.3 s of real time."""
    monkeypatch.setattr(delivery, "EVENT_RETRIES_S", (0.0, 0.0, 0.0))


def event(n: int, **data: Any) -> ClientEvent:
    return ClientEvent(f"e{n}", "add-to-cart", "#buy", data or {"n": n})


async def test_events_reach_the_origin_in_order_each_acked() -> None:
    origin = Origin()
    async with delivering(origin) as (events, session, consumer, _):
        session.state.cookie = "sid=visitor-1"
        for n in range(1, 6):
            await events.offer(session, event(n))
        assert await consumer.until_acks(5) == [(f"e{n}", True, None) for n in range(1, 6)]
    assert origin.event_ids() == ["e1", "e2", "e3", "e4", "e5"]
    assert origin.bodies[0] == {
        "session": "sid-1",
        "event": {"id": "e1", "name": "add-to-cart", "target": "#buy", "data": {"n": 1}},
    }
    assert set(origin.cookies) == {"sid=visitor-1"}  # the visitor's cookie goes along


async def test_the_origins_answer_patches_slots_and_publishes_before_the_ack() -> None:
    origin = Origin()
    origin.answer = orjson.dumps(
        {
            "patches": {"w_cart": "<p>1 item</p>", "bad": 5},
            "publish": [{"channel": "stock", "data": {"left": 3}}, {"channel": 7}, "x"],
        }
    )
    async with delivering(origin) as (events, session, consumer, published):
        await events.offer(session, event(1))
        await consumer.until_acks(1)
    assert [(m["type"], m.get("id"), m.get("html")) for m in consumer.written] == [
        ("patch", "w_cart", "<p>1 item</p>"),
        ("ack", None, None),
    ]
    assert published.items == [("stock", {"left": 3})]  # malformed items are skipped
    assert "w_cart" in session.slots  # a reset re-sends the patched slot


@pytest.mark.parametrize("answer", [b"not json", b"[1, 2]", b"   "])
async def test_an_answer_that_is_not_a_json_object_is_ignored_and_the_event_acked(
    answer: bytes,
) -> None:
    origin = Origin()
    origin.answer = answer
    async with delivering(origin) as (events, session, consumer, published):
        await events.offer(session, event(1))
        assert await consumer.until_acks(1) == [("e1", True, None)]
    assert published.items == [] and len(consumer.written) == 1


@pytest.mark.usefixtures("no_retry_waits")
async def test_a_5xx_is_retried_with_the_same_id_and_then_acked() -> None:
    origin = Origin()
    origin.statuses = [503, 500]
    async with delivering(origin) as (events, session, consumer, _):
        await events.offer(session, event(1))
        await events.offer(session, event(2))
        assert await consumer.until_acks(2) == [("e1", True, None), ("e2", True, None)]
    assert origin.event_ids() == ["e1", "e1", "e1", "e2"]  # the origin dedupes by id


@pytest.mark.usefixtures("no_retry_waits")
async def test_an_origin_failing_past_the_retry_bound_gets_four_attempts_and_a_failed_ack() -> None:
    origin = Origin()
    origin.statuses = [502] * 4
    async with delivering(origin) as (events, session, consumer, _):
        await events.offer(session, event(1))
        await events.offer(session, event(2))
        assert await consumer.until_acks(2) == [
            ("e1", False, "origin answered 502"),
            ("e2", True, None),  # the next event still goes: nothing dropped silently
        ]
    assert origin.event_ids() == ["e1"] * (1 + len(delivery.EVENT_RETRIES_S)) + ["e2"]


async def test_a_4xx_is_not_retried_and_is_acked_as_failed() -> None:
    origin = Origin()
    origin.statuses = [422]
    async with delivering(origin) as (events, session, consumer, _):
        await events.offer(session, event(1))
        assert await consumer.until_acks(1) == [("e1", False, "origin answered 422")]
    assert origin.event_ids() == ["e1"]


@pytest.mark.usefixtures("no_retry_waits")
async def test_an_unreachable_origin_is_retried_then_acked_as_failed() -> None:
    with socket.socket() as refusing:  # bound, never listening: connections are refused
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        async with delivering(Origin(), url=f"http://127.0.0.1:{port}/_events") as (
            events,
            session,
            consumer,
            _,
        ):
            await events.offer(session, event(1))
            assert await consumer.until_acks(1) == [
                ("e1", False, "origin unreachable (ClientConnectorError)")
            ]


@pytest.mark.usefixtures("no_retry_waits")
async def test_a_slow_origin_times_out_each_attempt_and_the_event_is_acked_as_failed() -> None:
    origin = Origin()
    origin.gate = asyncio.Event()  # never opened while the event is delivered
    async with delivering(origin, timeout_s=0.05) as (events, session, consumer, _):
        await events.offer(session, event(1))
        assert await consumer.until_acks(1) == [("e1", False, "origin unreachable (TimeoutError)")]
    assert origin.event_ids() == ["e1"] * 4


async def test_no_events_endpoint_acks_every_event_as_failed_without_a_request() -> None:
    origin = Origin()
    async with delivering(origin) as (events, session, consumer, _):
        session.state.events_url = None
        await events.offer(session, event(1))
        assert await consumer.until_acks(1) == [("e1", False, "no events endpoint is configured")]
    assert origin.bodies == []


async def test_a_full_queue_pauses_the_reader_until_the_origin_answers() -> None:
    origin = Origin()
    origin.gate = asyncio.Event()
    async with delivering(origin, max_pending=1) as (events, session, consumer, _):
        acked_when_queued: list[int] = []

        async def read_third() -> None:  # the socket reader offering its next event
            await events.offer(session, event(3))
            acked_when_queued.append(len(consumer.acks()))

        await events.offer(session, event(1))  # queued; the worker takes it
        await events.offer(session, event(2))  # waits for the worker to take e1
        await origin.arrived.wait()  # e1 is at the origin, e2 fills the queue
        assert session.events is not None and session.events.qsize() == 1
        third = asyncio.get_running_loop().create_task(read_third())
        origin.gate.set()
        await third
        assert await consumer.until_acks(3) == [(f"e{n}", True, None) for n in (1, 2, 3)]
    assert acked_when_queued[0] >= 1  # PAUSE_READING: e3 waited until e1 was answered
    assert origin.event_ids() == ["e1", "e2", "e3"]  # nothing dropped, in order


async def test_ending_the_session_cancels_delivery_without_an_ack() -> None:
    origin = Origin()
    origin.gate = asyncio.Event()
    async with delivering(origin) as (events, session, consumer, _):
        await events.offer(session, event(1))
        await origin.arrived.wait()
        worker = session.event_worker
        assert worker is not None and worker in session.tasks
        worker.cancel()  # what dropping the session does to its tasks
        await asyncio.gather(worker, return_exceptions=True)
        assert worker.cancelled()
        assert consumer.written == []  # no ack: the session is gone
        await events.offer(session, event(2))  # a later event starts a new worker
        assert session.event_worker is not worker
        origin.gate.set()
        assert await consumer.until_acks(1) == [("e2", True, None)]
