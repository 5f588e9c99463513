"""The Redis bus at scale, reproduced small: more calls at once than redis-py's pool
holds, notifications that never reach the node, writes whose outcome is unknown. Each
message reaches a session's consumer once and in order (loadtests/bench_sessions.py
--workers 1r,2 at 10,000 sessions lost and duplicated some)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.redis_server import RedisServer
from weaver.config.schema import BusConfig
from weaver.session.bus import ChannelMessage
from weaver.session.redis_bus import RedisBus


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
