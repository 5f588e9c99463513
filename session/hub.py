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
- sessions without a consumer are held ``session_hold_s`` then dropped; past
  ``max_sessions`` the longest-detached goes first (session/retention.py).

With a shared bus (Redis, ``bus.shared``) the log and the metadata live there:
session/shared.py. The hub's parts: consumers.py (attach, detach), channels.py,
delivery.py (events to the origin), slot_tasks.py; the pure core is protocol.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import aiohttp
from websockets.asyncio.server import Server

from weaver.config.schema import SessionConfig
from weaver.session import auth, server
from weaver.session.bus import Bus, BusUnavailable, MemoryBus, SharedLog
from weaver.session.channels import Channels
from weaver.session.consumers import Consumers
from weaver.session.delivery import EventDelivery
from weaver.session.errors import TryAgain
from weaver.session.live import Session, emit_of
from weaver.session.messages import Bye, ClientEvent, Message, encode, encoded, message_data
from weaver.session.outbox import Outbox
from weaver.session.protocol import State, channel_refusal
from weaver.session.retention import Retention
from weaver.session.shared import SharedWriter, restore
from weaver.session.slot_tasks import SuspenseFetch, run_slot_streams, run_suspense
from weaver.session.slots import SlotProducer

log = logging.getLogger(__name__)

__all__ = ["Outbox", "Session", "SessionHub"]

