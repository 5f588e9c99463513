"""The in-process bus (session/bus.py MemoryBus): a publish reaches the one handler in
the publisher's call, nothing before start or after stop; no other node to purge; and
the messages it carries (Emit splices its seq in)."""

from __future__ import annotations

import orjson

from tests.session.harness import client, receive, running_hub
from weaver.session.bus import ChannelMessage, Emit, MemoryBus, Replay, StoredSession


async def test_a_publish_reaches_the_handler_in_the_publishers_call_in_order() -> None:
    bus, seen = MemoryBus(), list[ChannelMessage]()
    await bus.start(seen.append)
    await bus.publish("news", b'{"n":1}')
    assert seen == [ChannelMessage("news", b'{"n":1}')]  # no task switch needed
    await bus.publish("deals", b'{"n":2}')
    await bus.publish("news", b'{"n":3}')
    await bus.stop()
    assert [(m.channel, m.payload, m.id) for m in seen] == [
        ("news", b'{"n":1}', None),
        ("deals", b'{"n":2}', None),
        ("news", b'{"n":3}', None),
    ]


async def test_nothing_is_delivered_before_start_or_after_stop() -> None:
    bus, seen = MemoryBus(), list[ChannelMessage]()
    await bus.publish("news", b"1")  # no handler yet: dropped, no error
    await bus.start(seen.append)
    await bus.publish("news", b"2")
    await bus.stop()
    await bus.publish("news", b"3")
    assert [m.payload for m in seen] == [b"2"]


async def test_the_memory_bus_has_no_shared_log_and_no_other_node_to_purge() -> None:
    bus = MemoryBus()
    purged: list[bytes] = []

    async def on_purge(body: bytes) -> None:
        purged.append(body)

    bus.on_purge(on_purge)
    await bus.start(lambda message: None)
    assert bus.shared is None  # every session lives in this process
    assert await bus.publish_purge(b'{"tags":["t"]}') is True  # everyone (no one) told
    await bus.stop()
    assert purged == []  # a node does not purge on its own broadcast


def test_an_emit_splices_its_seq_between_head_and_tail() -> None:
    emit = Emit(b'{"type":"message","seq":', b',"channel":"c","data":1}')
    assert emit.message(7) == b'{"type":"message","seq":7,"channel":"c","data":1}'
    assert orjson.loads(emit.message(12345))["seq"] == 12345
    assert emit.cursor is None and emit.fields == ()


def test_the_shared_logs_records_default_to_empty() -> None:
    assert StoredSession(seq=3) == StoredSession(3, None, None, (), {}, {})
    assert Replay(seq=5, is_reset=True).entries == ()


async def test_a_publication_on_a_hub_with_the_memory_bus_keeps_a_bounded_history() -> None:
    async with running_hub(bus=MemoryBus(), channel_history=2) as running:
        session_id, cookie = running.page()
        assert running.hub.subscribe(session_id, "news")
        async with client(running, cookie) as ws:
            await receive(ws)  # hello
            for n in range(1, 5):
                await running.hub.publish_channel("news", {"n": n})
            received = [(await receive(ws))["data"]["n"] for _ in range(4)]
        history = list(running.hub.channels.history_of("news"))
    assert received == [1, 2, 3, 4]  # each once, in order
    assert history == [b'{"n":3}', b'{"n":4}']  # DROP_OLDEST past channel_history
