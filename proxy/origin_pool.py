"""The pool of origin connections: keep-alive reuse, bounds, FIFO waits, idle expiry.

The :class:`Pool` keeps idle keep-alive connections (:mod:`weaver.proxy.origin_connection`)
per ``(scheme, host, port)``, bounded in total and per origin; requests over the bound wait
in FIFO order, and idle connections expire after ``IDLE_TIMEOUT_S``. Every wait has a
deadline (loop time); a wait is one future and one timer, with no task and no thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from dataclasses import dataclass
from typing import cast

from weaver.proxy.origin_connection import Connection, Key, expire

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 15.0  # an idle keep-alive connection is closed after this (aiohttp's default)
MAX_CONNECTIONS = 1000
MAX_CONNECTIONS_PER_ORIGIN = 256


class ConnectTimeout(TimeoutError):
    """The connect timeout passed before the origin accepted the connection."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """What the pool holds now."""

    open: int  # connections open or opening, busy or idle
    idle: int  # kept alive, waiting for a request
    waiting: int  # requests waiting for a connection


class Pool:
    """Idle keep-alive connections per origin, bounded in total and per origin.

    A slot is held from the moment a connection is decided on (before it connects) until
    it is closed; a request that finds no idle connection and no free slot waits, FIFO,
    for one to be handed over or freed.
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        max_connections: int = MAX_CONNECTIONS,
        max_per_origin: int = MAX_CONNECTIONS_PER_ORIGIN,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        self._max_per_origin = max_per_origin
        self._idle_timeout_s = idle_timeout_s
        self._idle: dict[Key, list[Connection]] = {}  # per origin, most recent last
        self._idle_order: dict[Connection, None] = {}  # every idle one, oldest first
        self._counts: dict[Key, int] = {}  # slots held per origin
        self._total = 0
        self._all: set[Connection] = set()
        self._waiters: deque[tuple[Key, asyncio.Future[Connection | None]]] = deque()
        self._tls: ssl.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._is_closed = False

    def stats(self) -> PoolStats:
        waiting = sum(1 for _, waiter in self._waiters if not waiter.done())
        return PoolStats(self._total, len(self._idle_order), waiting)

    async def acquire(self, key: Key, limit: float, *, is_fresh: bool = False) -> Connection:
        """A connection to ``key``: an idle one (unless ``is_fresh``), else a new one.

        Raises:
            ConnectTimeout: the connect timeout passed first.
            TimeoutError: no connection before ``limit`` (loop time).
            OSError: the connect failed (refused, unreachable, TLS).
        """
        if self._is_closed:
            raise ConnectionError("origin client closed")
        if not is_fresh:
            stack = self._idle.get(key)
            while stack:
                conn = stack.pop()
                del self._idle_order[conn]
                if conn.is_lost or self.loop.time() - conn.idle_since > self._idle_timeout_s:
                    self._close(conn)
                    continue
                conn.take()
                return conn
        if self._has_room(key):
            self._reserve(key)
        elif self._total >= self._max_connections and self._idle_order:
            self._close(next(iter(self._idle_order)))  # the oldest idle one, any origin
            self._reserve(key)
        else:
            conn_or_slot = await self._wait(key, limit)
            if conn_or_slot is not None:
                conn_or_slot.take()
                return conn_or_slot
        return await self._connect(key, limit)

    def release(self, conn: Connection) -> None:
        """The exchange is over: pool the connection if it is at a message boundary, else
        close it (so the origin sees a consumer that left early)."""
        if not conn.is_at_boundary or self._is_closed:
            self._close(conn)
            return
        conn.end_exchange()
        for index, (key, waiter) in enumerate(self._waiters):
            if key == conn.key and not waiter.done():
                del self._waiters[index]
                waiter.set_result(conn)
                return
        if self._live_waiters():  # others wait for a slot: make one
            self._close(conn)
            return
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_order[conn] = None
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._idle_timeout_s / 2, self._sweep)

    def forget(self, conn: Connection) -> None:
        """``conn`` is closed: free its slot for the first waiter that can use it."""
        if not conn.is_counted:
            return
        conn.is_counted = False
        self._all.discard(conn)
        if conn in self._idle_order:
            del self._idle_order[conn]
            self._idle[conn.key].remove(conn)
        count = self._counts[conn.key] - 1
        if count:
            self._counts[conn.key] = count
        else:
            del self._counts[conn.key]
            self._idle.pop(conn.key, None)
        self._total -= 1
        self._grant()

    def close(self) -> None:
        """Close every connection; waiting requests fail."""
        self._is_closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            self._close(conn)
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("origin client closed"))

    # -- internals ------------------------------------------------------------------------

    def _has_room(self, key: Key) -> bool:
        return (
            self._total < self._max_connections and self._counts.get(key, 0) < self._max_per_origin
        )

    def _reserve(self, key: Key) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1
        self._total += 1

    def _unreserve(self, key: Key) -> None:
        count = self._counts[key] - 1
        if count:
            self._counts[key] = count
        else:
            del self._counts[key]
        self._total -= 1
        self._grant()

    def _close(self, conn: Connection) -> None:
        conn.abort()
        self.forget(conn)

    def _live_waiters(self) -> bool:
        while self._waiters and self._waiters[0][1].done():
            self._waiters.popleft()
        return bool(self._waiters)

    def _grant(self) -> None:
        """A slot is free: give it to the first waiter whose origin has room (FIFO)."""
        if not self._live_waiters():
            return
        for index, (key, waiter) in enumerate(self._waiters):
            if not waiter.done() and self._has_room(key):
                del self._waiters[index]
                self._reserve(key)
                waiter.set_result(None)
                return

    async def _wait(self, key: Key, limit: float) -> Connection | None:
        """Wait for a connection handed over (returned) or a slot reserved (``None``)."""
        waiter: asyncio.Future[Connection | None] = self.loop.create_future()
        entry = (key, waiter)
        self._waiters.append(entry)
        timer = self.loop.call_at(limit, expire, cast(asyncio.Future[None], waiter))
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                given = waiter.result()  # handed to us as we were cancelled: give it back
                if given is None:
                    self._unreserve(key)
                else:
                    given.take()
                    self.release(given)
            elif entry in self._waiters:
                self._waiters.remove(entry)
            raise
        finally:
            timer.cancel()

    async def _connect(self, key: Key, limit: float) -> Connection:
        scheme, host, port = key
        conn = Connection(self.loop, key, self.forget)  # holds the slot reserved for it
        self._all.add(conn)
        tls = self._tls_context() if scheme == "https" else None
        connect_limit = self.loop.time() + self._connect_timeout_s
        try:
            async with asyncio.timeout_at(min(limit, connect_limit)):
                await self.loop.create_connection(
                    lambda: conn, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except BaseException as exc:
            self._close(conn)
            if isinstance(exc, TimeoutError) and connect_limit < limit:
                raise ConnectTimeout() from None
            raise
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _sweep(self) -> None:
        """Close idle connections past ``IDLE_TIMEOUT_S``; run while any are idle."""
        self._sweeper = None
        oldest = self.loop.time() - self._idle_timeout_s
        while self._idle_order:
            conn = next(iter(self._idle_order))
            if conn.idle_since > oldest:
                break
            self._close(conn)
        if self._idle_order:
            self._sweeper = self.loop.call_later(self._idle_timeout_s / 2, self._sweep)
