"""Fills: many followers, one producer; the last follower to leave stops the work."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict

from weaver.proxy.paint import Fill, FillFailed, Fills, FollowerLagged, Head


def head(status: int = 200) -> Head:
    return Head(status, CIMultiDict({"Content-Type": "text/html"}), is_shareable=True)


async def read_all(fill: Fill) -> bytes:
    with fill.follow() as follower:
        await follower.head()
        return b"".join([chunk async for chunk in follower.chunks()])


async def test_every_follower_gets_the_same_bytes_as_they_arrive() -> None:
    fills = Fills()
    release = asyncio.Event()

    async def body(fill: Fill) -> None:
        fill.set_head(head())
        await fill.feed(b"first ")
        await release.wait()
        await fill.feed(b"second")

    fill = fills.start("k", body, max_buffer_bytes=1024)
    early = fill.follow()
    assert (await early.head()).status == 200
    chunks = early.chunks()
    assert await anext(chunks) == b"first "  # before the fill is done
    assert fills.joinable("k") is fill
    async with asyncio.TaskGroup() as tasks:
        late = tasks.create_task(read_all(fill))
        await asyncio.sleep(0.01)
        release.set()
    assert late.result() == b"first second"
    assert await anext(chunks) == b"second"
    early.close()
    assert fills.joinable("k") is None
    await fills.aclose()


async def test_the_leader_leaving_does_not_cut_off_the_others() -> None:
    fills = Fills()
    release = asyncio.Event()

    async def body(fill: Fill) -> None:
        fill.set_head(head())
        await fill.feed(b"a")
        await release.wait()
        await fill.feed(b"b")

    fill = fills.start("k", body, max_buffer_bytes=1024)
    leader = fill.follow()
    other = fill.follow()
    await leader.head()
    leader.close()
    release.set()
    await other.head()
    assert b"".join([c async for c in other.chunks()]) == b"ab"
    other.close()
    await fills.aclose()


async def test_the_last_follower_leaving_cancels_the_fill() -> None:
    fills = Fills()
    cancelled = asyncio.Event()

    async def body(fill: Fill) -> None:
        fill.set_head(head())
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    fill = fills.start("k", body, max_buffer_bytes=1024)
    with fill.follow() as follower:
        await follower.head()
    async with asyncio.timeout(2):
        await cancelled.wait()
    await fills.aclose()


async def test_a_failure_before_the_head_reaches_every_follower() -> None:
    fills = Fills()

    async def body(fill: Fill) -> None:
        raise ConnectionRefusedError("origin down")

    fill = fills.start("k", body, max_buffer_bytes=1024)
    with fill.follow() as a, fill.follow() as b:
        for follower in (a, b):
            with pytest.raises(ConnectionRefusedError):
                await follower.head()
    await fills.aclose()


async def test_a_failure_after_the_head_breaks_the_body_instead_of_ending_it() -> None:
    fills = Fills()

    async def body(fill: Fill) -> None:
        fill.set_head(head())
        await fill.feed(b"partial")
        raise ConnectionResetError("origin reset")

    fill = fills.start("k", body, max_buffer_bytes=1024)
    with fill.follow() as follower:
        await follower.head()
        got = bytearray()
        with pytest.raises(FillFailed):
            async for chunk in follower.chunks():
                got += chunk
    assert got == b"partial"
    await fills.aclose()


async def test_a_lagging_follower_is_cut_off_while_the_fast_one_keeps_going() -> None:
    fills = Fills()

    async def body(fill: Fill) -> None:
        fill.set_head(head())
        for _ in range(64):
            await fill.feed(b"x" * 1024)

    fill = fills.start("k", body, max_buffer_bytes=8 * 1024)
    slow = fill.follow()
    await slow.head()
    fast_bytes = await read_all(fill)
    assert fast_bytes == b"x" * 64 * 1024
    with pytest.raises(FollowerLagged):
        async for _ in slow.chunks():
            pass
    slow.close()
    await fills.aclose()


async def test_a_single_slow_follower_pauses_the_fill_instead() -> None:
    fills = Fills()
    fed = 0

    async def body(fill: Fill) -> None:
        nonlocal fed
        fill.set_head(head())
        for _ in range(64):
            await fill.feed(b"x" * 1024)
            fed += 1

    fill = fills.start("k", body, max_buffer_bytes=8 * 1024)
    with fill.follow() as follower:
        await follower.head()
        await asyncio.sleep(0.05)
        assert fed <= 9  # PAUSE_READING at the bound, not a runaway buffer
        body_bytes = b"".join([c async for c in follower.chunks()])
    assert body_bytes == b"x" * 64 * 1024
    await fills.aclose()


async def test_a_private_fill_is_never_joinable() -> None:
    fills = Fills()

    async def body(fill: Fill) -> None:
        fill.set_head(head())

    fill = fills.start("", body, max_buffer_bytes=1024)
    assert fills.joinable("") is None
    assert await read_all(fill) == b""
    await fills.aclose()


async def test_closing_the_registry_cancels_fills_without_followers() -> None:
    fills = Fills()

    async def body(fill: Fill) -> None:
        await asyncio.sleep(3600)

    fills.start("refresh", body, max_buffer_bytes=1024)
    await fills.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        fills.start("again", body, max_buffer_bytes=1024)
