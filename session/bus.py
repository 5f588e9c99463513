"""The bus: how channel messages, session logs and purges reach every node.

:class:`MemoryBus` is one process. :class:`~weaver.session.redis_bus.RedisBus` puts the
same calls behind Redis, and also offers a :class:`SharedLog`: the sessions' logs and
metadata in Redis, so a session may resume on any node. The hub asks ``bus.shared``:
None means every session lives in this process only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from weaver.config.errors import WeaverError


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """A publication on ``channel``: its JSON ``payload``, and on a shared bus the id
    of its entry in the channel's stream (a session takes each id at most once)."""

    channel: str
    payload: bytes
    id: str | None = None


Handler = Callable[[ChannelMessage], None]
PurgeHandler = Callable[[bytes], Awaitable[object]]
SessionHandler = Callable[[str, int, bytes], None]
UpHandler = Callable[[], Awaitable[None]]


class BusUnavailable(WeaverError):
    """The shared bus did not answer (down, slow past ``bus.timeout``, or refused)."""


@dataclass(frozen=True, slots=True)
class Emit:
    """One server message for a session, as ``head + str(seq) + tail`` (seq is assigned
    where the log lives), with metadata fields written in the same step.

    ``cursor`` (channel, stream id) makes a channel message idempotent per session: a
    session takes each channel entry at most once, whichever nodes deliver it.
    """

    head: bytes
    tail: bytes
    cursor: tuple[str, str] | None = None
    fields: tuple[tuple[str, bytes], ...] = ()

    def message(self, seq: int) -> bytes:
        return b"%s%d%s" % (self.head, seq, self.tail)


@dataclass(frozen=True, slots=True)
class Meta:
    """Session metadata to write (no message); ``subscribed`` starts a channel cursor."""

    fields: tuple[tuple[str, bytes], ...]
    subscribed: str | None = None


Op = Emit | Meta


@dataclass(frozen=True, slots=True)
class Replay:
    """What a consumer attaching from ``last_seq`` gets: the session's last assigned
    seq, and either the messages after ``last_seq`` or ``is_reset``."""

    seq: int
    is_reset: bool
    entries: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session's metadata as the shared log holds it."""

    seq: int
    cookie: str | None = None
    events_url: str | None = None
    channels: tuple[str, ...] = ()
    slots: Mapping[str, bytes] = field(default_factory=dict)  # slot id -> JSON [type, fields]
    cursors: Mapping[str, str] = field(default_factory=dict)  # channel -> last stream id


class SharedLog(Protocol):
    """Sessions' logs and metadata where every node reads them. Every call raises
    :class:`BusUnavailable` rather than wait past the bus timeout."""

    @property
    def is_up(self) -> bool: ...

    async def write(self, session_id: str, ops: Sequence[Op]) -> list[int]:
        """Apply ``ops`` in order; per op, the seq the log gave an :class:`Emit` (0 for
        a :class:`Meta`, or a channel entry the session already took). Messages reach
        every node's consumers through the bus too."""

    async def emit_if_exists(self, session_id: str, emit: Emit) -> bool:
        """Emit to a session held by any node; False if no node knows the session."""

    async def replay(self, session_id: str, last_seq: int) -> Replay: ...

    async def load(self, session_id: str) -> StoredSession | None: ...

    async def channel_since(self, channel: str, after_id: str) -> list[tuple[str, bytes]]:
        """The channel's stream entries after ``after_id``: (id, payload)."""

    async def seed(
        self, session_id: str, stored: StoredSession, entries: Sequence[tuple[int, bytes]]
    ) -> bool:
        """After an outage: write a session this node kept locally, if the shared log is
        behind it. False when the shared log went further (another node wrote)."""

    async def touch(self, session_ids: Sequence[str]) -> None:
        """Push back the expiry of attached sessions' keys."""


class Bus(Protocol):
    shared: SharedLog | None

    async def start(
        self,
        handler: Handler,
        *,
        on_session: SessionHandler | None = None,
        on_up: UpHandler | None = None,
    ) -> None:
        """Deliver every message published on any node to ``handler``; session messages
        written through :attr:`shared` to ``on_session(id, seq, message)``."""

    async def publish(self, channel: str, payload: bytes) -> None:
        """Publish on every node (this one included); never raises for an outage."""

    def on_purge(self, handler: PurgeHandler) -> None:
        """Purges published by other nodes go to ``handler(body)``."""

    async def publish_purge(self, body: bytes) -> bool:
        """Tell every other node to purge ``body``; False if they could not be told."""

    async def stop(self) -> None: ...


class MemoryBus:
    """One process: a publish is delivered at once, in the publisher's call."""

    shared: SharedLog | None = None

    def __init__(self) -> None:
        self._handler: Handler | None = None

    async def start(
        self,
        handler: Handler,
        *,
        on_session: SessionHandler | None = None,
        on_up: UpHandler | None = None,
    ) -> None:
        self._handler = handler

    async def publish(self, channel: str, payload: bytes) -> None:
        if self._handler is not None:
            self._handler(ChannelMessage(channel, payload))

    def on_purge(self, handler: PurgeHandler) -> None:
        pass  # no other node

    async def publish_purge(self, body: bytes) -> bool:
        return True  # no other node to tell

    async def stop(self) -> None:
        self._handler = None