BYE_SHUTDOWN = Bye("server shutting down")
MAX_LOADS = 3  # loads of a session dropped while loading before the client is told 1013


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
        wall_clock: Callable[[], float] = time.time,
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
        self.shared: SharedLog | None = self.bus.shared
        self.sessions: dict[str, Session] = {}
        self.channels = Channels(self.sessions, history_size=channel_history)
        self.events = EventDelivery(
            self.spawn,
            self.publish_channel,
            max_pending=events_max_pending,
            timeout_s=event_timeout_s,
        )
        self._writer = SharedWriter(self.shared, self.sessions, self.spawn) if self.shared else None
        self.clock = clock  # detach times and expiry (tests inject one)
        self.wall_clock = wall_clock  # tokens' issue and expiry times (the app's clock)
        self.consumers = Consumers(
            self.shared,
            self.channels.history_of,
            max_messages=outbound_max_messages,
            max_bytes=outbound_max_bytes,
            clock=clock,
        )
        self._detached = self.consumers.detached
        self.retention = Retention(
            lambda: self.sessions,
            self.consumers,
            self.channels,
            hold_s=session_hold_s,
            clock=clock,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: Server | None = None
        self.is_stopping = False

    # lifecycle

    async def start(self, **listen: Any) -> None:
        """Listen on ``session.listen`` (port 0 picks one: see :attr:`port`); ``listen``
        goes to the listener (``ssl``, ``reuse_port``)."""
        self.events.http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        writer = self._writer
        await self.bus.start(
            self.channels.on_publication,
            on_session=writer.on_session_message if writer else None,
            on_up=writer.on_bus_up if writer else None,
        )
        self._server = await server.serve(self, **listen)
        ttl_s = getattr(getattr(self.bus, "config", None), "session_ttl_s", 600.0)
        self.spawn(self.retention.run(ttl_s))

    @property
    def port(self) -> int:
        sockets = self._server.sockets if self._server is not None else ()
        port: int = next(iter(sockets)).getsockname()[1]
        return port

    async def stop(self) -> None:
        """Say ``bye`` to every session, close sockets with 1001, stop every task."""
        if self.is_stopping:
            return
        self.is_stopping = True
        for session in self.sessions.values():
            if not session.outboxes:
                continue
            if self.shared is None:
                seq, bye = session.state.number(*encoded(BYE_SHUTDOWN))
            else:  # not logged: a resume on another node must not replay this node's bye
                seq = session.log.last_seq
                bye = encode(BYE_SHUTDOWN, seq)
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
            await server.close(self._server)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.bus.stop()
        if self.events.http is not None:
            await self.events.http.close()

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

    def _timeout_s(self) -> float:
        timeout_s: float = getattr(getattr(self.bus, "config", None), "timeout_s", 1.0)
        return timeout_s

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
        now = self.wall_clock()
        session_id = auth.new_session_id()
        while session_id in self.sessions:  # 128 random bits: never, but never join
            session_id = auth.new_session_id()
        set_cookie = auth.cookie_header_value(
            auth.issue(self.config.secret, session_id, now), secure=secure
        )
        session = self.session(session_id)
        cookie = session.state.cookie = auth.strip_session_cookie(cookie_header)
        session.state.events_url = events_url
        session.write_meta(
            ("cookie", (cookie or "").encode()), ("events", (events_url or "").encode())
        )
        return session_id, set_cookie

    def session(self, session_id: str) -> Session:
        """This node's copy of the session (a new one if it has none)."""
        session = self.sessions.get(session_id)
        if session is None:
            if len(self.sessions) >= self.max_sessions:
                self.retention.make_room()
            now = self.clock()
            session = Session(
                session_id,
                self.config,
                log_max_messages=self.log_max_messages,
                log_max_bytes=self.log_max_bytes,
                now=now,
            )
            if self._writer is not None:
                session.write_shared = self._writer.write
            self.sessions[session_id] = session
            self._detached.detach(session_id, now)
        return session

    async def load(self, session_id: str) -> Session:
        """The session, as the shared log knows it when this node has no copy: its seq,
        cookie, events URL, slots and channels; the channel messages published while
        no node held it are caught up. Without a shared bus (or with it down): as
        :meth:`session`.

        The session returned is not dropped, and nothing awaits between this return and
        the caller's attach (server.py, sse.py): the janitor cannot drop it in between.

        Raises:
            TryAgain: 1013 (503), the session was dropped during each of ``MAX_LOADS``
                loads (a node evicting faster than it loads); the client retries.
        """
        for _ in range(MAX_LOADS):
            session = await self._load_once(session_id)
            if session.state.state is not State.DROPPED:
                return session
            # Dropped (held past session_hold_s, or evicted) during the catch-up: a
            # consumer arriving a moment later would load it again from the shared
            # log, so this one does too, rather than attach to a dropped copy.
            log.info("session %s was dropped while it was loaded; loading it again", session_id)
        raise TryAgain("the session was dropped while it was loaded; retry")

    async def _load_once(self, session_id: str) -> Session:
        if session_id in self.sessions or self.shared is None or not self.shared.is_up:
            return self.session(session_id)
        try:
            stored = await self.shared.load(session_id)
        except BusUnavailable:
            stored = None
        if session_id in self.sessions or stored is None:
            return self.session(session_id)
        session = self.session(session_id)
        await restore(self.shared, session, stored, self.channels)
        return session

    def run_suspense(
        self, session_id: str, fetches: Sequence[tuple[str, SuspenseFetch]]
    ) -> list[asyncio.Task[None]]:
        """Start the suspense fetches now; results go on the session in completion order.

        The session owns them (a socket may open later). The caller may cancel the
        returned tasks sooner: the page request does when its client goes away.
        """
        return run_suspense(self.spawn, self.session(session_id), fetches)

    def run_slot_streams(
        self, session_id: str, producers: Sequence[tuple[str, SlotProducer]]
    ) -> list[asyncio.Task[None]]:
        """Start slot producers now (session/slots.py); like :meth:`run_suspense`, the
        session owns them, and a client's ``cancel`` or departure stops them."""
        return run_slot_streams(self.spawn, self.session(session_id), producers)

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
        self.channels.add(session, channel)
        return True

    def subscribe_client(self, session: Session, channel: str) -> None:
        """Subscribe for a client's ``subscribe`` (its bounds were checked as it was read:
        :meth:`SessionState.read`)."""
        self.channels.add(session, channel)

    def unsubscribe(self, session_id: str, channel: str) -> None:
        self.channels.remove(session_id, channel)

    async def publish_channel(self, channel: str, data: Any) -> int:
        """Publish to every session subscribed to ``channel`` (on every node via the bus)."""
        await self.bus.publish(channel, bytes(message_data(data)))
        return self.presence(channel)

    def publish_session(self, session_id: str, data: Any) -> int:
        """Publish to one session this node holds (0 if it holds none by that id)."""
        session = self.sessions.get(session_id)
        if session is None:
            return 0
        session.emit(Message(None, message_data(data)))
        return 1

    async def publish_to_session(self, session_id: str, data: Any) -> int:
        """Publish to one session wherever it is: this node's, else the shared log's."""
        if session_id in self.sessions or self.shared is None:
            return self.publish_session(session_id, data)
        try:
            emit = emit_of(Message(None, message_data(data)))
            return int(await self.shared.emit_if_exists(session_id, emit))
        except BusUnavailable:
            return 0

    def presence(self, channel: str) -> int:
        return self.channels.presence(channel)

    # the consumers' side (WebSocket, SSE)

    def offer_event(self, session: Session, event: ClientEvent) -> Awaitable[None]:
        """Queue ``event`` for the origin; the awaitable waits while the queue is full."""
        return self.events.offer(session, event)

    async def attach(self, session: Session, last_seq: int) -> tuple[Outbox, bool, int]:
        """See :meth:`Consumers.attach`."""
        return await self.consumers.attach(session, last_seq)

    def detach(self, session: Session, outbox: Outbox, *, is_leaving: bool = False) -> None:
        """See :meth:`Consumers.detach`."""
        self.consumers.detach(session, outbox, is_leaving=is_leaving)

    @property
    def connections(self) -> int:
        return self.consumers.connections

    # housekeeping (session/retention.py)

    def expire_detached(self, now: float) -> int:
        """Drop the sessions detached longer than ``session_hold_s`` at ``now``."""
        return self.retention.expire(now)
