"""Consumers attaching to sessions (session/consumers.py): resume from the local log or
the shared log, ``reset`` when it no longer reaches back, detaching, and a node's copy of
a session dropped while a consumer was loading it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.redis_server import RedisServer
from tests.session.harness import Running, client, closed_with, receive, running_hub
from weaver.cache.clock import ManualClock
from weaver.config.schema import BusConfig, HostPort, SessionConfig
from weaver.session.hub import MAX_LOADS, SessionHub
from weaver.session.protocol import State
from weaver.session.redis_bus import RedisBus

CONFIG = SessionConfig(listen=HostPort("127.0.0.1", 0), secret="s", publish_token="t")


class CatchUpGate(RedisBus):
    """A real Redis bus whose first ``pauses`` channel catch-ups wait for the test: the
    window in which a node loads a session from the shared log (session/shared.py
    ``restore``)."""

    def __init__(self, config: BusConfig, pauses: int) -> None:
        super().__init__(config)
        self.pauses = pauses
        self.catching_up = asyncio.Event()
        self.go_on = asyncio.Event()

    async def channel_since(self, channel: str, after_id: str) -> list[tuple[str, bytes]]:
        if self.pauses:
            self.pauses -= 1
            self.go_on.clear()
            self.catching_up.set()
            await self.go_on.wait()
        return await super().channel_since(channel, after_id)

    async def drop_during_catch_up(self, hub: SessionHub) -> int:
        """Wait for the next catch-up, drop every session ``hub`` holds past its hold
        time meanwhile, then let the catch-up go on. Returns how many were dropped."""
        async with asyncio.timeout(10):
            await self.catching_up.wait()
        self.catching_up.clear()
        held = list(hub.sessions.values())
        dropped = hub.expire_detached(1000.0 + hub.session_hold_s + 1)
        for session in held:  # what dropping wrote to the shared log is there
            if session.writer is not None:
                await session.writer
        self.go_on.set()
        return dropped


@asynccontextmanager
async def two_nodes(
    redis: RedisServer, pauses: int = 1
) -> AsyncIterator[tuple[Running, Running, CatchUpGate]]:
    gate = CatchUpGate(BusConfig(url=redis.url), pauses)
    async with running_hub(bus=RedisBus(BusConfig(url=redis.url))) as a:
        clock = ManualClock(1000.0)  # the janitor never expires anything by itself
        async with running_hub(bus=gate, clock=clock.time, session_hold_s=60.0) as b:
            yield a, b, gate


async def test_a_session_dropped_while_a_consumer_loads_it_is_loaded_again_and_resumes(
    redis: RedisServer,
) -> None:
    async with two_nodes(redis) as (a, b, gate):
        session_id, cookie = a.page()
        a.hub.subscribe(session_id, "news")
        a.hub.publish_session(session_id, "one")
        writer = a.hub.sessions[session_id].writer
        assert writer is not None
        await writer  # the subscription and "one" are in the shared log
        async with client(b, cookie, last_seq=1) as ws:
            dropped = await gate.drop_during_catch_up(b.hub)
            hello = await receive(ws)
            await a.hub.publish_channel("news", "two")
            message = await receive(ws)
            copy = b.hub.sessions[session_id]  # the copy loaded again
            held, subscribed = copy.state.state, copy.channels
    assert dropped == 1
    assert hello == {"type": "hello", "seq": 1, "session": session_id, "resumed": True}
    assert message == {"type": "message", "seq": 2, "channel": "news", "data": "two"}
    assert held is State.ATTACHED and subscribed == {"news"}


async def test_a_session_dropped_during_every_load_closes_the_socket_1013_to_retry(
    redis: RedisServer,
) -> None:
    async with two_nodes(redis, pauses=MAX_LOADS) as (a, b, gate):
        session_id, cookie = a.page()
        a.hub.subscribe(session_id, "news")
        writer = a.hub.sessions[session_id].writer
        assert writer is not None
        await writer
        async with client(b, cookie) as ws:
            dropped = [await gate.drop_during_catch_up(b.hub) for _ in range(MAX_LOADS)]
            closed = await closed_with(ws)
        async with client(b, cookie) as ws:  # the retry the close asks for
            hello = await receive(ws)
    assert dropped == [1] * MAX_LOADS
    assert closed == (1013, "the session was dropped while it was loaded; retry")
    assert hello == {"type": "hello", "seq": 0, "session": session_id, "resumed": False}


async def test_a_resume_that_missed_more_than_the_outbox_holds_gets_it_all() -> None:
    """The replay is bounded by the session's log, not by the outbox: a consumer cut off
    (1013) by its own replay would resume into the same replay, again and again."""
    async with running_hub(outbound_max_messages=4) as running:
        session_id, cookie = running.page()
        for i in range(10):  # missed while no consumer was attached: 10 > 4
            running.hub.publish_session(session_id, i)
        async with client(running, cookie) as ws:
            hello = await receive(ws)
            missed = [await receive(ws) for _ in range(10)]
    assert hello["seq"] == 10
    assert [(m["seq"], m["data"]) for m in missed] == [(i + 1, i) for i in range(10)]
