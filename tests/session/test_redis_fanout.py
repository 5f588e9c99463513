"""The Redis bus at scale, reproduced small: more calls at once than redis-py's pool
holds, notifications that never reach the node, writes whose outcome is unknown. Each
message reaches a session's consumer once and in order (loadtests/bench_sessions.py
--workers 1r,2 at 10,000 sessions lost and duplicated some)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from tests.redis_server import RedisServer
from weaver.config.schema import BusConfig, SessionConfig
from weaver.session.bus import BusUnavailable, ChannelMessage, Meta, Op
from weaver.session.channels import channel_emit
from weaver.session.live import Session
from weaver.session.messages import Message, message_data
from weaver.session.outbox import Outbox
from weaver.session.redis_bus import RedisBus
from weaver.session.shared import SharedWriter


def ignore(message: ChannelMessage) -> None:
    pass


async def test_more_calls_at_once_than_the_redis_pool_holds_are_all_answered_and_the_bus_stays_up(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # 10,000 sessions attaching at once (a replay each) took more than the pool's 100
    # connections: MaxConnectionsError marked a healthy Redis down (1011 closes, local
    # delivery, then messages lost or duplicated when the sessions were written back).
    bus = RedisBus(BusConfig(url=redis.url))
    await bus.start(ignore)
    try:
        with caplog.at_level(logging.WARNING, logger="weaver.session"):
            loaded = await asyncio.gather(
                *(bus.load(f"s{i}") for i in range(300)), return_exceptions=True
            )
        is_up = bus.is_up
    finally:
        await bus.stop()
    assert loaded == [None] * 300
    assert is_up
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


class OneNode:
    """A session on one node over a real Redis, its writer, one consumer's outbox; the
    bus's session notifications go to the writer when ``notified`` (else they are lost,
    as when Redis cuts a subscriber past its pub/sub output buffer limit)."""

    def __init__(self, bus: RedisBus, *, notified: bool) -> None:
        self.bus = bus
        self.notified = notified
        self.session = Session(
            "s1", SessionConfig(), log_max_messages=64, log_max_bytes=1 << 16, now=0.0
        )
        self.tasks: set[asyncio.Task[None]] = set()
        self.writer = SharedWriter(bus, {"s1": self.session}, self.spawn)
        self.session.write_shared = self.writer.write
        self.outbox = Outbox(max_messages=64, max_bytes=1 << 16)
        self.outbox.direct = self.take  # as a socket that takes every message at once
        self.got: list[bytes] = []
        self.session.outboxes.add(self.outbox)
        self.arrived = asyncio.Event()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        return task

    def on_session(self, session_id: str, seq: int, message: bytes) -> None:
        if self.notified:
            self.writer.on_session_message(session_id, seq, message)
            self.arrived.set()

    async def publish(self, data: str) -> None:
        self.session.emit(Message(None, message_data(data)))
        assert self.session.writer is not None
        await self.session.writer

    def take(self, message: bytes) -> bool:
        self.got.append(message)
        return True

    def seen(self) -> list[tuple[int, str]]:
        """What the consumer got so far: (seq, data)."""
        return [(m["seq"], m["data"]) for m in map(orjson.loads, self.got)]


@asynccontextmanager
async def one_node(bus: RedisBus, *, notified: bool) -> AsyncIterator[OneNode]:
    node = OneNode(bus, notified=notified)
    await bus.start(ignore, on_session=node.on_session)
    try:
        yield node
    finally:
        await bus.stop()
        await asyncio.gather(*node.tasks)


async def test_a_message_whose_bus_notification_never_comes_still_reaches_the_consumer_in_order(
    redis: RedisServer,
) -> None:
    # The node delivered its sessions' messages only when the bus's notification came
    # back: one lost (the subscription dropped) was never delivered, and its seq went
    # to the next message delivered locally: 90,233 of 100,000 arrived, no socket failed.
    async with one_node(RedisBus(BusConfig(url=redis.url)), notified=False) as node:
        await node.publish("a")
        await node.publish("b")
        seen = node.seen()
    assert seen == [(1, "a"), (2, "b")]


class AppliedThenTimedOut(RedisBus):
    """Redis applies the write and the notification comes back, but the reply is lost:
    the call fails (as past ``bus.timeout`` under load)."""

    node: OneNode

    async def write(self, session_id: str, ops: Sequence[Op]) -> list[int]:
        await super().write(session_id, ops)
        await self.node.arrived.wait()
        raise BusUnavailable("Redis: TimeoutError")


async def test_a_write_redis_applied_but_whose_reply_was_lost_is_delivered_once(
    redis: RedisServer,
) -> None:
    # The writer delivered a failed write's messages locally, though the bus had
    # already brought them back: the consumer got the same message twice under two
    # seqs (2 workers: 100,223 of 100,000 arrived).
    bus = AppliedThenTimedOut(BusConfig(url=redis.url))
    async with one_node(bus, notified=True) as node:
        bus.node = node
        await node.publish("a")  # applied, notified, then the call failed
        await node.publish("b")  # local now: the bus counts as down for this session
        seen = node.seen()
    assert seen == [(1, "a"), (2, "b")]


async def test_a_channel_entry_published_before_redis_ran_the_subscription_is_taken(
    redis: RedisServer,
) -> None:
    # A subscription started the session's channel cursor at Redis's clock when the
    # meta write ran; queued behind a fan-out to 10,000 sessions, that ran after the
    # next publication's entry was made, and the session silently skipped the entry
    # (the cursor said "already taken"). The entry id 1-0 stands for "before".
    bus = RedisBus(BusConfig(url=redis.url))
    await bus.start(ignore)
    try:
        subscribe = Meta((("channels", b'["deals"]'),), subscribed="deals")
        entry = channel_emit(ChannelMessage("deals", b"1", "1-0"))
        seqs = await bus.write("s1", [subscribe, entry, entry])
        replay = await bus.replay("s1", 0)
    finally:
        await bus.stop()
    assert seqs == [0, 1, 0]  # taken once
    assert [orjson.loads(m)["data"] for _, m in replay.entries] == [1]
