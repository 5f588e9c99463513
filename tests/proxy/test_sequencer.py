"""The sequencer: push order out, every producer at once, errors contained, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from weaver.proxy.errors import SequencerClosed
from weaver.proxy.sequencer import Sequencer


async def gated(
    data: bytes, gate: asyncio.Event | None = None, *, pieces: int = 1
) -> AsyncIterator[bytes]:
    """``data`` in ``pieces`` once ``gate`` is set (at once without one)."""
    if gate is not None:
        await gate.wait()
    size = max(1, len(data) // pieces)
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def failing(prefix: bytes, gate: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    yield prefix
    if gate is not None:
        await gate.wait()
    raise ConnectionResetError("origin went away")


async def collect(seq: Sequencer) -> bytes:
    out = bytearray()
    async for chunk in seq:
        out += chunk
    return bytes(out)


async def test_output_follows_push_order_when_completion_is_reversed() -> None:
    done: list[int] = []
    gates = [asyncio.Event() for _ in range(10)]

    async def part(i: int) -> AsyncIterator[bytes]:
        await gates[i].wait()
        yield f"<{i}".encode()
        yield b">"
        done.append(i)
        if i:
            gates[i - 1].set()  # the one before finishes after this one

    async with Sequencer() as seq:
        for i in range(10):
            seq.push(part(i))
        seq.end()
        gates[9].set()
        assert await collect(seq) == b"".join(f"<{i}>".encode() for i in range(10))
    assert done == list(range(9, -1, -1))


async def test_producers_run_at_once() -> None:
    # Each producer answers only once all ten have started: run one after another,
    # the first would wait forever (the test's timeout would fail it).
    started: list[int] = []
    all_started = asyncio.Event()

    async def part(i: int) -> AsyncIterator[bytes]:
        started.append(i)
        if len(started) == 10:
            all_started.set()
        await all_started.wait()
        yield str(i).encode()

    async with asyncio.timeout(5), Sequencer() as seq:
        for i in range(10):
            seq.push(part(i))
        seq.end()
        assert await collect(seq) == b"0123456789"
    assert sorted(started) == list(range(10))


async def test_direct_bytes_and_nested_sequencers_interleave_in_order() -> None:
    late = asyncio.Event()

    async def early() -> AsyncIterator[bytes]:
        yield b"early"
        late.set()  # "late" is produced only after "early" is done

    async with asyncio.TaskGroup() as tasks:
        outer = Sequencer(task_group=tasks)
        inner = Sequencer(task_group=tasks)
        outer.push_bytes(b"head|")
        outer.push(inner)
        outer.push_bytes(b"|tail")
        outer.end()
        inner.push(gated(b"late", late))
        inner.push_bytes(b"+")
        inner.push(early())
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
        seq.push(gated(b"a"))
        seq.push(failing(b"partial"), on_error=lambda exc: b"[fallback]")
        seq.push(gated(b"c"))
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
            await asyncio.Event().wait()  # never set
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
        async with aclosing(aiter(outer)) as chunks:
            async for chunk in chunks:
                assert chunk == b"a"
                break  # the client went away after the first bytes
    assert sorted(cancelled) == ["a", "b", "c"]


async def test_a_full_buffer_pauses_its_producer() -> None:
    reads = 0
    crossed = asyncio.Event()  # the chunk that crosses the bound was read
    head_done = asyncio.Event()

    async def origin() -> AsyncIterator[bytes]:
        nonlocal reads
        for _ in range(1000):
            reads += 1
            if reads == 9:
                crossed.set()
            yield b"x" * 1024

    async with Sequencer(max_buffer_bytes=8 * 1024) as seq:
        seq.push(gated(b"head", head_done))  # the second part is not consumed before it
        seq.push(origin())
        seq.end()
        await crossed.wait()
        # The producer ran on from crossed.set() until it blocked: on its full buffer.
        assert reads == 9  # 8 KiB bound of 1 KiB chunks, plus the one that crossed it
        head_done.set()
        assert await collect(seq) == b"head" + b"x" * 1024 * 1000
    assert reads == 1000


async def test_drain_waits_for_the_consumer() -> None:
    async with Sequencer(max_buffer_bytes=100) as seq:
        seq.push_bytes(b"x" * 150)
        entered = asyncio.Event()
        waiter = asyncio.get_running_loop().create_future()

        async def drainer() -> None:
            entered.set()
            await seq.drain()  # returns without suspending if nothing is to wait for
            waiter.set_result(None)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(drainer())
            await entered.wait()
            assert not waiter.done()  # the drainer blocked in drain()
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
        seq.push(gated(b"x"))
