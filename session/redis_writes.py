"""Sessions' writes to the Redis shared log, batched: one flusher, pipelines of
``BATCH_MAX`` ops.

A channel message's fan-out writes once per subscribed session. Each write queues here
and one flusher sends them in queue order, up to ``BATCH_MAX`` ops per round trip on one
connection (a session's ops never split, so each session's order holds). One connection
per session's write exhausted redis-py's pool (100 connections) at a fan-out to 1,000
sessions: MaxConnectionsError marked the bus down mid-fan-out. The queue is as long as
the writers waiting on it (each awaits its own write): its bound is theirs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from weaver.config.schema import BusConfig
from weaver.session.bus import BusUnavailable, Emit, Op
from weaver.session.redis_layout import log_key, session_key

log = logging.getLogger(__name__)

BATCH_MAX = 256  # ops per round trip

_Write = tuple[str, Sequence[Op], "asyncio.Future[list[int]]"]  # session id, ops, seqs
Outcome = BusUnavailable | list[int]
Call = Callable[[Callable[[], Awaitable[list[Outcome]]]], Awaitable[list[Outcome]]]
EvalSha = Callable[[Any, str, Sequence[str], Sequence[Any]], Any]


def emit_args(
    session_id: str, emit: Emit, config: BusConfig, ttl_s: int, *, must_exist: bool
) -> list[Any]:
    """The ``emit`` script's arguments for one message of ``session_id``."""
    cursor_field, cursor_id = ("", "")
    if emit.cursor is not None:
        cursor_field, cursor_id = f"cur:{emit.cursor[0]}", emit.cursor[1]
    args: list[Any] = [
        session_id,
        emit.head,
        emit.tail,
        config.session_log,
        ttl_s,
        cursor_field,
        cursor_id,
        "1" if must_exist else "0",
    ]
    for name, value in emit.fields:
        args += (name, value)
    return args


class WriteQueue:
    """Queued session writes and their flusher.

    Args:
        call: the bus's bounded, timed call (marks the bus down on an outage).
        new_pipeline: a fresh non-transactional pipeline.
        evalsha: queue a named script on a pipeline.
        tasks: the bus's tasks (the flusher is one: stopping the bus cancels it).
    """

    def __init__(
        self,
        call: Call,
        new_pipeline: Callable[[], Any],
        evalsha: EvalSha,
        config: BusConfig,
        ttl_s: int,
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self._call = call
        self._new_pipeline = new_pipeline
        self._evalsha = evalsha
        self._config = config
        self._ttl_s = ttl_s
        self._tasks = tasks
        self._writes: deque[_Write] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, session_id: str, ops: Sequence[Op]) -> list[int]:
        """Apply ``ops`` in order; the seq of each message (0 for the rest).

        Raises:
            BusUnavailable: Redis failed or refused the write, or the bus stopped.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[int]] = loop.create_future()
        self._writes.append((session_id, ops, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
            self._tasks.add(self._flusher)
            self._flusher.add_done_callback(self._tasks.discard)
        return await done

    async def _flush(self) -> None:
        """Send the queued writes, a pipeline of at most ``BATCH_MAX`` ops per round trip
        (a session's ops never split), in queue order: each session's order holds."""
        try:
            while self._writes:
                batch: list[_Write] = []
                size = 0
                while self._writes and (not batch or size + len(self._writes[0][1]) <= BATCH_MAX):
                    entry = self._writes.popleft()
                    size += len(entry[1])
                    if not entry[2].done():  # its writer was cancelled meanwhile
                        batch.append(entry)
                if not batch:
                    continue
                outcomes: list[Outcome]
                try:
                    outcomes = await self._call(functools.partial(self._pipeline, batch))
                except BusUnavailable as exc:
                    outcomes = [exc] * len(batch)
                for (_, _, done), outcome in zip(batch, outcomes, strict=True):
                    if done.done():
                        continue
                    if isinstance(outcome, BusUnavailable):
                        done.set_exception(outcome)
                    else:
                        done.set_result(outcome)
        finally:  # cancelled (the bus stops): no writer waits for ever
            while self._writes:
                _, _, done = self._writes.popleft()
                if not done.done():
                    done.set_exception(BusUnavailable("the bus stopped"))

    async def _pipeline(self, batch: Sequence[_Write]) -> list[Outcome]:
        """One round trip for ``batch``; per write, its ops' seqs or why it failed."""
        pipe = self._new_pipeline()
        for session_id, ops, _ in batch:
            keys = [session_key(session_id), log_key(session_id)]
            for op in ops:
                if isinstance(op, Emit):
                    args = emit_args(session_id, op, self._config, self._ttl_s, must_exist=False)
                    self._evalsha(pipe, "emit", keys, args)
                else:
                    meta_args: list[Any] = [
                        self._ttl_s,
                        f"cur:{op.subscribed}" if op.subscribed else "",
                    ]
                    for name, value in op.fields:
                        meta_args += (name, value)
                    self._evalsha(pipe, "meta", keys[:1], meta_args)
        results = iter(await pipe.execute(raise_on_error=False))
        outcomes: list[Outcome] = []
        for _, ops, _ in batch:
            replies = [next(results) for _ in ops]
            failed = [r for r in replies if isinstance(r, Exception)]
            for error in failed:
                if isinstance(error, NoScriptError):
                    raise error  # Redis restarted: the call loads the scripts, sends again
            if failed:
                log.error("bus: Redis refused a write: %s", failed[0])
                outcomes.append(BusUnavailable(f"Redis refused: {type(failed[0]).__name__}"))
            else:  # an emit's seq (0: no such session, -1: entry taken), a meta's 1
                outcomes.append(
                    [
                        max(0, int(r)) if isinstance(op, Emit) else 0
                        for op, r in zip(ops, replies, strict=True)
                    ]
                )
        return outcomes
