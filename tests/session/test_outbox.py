"""A consumer's outbox: written at once when the connection takes it, else queued and
bounded; past a bound it is cut off (DISCONNECT_1013) and the consumer resumes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from weaver.session.messages import SlotAppend, encode
from weaver.session.outbox import Outbox


def connection(written: list[bytes]) -> Callable[[bytes], bool]:
    """A connection that takes every message at once (into ``written``)."""

    def write(message: bytes) -> bool:
        written.append(message)
        return True

    return write


def outbox(*, max_messages: int = 3, max_bytes: int = 1000) -> Outbox:
    return Outbox(max_messages=max_messages, max_bytes=max_bytes)


async def drain(box: Outbox) -> list[tuple[int, bytes]]:
    out = []
    while box._items:
        item = await box.get()
        assert item is not None
        out.append(item)
    return out


async def test_a_message_goes_straight_to_the_connection_while_nothing_is_queued() -> None:
    box = outbox()
    written: list[bytes] = []
    box.direct = connection(written)
    box.put(1, b"one")
    box.put(2, b"two")
    assert written == [b"one", b"two"] and await drain(box) == []


async def test_when_the_connection_cannot_take_it_messages_queue_in_seq_order_once() -> None:
    box = outbox()
    box.direct = lambda message: False
    box.put(1, b"a")
    box.put(2, b"b")
    box.put(2, b"b")  # again: put once
    box.put(1, b"a")  # older: already past
    assert await drain(box) == [(1, b"a"), (2, b"b")]


async def test_past_its_message_bound_the_outbox_is_cut_off_and_get_says_none() -> None:
    box = outbox(max_messages=2)
    for seq in (1, 2, 3):
        box.put(seq, b"x")
    assert box.is_overflowed and await box.get() is None
    box.put(4, b"y")  # nothing more is taken
    assert await box.get() is None


async def test_past_its_byte_bound_the_outbox_is_cut_off() -> None:
    box = outbox(max_bytes=10)
    box.put(1, b"12345")
    box.put(2, b"123456")
    assert box.is_overflowed


async def test_a_queued_slots_adjacent_appends_go_as_one_message() -> None:
    box = outbox(max_messages=2)
    box.put(1, encode(SlotAppend("w", "a"), 1))
    box.put(2, encode(SlotAppend("w", "b"), 2))
    box.put(3, encode(SlotAppend("w", "c"), 3))
    assert await drain(box) == [(3, b'{"type":"slot-append","seq":3,"id":"w","html":"abc"}')]


async def test_while_holding_everything_is_kept_to_be_sorted_out_after() -> None:
    box = outbox()
    box.holding = []
    box.put(5, b"e")
    box.put(4, b"d")
    assert box.holding == [(5, b"e"), (4, b"d")] and not box._items


async def test_the_nodes_bye_goes_last_and_is_known_by_identity() -> None:
    box = outbox()
    box.put(1, b"a")
    box.put_unlogged(b"note")
    bye = b'{"type":"bye","seq":1,"reason":"server shutting down"}'
    box.end_with(1, bye)
    items = await drain(box)
    assert items == [(1, b"a"), (1, b"note"), (1, bye)]
    assert box.is_end(items[-1][1]) and not box.is_end((bye + b" ")[:-1])


async def test_get_waits_for_a_message_and_answers_none_once_cut_off() -> None:
    box = outbox()
    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
        got = tasks.create_task(box.get())
        box.put(1, b"a")
        assert await got == (1, b"a")
        cut = tasks.create_task(box.get())
        box.overflow()
        assert await cut is None


async def test_what_a_consumer_missed_is_taken_whole_and_the_bounds_count_from_there() -> None:
    """A resume's replay is bounded by the session's log, not the outbox: were it cut
    off, the client would resume into the same replay and be cut off again."""
    box = outbox(max_messages=2, max_bytes=10)
    for seq in range(1, 6):
        box.put_missed(seq, b"missed")  # 5 messages, 30 bytes: past both bounds
    box.put(6, b"a")
    box.put(7, b"b")  # two behind once it reads: within the bound, nothing cut off
    assert [seq for seq, _ in await drain(box)] == [1, 2, 3, 4, 5, 6, 7]
    for seq in (8, 9, 10):
        box.put(seq, b"x")  # three behind: cut off as ever
    assert box.is_overflowed and await box.get() is None


async def test_a_missed_message_after_live_ones_is_an_ordinary_put() -> None:
    box = outbox(max_messages=1)
    box.put(1, b"live")
    box.put_missed(2, b"late")  # queued behind a live one: it counts
    assert box.is_overflowed
