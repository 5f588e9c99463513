"""One session's state and the rules of its protocol (pure: no asyncio, no I/O).

:class:`SessionState` holds what a session is, wherever its consumers are: its
lifecycle (:class:`State`, changed in one place), its numbered log, its slots, its
channels. The shells feed it client messages and log entries and carry out what it
returns: :meth:`SessionState.read` turns a client's raw message into the message to act
on, or a :class:`~weaver.session.messages.BadMessage` to close with;
:meth:`SessionState.number` gives a message its seq; :meth:`SessionState.receive` says
what a message numbered elsewhere does to the log; :meth:`SessionState.reset_messages`
lists what a ``reset`` re-sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from enum import Enum

import msgspec

from weaver.config.errors import WeaverError
from weaver.config.schema import SessionConfig
from weaver.session.errors import POLICY
from weaver.session.messages import (
    BadMessage,
    Cancel,
    ClientEvent,
    ClientHello,
    Message,
    Reset,
    ServerMessage,
    SlotState,
    Subscribe,
    Unsubscribe,
    decode_client_message,
)
from weaver.session.resume import SessionLog

Command = ClientEvent | Subscribe | Unsubscribe | Cancel | BadMessage


class State(Enum):
    DETACHED = "detached"  # no consumer: held ``session_hold_s``, then dropped
    ATTACHED = "attached"  # at least one consumer (WebSocket or SSE)
    DROPPED = "dropped"  # expired or evicted: its tasks are cancelled


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.DETACHED: frozenset({State.ATTACHED, State.DROPPED}),
    State.ATTACHED: frozenset({State.DETACHED}),
    State.DROPPED: frozenset(),
}


class IllegalTransition(WeaverError):
    """A session was asked to go where its lifecycle does not lead (a bug, not a client)."""


class Received(Enum):
    """What a message numbered by a shared log did to this node's copy of the log."""

    OLD = "old"  # already had it: nothing to deliver
    NEXT = "next"  # the next seq: logged, to deliver
    AFTER_GAP = "after-gap"  # seqs were missed: the log started over; consumers resume


def channel_bytes_refusal(config: SessionConfig, channel: str) -> str | None:
    """Why a channel name is refused (over ``session.max_channel_bytes``), or None."""
    size = len(channel.encode("utf-8", "replace"))
    if size > config.max_channel_bytes:
        return (
            f"channel name is {size} bytes; the limit is "
            f"session.max_channel_bytes = {config.max_channel_bytes}"
        )
    return None


def channel_refusal(config: SessionConfig, channels: Set[str], channel: str) -> str | None:
    """Why a session with ``channels`` may not subscribe to ``channel``, or None."""
    if channel in channels:
        return None  # already subscribed: costs nothing
    too_long = channel_bytes_refusal(config, channel)
    if too_long is not None:
        return too_long
    if len(channels) >= config.max_subscriptions:
        return (
            f"session is at {len(channels)} subscriptions; the limit is "
            f"session.max_subscriptions = {config.max_subscriptions}"
        )
    return None


def read_hello(raw: str | bytes) -> ClientHello | BadMessage:
    """A connection's first message: a ``hello``, or why the connection closes."""
    message = decode_client_message(raw)
    if isinstance(message, BadMessage | ClientHello):
        return message
    return BadMessage(POLICY, "the first message must be hello")


class SessionState:
    """One session's state; :meth:`_to` is the one place its :class:`State` changes."""

    __slots__ = (
        "channels",
        "config",
        "consumers",
        "cookie",
        "detached_at",
        "events_url",
        "id",
        "log",
        "slots",
        "state",
    )

    def __init__(
        self,
        session_id: str,
        config: SessionConfig,
        *,
        log_max_messages: int = 256,
        log_max_bytes: int = 256 * 1024,
        now: float = 0.0,
    ) -> None:
        self.id = session_id
        self.config = config
        self.log = SessionLog(max_messages=log_max_messages, max_bytes=log_max_bytes)
        self.state = State.DETACHED
        self.consumers = 0
        self.detached_at: float | None = now
        self.slots: dict[str, SlotState] = {}  # slot id -> its latest message
        self.channels: set[str] = set()
        self.cookie: str | None = None
        self.events_url: str | None = None

    def _to(self, state: State) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"session {self.id} is {self.state.value}; not {state.value}")
        self.state = state

    # lifecycle

    def attached(self) -> None:
        """A consumer attached."""
        if self.consumers == 0:
            self._to(State.ATTACHED)
            self.detached_at = None
        self.consumers += 1

    def detached(self, now: float) -> bool:
        """A consumer went; returns whether none is left (held from ``now``)."""
        if self.consumers == 0:
            raise IllegalTransition(f"session {self.id} has no consumer to detach")
        self.consumers -= 1
        if self.consumers:
            return False
        self._to(State.DETACHED)
        self.detached_at = now
        return True

    def dropped(self) -> None:
        """Expired or evicted: nothing may attach again."""
        self._to(State.DROPPED)

    # the log

    def number(self, head: bytes, tail: bytes) -> tuple[int, bytes]:
        """Log an encoded message here: (its seq, the message)."""
        seq = self.log.next_seq()
        message = b"%s%d%s" % (head, seq, tail)
        self.log.append(seq, message)
        return seq, message

    def receive(self, seq: int, message: bytes) -> Received:
        """A message the shared log numbered ``seq``."""
        if seq <= self.log.last_seq:
            return Received.OLD
        received = Received.NEXT
        if seq != self.log.last_seq + 1:  # a notification was missed: the log starts over
            self.log = SessionLog(max_messages=self.log.max_messages, max_bytes=self.log.max_bytes)
            received = Received.AFTER_GAP
        self.log.last_seq = seq
        self.log.append(seq, message)
        return received

    def reset_messages(
        self, streams: Iterable[ServerMessage], history: Callable[[str], Iterable[bytes]]
    ) -> list[ServerMessage]:
        """What a ``reset`` sends: ``reset``, each slot's state, the streams' state so
        far, then each channel's recent history."""
        messages: list[ServerMessage] = [Reset(), *self.slots.values(), *streams]
        for channel in sorted(self.channels):
            messages.extend(Message(channel, msgspec.Raw(payload)) for payload in history(channel))
        return messages

    # the client's messages

    def read(self, raw: str | bytes) -> Command:
        """A client message after ``hello``: what to act on, or why to close."""
        message = decode_client_message(raw)
        if isinstance(message, ClientHello):
            return BadMessage(POLICY, "hello must be the first message only")
        if isinstance(message, Subscribe):
            refusal = channel_refusal(self.config, self.channels, message.channel)
            if refusal is not None:
                return BadMessage(POLICY, refusal)
        return message

    def subscribe(self, channel: str) -> bool:
        """Whether ``channel`` is new to the session (bounds are the caller's check)."""
        if channel in self.channels:
            return False
        self.channels.add(channel)
        return True

    def unsubscribe(self, channel: str) -> bool:
        """Whether the session was subscribed."""
        if channel not in self.channels:
            return False
        self.channels.discard(channel)
        return True
