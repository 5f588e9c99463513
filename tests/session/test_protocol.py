"""The session core (pure): feed it client messages and log entries, assert what it says.

Each test reads as a transcript: a session's state, what arrives, what the shells are
told to do (the message to act on, the close code and reason, the frames to deliver).
"""

from __future__ import annotations

import msgspec
import pytest

from weaver.config.schema import SessionConfig
from weaver.session.messages import (
    Ack,
    BadMessage,
    Cancel,
    ClientEvent,
    ClientHello,
    Message,
    Patch,
    Reset,
    Slot,
    SlotDone,
    SlotError,
    Subscribe,
    Unsubscribe,
    encode,
    encoded,
)
from weaver.session.protocol import (
    IllegalTransition,
    Received,
    SessionState,
    State,
    channel_bytes_refusal,
    channel_refusal,
    read_hello,
)

CONFIG = SessionConfig(secret="s", max_subscriptions=2, max_channel_bytes=8)


def state() -> SessionState:
    return SessionState("sid", CONFIG, log_max_messages=3, now=10.0)


def phase(session: SessionState) -> State:
    """The session's state, read afresh (mypy narrows an attribute across calls)."""
    return session.state


# the first message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type":"hello","last_seq":4}', ClientHello(last_seq=4)),
        ('{"type":"hello","session":"a"}', ClientHello(session="a")),
        ('{"type":"subscribe","channel":"c"}', BadMessage(1008, "the first message must be hello")),
        ("{nope", BadMessage(1007, "message is not JSON")),
    ],
)
def test_a_connection_opens_with_hello_or_closes_with_its_code(
    raw: str, expected: ClientHello | BadMessage
) -> None:
    assert read_hello(raw) == expected


# client messages after hello


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            '{"type":"event","id":"e1","name":"add","data":[1]}',
            ClientEvent(id="e1", name="add", data=[1]),
        ),
        ('{"type":"subscribe","channel":"news"}', Subscribe("news")),
        ('{"type":"unsubscribe","channel":"news"}', Unsubscribe("news")),
        ('{"type":"cancel","id":"w1"}', Cancel("w1")),
        ('{"type":"hello"}', BadMessage(1008, "hello must be the first message only")),
        (
            '{"type":"cancel","id":""}',
            BadMessage(1008, "invalid message: slot id must not be empty"),
        ),
        ("[]", BadMessage(1008, "invalid message: Expected `object`, got `array`")),
    ],
)
def test_each_client_message_becomes_what_the_shell_does(
    raw: str, expected: ClientEvent | Subscribe | Unsubscribe | Cancel | BadMessage
) -> None:
    assert state().read(raw) == expected


def test_a_subscribe_past_the_sessions_bounds_closes_with_1008_naming_the_limit() -> None:
    session = state()
    assert session.subscribe("a") and session.subscribe("b")
    assert session.read('{"type":"subscribe","channel":"a"}') == Subscribe("a")  # held: free
    over = session.read('{"type":"subscribe","channel":"c"}')
    assert over == BadMessage(
        1008, "session is at 2 subscriptions; the limit is session.max_subscriptions = 2"
    )
    too_long = state().read('{"type":"subscribe","channel":"ééééé"}')
    assert too_long == BadMessage(
        1008, "channel name is 10 bytes; the limit is session.max_channel_bytes = 8"
    )


def test_channel_refusals_name_the_limit_or_are_none() -> None:
    assert channel_bytes_refusal(CONFIG, "12345678") is None
    assert channel_bytes_refusal(CONFIG, "123456789") == (
        "channel name is 9 bytes; the limit is session.max_channel_bytes = 8"
    )
    assert channel_refusal(CONFIG, {"a", "b"}, "a") is None
    assert channel_refusal(CONFIG, {"a"}, "b") is None
    assert channel_refusal(CONFIG, {"a", "b"}, "c") is not None


