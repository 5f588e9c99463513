"""This node's copy of a session: numbering here or through a shared log, slot state."""

from __future__ import annotations

from weaver.config.schema import SessionConfig
from weaver.session.bus import Emit, Meta, Op
from weaver.session.live import Session
from weaver.session.messages import Ack, SlotError, encode
from weaver.session.outbox import Outbox


def session() -> Session:
    return Session("sid", SessionConfig(secret="s"), log_max_messages=9, log_max_bytes=9999, now=0)


def test_without_a_shared_log_a_message_is_numbered_here_and_delivered() -> None:
    live = session()
    box = Outbox(max_messages=9, max_bytes=9999)
    live.outboxes.add(box)
    live.emit(Ack("e1", True, None))
    assert box._items[0] == (1, b'{"type":"ack","seq":1,"event":"e1","ok":true,"error":null}')
    assert live.log.last_seq == 1


def test_with_a_shared_log_a_slot_goes_to_the_writer_with_its_state() -> None:
    live = session()
    ops: list[Op] = []
    live.write_shared = lambda _, op: ops.append(op)
    live.set_slot(SlotError("w", "timeout"))
    live.write_meta(("channels", b'["a"]'), subscribed="a")
    assert ops == [
        Emit(
            b'{"type":"slot-error","seq":',
            b',"id":"w","reason":"timeout"}',
            fields=(("slot:w", b'["slot-error",{"id":"w","reason":"timeout"}]'),),
        ),
        Meta((("channels", b'["a"]'),), "a"),
    ]
    assert live.log.last_seq == 0 and live.stored().slots == {"w": ops[0].fields[0][1]}


def test_a_message_after_a_gap_cuts_consumers_off_to_resume_from_the_shared_log() -> None:
    live = session()
    box, attaching = Outbox(max_messages=9, max_bytes=9999), Outbox(max_messages=9, max_bytes=9)
    attaching.holding = []
    live.outboxes.update((box, attaching))
    one, four = encode(Ack("a", True, None), 1), encode(Ack("b", True, None), 4)
    live.receive(1, one)
    live.receive(1, one)  # again: already had it
    live.receive(4, four)
    assert box.is_overflowed and not attaching.is_overflowed
    assert attaching.holding == [(1, one), (4, four)]
    assert live.log.since(3) == [(4, four)]
