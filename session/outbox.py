"""One consumer's outbox (a WebSocket or an SSE stream): bounded, never waited on.

Overflow policy DISCONNECT_1013: past ``max_messages`` or ``max_bytes`` the outbox is
emptied and marked; the consumer is closed with 1013 and resumes from the session's log.
What a consumer missed, put as it attaches (:meth:`Outbox.put_missed`), is bounded by the
session's log, not by these bounds: a resume never overflows on its own replay (else
the client would resume into the same replay, and be cut off again).
Fan-out puts without awaiting: when nothing is queued and the connection can take a
message at once (:attr:`Outbox.direct`), it is written without a task switch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from weaver.session.slots import merge_append


class Outbox:
    """One consumer's bounded queue of (seq, message); overflow marks it for 1013."""

    __slots__ = (
        "_backlog",
        "_bytes",
        "_end",
        "_items",
        "_ready",
        "direct",
        "holding",
        "is_overflowed",
        "last_seq",
        "max_bytes",
        "max_messages",
    )

    def __init__(self, *, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.is_overflowed = False
        # Writes a message at once if the connection can take it (returns False if
        # not): fan-out then costs no task switch per consumer. Set by the consumer.
        self.direct: Callable[[bytes], bool] | None = None
        self._items: deque[tuple[int, bytes]] = deque()
        self._bytes = 0  # of the items past the backlog
        self._backlog = 0  # the first items: missed ones, outside the bounds
        self._ready = asyncio.Event()
        self.last_seq = 0  # the last seq put: a message is put once, in seq order
        # While attaching from a shared log: what arrives meanwhile, sorted out after.
        self.holding: list[tuple[int, bytes]] | None = None
        self._end: bytes | None = None  # the node's bye: the consumer closes after it

    def put(self, seq: int, message: bytes) -> None:
        """Enqueue without waiting; past a bound the consumer is to be cut off instead."""
        if self.holding is not None:
            self.holding.append((seq, message))
            return
        if self.is_overflowed or seq <= self.last_seq:
            return
        self.last_seq = seq
        # The fan-out's common case, without a further call: nothing queued, written now.
        if not self._items and self.direct is not None and self.direct(message):
            return
        self._queue(seq, message)

    def put_missed(self, seq: int, message: bytes) -> None:
        """A message the consumer missed, put as it attaches (before anything else): not
        counted against the bounds, which measure how far it falls behind once it reads."""
        if len(self._items) > self._backlog:  # not before everything else: as any put
            self.put(seq, message)
            return
        if self.is_overflowed or seq <= self.last_seq:
            return
        self.last_seq = seq
        self._items.append((seq, message))
        self._backlog += 1
        self._ready.set()

    def put_unlogged(self, message: bytes) -> None:
        """A message outside the log (a node's own ``bye``): numbered like ``hello``."""
        if not self.is_overflowed:
            self._put(self.last_seq, message)

    def end_with(self, seq: int, message: bytes) -> None:
        """Deliver ``message`` (a ``bye``) last: the consumer closes after sending it."""
        self._end = message
        if not self.is_overflowed:
            self._put(seq, message)

    def is_end(self, message: bytes) -> bool:
        """Whether ``message`` is the one :meth:`end_with` gave (by identity)."""
        return message is self._end

    def overflow(self) -> None:
        """Cut the consumer off (1013): it resumes from the log."""
        self.is_overflowed = True
        self._items.clear()
        self._bytes = self._backlog = 0
        self._ready.set()

    def _put(self, seq: int, message: bytes) -> None:
        if not self._items and self.direct is not None and self.direct(message):
            return
        self._queue(seq, message)

    def _queue(self, seq: int, message: bytes) -> None:
        queued = len(self._items) - self._backlog
        if queued:  # queueing: a slot's adjacent chunks go as one (session/slots.py)
            merged = merge_append(self._items[-1][1], message, seq)
            if merged is not None:
                self._bytes -= len(self._items.pop()[1])
                queued -= 1
                message = merged
        if queued >= self.max_messages or self._bytes + len(message) > self.max_bytes:
            self.is_overflowed = True  # DISCONNECT_1013: resumes from the log
            self._items.clear()
            self._bytes = self._backlog = 0
        else:
            self._items.append((seq, message))
            self._bytes += len(message)
        self._ready.set()

    async def get(self) -> tuple[int, bytes] | None:
        """The next message, or None once the outbox overflowed."""
        while not self._items and not self.is_overflowed:
            self._ready.clear()
            await self._ready.wait()
        if self.is_overflowed:
            return None
        seq, message = self._items.popleft()
        if self._backlog:
            self._backlog -= 1
        else:
            self._bytes -= len(message)
        return seq, message