def test_subscribe_and_unsubscribe_say_whether_they_changed_anything() -> None:
    session = state()
    assert session.subscribe("a") is True
    assert session.subscribe("a") is False
    assert session.unsubscribe("a") is True
    assert session.unsubscribe("a") is False
    assert session.channels == set()


# lifecycle


def test_a_session_is_attached_while_it_has_a_consumer_and_held_from_the_last_leaving() -> None:
    session = state()
    assert (phase(session), session.detached_at) == (State.DETACHED, 10.0)
    session.attached()
    session.attached()
    assert (phase(session), session.consumers, session.detached_at) == (State.ATTACHED, 2, None)
    assert session.detached(11.0) is False
    assert phase(session) is State.ATTACHED
    assert session.detached(12.0) is True
    assert (phase(session), session.detached_at) == (State.DETACHED, 12.0)
    session.dropped()
    assert phase(session) is State.DROPPED


def test_illegal_transitions_raise_naming_the_session_and_states() -> None:
    session = state()
    with pytest.raises(IllegalTransition, match="no consumer to detach"):
        session.detached(1.0)
    session.attached()
    with pytest.raises(IllegalTransition, match="session sid is attached; not dropped"):
        session.dropped()
    session.detached(1.0)
    session.dropped()
    with pytest.raises(IllegalTransition, match="session sid is dropped; not attached"):
        session.attached()


# the log


def test_messages_numbered_here_get_the_next_seq_and_are_logged_once_encoded() -> None:
    session = state()
    head, tail = encoded(Slot("w1", "<b>1</b>"))
    assert session.number(head, tail) == (1, b'{"type":"slot","seq":1,"id":"w1","html":"<b>1</b>"}')
    assert session.number(*encoded(Reset())) == (2, b'{"type":"reset","seq":2}')
    assert session.log.since(0) == [
        (1, b'{"type":"slot","seq":1,"id":"w1","html":"<b>1</b>"}'),
        (2, b'{"type":"reset","seq":2}'),
    ]


def test_messages_numbered_by_a_shared_log_are_taken_once_and_a_gap_restarts_the_log() -> None:
    session = state()
    one, two, five = (encode(Ack(f"e{n}", True, None), n) for n in (1, 2, 5))
    assert session.receive(1, one) is Received.NEXT
    assert session.receive(1, one) is Received.OLD
    assert session.receive(2, two) is Received.NEXT
    assert session.receive(5, five) is Received.AFTER_GAP
    assert session.log.since(4) == [(5, five)]
    assert session.log.since(2) is None  # what was before the gap is gone: a reset


def test_a_reset_sends_reset_then_slots_then_streams_then_each_channels_history() -> None:
    session = state()
    session.slots["w1"] = Slot("w1", "<i>a</i>")
    session.slots["w2"] = SlotError("w2", "timeout")
    session.slots["w3"] = Patch("w3", "<p>p</p>")
    session.subscribe("b")
    session.subscribe("a")
    history = {"a": [b'{"x":1}'], "b": [b"2", b"3"]}
    messages = session.reset_messages([SlotDone("w4")], lambda channel: history[channel])
    assert [encode(message, 9) for message in messages] == [
        b'{"type":"reset","seq":9}',
        b'{"type":"slot","seq":9,"id":"w1","html":"<i>a</i>"}',
        b'{"type":"slot-error","seq":9,"id":"w2","reason":"timeout"}',
        b'{"type":"patch","seq":9,"id":"w3","html":"<p>p</p>"}',
        b'{"type":"slot-done","seq":9,"id":"w4"}',
        b'{"type":"message","seq":9,"channel":"a","data":{"x":1}}',
        b'{"type":"message","seq":9,"channel":"b","data":2}',
        b'{"type":"message","seq":9,"channel":"b","data":3}',
    ]
    assert messages[5] == Message("a", msgspec.Raw(b'{"x":1}'))
