"""This node's copy of a session: its pure state plus what lives in this process.

The state (seq, log, slots, channels, lifecycle) is a
:class:`~weaver.session.protocol.SessionState`; here are the consumers' outboxes, the
session's tasks, its inbound event queue and, with a shared bus, the ops waiting for its
writer. Each message is encoded once (:class:`~weaver.session.bus.Emit`) and numbered
either here (:meth:`Session.deliver_local`) or where the shared log lives.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from weaver.config.schema import SessionConfig
from weaver.session.bus import Emit, Meta, Op, StoredSession
from weaver.session.messages import (
    ClientEvent,
    ServerMessage,
    SlotState,
    encoded,
    slot_state_bytes,
)
from weaver.session.outbox import Outbox
from weaver.session.protocol import Received, SessionState
from weaver.session.resume import SessionLog
from weaver.session.slots import SlotStreams

log = logging.getLogger(__name__)


def emit_of(
    message: ServerMessage,
    *,
    cursor: tuple[str, str] | None = None,
    fields: tuple[tuple[str, bytes], ...] = (),
) -> Emit:
    """``message`` encoded once, to be numbered where the log lives."""
    head, tail = encoded(message)
    return Emit(head, tail, cursor=cursor, fields=fields)


class Session:
    """One visitor's session on this node: its state, consumers and tasks."""

    __slots__ = (
        "event_worker",
        "events",
        "id",
        "is_local_only",
        "outboxes",
        "pending",
        "state",
        "streams",
        "tasks",
        "write_shared",
        "writer",
    )

    def __init__(
        self,
        session_id: str,
        config: SessionConfig,
        *,
        log_max_messages: int,
        log_max_bytes: int,
        now: float,
    ) -> None:
        self.id = session_id
        self.state = SessionState(
            session_id,
            config,
            log_max_messages=log_max_messages,
            log_max_bytes=log_max_bytes,
            now=now,
        )
        self.outboxes: set[Outbox] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.events: asyncio.Queue[ClientEvent] | None = None
        self.event_worker: asyncio.Task[None] | None = None
        # With a shared bus: the hub's writer (set by the hub), what waits for it.
        self.write_shared: Callable[[Session, Op], None] | None = None
        self.pending: deque[Op] = deque()
        self.writer: asyncio.Task[None] | None = None
        self.is_local_only = False  # delivered locally during an outage: to write back
        self.streams = SlotStreams()

    @property
    def log(self) -> SessionLog:
        return self.state.log

    @property
    def channels(self) -> set[str]:
        return self.state.channels

    @property
    def slots(self) -> dict[str, SlotState]:
        return self.state.slots

    def emit(self, message: ServerMessage) -> None:
        self.emit_encoded(emit_of(message))

    def emit_encoded(self, emit: Emit) -> None:
        """Log and deliver ``emit``: here, or through the shared log when there is one."""
        if self.write_shared is not None:
            self.write_shared(self, emit)
        else:
            self.deliver_local(emit)

    def deliver_local(self, emit: Emit) -> None:
        seq, message = self.state.number(emit.head, emit.tail)
        for outbox in self.outboxes:
            outbox.put(seq, message)

    def receive(self, seq: int, message: bytes) -> None:
        """A message numbered by the shared log: to the local log and the consumers."""
        received = self.state.receive(seq, message)
        if received is Received.OLD:
            return
        if received is Received.AFTER_GAP:
            # A notification was missed (the bus reconnected): the local log has a hole,
            # so it started over, and consumers resume from the shared log (1013).
            log.info("session %s missed messages before seq %d", self.id, seq)
            for outbox in self.outboxes:
                if outbox.holding is None:
                    outbox.overflow()
        for outbox in self.outboxes:
            outbox.put(seq, message)

    def write_meta(self, *fields: tuple[str, bytes], subscribed: str | None = None) -> None:
        if self.write_shared is not None:
            self.write_shared(self, Meta(fields, subscribed))

    def set_slot(self, message: SlotState) -> None:
        """The slot's latest state (a reset re-sends it), logged and delivered."""
        self.state.slots[message.id] = message
        self.emit_encoded(
            emit_of(message, fields=((f"slot:{message.id}", slot_state_bytes(message)),))
        )

    def stored(self) -> StoredSession:
        """What the shared log holds of this session, from this node's copy."""
        return StoredSession(
            seq=self.log.last_seq,
            cookie=self.state.cookie,
            events_url=self.state.events_url,
            channels=tuple(sorted(self.channels)),
            slots={k: slot_state_bytes(v) for k, v in self.slots.items()},
        )
