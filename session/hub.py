"""The session hub: every visitor's session, its log, its sockets, its suspense and events.

A session exists from the moment a page is served (so suspense results and channel
messages published before the socket opens are kept), whether or not a socket is open.
Every page served gets a new session (rotation: see :meth:`SessionHub.open_for_page`).
Each server message gets the session's next ``seq`` and goes to the session's bounded
log and to every open consumer (WebSocket or SSE) of the session.

Queues and their overflow policies:

- a consumer's outbox: bounded by count and bytes; DISCONNECT_1013 — the consumer is
  closed with 1013 and resumes from the log; fan-out never waits for it.
- the session log: DROP_OLDEST; a resume that no longer reaches back gets ``reset``.
- inbound events: bounded per session; PAUSE_READING — the socket is not read until
  the origin has taken some.
- a channel's history: DROP_OLDEST, the last ``channel_history`` messages.
- a session's channels: at most ``session.max_subscriptions``, each name at most
  ``session.max_channel_bytes``; a client over either is closed with 1008, a page's
  extra ``<weaver-subscribe>`` is ignored with a warning.
- sessions without a consumer are held ``session_hold_s`` then dropped (their fetches
  cancelled); past ``max_sessions`` the longest-detached session is dropped first. Both
  take the front of a queue ordered by detach time (session/housekeeping.py): a tick
  costs O(expired), an eviction O(1), never a scan of every session.

With a shared bus (Redis, ``bus.shared``) the log and the metadata live there: a
session's messages are written in order by one writer task per session (batched, each
batch under ``bus.timeout``), numbered where the log lives, and reach the consumers of
every node through the bus; a consumer attaches from the shared log, so a visitor may
resume on any node. When the bus is down a session delivers locally (its local log
continues the numbering) and is written back when the bus returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence, Set
from typing import Any

import aiohttp
import orjson

from weaver.config.schema import SessionConfig
from weaver.session import auth
from weaver.session.bus import (
    Bus,
    BusUnavailable,
    ChannelMessage,
    Emit,
    MemoryBus,
    Meta,
    Op,
    SharedLog,
    StoredSession,
)
from weaver.session.errors import POLICY, SessionError
from weaver.session.housekeeping import DetachedSessions, TouchQueue
from weaver.session.protocol import ClientEvent, encode, encode_parts
from weaver.session.resume import SessionLog
from weaver.session.slots import SlotProducer, SlotStreams, merge_append, reset_messages, run_slot

log = logging.getLogger(__name__)

SuspenseFetch = Callable[[], Awaitable[str]]
EVENT_RETRIES_S = (0.1, 0.3, 0.9)  # waits before the 2nd, 3rd and 4th delivery attempt


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


class Outbox:
    """One consumer's bounded queue of (seq, message); overflow marks it for 1013."""

    __slots__ = (
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
        self._bytes = 0
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
        self._put(seq, message)

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
        self._bytes = 0
        self._ready.set()

    def _put(self, seq: int, message: bytes) -> None:
        if not self._items and self.direct is not None and self.direct(message):
            return
        if self._items:  # queueing: a slot's adjacent chunks go as one (session/slots.py)
            merged = merge_append(self._items[-1][1], message, seq)
            if merged is not None:
                self._bytes -= len(self._items.pop()[1])
                message = merged
        if len(self._items) >= self.max_messages or self._bytes + len(message) > self.max_bytes:
            self.is_overflowed = True  # DISCONNECT_1013: resumes from the log
            self._items.clear()
            self._bytes = 0
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
        self._bytes -= len(message)
        return seq, message


class Session:
    """One visitor's session: the log, the consumers, the state a reset re-sends."""

    def __init__(
        self, session_id: str, *, log_max_messages: int, log_max_bytes: int, now: float
    ) -> None:
        self.id = session_id
        self.log = SessionLog(max_messages=log_max_messages, max_bytes=log_max_bytes)
        self.outboxes: set[Outbox] = set()
        self.channels: set[str] = set()
        self.slots: dict[str, tuple[str, dict[str, Any]]] = {}  # slot id -> latest message
        self.cookie: str | None = None
        self.events_url: str | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.events: asyncio.Queue[ClientEvent] | None = None
        self.event_worker: asyncio.Task[None] | None = None
        self.detached_at: float | None = now  # no consumer yet (set by the hub)
        # With a shared bus: the hub's writer (set by the hub), what waits for it.
        self.write_shared: Callable[[Session, Op], None] | None = None
        self.pending: deque[Op] = deque()
        self.writer: asyncio.Task[None] | None = None
        self.is_local_only = False  # delivered locally during an outage: to write back
        self.streams = SlotStreams()

    def emit(self, message_type: str, **fields: Any) -> None:
        head, tail = encode_parts(message_type, **fields)
        self.emit_encoded(Emit(head, tail))

    def emit_encoded(self, emit: Emit) -> None:
        """Log and deliver ``emit``: here, or through the shared log when there is one."""
        if self.write_shared is not None:
            self.write_shared(self, emit)
        else:
            self.deliver_local(emit)

    def deliver_local(self, emit: Emit) -> None:
        seq = self.log.next_seq()
        message = emit.message(seq)
        self.log.append(seq, message)
        for outbox in self.outboxes:
            outbox.put(seq, message)

    def receive(self, seq: int, message: bytes) -> None:
        """A message numbered by the shared log: to the local log and the consumers."""
        if seq <= self.log.last_seq:
            return
        if seq != self.log.last_seq + 1:
            # A notification was missed (the bus reconnected): the local log has a hole,
            # so it starts over, and consumers resume from the shared log (1013).
            log.info("session %s missed seqs %d..%d", self.id, self.log.last_seq + 1, seq - 1)
            self.log = SessionLog(max_messages=self.log.max_messages, max_bytes=self.log.max_bytes)
            for outbox in self.outboxes:
                if outbox.holding is None:
                    outbox.overflow()
        self.log.last_seq = seq
        self.log.append(seq, message)
        for outbox in self.outboxes:
            outbox.put(seq, message)

    def write_meta(self, *fields: tuple[str, bytes], subscribed: str | None = None) -> None:
        if self.write_shared is not None:
            self.write_shared(self, Meta(fields, subscribed))

    def set_slot(self, message_type: str, slot: str, **fields: Any) -> None:
        self.slots[slot] = (message_type, {"id": slot, **fields})
        head, tail = encode_parts(message_type, id=slot, **fields)
        state = orjson.dumps([message_type, {"id": slot, **fields}])
        self.emit_encoded(Emit(head, tail, fields=((f"slot:{slot}", state),)))

    def stored(self) -> StoredSession:
        """What the shared log holds of this session, from this node's copy."""
        return StoredSession(
            seq=self.log.last_seq,
            cookie=self.cookie,
            events_url=self.events_url,
            channels=tuple(sorted(self.channels)),
            slots={k: orjson.dumps(list(v)) for k, v in self.slots.items()},
        )


class SessionHub:
    """Sessions of this process and the WebSocket listener serving them.

    Args:
        config: ``[session]``: listen address, secret, publish token.
        bus: how channel messages reach every node (in-process by default).
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        bus: Bus | None = None,
        max_sessions: int = 100_000,
        max_connections: int = 20_000,
        outbound_max_messages: int = 256,
        outbound_max_bytes: int = 1024 * 1024,
        log_max_messages: int = 256,
        log_max_bytes: int = 256 * 1024,
        session_hold_s: float = 60.0,
        ping_interval_s: float = 20.0,
        hello_timeout_s: float = 10.0,
        events_max_pending: int = 32,
        event_timeout_s: float = 5.0,
        channel_history: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not config.secret:
            raise ValueError("session.secret is required to sign session tokens")
        self.config = config
        self.bus = bus or MemoryBus()
        self.max_sessions = max_sessions
        self.max_connections = max_connections
        self.outbound_max_messages = outbound_max_messages
        self.outbound_max_bytes = outbound_max_bytes
        self.log_max_messages = log_max_messages
        self.log_max_bytes = log_max_bytes
        self.session_hold_s = session_hold_s
        self.ping_interval_s = ping_interval_s
        self.hello_timeout_s = hello_timeout_s
        self.events_max_pending = events_max_pending
        self.event_timeout_s = event_timeout_s
        self.shared: SharedLog | None = self.bus.shared
        self.sessions: dict[str, Session] = {}
        self.subscribers: dict[str, set[str]] = {}  # channel -> session ids
        self.history: dict[str, deque[bytes]] = {}  # channel -> its last payloads (JSON)
        self.channel_history = channel_history
        self.connections = 0
        self.clock = clock  # detach times and expiry (tests inject one)
        self._detached = DetachedSessions()
        self._touch = TouchQueue()  # attached sessions' shared keys, with a shared bus
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._server: Any = None
        self._is_stopping = False

    # lifecycle

    async def start(self, **listen: Any) -> None:
        """Listen on ``session.listen`` (port 0 picks one: see :attr:`port`); ``listen``
        goes to the listener (``ssl``, ``reuse_port``)."""
        from weaver.session.server import serve  # the websockets edge

        self._http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        await self.bus.start(
            self._on_bus_message, on_session=self._on_session_message, on_up=self._on_bus_up
        )
        self._server = await serve(self, **listen)
        self.spawn(self._janitor())

    @property
    def port(self) -> int:
        sockets = self._server.sockets if self._server is not None else ()
        port: int = next(iter(sockets)).getsockname()[1]
        return port

    async def stop(self) -> None:
        """Say ``bye`` to every session, close sockets with 1001, stop every task."""
        if self._is_stopping:
            return
        self._is_stopping = True
        for session in self.sessions.values():
            if not session.outboxes:
                continue
            if self.shared is None:
                seq = session.log.next_seq()
                bye = encode("bye", seq, reason="server shutting down")
                session.log.append(seq, bye)
            else:  # not logged: a resume on another node must not replay this node's bye
                seq = session.log.last_seq
                bye = encode("bye", seq, reason="server shutting down")
            for outbox in session.outboxes:
                outbox.end_with(seq, bye)
        writers = [s.writer for s in self.sessions.values() if s.writer is not None]
        if writers:  # messages on their way to the shared log get there first
            await asyncio.wait(writers, timeout=2 * self._timeout_s())
        for _ in range(50):  # let writers send their bye (at most 0.5 s)
            if not any(s.outboxes for s in self.sessions.values()):
                break
            await asyncio.sleep(0.01)
        if self._server is not None:
            from weaver.session.server import close

            await close(self._server)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.bus.stop()
        if self._http is not None:
            await self._http.close()

    def spawn(
        self, coro: Coroutine[Any, Any, None], owner: set[asyncio.Task[None]] | None = None
    ) -> asyncio.Task[None]:
        """Run ``coro`` owned by the hub (and ``owner``); :meth:`stop` cancels it."""
        task = asyncio.get_running_loop().create_task(coro)
        for tasks in (self._tasks, owner):
            if tasks is not None:
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        return task

    # the proxy's side

    def open_for_page(
        self, cookie_header: str | None, *, events_url: str | None = None, secure: bool = False
    ) -> tuple[str, str]:
        """A brand-new session for a page being served: (its id, its Set-Cookie value).

        Every page gets a new session and a new token (rotation), even when the request
        carries a valid session cookie: joining the session a cookie names would let an
        attacker who plants their own session cookie in a victim's browser (a sibling
        subdomain, a plain-HTTP response, a Set-Cookie injection) read the victim's
        personal suspense slots on the attacker's socket, and send the attacker's events to
        the origin with the victim's cookies. Binding the session to a second cookie would
        not help: whoever can plant one cookie can plant two. Over TLS (``secure``) the
        cookie is ``__Host-weaver_session``, which a subdomain cannot set at all.

        The visitor's cookies are kept for event delivery with the session cookies taken
        out (:func:`auth.strip_session_cookie`): Weaver's token never reaches an origin.
        The cookie is set outside the body, so the paint stays shared.
        """
        now = time.time()
        session_id = auth.new_session_id()
        while session_id in self.sessions:  # 128 random bits: never, but never join
            session_id = auth.new_session_id()
        set_cookie = auth.cookie_header_value(
            auth.issue(self.config.secret, session_id, now), secure=secure
        )
        session = self.session(session_id)
        session.cookie = auth.strip_session_cookie(cookie_header)
        session.events_url = events_url
        session.write_meta(
            ("cookie", (session.cookie or "").encode()), ("events", (events_url or "").encode())
        )
        return session_id, set_cookie

    def session(self, session_id: str) -> Session:
        """This node's copy of the session (a new one if it has none)."""
        session = self.sessions.get(session_id)
        if session is None:
            if len(self.sessions) >= self.max_sessions:
                self._drop_longest_detached()
            now = self.clock()
            session = Session(
                session_id,
                log_max_messages=self.log_max_messages,
                log_max_bytes=self.log_max_bytes,
                now=now,
            )
            if self.shared is not None:
                session.write_shared = self._write_shared
            self.sessions[session_id] = session
            self._detached.detach(session_id, now)
        return session

    async def load(self, session_id: str) -> Session:
        """The session, as the shared log knows it when this node has no copy: its seq,
        cookie, events URL, slots and channels; the channel messages published while
        no node held it are caught up. Without a shared bus (or with it down): as
        :meth:`session`."""
        if session_id in self.sessions or self.shared is None or not self.shared.is_up:
            return self.session(session_id)
        try:
            stored = await self.shared.load(session_id)
        except BusUnavailable:
            stored = None
        if session_id in self.sessions or stored is None:
            return self.session(session_id)
        session = self.session(session_id)
        session.log.last_seq = stored.seq
        session.cookie, session.events_url = stored.cookie, stored.events_url
        for slot, state in stored.slots.items():
            message_type, fields = orjson.loads(state)
            session.slots[slot] = (message_type, fields)
        for channel in stored.channels:
            session.channels.add(channel)
            self.subscribers.setdefault(channel, set()).add(session_id)
        for channel, cursor in stored.cursors.items():
            if channel in session.channels:
                await self._catch_up(session, channel, cursor)
        return session

    async def _catch_up(self, session: Session, channel: str, cursor: str) -> None:
        assert self.shared is not None
        try:
            entries = await self.shared.channel_since(channel, cursor)
        except BusUnavailable:
            return
        for entry_id, payload in entries:
            session.emit_encoded(self._channel_emit(ChannelMessage(channel, payload, entry_id)))

    # the shared log's side

    def _timeout_s(self) -> float:
        timeout_s: float = getattr(getattr(self.bus, "config", None), "timeout_s", 1.0)
        return timeout_s

    def _write_shared(self, session: Session, op: Op) -> None:
        """Queue ``op`` for the session's writer (one per session: order is kept)."""
        session.pending.append(op)
        if session.writer is None or session.writer.done():
            session.writer = self.spawn(self._writer(session))

    async def _writer(self, session: Session) -> None:
        """Write the session's ops in order, a batch per round trip; when the bus is
        down (or fails), deliver them locally instead. Bounded: each batch waits at
        most ``bus.timeout``."""
        assert self.shared is not None
        while session.pending:
            batch = [session.pending.popleft() for _ in range(min(256, len(session.pending)))]
            if self.shared.is_up and not session.is_local_only:
                try:
                    await self.shared.write(session.id, batch)
                    continue  # delivered through the bus: _on_session_message
                except BusUnavailable:
                    pass
            if not session.is_local_only:
                log.warning("session %s: the bus is down; delivering locally", session.id)
                session.is_local_only = True
            for op in batch:
                if isinstance(op, Emit):
                    session.deliver_local(op)

    def _on_session_message(self, session_id: str, seq: int, message: bytes) -> None:
        session = self.sessions.get(session_id)
        if session is not None and not session.is_local_only:
            session.receive(seq, message)

    async def _on_bus_up(self) -> None:
        """The bus is (back) up: write back the sessions delivered locally meanwhile,
        and every session this node holds if Redis lost them (restarted empty)."""
        assert self.shared is not None
        for session in list(self.sessions.values()):
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

    def run_suspense(
        self, session_id: str, fetches: Sequence[tuple[str, SuspenseFetch]]
    ) -> list[asyncio.Task[None]]:
        """Start the suspense fetches now; results go on the session in completion order.

        The session owns them (a socket may open later). The caller may cancel the
        returned tasks sooner: the page request does when its client goes away.
        """
        session = self.session(session_id)
        return [
            self.spawn(self._suspense(session, slot, fetch), session.tasks)
            for slot, fetch in fetches
        ]

    def run_slot_streams(
        self, session_id: str, producers: Sequence[tuple[str, SlotProducer]]
    ) -> list[asyncio.Task[None]]:
        """Start slot producers now (session/slots.py); like :meth:`run_suspense`, the
        session owns them, and a client's ``cancel`` or departure stops them."""
        session = self.session(session_id)
        tasks = []
        for slot, producer in producers:
            stream = session.streams.new(slot)
            stream.task = self.spawn(run_slot(session, stream, producer), session.tasks)
            tasks.append(stream.task)
        return tasks

    async def _suspense(self, session: Session, slot: str, fetch: SuspenseFetch) -> None:
        try:
            html = await fetch()
        except TimeoutError:
            session.set_slot("slot-error", slot, reason="timeout")
        except Exception as exc:
            log.info("suspense %s for session %s failed: %s", slot, session.id, exc)
            session.set_slot("slot-error", slot, reason="error")
        else:
            session.set_slot("slot", slot, html=html)

    def subscribe(self, session_id: str, channel: str) -> bool:
        """Subscribe a session to ``channel`` for a page (a ``<weaver-subscribe>``).

        A name over ``session.max_channel_bytes``, or a session already at
        ``session.max_subscriptions``, is ignored with a warning: the page is still served.
        Returns whether the session is subscribed.
        """
        session = self.session(session_id)
        refusal = channel_refusal(self.config, session.channels, channel)
        if refusal is not None:
            log.warning("subscribe ignored for session %s: %s", session_id, refusal)
            return False
        self._add_subscriber(session, channel)
        return True

    def subscribe_client(self, session: Session, channel: str) -> None:
        """Subscribe for a client's ``subscribe`` message.

        Raises:
            SessionError: 1008 over ``session.max_channel_bytes`` or
                ``session.max_subscriptions``.
        """
        refusal = channel_refusal(self.config, session.channels, channel)
        if refusal is not None:
            raise SessionError(POLICY, refusal)
        self._add_subscriber(session, channel)

    def _add_subscriber(self, session: Session, channel: str) -> None:
        is_new = channel not in session.channels
        session.channels.add(channel)
        self.subscribers.setdefault(channel, set()).add(session.id)
        if is_new:
            session.write_meta(
                ("channels", orjson.dumps(sorted(session.channels))), subscribed=channel
            )

    def unsubscribe(self, session_id: str, channel: str) -> None:
        session = self.sessions.get(session_id)
        if session is not None and channel in session.channels:
            session.channels.discard(channel)
            session.write_meta(("channels", orjson.dumps(sorted(session.channels))))
        members = self.subscribers.get(channel)
        if members is not None:
            members.discard(session_id)
            if not members:
                del self.subscribers[channel]

    async def publish_channel(self, channel: str, data: Any) -> int:
        """Publish to every session subscribed to ``channel`` (on every node via the bus)."""
        await self.bus.publish(channel, orjson.dumps(data))
        return self.presence(channel)

    def _on_bus_message(self, message: ChannelMessage) -> None:
        try:
            orjson.loads(message.payload)  # once per message: it is spliced in as it is
        except orjson.JSONDecodeError:
            log.warning("channel %r: a publication is not JSON; dropped", message.channel)
            return
        history = self.history.setdefault(message.channel, deque(maxlen=self.channel_history))
        history.append(message.payload)
        emit = self._channel_emit(message)  # encoded once for every session
        sessions = self.sessions
        for session_id in self.subscribers.get(message.channel, ()):
            session = sessions.get(session_id)
            if session is not None:
                session.emit_encoded(emit)  # per session: its seq spliced in, one format

    @staticmethod
    def _channel_emit(message: ChannelMessage) -> Emit:
        head, tail = encode_parts("message", channel=message.channel, data=None)
        tail = tail.removesuffix(b"null}") + message.payload + b"}"
        cursor = (message.channel, message.id) if message.id is not None else None
        return Emit(head, tail, cursor=cursor)

    def publish_session(self, session_id: str, data: Any) -> int:
        """Publish to one session this node holds (0 if it holds none by that id)."""
        session = self.sessions.get(session_id)
        if session is None:
            return 0
        session.emit("message", channel=None, data=data)
        return 1

    async def publish_to_session(self, session_id: str, data: Any) -> int:
        """Publish to one session wherever it is: this node's, else the shared log's."""
        if session_id in self.sessions or self.shared is None:
            return self.publish_session(session_id, data)
        head, tail = encode_parts("message", channel=None, data=data)
        try:
            return int(await self.shared.emit_if_exists(session_id, Emit(head, tail)))
        except BusUnavailable:
            return 0

    def presence(self, channel: str) -> int:
        return len(self.subscribers.get(channel, ()))

    # the consumers' side (WebSocket, SSE)

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

    async def _attach_shared(self, session: Session, last_seq: int) -> tuple[Outbox, bool, int]:
        assert self.shared is not None
        outbox = Outbox(max_messages=self.outbound_max_messages, max_bytes=self.outbound_max_bytes)
        outbox.holding = []
        session.outboxes.add(outbox)
        self._mark_attached(session)  # the janitor must not drop it during the replay
        try:
            replay = await self.shared.replay(session.id, last_seq)
        except BaseException:
            session.outboxes.discard(outbox)
            if not session.outboxes:
                self._mark_detached(session)
            raise
        self.connections += 1
        held, outbox.holding = outbox.holding, None
        if replay.is_reset:
            outbox.last_seq = replay.seq
            self._reset(session)
        else:
            outbox.last_seq = last_seq
            for seq, message in replay.entries:
                outbox.put(seq, message)
        for seq, message in held:
            if seq > outbox.last_seq + 1:
                outbox.overflow()  # a hole: resume from the shared log
            outbox.put(seq, message)
        return outbox, not replay.is_reset and last_seq > 0, replay.seq

    def _attach_local(self, session: Session, last_seq: int) -> tuple[Outbox, bool, int]:
        outbox = Outbox(max_messages=self.outbound_max_messages, max_bytes=self.outbound_max_bytes)
        hello_seq = session.log.last_seq
        outbox.last_seq = min(last_seq, hello_seq)
        missed = session.log.since(last_seq)
        session.outboxes.add(outbox)
        self._mark_attached(session)
        self.connections += 1
        if missed is None:
            self._reset(session)
        else:
            for seq, message in missed:
                outbox.put(seq, message)
        return outbox, missed is not None and last_seq > 0, hello_seq

    def detach(self, session: Session, outbox: Outbox, *, is_leaving: bool = False) -> None:
        """``is_leaving``: the client closed cleanly (it left the page, not lost the
        network): with no other consumer, its slot streams are cancelled."""
        if outbox in session.outboxes:
            session.outboxes.discard(outbox)
            self.connections -= 1
        if not session.outboxes:
            self._mark_detached(session)
            if is_leaving:
                session.streams.cancel_all()

    def _mark_attached(self, session: Session) -> None:
        session.detached_at = None
        self._detached.discard(session.id)
        if self.shared is not None:
            self._touch.add(session.id)

    def _mark_detached(self, session: Session) -> None:
        session.detached_at = now = self.clock()
        self._detached.detach(session.id, now)
        self._touch.discard(session.id)

    def _reset(self, session: Session) -> None:
        """The log no longer reaches back: ``reset``, then the current state, logged."""
        session.emit("reset")
        for message_type, fields in session.slots.values():
            session.emit(message_type, **fields)
        for message_type, fields in reset_messages(session.streams):
            session.emit(message_type, **fields)
        for channel in sorted(session.channels):
            for payload in self.history.get(channel, ()):
                session.emit_encoded(self._channel_emit(ChannelMessage(channel, payload)))

    def offer_event(self, session: Session, event: ClientEvent) -> Awaitable[None]:
        """Queue ``event`` for the origin; the awaitable waits while the queue is full."""
        if session.events is None:
            session.events = asyncio.Queue(maxsize=self.events_max_pending)
        if session.event_worker is None or session.event_worker.done():
            session.event_worker = self.spawn(self._deliver_events(session), session.tasks)
        return session.events.put(event)  # PAUSE_READING: the reader awaits this

    async def _deliver_events(self, session: Session) -> None:
        """POST the session's events to the origin, in order, each at least once."""
        assert session.events is not None
        while True:
            try:
                event = await asyncio.wait_for(session.events.get(), timeout=5.0)
            except TimeoutError:
                return  # idle: the next event starts a new worker
            ok, error = await self._post_event(session, event)
            session.emit("ack", event=event.id, ok=ok, error=error)

    async def _post_event(self, session: Session, event: ClientEvent) -> tuple[bool, str | None]:
        if not session.events_url or self._http is None:
            return False, "no events endpoint is configured"
        body = orjson.dumps(
            {
                "session": session.id,
                "event": {
                    "id": event.id,
                    "name": event.name,
                    "target": event.target,
                    "data": event.data,
                },
            }
        )
        headers = {"Content-Type": "application/json"}
        if session.cookie:
            headers["Cookie"] = session.cookie
        error = "origin unreachable"
        for attempt, wait_s in enumerate((0.0, *EVENT_RETRIES_S)):
            if wait_s:
                await asyncio.sleep(wait_s)
            try:
                async with asyncio.timeout(self.event_timeout_s):
                    async with self._http.post(
                        session.events_url, data=body, headers=headers
                    ) as resp:
                        if resp.status >= 500:
                            error = f"origin answered {resp.status}"
                            continue  # retried with the same id: the origin dedupes
                        if resp.status >= 400:
                            return False, f"origin answered {resp.status}"
                        answer = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"origin unreachable ({type(exc).__name__})"
                log.info("event %s attempt %d failed: %s", event.id, attempt + 1, error)
                continue
            await self._apply_answer(session, answer)
            return True, None
        return False, error

    async def _apply_answer(self, session: Session, answer: bytes) -> None:
        """The origin's answer may patch slots and publish to channels."""
        if not answer.strip():
            return
        try:
            parsed = orjson.loads(answer)
        except orjson.JSONDecodeError:
            log.warning("events endpoint answered non-JSON; ignored")
            return
        if not isinstance(parsed, dict):
            return
        patches = parsed.get("patches") or {}
        if isinstance(patches, dict):
            for slot, html in patches.items():
                if isinstance(slot, str) and isinstance(html, str):
                    session.set_slot("patch", slot, html=html)
        for item in parsed.get("publish") or ():
            if isinstance(item, dict) and isinstance(item.get("channel"), str):
                await self.publish_channel(item["channel"], item.get("data"))

    # housekeeping

    async def _janitor(self) -> None:
        """Drop sessions held longer than ``session_hold_s`` without a consumer; push
        back the expiry of attached sessions' shared keys. Each tick costs O(what is
        due), not O(sessions)."""
        interval = min(1.0, self.session_hold_s / 4)
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            await self._touch_attached(now)
            self.expire_detached(now)

    def expire_detached(self, now: float) -> int:
        """Drop the sessions detached longer than ``session_hold_s`` at ``now``: the
        front of the detach-ordered queue only. Returns how many were dropped."""
        expired = self._detached.expired(now, self.session_hold_s)
        for session_id in expired:
            session = self.sessions.get(session_id)
            if session is None:
                self._detached.discard(session_id)
            else:
                self._drop(session)
        return len(expired)

    async def _touch_attached(self, now: float) -> None:
        ttl_s = getattr(getattr(self.bus, "config", None), "session_ttl_s", 600.0)
        if self.shared is None or not self.shared.is_up:
            return
        due = self._touch.due(now, ttl_s / 3)
        if not due:
            return
        try:
            await self.shared.touch(due)
        except BusUnavailable:
            return
        self._touch.touched(due, now)

    def _drop(self, session: Session) -> None:
        for task in list(session.tasks):
            task.cancel()  # its suspense fetches and event delivery stop
        for channel in list(session.channels):
            self.unsubscribe(session.id, channel)
        self.sessions.pop(session.id, None)
        self._detached.discard(session.id)
        self._touch.discard(session.id)

    def _drop_longest_detached(self) -> None:
        """Make room for a new session: drop the longest-detached one (O(1)); if every
        session has a consumer, none is dropped (``max_connections`` bounds those)."""
        session_id = self._detached.longest()
        if session_id is not None:
            session = self.sessions.get(session_id)
            if session is None:
                self._detached.discard(session_id)
            else:
                self._drop(session)
