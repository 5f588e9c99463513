"""The streaming origin client: pooled keep-alive HTTP/1.1 connections to every origin.

Bodies are never read whole: callers iterate :meth:`OriginResponse.chunks`, which hands
over what has arrived as the consumer pulls (the socket pauses when more than
:data:`~weaver.proxy.origin_connection.HIGH_WATER_BYTES` wait unread), so a 1 GB body
passes in constant memory. Every network wait has a deadline. The wire format is
:mod:`weaver.proxy.http1`'s, each socket :mod:`weaver.proxy.origin_connection`'s and the
pool :mod:`weaver.proxy.origin_pool`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from weaver.config.schema import Config
from weaver.proxy.errors import OriginError
from weaver.proxy.http1 import Failure, ParseError, ResponseHead
from weaver.proxy.http1_request import (
    IDEMPOTENT_METHODS,
    LAST_CHUNK,
    RequestBody,
    chunk,
    request_head,
)
from weaver.proxy.origin_connection import Connection, Key
from weaver.proxy.origin_pool import ConnectTimeout, Pool, PoolStats
from weaver.proxy.upgrade_head import authority

log = logging.getLogger(__name__)

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_SMALL_BODY_BYTES = 64 * 1024  # sent in one write with the head


@dataclass(slots=True)
class OriginResponse:
    """An origin's answer whose body has not been read yet."""

    url: str
    status: int
    headers: CIMultiDictProxy[str]
    _connection: Connection
    _read_timeout_s: float

    @property
    def content_type(self) -> str:
        """The media type, lower-cased, without parameters (``application/octet-stream``
        when the origin gave none: RFC 9110 §8.3)."""
        raw = self.headers.get("Content-Type")
        if raw is None:
            return "application/octet-stream"
        return raw.split(";", 1)[0].strip().lower() or "application/octet-stream"

    @property
    def is_html(self) -> bool:
        return self.content_type in _HTML_TYPES

    async def chunks(self, *, deadline: float | None = None) -> AsyncIterator[bytes]:
        """Yield the body as it arrives.

        Each wait is bounded by the read timeout, and by ``deadline`` (loop time) when
        given; no timeout spans a ``yield``, so it cannot fire in the consumer.

        Raises:
            TimeoutError: a read outlived its bound.
            OriginError: the connection broke mid-body.
        """
        while data := await self.read(deadline=deadline):
            yield data

    async def read(self, *, deadline: float | None = None) -> bytes:
        """The next bytes of the body as they arrive, ``b""`` at its end; as
        :meth:`chunks`, without an async generator per response (the hot path's)."""
        conn = self._connection
        while True:
            data = conn.read_nowait()
            if data is None:
                limit = asyncio.get_running_loop().time() + self._read_timeout_s
                if deadline is not None and deadline < limit:
                    limit = deadline
                await conn.wait(limit)
                continue
            if isinstance(data, ParseError):
                raise OriginError(self.url, f"body broke off ({data.detail})")
            return data

    @property
    def buffered_bytes(self) -> int:
        """Body bytes received and not yet read: at most ~256 KiB plus one socket read
        (then reading pauses, policy ``PAUSE_READING``)."""
        return self._connection.buffered_bytes


