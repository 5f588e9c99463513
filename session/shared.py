"""Writing sessions to a shared log (a Redis bus): one writer per session, in order.

A session's ops (messages and metadata) are queued and written by one writer task per
session, a batch per round trip, each under ``bus.timeout``; the shared log numbers the
messages, the writer delivers them to this node's consumers (:func:`received`) and the
bus brings them to every node's (:meth:`SharedWriter.on_session_message`; a seq
already delivered is skipped). When the bus is down a session delivers
locally (its local log continues the numbering) and is written back when the bus
returns (:meth:`SharedWriter.on_bus_up`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from weaver.session.bus import BusUnavailable, ChannelMessage, Emit, Op, SharedLog, StoredSession
from weaver.session.channels import Channels, channel_emit
from weaver.session.live import Session
from weaver.session.messages import slot_state_from

log = logging.getLogger(__name__)

MAX_BATCH = 256
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


class SharedWriter:
    def __init__(self, shared: SharedLog, sessions: Mapping[str, Session], spawn: Spawn) -> None:
        self.shared = shared
        self._sessions = sessions
        self._spawn = spawn

    def write(self, session: Session, op: Op) -> None:
        """Queue ``op`` for the session's writer (one per session: order is kept)."""
        session.pending.append(op)
        if session.writer is None or session.writer.done():
            session.writer = self._spawn(self._writer(session))

    async def _writer(self, session: Session) -> None:
        """Write the session's ops in order, a batch per round trip; when the bus is
        down (or fails), deliver them locally instead. Bounded: each batch waits at
        most ``bus.timeout``."""
        while session.pending:
            batch = [session.pending.popleft() for _ in range(min(MAX_BATCH, len(session.pending)))]
            if self.shared.is_up and not session.is_local_only:
                before = session.log.last_seq
                try:
                    seqs = await self.shared.write(session.id, batch)
                except BusUnavailable:
                    # Redis may have applied the write all the same (a timeout): what
                    # came back through the bus meanwhile is delivered, not again here.
                    batch = not_received(session, batch, before)
                else:
                    received(session, batch, seqs)
                    continue
            if not session.is_local_only:
                log.warning("session %s: the bus is down; delivering locally", session.id)
                session.is_local_only = True
            for op in batch:
                if isinstance(op, Emit):
                    session.deliver_local(op)

    def on_session_message(self, session_id: str, seq: int, message: bytes) -> None:
        session = self._sessions.get(session_id)
        if session is not None and not session.is_local_only:
            session.receive(seq, message)

    async def on_bus_up(self) -> None:
        """The bus is (back) up: write back the sessions delivered locally meanwhile,
        and every session this node holds if Redis lost them (restarted empty)."""
        for session in list(self._sessions.values()):
            if session.pending and not session.is_local_only:
                continue  # its writer is on it
            while True:  # until no local delivery slipped in during the round trip
                stored = session.stored()
                is_seeded = await self.shared.seed(session.id, stored, session.log.since_oldest())
                if not is_seeded or session.log.last_seq == stored.seq:
                    break
            if not is_seeded:
                if session.is_local_only:
                    log.warning(
                        "session %s: the shared log went further while this node delivered "
                        "locally; its consumers resume from the shared log",
                        session.id,
                    )
                for outbox in session.outboxes:  # they may have missed messages
                    outbox.overflow()
            session.is_local_only = False


def received(session: Session, ops: list[Op], seqs: list[int]) -> None:
    """The shared log numbered ``ops`` (``seqs``): deliver them now, not only when the
    bus's notification comes back. A notification never arrives when the node's
    subscription dropped (the reader reconnecting; Redis cutting a subscriber past its
    pub/sub output buffer limit): the message was lost, and its seq given to the next
    message delivered locally. One after a gap waits for the notification (another
    node's message comes first)."""
    for op, seq in zip(ops, seqs, strict=True):
        if isinstance(op, Emit) and seq == session.log.last_seq + 1:
            session.receive(seq, op.message(seq))


def not_received(session: Session, ops: list[Op], before: int) -> list[Op]:
    """``ops`` but the messages that arrived through the bus since ``before`` (seq):
    a write that failed may have been applied (its reply lost), and delivered."""
    arrived = session.log.since(before) or []
    rest: list[Op] = []
    i = 0
    for op in ops:
        if isinstance(op, Emit):
            while i < len(arrived) and arrived[i][1] != op.message(arrived[i][0]):
                i += 1
            if i < len(arrived):
                i += 1
                continue
        rest.append(op)
    return rest


async def restore(
    shared: SharedLog, session: Session, stored: StoredSession, channels: Channels
) -> None:
    """A session new to this node, as the shared log holds it: its seq, cookie, events
    URL, slots and channels; the channel messages published while no node held it are
    caught up (a channel whose entries cannot be read now is not)."""
    session.log.last_seq = stored.seq
    session.state.cookie, session.state.events_url = stored.cookie, stored.events_url
    for slot, state in stored.slots.items():
        session.slots[slot] = slot_state_from(state)
    channels.restore(session, stored.channels)
    for channel, cursor in stored.cursors.items():
        if channel not in session.channels:
            continue
        try:
            entries = await shared.channel_since(channel, cursor)
        except BusUnavailable:
            continue
        for entry_id, payload in entries:
            session.emit_encoded(channel_emit(ChannelMessage(channel, payload, entry_id)))
