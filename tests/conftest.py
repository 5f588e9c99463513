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

    def still_running() -> set[asyncio.Task[object]]:
        return {t for t in asyncio.all_tasks() if t not in before and t is not current}

    # A task that is ending (its owner cancelled it) gets half a second to finish, waited
    # on, not polled; one still running after that was left behind: the failure.
    deadline = asyncio.get_running_loop().time() + 0.5
    left = still_running()
    while left:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            names = ", ".join(repr(t.get_coro()) for t in left)
            pytest.fail(f"tasks left running after the test: {names}")
        await asyncio.wait(left, timeout=remaining)
        left = still_running()  # an ending task may have started another


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
