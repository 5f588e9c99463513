"""One pooled HTTP/1.1 connection to an origin: an asyncio protocol carrying one exchange
at a time.

The bytes are :mod:`weaver.proxy.http1`'s; this module moves them. A :class:`Connection`
feeds what arrives to its response parser and buffers the body until the consumer pulls it,
pausing the socket above ``HIGH_WATER_BYTES`` (policy ``PAUSE_READING``). Its lifecycle
(busy, idle, closed) is :class:`ConnectionState`; which connections exist and who may use
them is :mod:`weaver.proxy.origin_pool`'s. Every wait has a deadline (loop time) and is one
future and one timer, with no task and no thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import cast

from weaver.proxy.http1 import (
    END,
    Event,
    Failure,
    ParseError,
    ResponseHead,
    ResponseParser,
)

Key = tuple[str, str, int]  # scheme, host, port

HIGH_WATER_BYTES = 256 * 1024  # PAUSE_READING: unread body bytes above this pause the socket
LOW_WATER_BYTES = 64 * 1024  # ... and reading resumes once the consumer drained to this


class ConnectionState(Enum):
    """A connection's lifecycle; :meth:`Connection._enter` is the one place it changes."""

    BUSY = "busy"  # carrying a request (or handed to a waiter for one)
    IDLE = "idle"  # in the pool, at a message boundary
    CLOSED = "closed"  # lost or closed by Weaver: never used again


_TRANSITIONS = {
    ConnectionState.BUSY: {ConnectionState.IDLE, ConnectionState.CLOSED},
    ConnectionState.IDLE: {ConnectionState.BUSY, ConnectionState.CLOSED},
    ConnectionState.CLOSED: {ConnectionState.CLOSED},
}

_CLOSED_BEFORE_HEAD = ParseError(Failure.CLOSED_BEFORE_HEAD, "closed before answering")


def expire(waiter: asyncio.Future[None]) -> None:
    """A deadline passed: fail ``waiter`` with ``TimeoutError`` unless it is already done."""
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection(asyncio.Protocol):
    """One socket to an origin, carrying one exchange at a time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        key: Key,
        on_closed: Callable[[Connection], None],
    ) -> None:
        self.key = key
        self.state = ConnectionState.BUSY
        self.exchanges = 0  # requests begun on this connection
        self.idle_since = 0.0
        self.is_counted = True  # holds one of the pool's slots until forgotten
        self.head: ResponseHead | None = None
        self.failure: ParseError | None = None
        self.is_complete = False  # the response ended on the wire
        self.is_reusable = True  # nothing happened that forbids another exchange
        self._loop = loop
        self._on_closed = on_closed  # the pool frees this connection's slot
        self._transport: asyncio.Transport | None = None
        self._parser: ResponseParser | None = None
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._is_reading_paused = False
        self._is_writing_paused = False
        self._is_lost = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the stream is out of step
            self.abort()
            return
        self._on_events(parser.feed(data))
        if parser.has_extra:
            self.is_reusable = False
        if self._buffered > HIGH_WATER_BYTES and not self._is_reading_paused:
            self._is_reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._is_lost = True
        if self._parser is not None and not self.is_complete and self.failure is None:
            self._on_events(self._parser.feed_eof())
        self._wake()
        self._enter(ConnectionState.CLOSED)
        self._on_closed(self)

    def pause_writing(self) -> None:
        self._is_writing_paused = True

    def resume_writing(self) -> None:
        self._is_writing_paused = False
        self._wake()

    # -- the exchange ---------------------------------------------------------------------

    @property
    def is_lost(self) -> bool:
        return self._is_lost

    @property
    def buffered_bytes(self) -> int:
        """Body bytes received and not yet read (bounded by ``HIGH_WATER_BYTES`` plus one
        socket read)."""
        return self._buffered

    def begin(self, method: str) -> None:
        """Start an exchange: the next bytes that arrive are its response."""
        self.exchanges += 1
        self._parser = ResponseParser(method)
        self.head = None
        self.failure = _CLOSED_BEFORE_HEAD if self._is_lost else None
        self.is_complete = False

    def write(self, data: bytes) -> None:
        assert self._transport is not None
        if not self._is_lost:
            self._transport.write(data)

    async def drain(self, limit: float) -> None:
        """Wait until the socket takes more (the origin reads), or it is lost.

        Raises:
            TimeoutError: ``limit`` (loop time) passed first.
        """
        while self._is_writing_paused and not self._is_lost:
            await self.wait(limit)

    async def wait_head(self, limit: float) -> ResponseHead | ParseError:
        """The response head, or why none came.

        Raises:
            TimeoutError: ``limit`` (loop time) passed first.
        """
        while True:
            if self.head is not None:
                return self.head
            if self.failure is not None:
                return self.failure
            await self.wait(limit)

    def read_nowait(self) -> bytes | ParseError | None:
        """Body bytes buffered so far (``b""`` at the end), why it broke off, or ``None``
        when the consumer must :meth:`wait` for more."""
        body = self._body
        if body:
            data = body.popleft() if len(body) == 1 else b"".join(body)
            body.clear()
            self._buffered = 0
            if self._is_reading_paused:
                self._resume_reading()
            return data
        if self.is_complete:
            return b""
        return self.failure

    async def wait(self, limit: float) -> None:
        """Wait for the next event on this connection (cancel-safe).

        Raises:
            TimeoutError: ``limit`` (loop time) passed first.
        """
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_at(limit, expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            timer.cancel()

    @property
    def is_at_boundary(self) -> bool:
        """The response ended and the connection can carry another request."""
        return self.is_complete and self.is_reusable and not self._is_lost

    def end_exchange(self) -> None:
        """Back to the pool: forget the response (its unread tail included)."""
        self._parser = None
        self.head = None
        self._body.clear()
        self._buffered = 0
        if self._is_reading_paused:
            self._resume_reading()
        self.idle_since = self._loop.time()
        self._enter(ConnectionState.IDLE)

    def take(self) -> None:
        self._enter(ConnectionState.BUSY)

    def abort(self) -> None:
        """Close at once (unsent and unread bytes are dropped): the origin sees it."""
        self.is_reusable = False
        if self._transport is not None and not self._is_lost:
            self._transport.abort()

    # -- internals ------------------------------------------------------------------------

    def _resume_reading(self) -> None:
        self._is_reading_paused = False
        if self._transport is not None and not self._is_lost:
            self._transport.resume_reading()

    def _enter(self, state: ConnectionState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"origin connection: {self.state.value} -> {state.value}")
        self.state = state

    def _on_events(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is bytes:
                self._body.append(event)
                self._buffered += len(event)
            elif event is END:
                self.is_complete = True
            elif isinstance(event, ResponseHead):
                self.head = event
                if not event.is_keep_alive:
                    self.is_reusable = False
            elif isinstance(event, ParseError):
                self.failure = event
                self.is_reusable = False
                if self._transport is not None and not self._is_lost:
                    self._transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
