"""Writing sessions to a shared log (session/shared.py) with a real redis-server: one
writer per session keeps its order, a batch per round trip; when Redis is down the
session delivers locally, and is seeded back when Redis returns; a session new to a
node is restored from what the shared log holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson

from tests.redis_server import RedisServer
from weaver.config.schema import BusConfig, SessionConfig
from weaver.session.bus import Op, StoredSession
from weaver.session.channels import Channels
from weaver.session.live import Session
from weaver.session.messages import Message, Slot, message_data, slot_state_from
from weaver.session.outbox import Outbox
from weaver.session.redis_bus import RedisBus
from weaver.session.shared import MAX_BATCH, SharedWriter, restore


class CountingBus(RedisBus):
    """A real Redis bus that records the size of each session write and counts the
    times it came up (the second: back after an outage)."""

    def __init__(self, config: BusConfig) -> None:
        super().__init__(config)
        self.batches: list[int] = []
        self.ups = 0
        self.came_back = asyncio.Event()

    async def write(self, session_id: str, ops: Sequence[Op]) -> list[int]:
        self.batches.append(len(ops))
        return await super().write(session_id, ops)


class Consumer:
    """A consumer of one session: the messages it receives (decoded), and a wait."""

    def __init__(self, session: Session) -> None:
        self.messages: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.outbox = Outbox(max_messages=1000, max_bytes=10**6)
        self.outbox.direct = self.write
        session.outboxes.add(self.outbox)

    def write(self, message: bytes) -> bool:
        self.messages.append(orjson.loads(message))
        self.changed.set()
        return True

    async def until(self, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(10):
            while len(self.messages) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.messages


@asynccontextmanager
async def node(
    redis: RedisServer,
) -> AsyncIterator[tuple[CountingBus, SharedWriter, dict[str, Session]]]:
    """A node's bus and writer over ``redis``; its tasks are ended after."""
    bus = CountingBus(BusConfig(url=redis.url, timeout_s=0.5))
    sessions: dict[str, Session] = {}
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    writer = SharedWriter(bus, sessions, spawn)

    async def on_up() -> None:
        await writer.on_bus_up()
        bus.ups += 1
        if bus.ups == 2:
            bus.came_back.set()

    await bus.start(lambda message: None, on_session=writer.on_session_message, on_up=on_up)
    try:
        yield bus, writer, sessions
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.stop()


def feed(data: Any) -> Message:
    return Message("feed", message_data(data))


def new_session(sessions: dict[str, Session], writer: SharedWriter, session_id: str) -> Session:
    session = Session(
        session_id, SessionConfig(secret="s"), log_max_messages=1000, log_max_bytes=10**6, now=0
    )
    session.write_shared = writer.write
    sessions[session_id] = session
    return session


async def test_a_sessions_messages_keep_their_order_a_batch_per_round_trip(
    redis: RedisServer,
) -> None:
    async with node(redis) as (bus, writer, sessions):
        session = new_session(sessions, writer, "s1")
        consumer = Consumer(session)
        count = MAX_BATCH + 44
        for n in range(count):  # queued at once: the writer takes them in batches
            session.emit(feed(n))
        received = await consumer.until(count)
        stored = await bus.load("s1")
    assert [(m["seq"], m["data"]) for m in received] == [(n + 1, n) for n in range(count)]
    assert bus.batches == [MAX_BATCH, 44]
    assert stored is not None and stored.seq == count  # numbered by the shared log


async def test_metadata_and_messages_are_written_in_the_order_they_were_made(
    redis: RedisServer,
) -> None:
    async with node(redis) as (bus, writer, sessions):
        session = new_session(sessions, writer, "s1")
        consumer = Consumer(session)
        session.set_slot(Slot("w_a", "<p>first</p>"))
        session.write_meta(("channels", b'["news"]'))
        session.set_slot(Slot("w_a", "<p>second</p>"))
        await consumer.until(2)
        stored = await bus.load("s1")
    assert [m["html"] for m in consumer.messages] == ["<p>first</p>", "<p>second</p>"]
    assert stored is not None
    assert stored.channels == ("news",)
    assert slot_state_from(stored.slots["w_a"]) == Slot("w_a", "<p>second</p>")


async def test_with_redis_down_a_session_delivers_locally_and_is_seeded_when_it_returns(
    redis: RedisServer,
) -> None:
    async with node(redis) as (bus, writer, sessions):
        session = new_session(sessions, writer, "s1")
        consumer = Consumer(session)
        session.emit(feed("before"))
        await consumer.until(1)
        redis.kill()
        session.emit(feed("during-1"))
        session.emit(feed("during-2"))
        await consumer.until(3)  # local delivery: the log continues the numbering
        is_local_during = session.is_local_only
        redis.start()  # same port, empty
        async with asyncio.timeout(30):
            await bus.came_back.wait()
        is_local_after = session.is_local_only
        replay = await bus.replay("s1", 0)
        session.emit(feed("after"))
        await consumer.until(4)
    assert [(m["seq"], m["data"]) for m in consumer.messages] == [
        (1, "before"),
        (2, "during-1"),
        (3, "during-2"),
        (4, "after"),  # numbered by Redis again, after the seeded log
    ]
    assert (is_local_during, is_local_after) == (True, False)
    assert replay.seq == 3 and not replay.is_reset
    assert [orjson.loads(m)["data"] for _, m in replay.entries] == [
        "before",
        "during-1",
        "during-2",
    ]
    assert consumer.outbox.is_overflowed is False  # nothing was missed: no 1013


async def test_a_message_from_the_shared_log_reaches_only_a_session_this_node_holds(
    redis: RedisServer,
) -> None:
    async with node(redis) as (_, writer, sessions):
        held = new_session(sessions, writer, "held")
        consumer = Consumer(held)
        message = b'{"type":"message","seq":1,"channel":null,"data":1}'
        writer.on_session_message("elsewhere", 1, message)  # not here: nothing happens
        held.is_local_only = True
        writer.on_session_message("held", 1, message)  # delivering locally: ignored
        held.is_local_only = False
        writer.on_session_message("held", 1, message)
    assert consumer.messages == [orjson.loads(message)]


async def test_a_session_new_to_a_node_is_restored_and_caught_up_on_its_channels(
    redis: RedisServer,
) -> None:
    async with node(redis) as (bus, _, sessions):
        await bus.publish("news", b'{"n":1}')
        first = await bus.channel_since("news", "0-0")
        await bus.publish("news", b'{"n":2}')
        await bus.publish("news", b'{"n":3}')
        stored = StoredSession(
            seq=7,
            cookie="sid=v",
            events_url="http://127.0.0.1:1/_events",
            channels=("news",),
            slots={"w_a": b'["slot",{"id":"w_a","html":"<p>a</p>"}]'},
            cursors={"news": first[0][0], "gone": "0-0"},
        )
        session = Session(
            "s1", SessionConfig(secret="s"), log_max_messages=99, log_max_bytes=10**5, now=0
        )
        consumer = Consumer(session)
        channels = Channels(sessions, history_size=10)
        await restore(bus, session, stored, channels)
    assert session.log.last_seq == 9
    assert (session.state.cookie, session.state.events_url) == (
        "sid=v",
        "http://127.0.0.1:1/_events",
    )
    assert session.channels == {"news"} and channels.presence("news") == 1
    assert [(m["seq"], m["data"]) for m in consumer.messages] == [(8, {"n": 2}), (9, {"n": 3})]
    assert session.slots == {"w_a": Slot("w_a", "<p>a</p>")}