class OriginClient:
    """A pooled client for every configured origin."""

    def __init__(
        self,
        config: Config,
        *,
        max_connections: int | None = None,
        max_per_origin: int | None = None,
    ) -> None:
        """Bounds default to ``server.max_origin_connections`` and
        ``server.max_connections_per_origin``."""
        self._config = config
        server = config.server
        self._max_connections = max_connections or server.max_origin_connections
        self._max_per_origin = max_per_origin or server.max_connections_per_origin
        self._pool: Pool | None = None
        self._hosts: dict[Key, str] = {}  # the Host header per origin

    async def __aenter__(self) -> OriginClient:
        self._pool = Pool(
            connect_timeout_s=self._config.server.connect_timeout_s,
            max_connections=self._max_connections,
            max_per_origin=self._max_per_origin,
        )
        return self

    def pool_stats(self) -> PoolStats:
        """Connections open and idle, and requests waiting for one."""
        assert self._pool is not None, "OriginClient used outside its context"
        return self._pool.stats()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | CIMultiDict[str],
        body: AsyncIterator[bytes] | bytes | None = None,
        deadline: float | None = None,
    ) -> Exchange:
        """Send a request (``async with``); the response comes with its body unread.

        The target goes exactly as given (the URL is already normal). A ``bytes`` body
        gets its Content-Length; a stream keeps the caller's Content-Length, else goes
        chunked. The connection returns to the pool when the response ended and neither
        side said close; otherwise it is closed when the context exits (so a cancelled
        fetch stops the origin's work). An idempotent request whose reused connection
        closed before answering (the origin timed it out as the request left) is sent
        once more on a new connection (RFC 9112 §9.3.1).

        Raises (on entering):
            OriginError: connection refused, reset, a malformed answer, or no connection
                or no headers within the timeouts (504).
            TimeoutError: ``deadline`` passed before the headers arrived.
        """
        return Exchange(self, method, url, headers, body, deadline)

    async def _open(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | CIMultiDict[str],
        body: AsyncIterator[bytes] | bytes | None,
        deadline: float | None,
    ) -> tuple[Pool, Connection, OriginResponse]:
        pool = self._pool
        assert pool is not None, "OriginClient used outside its context"
        read_timeout_s = self._config.server.read_timeout_s
        limit = asyncio.get_running_loop().time() + read_timeout_s
        is_deadline = deadline is not None and deadline < limit
        if deadline is not None and is_deadline:
            limit = deadline
        target = URL(url, encoded=True)  # already normal: sent exactly as keyed
        key = (target.scheme, target.raw_host or "", target.port or 0)
        if key[0] not in ("http", "https") or not key[1]:
            raise OriginError(url, "not an http(s) URL")
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts.setdefault(key, authority(*key))
        if body is None:
            framing, length = RequestBody.NONE, None
        elif isinstance(body, bytes):
            framing, length = RequestBody.LENGTH, len(body)
        elif "Content-Length" in headers:
            framing, length = RequestBody.LENGTH, None
        else:
            framing, length = RequestBody.CHUNKED, None
        head = request_head(method, target.raw_path_qs, host, headers.items(), framing, length)
        if head is None:
            raise OriginError(url, "request header cannot be sent (bad name or line break)")
        if isinstance(body, bytes):
            if len(body) <= _SMALL_BODY_BYTES:
                head, body = head + body, None
        is_replayable = method in IDEMPOTENT_METHODS and not isinstance(body, AsyncIterator)
        is_close = "close" in headers.get("Connection", "").lower()
        try:
            conn, response_head = await self._exchange(
                pool, key, url, method, head, body, framing, limit, is_replayable
            )
        except ConnectTimeout:
            raise OriginError(url, "no connection in time", status=504) from None
        except TimeoutError:
            if is_deadline:
                raise
            raise OriginError(url, "no answer in time", status=504) from None
        except OSError as exc:
            raise OriginError(url, f"unreachable ({type(exc).__name__})") from exc
        if is_close:
            conn.is_reusable = False
        response = OriginResponse(
            url, response_head.status, response_head.headers, conn, read_timeout_s
        )
        return pool, conn, response

    async def _exchange(
        self,
        pool: Pool,
        key: Key,
        url: str,
        method: str,
        head: bytes,
        body: AsyncIterator[bytes] | bytes | None,
        framing: RequestBody,
        limit: float,
        is_replayable: bool,
    ) -> tuple[Connection, ResponseHead]:
        """Send the request and wait for the head, retrying a stale connection once."""
        is_fresh = False
        while True:
            conn = await pool.acquire(key, limit, is_fresh=is_fresh)
            is_reused = conn.exchanges > 0
            conn.begin(method)
            try:
                conn.write(head)
                if isinstance(body, bytes):
                    conn.write(body)
                elif body is not None:
                    async with asyncio.timeout_at(limit):
                        await _send_stream(conn, body, framing is RequestBody.CHUNKED, limit)
                answer = await conn.wait_head(limit)
            except BaseException:
                pool.release(conn)  # not at a boundary: closed
                raise
            if isinstance(answer, ResponseHead):
                return conn, answer
            pool.release(conn)
            if answer.failure is Failure.CLOSED_BEFORE_HEAD:
                if is_reused and is_replayable and not is_fresh:
                    log.debug("origin %s: kept-alive connection was closed; retrying", url)
                    is_fresh = True
                    continue
                raise OriginError(url, "closed before answering")
            raise OriginError(url, f"malformed answer ({answer.detail})")


class Exchange:
    """One request's exchange: ``async with`` it for the response; leaving returns the
    connection to the pool (or closes it). A class, not a generator-based context
    manager: it is entered once per origin request."""

    __slots__ = ("_args", "_client", "_conn", "_pool")

    def __init__(
        self,
        client: OriginClient,
        method: str,
        url: str,
        headers: Mapping[str, str] | CIMultiDict[str],
        body: AsyncIterator[bytes] | bytes | None,
        deadline: float | None,
    ) -> None:
        self._client = client
        self._args = (method, url, headers, body, deadline)
        self._pool: Pool | None = None
        self._conn: Connection | None = None

    async def __aenter__(self) -> OriginResponse:
        self._pool, self._conn, response = await self._client._open(*self._args)
        return response

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pool is not None and self._conn is not None:
            conn, self._conn = self._conn, None
            self._pool.release(conn)


async def _send_stream(
    conn: Connection, body: AsyncIterator[bytes], is_chunked: bool, limit: float
) -> None:
    """Send a streamed request body, waiting while the origin does not read; stop early if
    the origin answered already (the connection then closes after the response)."""
    async for part in body:
        if not part:
            continue
        conn.write(chunk(part) if is_chunked else part)
        if conn.head is not None or conn.failure is not None or conn.is_lost:
            conn.is_reusable = False
            return
        await conn.drain(limit)
    if is_chunked:
        conn.write(LAST_CHUNK)
