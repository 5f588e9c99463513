"""Shared fixtures: real servers on 127.0.0.1 port 0, and a leak check on every async test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import settings

from tests.redis_server import RedisServer

settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("deep", max_examples=5000, deadline=None)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
async def no_task_left_running() -> AsyncIterator[None]:
    """Fail the test if it leaves a task running on the loop: every task needs an owner."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    for _ in range(50):
        left = [t for t in asyncio.all_tasks() if t not in before and t is not current]
        if not left:
            return
        await asyncio.sleep(0.01)
    names = ", ".join(repr(t.get_coro()) for t in left)
    pytest.fail(f"tasks left running after the test: {names}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the run (see tests/redis_server.py); a test that kills
    it starts it again. Each test that uses it gets it running and empty."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    redis_server.ensure_running()
    redis_server.flush()
    return redis_server
