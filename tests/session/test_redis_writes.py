"""Sessions' writes to a real Redis, batched: order per session, bounded round trips."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.redis_server import RedisServer
from weaver.config.schema import BusConfig
from weaver.session.bus import ChannelMessage, Emit, Meta
from weaver.session.redis_bus import RedisBus
from weaver.session.redis_writes import BATCH_MAX, emit_args


def ignore(message: ChannelMessage) -> None:
    pass


def test_an_emits_arguments_name_the_session_its_bounds_its_cursor_and_fields() -> None:
    config = BusConfig(url="redis://127.0.0.1:1", session_log=500)
    emit = Emit(b'{"type":"x","seq":', b"}", fields=(("slot:a", b"[1]"),), cursor=("news", "7-0"))
    args = emit_args("s1", emit, config, 60, must_exist=True)
    assert args == ["s1", emit.head, b"}", 500, 60, "cur:news", "7-0", "1", "slot:a", b"[1]"]
    plain = emit_args("s1", Emit(b"h", b"t"), config, 60, must_exist=False)
    assert plain[5:8] == ["", "", "0"]


async def test_a_fan_out_of_writes_goes_in_round_trips_of_at_most_batch_max_ops_in_order(
    redis: RedisServer,
) -> None:
    bus = RedisBus(BusConfig(url=redis.url))
    await bus.start(ignore)
    sizes: list[int] = []
    real = bus._redis.pipeline

    def counted(**options: Any) -> Any:
        pipe = real(**options)
        execute = pipe.execute

        async def execute_counted(**kwargs: Any) -> Any:
            sizes.append(len(pipe.command_stack))
            return await execute(**kwargs)

        pipe.execute = execute_counted  # type: ignore[method-assign,assignment]  # counted, not replaced
        return pipe

    bus._redis.pipeline = counted  # type: ignore[method-assign,assignment]  # counted, not replaced
    sessions = [f"s{i}" for i in range(300)]
    try:
        async with asyncio.timeout(10):
            seqs = await asyncio.gather(
                *(
                    bus.write(
                        s, [Meta((("cookie", b"c"),)), Emit(b'{"seq":', b"}"), Emit(b"a", b"b")]
                    )
                    for s in sessions
                )
            )
            replay = await bus.replay("s7", 0)
    finally:
        await bus.stop()
    assert seqs == [[0, 1, 2]] * 300  # each session numbered its own messages in order
    assert [seq for seq, _ in replay.entries] == [1, 2]
    assert sum(sizes) == 900 and max(sizes) <= BATCH_MAX
    assert len(sizes) < 300  # shared round trips, not one per session
