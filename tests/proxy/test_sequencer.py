"""The sequencer: push order out, every producer at once, errors contained, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from weaver.proxy.errors import SequencerClosed
from weaver.proxy.sequencer import Sequencer


async def delayed(data: bytes, delay_s: float, *, pieces: int = 1) -> AsyncIterator[bytes]:
    await asyncio.sleep(delay_s)
    size = max(1, len(data) // pieces)
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


async def failing(prefix: bytes, delay_s: float = 0.0) -> AsyncIterator[bytes]:
    yield prefix
    await asyncio.sleep(delay_s)
    raise ConnectionResetError("origin went away")


async def collect(seq: Sequencer) -> bytes:
    out = bytearray()
    async for chunk in seq:
        out += chunk
    return bytes(out)


async def test_output_follows_push_order_when_completion_is_reversed() -> None:
    async with Sequencer() as seq:
        for i in range(10):
            seq.push(delayed(f"<{i}>".encode(), 0.01 * (10 - i), pieces=2))
        seq.end()
        assert await collect(seq) == b"".join(f"<{i}>".encode() for i in range(10))


async def test_producers_run_at_once() -> None:
    async with Sequencer() as seq:
        started = time.perf_counter()
        for i in range(10):
            seq.push(delayed(str(i).encode(), 0.1))
        seq.end()
        assert await collect(seq) == b"0123456789"
        elapsed = time.perf_counter() - started
    # Sequential would be 1 s; in parallel it is ~100 ms. A generous sanity bound.
    assert elapsed < 0.6


async def test_direct_bytes_and_nested_sequencers_interleave_in_order() -> None:
    async with asyncio.TaskGroup() as tasks:
        outer = Sequencer(task_group=tasks)
        inner = Sequencer(task_group=tasks)
        outer.push_bytes(b"head|")
        outer.push(inner)
        outer.push_bytes(b"|tail")
        outer.end()
        inner.push(delayed(b"late", 0.05))
        inner.push_bytes(b"+")
        inner.push(delayed(b"early", 0.0))
        inner.end()
        assert await collect(outer) == b"head|late+early|tail"


async def test_head_streams_before_later_parts_finish() -> None:
    first_seen = asyncio.Event()

    async def slow_tail() -> AsyncIterator[bytes]:
        await first_seen.wait()  # would deadlock if the head were held back
        yield b"tail"

    async with Sequencer() as seq:
        seq.push_bytes(b"head")
        seq.push(slow_tail())
        seq.end()
        out = []
        async for chunk in seq:
            out.append(chunk)
            first_seen.set()
        assert b"".join(out) == b"headtail"
        assert out[0] == b"head"


async def test_error_is_contained_to_its_slot_with_on_error() -> None:
    async with Sequencer() as seq:
        seq.push(delayed(b"a", 0.01))
        seq.push(failing(b"partial", 0.01), on_error=lambda exc: b"[fallback]")
        seq.push(delayed(b"c", 0.0))
        seq.end()
        assert await collect(seq) == b"apartial[fallback]c"


async def test_error_without_handler_reaches_the_consumer_at_its_slot() -> None:
    async with Sequencer() as seq:
        seq.push_bytes(b"before")
        seq.push(failing(b"x"))
        seq.end()
        out = bytearray()
        with pytest.raises(ConnectionResetError):
            async for chunk in seq:
                out += chunk
        assert out == b"beforex"


async def test_close_cancels_every_producer_nested_included() -> None:
    cancelled: list[str] = []

    async def forever(name: str) -> AsyncIterator[bytes]:
        try:
            yield name.encode()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async with asyncio.TaskGroup() as tasks:
        outer = Sequencer(task_group=tasks)
        inner = Sequencer(task_group=tasks)
        outer.push(forever("a"))
        outer.push(inner)
        inner.push(forever("b"))
        outer.push(forever("c"))
        async for chunk in outer:
            assert chunk == b"a"
            break  # the client went away after the first bytes
        await asyncio.sleep(0)
    assert sorted(cancelled) == ["a", "b", "c"]


async def test_a_full_buffer_pauses_its_producer() -> None:
    reads = 0

    async def origin() -> AsyncIterator[bytes]:
        nonlocal reads
        for _ in range(1000):
            reads += 1
            yield b"x" * 1024

    async with Sequencer(max_buffer_bytes=8 * 1024) as seq:
        seq.push(delayed(b"head", 3600))  # never done: the second part is never consumed
        seq.push(origin())
        seq.end()
        await asyncio.sleep(0.05)
        paused_at = reads
        await asyncio.sleep(0.05)
        assert reads == paused_at
        assert reads <= 10  # 8 KiB bound of 1 KiB chunks, plus the one that crossed it
        seq.aclose()


async def test_drain_waits_for_the_consumer() -> None:
    async with Sequencer(max_buffer_bytes=100) as seq:
        seq.push_bytes(b"x" * 150)
        waiter = asyncio.get_running_loop().create_future()

        async def drainer() -> None:
            await seq.drain()
            waiter.set_result(None)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(drainer())
            await asyncio.sleep(0.01)
            assert not waiter.done()
            seq.end()
            assert await collect(seq) == b"x" * 150
        assert waiter.done()


async def test_push_after_end_raises() -> None:
    async with Sequencer() as seq:
        seq.end()
        with pytest.raises(SequencerClosed):
            seq.push_bytes(b"late")
        assert await collect(seq) == b""


async def test_push_without_task_group_is_a_clear_error() -> None:
    seq = Sequencer()
    with pytest.raises(RuntimeError, match="task_group"):
        seq.push(delayed(b"x", 0))
