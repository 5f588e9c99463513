"""The WebSocket edge of the hub (websockets library): one connection = one consumer.

Per handshake: a browser's ``Origin`` must be the session's own hostname or one of
``session.allowed_origins``, else HTTP 403 (cross-site WebSocket hijacking: a browser
sends the visitor's cookie to us whichever site opens the socket).

Per connection: the first message must be ``hello`` (within ``hello_timeout_s``); the
token is the session cookie of the upgrade request, or the hello's ``token``.
Then a writer drains the consumer's outbox and a reader takes client messages, in one
TaskGroup: the first to end (client gone, bad message, overflow) ends the other.

A hello whose ``session`` is not the session the token names (a tab that learned session
A, reconnecting with the cookie a second tab overwrote with session B) is answered as a
new client of B, not refused: its ``last_seq`` is ignored (it counts in A's log), the
server hello says ``"session": B, "resumed": false`` and B's log follows from its start
(or ``reset`` and B's current state, if the log no longer reaches back). The client
starts counting afresh when the hello names another session than it expected. Both tabs
are the same visitor (one cookie jar), so joining B leaks nothing; refusing would leave
the first tab without a session until it is reloaded. A hello without ``session`` (old
clients) resumes from ``last_seq`` as before.

A reconnect storm (every visitor of a node reconnecting at once after a deploy): the
listen backlog is ``session.listen_backlog`` (the kernel caps it at
``net.core.somaxconn``), so connections wait in the kernel instead of having their SYN
dropped (a dropped SYN is retried after 1, 3, 7, 15, 31 s); a connection accepted has
``session.handshake_timeout`` to finish its HTTP upgrade (the last of 10,000 accepted
at once waits for the 9,999 before it: handshakes run in accept order). Accepting is not
paced further: the kernel holds what the loop has not accepted (the backlog), and the
loop takes each connection's upgrade in turn.

Fan-out: a message is encoded once (the hub splices each session's seq in); the writer
puts a text frame header before it and writes it to the socket, without a str round
trip or a frame object per recipient.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Protocol

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from weaver.config.schema import SessionConfig
from weaver.session import auth
from weaver.session.errors import GOING_AWAY, POLICY, TRY_AGAIN, SessionError
from weaver.session.live import Session
from weaver.session.messages import (
    MAX_MESSAGE_BYTES,
    BadMessage,
    Cancel,
    ClientEvent,
    ClientHello,
    Hello,
    Subscribe,
    Unsubscribe,
    encode,
)
from weaver.session.outbox import Outbox
from weaver.session.protocol import read_hello
from weaver.session.stats import SessionEvent, count, report_sent, sent

log = logging.getLogger(__name__)


class SessionHub(Protocol):
    """What the listener needs of the hub (session/hub.py), which imports this module."""

    config: SessionConfig
    max_connections: int
    is_stopping: bool
    ping_interval_s: float
    hello_timeout_s: float
    outbound_max_bytes: int
    wall_clock: Callable[[], float]

    @property
    def connections(self) -> int: ...

    async def load(self, session_id: str) -> Session: ...

    async def attach(self, session: Session, last_seq: int) -> tuple[Outbox, bool, int]: ...

    def detach(self, session: Session, outbox: Outbox, *, is_leaving: bool = False) -> None: ...

    def offer_event(self, session: Session, event: ClientEvent) -> Awaitable[None]: ...

    def subscribe_client(self, session: Session, channel: str) -> None: ...

    def unsubscribe(self, session_id: str, channel: str) -> None: ...


async def serve(hub: SessionHub, **options: Any) -> Server:
    """The session listener; ``options`` go to websockets' ``serve`` (``ssl``,
    ``reuse_port``: see :mod:`weaver.proxy.node`)."""
    listen = hub.config.listen

    async def handler(connection: ServerConnection) -> None:
        await _connection(hub, connection)

    def check_origin(connection: ServerConnection, request: Request) -> Response | None:
        origin, host = request.headers.get("Origin"), request.headers.get("Host")
        if auth.is_origin_allowed(origin, host, hub.config.allowed_origins):
            return None
        log.info("session handshake refused: Origin %r is not allowed for Host %r", origin, host)
        return connection.respond(
            HTTPStatus.FORBIDDEN,
            "this Origin may not open a Weaver session (see session.allowed_origins)\n",
        )

    return await ws_serve(
        handler,
        listen.host,
        listen.port,
        process_request=check_origin,
        max_size=MAX_MESSAGE_BYTES,  # larger frames: websockets closes with 1009
        ping_interval=hub.ping_interval_s,
        ping_timeout=hub.ping_interval_s,
        compression=None,  # per-message deflate costs ~100 KB per connection
        open_timeout=hub.config.handshake_timeout_s,
        backlog=hub.config.listen_backlog,  # to loop.create_server; see the module docstring
        **options,
    )


async def close(server: Server) -> None:
    server.close(close_connections=True)  # 1001 going away
    await server.wait_closed()


async def _connection(hub: SessionHub, ws: ServerConnection) -> None:
    session: Session | None = None
    outbox: Outbox | None = None
    try:
        if hub.connections >= hub.max_connections or hub.is_stopping:
            raise SessionError(TRY_AGAIN, "too many connections on this node; retry")
        hello = await _hello(hub, ws)
        session_id = _authenticate(hub, ws, hello)
        last_seq = hello.last_seq
        if hello.session is not None and hello.session != session_id:
            log.info("session hello expected another session; %s starts afresh", session_id)
            last_seq = 0  # a seq of another session's log: see the module docstring
        session = await hub.load(session_id)
        outbox, resumed, hello_seq = await hub.attach(session, last_seq)
        count(SessionEvent.SOCKET_OPENED)
        await ws.send(encode(Hello(session_id, resumed), hello_seq), text=True)
        outbox.direct = _direct_writer(ws, hub.outbound_max_bytes)
        async with asyncio.TaskGroup() as tasks:
            writer = tasks.create_task(_write(ws, outbox))
            reader = tasks.create_task(_read(hub, ws, session))
            await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            for task in (writer, reader):
                task.cancel()
    except* SessionError as group:
        error = group.exceptions[0]
        assert isinstance(error, SessionError)
        log.info("session connection closed %d: %s", error.close_code, error.reason)
        if error.close_code == TRY_AGAIN:
            count(SessionEvent.CLOSE_1013)
        await ws.close(error.close_code, error.reason)
    except* ConnectionClosed:
        pass
    finally:
        if session is not None and outbox is not None:
            # A close frame 1000/1001 from the client: it left the page (its slot streams
            # stop); no frame (a network loss) or ours: it may resume, they go on.
            received = ws.protocol.close_rcvd
            is_leaving = received is not None and received.code in (1000, 1001)
            hub.detach(session, outbox, is_leaving=is_leaving)
            report_sent()  # its messages are counted before its close
            count(SessionEvent.SOCKET_CLOSED)


async def _hello(hub: SessionHub, ws: ServerConnection) -> ClientHello:
    try:
        async with asyncio.timeout(hub.hello_timeout_s):
            raw = await ws.recv()
    except TimeoutError:
        raise SessionError(POLICY, "no hello in time") from None
    hello = read_hello(raw)
    if isinstance(hello, BadMessage):
        raise hello.error()
    return hello


def _authenticate(hub: SessionHub, ws: ServerConnection, hello: ClientHello) -> str:
    cookie = ws.request.headers.get("Cookie") if ws.request is not None else None
    token = auth.token_from_cookie_header(cookie) or hello.token
    if not token:
        raise SessionError(POLICY, "no session token (cookie or hello token)")
    return auth.verify(hub.config.secret, token, hub.wall_clock())


def _direct_writer(ws: ServerConnection, max_buffered_bytes: int) -> Callable[[bytes], bool]:
    """Write a message to the socket now, without a task switch, while the socket's
    buffer is within the bound; otherwise the outbox queues it (and its bound holds)."""
    transport, protocol = ws.transport, ws.protocol
    is_plain = not protocol.extensions  # compression=None: a frame is header + payload
    headers = _SHORT_HEADERS
    is_closing, buffered = transport.is_closing, transport.get_write_buffer_size
    transport_write = transport.write

    def write(message: bytes) -> bool:
        # Per recipient of a fan-out: the checks, each bound method looked up once.
        if is_closing() or buffered() > max_buffered_bytes:
            return False
        # Not OPEN: a close frame went or is going; no data frame may follow it. (No
        # check of websockets' fragmented send: Weaver never sends a message in
        # fragments, and touching the connection object cost ~0.5 µs per recipient.)
        if protocol.state is not State.OPEN:
            return False
        if is_plain and not protocol.writes:
            # The text frame websockets would build (RFC 6455 §5.2: FIN, opcode 1, no
            # mask from a server), written at once: per recipient only a 2-10 byte
            # header is put before it; the JSON was encoded once for all, its seq
            # spliced in.
            size = len(message)
            header = headers[size] if size < 126 else text_frame_header(size)
            transport_write(header + message)
        else:
            protocol.send_text(message)
            ws.send_data()
        sent()  # counted in a batch: session/stats.py
        return True

    return write


def text_frame_header(size: int) -> bytes:
    """The header of an unmasked, final text frame of ``size`` bytes (RFC 6455 §5.2)."""
    if size < 126:
        return b"\x81" + size.to_bytes(1, "big")
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big")
    return b"\x81\x7f" + size.to_bytes(8, "big")


_SHORT_HEADERS = tuple(text_frame_header(size) for size in range(126))


async def _write(ws: ServerConnection, outbox: Outbox) -> None:
    while True:
        item = await outbox.get()
        if item is None:
            count(SessionEvent.OUTBOX_OVERFLOW)
            raise SessionError(TRY_AGAIN, "client fell behind; resume from your last seq")
        await ws.send(item[1], text=True)  # UTF-8 JSON already: no decode, no re-encode
        count(SessionEvent.MESSAGE_OUT)
        if outbox.is_end(item[1]):
            raise SessionError(GOING_AWAY, "server shutting down")


async def _read(hub: SessionHub, ws: ServerConnection, session: Session) -> None:
    async for raw in ws:
        count(SessionEvent.MESSAGE_IN)
        command = session.state.read(raw)  # a bad message, or one past a bound: closed
        if isinstance(command, ClientEvent):
            await hub.offer_event(session, command)  # waits while the queue is full
        elif isinstance(command, Subscribe):
            hub.subscribe_client(session, command.channel)
        elif isinstance(command, Unsubscribe):
            hub.unsubscribe(session.id, command.channel)
        elif isinstance(command, Cancel):
            session.streams.cancel(command.id)  # unknown or ended slots: nothing to stop
        else:
            raise command.error()
