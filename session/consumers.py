"""The consumers' side of the hub: a WebSocket or SSE stream attaching to a session.

A consumer attaches from the last seq it saw and gets what it missed from the log (this
node's, or the shared log's), or ``reset`` and the session's current state when the log
no longer reaches back. Attaching and detaching keep the hub's housekeeping queues: a
session without a consumer is held (:class:`DetachedSessions`), an attached one has its
shared keys' expiry pushed back (:class:`TouchQueue`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from weaver.session.bus import BusUnavailable, SharedLog
from weaver.session.housekeeping import DetachedSessions, TouchQueue
from weaver.session.live import Session
from weaver.session.outbox import Outbox
from weaver.session.slots import reset_messages


class Consumers:
    """Attaches consumers to sessions; counts them (``max_connections`` is the hub's)."""

    def __init__(
        self,
        shared: SharedLog | None,
        history: Callable[[str], Iterable[bytes]],
        *,
        max_messages: int,
        max_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self.shared = shared
        self._history = history
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.clock = clock
        self.connections = 0
        self.detached = DetachedSessions()
        self.touch = TouchQueue()  # attached sessions' shared keys, with a shared bus

    async def attach(self, session: Session, last_seq: int) -> tuple[Outbox, bool, int]:
        """A new consumer from ``last_seq``: (its outbox, whether it resumed, the seq its
        hello carries — the last assigned before anything this attach sends).

        From the shared log when there is one (what arrives while it is read is held and
        sorted out by seq), else from the local log with no await between reading the
        log and attaching: nothing can slip between. Cancel-safe.
        """
        if self.shared is not None and self.shared.is_up and not session.is_local_only:
            try:
                return await self._attach_shared(session, last_seq)
            except BusUnavailable:
                pass  # the local log, as if alone
        return self._attach_local(session, last_seq)

    def _outbox(self) -> Outbox:
        return Outbox(max_messages=self.max_messages, max_bytes=self.max_bytes)

    async def _attach_shared(self, session: Session, last_seq: int) -> tuple[Outbox, bool, int]:
        assert self.shared is not None
        outbox = self._outbox()
        outbox.holding = []
        self._add_consumer(session, outbox)  # the janitor must not drop it during the replay
        try:
            replay = await self.shared.replay(session.id, last_seq)
        except BaseException:
            self._remove_consumer(session, outbox)
            raise
        self.connections += 1
        held, outbox.holding = outbox.holding, None
        if replay.is_reset:
            outbox.last_seq = replay.seq
            self._reset(session)
        else:
            outbox.last_seq = last_seq
            for seq, message in replay.entries:
                outbox.put_missed(seq, message)
        for seq, message in held:
            if seq > outbox.last_seq + 1:
                outbox.overflow()  # a hole: resume from the shared log
            outbox.put_missed(seq, message)
        return outbox, not replay.is_reset and last_seq > 0, replay.seq

    def _attach_local(self, session: Session, last_seq: int) -> tuple[Outbox, bool, int]:
        outbox = self._outbox()
        hello_seq = session.log.last_seq
        outbox.last_seq = min(last_seq, hello_seq)
        missed = session.log.since(last_seq)
        self._add_consumer(session, outbox)
        self.connections += 1
        if missed is None:
            self._reset(session)
        else:
            for seq, message in missed:
                outbox.put_missed(seq, message)
        return outbox, missed is not None and last_seq > 0, hello_seq

    def detach(self, session: Session, outbox: Outbox, *, is_leaving: bool = False) -> None:
        """``is_leaving``: the client closed cleanly (it left the page, not lost the
        network): with no other consumer, its slot streams are cancelled."""
        if outbox not in session.outboxes:
            return
        self.connections -= 1
        if self._remove_consumer(session, outbox) and is_leaving:
            session.streams.cancel_all()

    def _add_consumer(self, session: Session, outbox: Outbox) -> None:
        session.outboxes.add(outbox)
        session.state.attached()
        self.detached.discard(session.id)
        if self.shared is not None:
            self.touch.add(session.id)

    def _remove_consumer(self, session: Session, outbox: Outbox) -> bool:
        """Whether the session has no consumer left."""
        session.outboxes.discard(outbox)
        now = self.clock()
        if not session.state.detached(now):
            return False
        self.detached.detach(session.id, now)
        self.touch.discard(session.id)
        return True

    def _reset(self, session: Session) -> None:
        """The log no longer reaches back: ``reset``, then the current state, logged."""
        history = self._history
        for message in session.state.reset_messages(reset_messages(session.streams), history):
            session.emit(message)

    async def touch_attached(self, now: float, ttl_s: float) -> None:
        """Push back the expiry of attached sessions' shared keys (those due: O(due))."""
        if self.shared is None or not self.shared.is_up:
            return
        due = self.touch.due(now, ttl_s / 3)
        if not due:
            return
        try:
            await self.shared.touch(due)
        except BusUnavailable:
            return
        self.touch.touched(due, now)
