"""Fills: many followers, one producer; the last follower to leave stops the work."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict

from weaver.cache.errors import FillFailed, FollowerLagged
from weaver.cache.fills import Fill, Fills, Follower, Head


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
    with fill.follow() as late:  # joins mid-fill, still gets the body from its start
        late_chunks = late.chunks()
        assert await anext(late_chunks) == b"first "
        release.set()
        assert b"".join([c async for c in late_chunks]) == b"second"
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
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            cancelled.set()
            raise

    fill = fills.start("k", body, max_buffer_bytes=1024)
    with fill.follow() as follower:
        await follower.head()
    async with asyncio.timeout(2):
        await cancelled.wait()
    await fills.aclose()


async def test_a_follower_cancelled_while_waiting_for_the_head_leaves_the_others_theirs() -> None:
    fills = Fills()
    release = asyncio.Event()

    async def body(fill: Fill) -> None:
        await release.wait()
        fill.set_head(head(203))
        await fill.feed(b"a")

    async def head_of(follower: Follower, waiting: asyncio.Event) -> Head:
        waiting.set()  # in the same step as the wait below: it is waiting once this is seen
        return await follower.head()

    fill = fills.start("k", body, max_buffer_bytes=1024)
    with fill.follow() as gone, fill.follow() as staying:
        async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
            both = [asyncio.Event(), asyncio.Event()]
            waiting = tasks.create_task(head_of(gone, both[0]))
            kept = tasks.create_task(head_of(staying, both[1]))
            for event in both:
                await event.wait()
            waiting.cancel()
            release.set()
        assert waiting.cancelled()
        assert kept.result().status == 203
        assert b"".join([c async for c in staying.chunks()]) == b"a"
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


async def test_a_failure_after_the_body_was_finished_leaves_it_whole() -> None:
    # A fill may finish its body before its own wrap-up (joining its fetch tasks): what
    # fails there must not turn a whole body into a broken one for a follower still
    # reading it.
    fills = Fills()
    finished = asyncio.Event()
    go_on = asyncio.Event()

    async def body(fill: Fill) -> None:
        fill.set_head(head())
        await fill.feed(b"whole")
        fill.finish()
        finished.set()
        await go_on.wait()
        raise ConnectionResetError("wrap-up failed")

    fill = fills.start("k", body, max_buffer_bytes=1024)
    with fill.follow() as follower:
        await follower.head()
        await finished.wait()
        go_on.set()
        await fills.idle()
        got = b"".join([chunk async for chunk in follower.chunks()])
    assert got == b"whole"
    assert fill.error is None
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
        await fill.is_paused.wait()
        # PAUSE_READING: the ninth KiB is past the 8 KiB bound, and the producer waits.
        assert (fed, fill.size) == (8, 9 * 1024)
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
        await asyncio.Event().wait()  # until cancelled

    fills.start("refresh", body, max_buffer_bytes=1024)
    await fills.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        fills.start("again", body, max_buffer_bytes=1024)


async def test_idle_returns_once_every_fill_has_ended_including_those_without_followers() -> None:
    fills = Fills()
    release = asyncio.Event()
    ended: list[str] = []

    async def body(fill: Fill) -> None:
        fill.set_head(head())
        await release.wait()
        ended.append(fill.key)

    fills.start("refresh", body, max_buffer_bytes=1024)
    assert fills.is_running("refresh")
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(fills.idle())
        release.set()
    assert ended == ["refresh"]
    assert not fills.is_running("refresh")
    await fills.aclose()


async def test_an_expected_error_fails_the_fill_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fills = Fills(expected=(ConnectionRefusedError,))

    async def refused(fill: Fill) -> None:
        raise ConnectionRefusedError("origin down")

    async def broken(fill: Fill) -> None:
        raise ValueError("a bug")

    for key, body in (("a", refused), ("b", broken)):
        with fills.start(key, body, max_buffer_bytes=1024).follow() as follower:
            with pytest.raises((ConnectionRefusedError, ValueError)):
                await follower.head()
    await fills.idle()
    assert [r.getMessage() for r in caplog.records if r.exc_info] == ["fill b failed"]
    await fills.aclose()


async def test_a_key_whose_answer_could_not_be_shared_is_not_followed_until_one_can() -> None:
    fills = Fills()
    shareable = False
    release = asyncio.Event()

    async def body(fill: Fill) -> None:
        fill.set_head(Head(200, CIMultiDict(), is_shareable=shareable))
        await release.wait()

    private = fills.start("k", body, max_buffer_bytes=1024)
    with private.follow() as leader:
        await leader.head()
        # The running fill's answer is known and private: a newcomer would be refused it.
        assert fills.joinable("k") is private and fills.to_follow("k") is None
        release.set()
        assert [c async for c in leader.chunks()] == []
    await fills.idle()
    assert fills.is_unshareable("k")
    release.clear()
    shareable = True
    again = fills.start("k", body, max_buffer_bytes=1024)  # still a keyed fill
    assert fills.to_follow("k") is None  # before its head: the key's last answer counts
    with again.follow() as leader:
        await leader.head()
        release.set()
    await fills.idle()
    assert not fills.is_unshareable("k")
    release.clear()
    third = fills.start("k", body, max_buffer_bytes=1024)
    assert fills.to_follow("k") is third
    release.set()
    await read_all(third)
    await fills.aclose()


async def test_the_memory_of_unshareable_keys_is_bounded_and_drops_the_oldest() -> None:
    fills = Fills(max_unshareable=2)

    async def body(fill: Fill) -> None:
        fill.set_head(Head(200, CIMultiDict(), is_shareable=False))

    for key in ("a", "b", "c"):
        await read_all(fills.start(key, body, max_buffer_bytes=1024))
    await fills.idle()
    assert [fills.is_unshareable(k) for k in ("a", "b", "c")] == [False, True, True]
    await fills.aclose()


async def test_read_gives_what_chunks_would_then_empty_at_the_end() -> None:
    fills = Fills()

    async def body(fill: Fill) -> None:
        fill.set_head(head())
        await fill.feed(b"one ")
        await fill.feed(b"two")

    fill = fills.start("k", body, max_buffer_bytes=1024)
    with fill.follow() as follower:
        await follower.head()
        got = b""
        while data := await follower.read():
            got += data
        assert (got, await follower.read()) == (b"one two", b"")
    await fills.aclose()


async def test_a_follower_leaving_while_it_waits_for_the_head_leaves_the_others_theirs() -> None:
    fills = Fills()
    release = asyncio.Event()

    async def body(fill: Fill) -> None:
        await release.wait()
        fill.set_head(head())

    fill = fills.start("k", body, max_buffer_bytes=1024)
    staying, leaving = fill.follow(), fill.follow()
    gone = leaving.head()
    waiter = gone.send(None)  # run to its await: on its own future, not the fill's head
    waiter.cancel()  # as cancelling its task would
    with pytest.raises(asyncio.CancelledError):
        gone.send(None)
    release.set()
    assert (await staying.head()).status == 200 and not fill.head.cancelled()
    staying.close()
    leaving.close()
    await fills.aclose()
