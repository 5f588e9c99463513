"""Channels: fan-out encodes a publication once and splices each session's seq in;
history is DROP_OLDEST; subscriptions are kept both ways."""

from __future__ import annotations

from collections.abc import Callable

from weaver.config.schema import SessionConfig
from weaver.session.bus import ChannelMessage
from weaver.session.channels import Channels, channel_emit
from weaver.session.live import Session
from weaver.session.outbox import Outbox

CONFIG = SessionConfig(secret="s")


def connection(written: list[bytes]) -> Callable[[bytes], bool]:
    """A connection that takes every message at once (into ``written``)."""

    def write(message: bytes) -> bool:
        written.append(message)
        return True

    return write


def sessions(*ids: str) -> dict[str, Session]:
    return {
        sid: Session(sid, CONFIG, log_max_messages=10, log_max_bytes=10_000, now=0.0) for sid in ids
    }


def listen(session: Session) -> list[bytes]:
    written: list[bytes] = []
    box = Outbox(max_messages=10, max_bytes=10_000)
    box.direct = connection(written)
    session.outboxes.add(box)
    return written


def test_a_publication_reaches_each_subscriber_with_its_own_seq() -> None:
    held = sessions("a", "b", "c")
    channels = Channels(held, history_size=2)
    held["a"].emit_encoded(channel_emit(ChannelMessage("other", b"0")))  # a is at seq 1
    for sid in ("a", "b"):
        channels.add(held[sid], "news")
    seen = {sid: listen(session) for sid, session in held.items()}
    channels.on_publication(ChannelMessage("news", b'{"n":1}'))
    assert seen == {
        "a": [b'{"type":"message","seq":2,"channel":"news","data":{"n":1}}'],
        "b": [b'{"type":"message","seq":1,"channel":"news","data":{"n":1}}'],
        "c": [],
    }
    assert channels.presence("news") == 2


def test_a_publication_that_is_not_json_is_dropped_and_not_kept() -> None:
    held = sessions("a")
    channels = Channels(held, history_size=2)
    channels.add(held["a"], "news")
    seen = listen(held["a"])
    channels.on_publication(ChannelMessage("news", b"{oops"))
    assert seen == [] and channels.history_of("news") == ()


def test_history_keeps_the_last_publications_only() -> None:
    channels = Channels({}, history_size=2)
    for payload in (b"1", b"2", b"3"):
        channels.on_publication(ChannelMessage("news", payload))
    assert list(channels.history_of("news")) == [b"2", b"3"]


def test_a_stream_entry_carries_its_cursor_so_a_session_takes_it_once() -> None:
    emit = channel_emit(ChannelMessage("news", b"1", "7-0"))
    assert emit.cursor == ("news", "7-0") and channel_emit(ChannelMessage("n", b"1")).cursor is None
    assert emit.message(3) == b'{"type":"message","seq":3,"channel":"news","data":1}'


def test_unsubscribing_forgets_the_channel_on_both_sides() -> None:
    held = sessions("a", "b")
    channels = Channels(held, history_size=2)
    channels.add(held["a"], "x")
    channels.add(held["a"], "x")  # again: nothing new
    channels.add(held["b"], "x")
    channels.restore(held["b"], ("y",))
    channels.remove("a", "x")
    assert channels.subscribers == {"x": {"b": held["b"]}, "y": {"b": held["b"]}}
    channels.remove("gone", "x")
    assert held["a"].channels == set() and held["b"].channels == {"x", "y"}


def test_a_dropped_session_leaves_the_subscribers_but_keeps_its_channels() -> None:
    held = sessions("a", "b")
    channels = Channels(held, history_size=2)
    channels.add(held["a"], "x")
    channels.add(held["b"], "x")
    channels.restore(held["b"], ("y",))
    channels.forget(held["b"])
    assert channels.subscribers == {"x": {"a": held["a"]}}
    assert held["b"].channels == {"x", "y"}  # a resume elsewhere keeps them


def test_a_fan_out_reaches_sessions_in_the_order_they_subscribed() -> None:
    held = sessions("c", "a", "b", "d")
    channels = Channels(held, history_size=2)
    order: list[str] = []

    def recorder(session_id: str) -> Callable[[bytes], bool]:
        def write(message: bytes) -> bool:
            order.append(session_id)
            return True

        return write

    for session_id in ("b", "d", "a", "c"):
        box = Outbox(max_messages=10, max_bytes=10_000)
        box.direct = recorder(session_id)
        held[session_id].outboxes.add(box)
        channels.add(held[session_id], "x")
    channels.remove("d", "x")
    channels.add(held["d"], "x")  # again: now the last
    channels.on_publication(ChannelMessage("x", b"1"))
    assert order == ["b", "a", "c", "d"]
