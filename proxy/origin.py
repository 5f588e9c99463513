"""The streaming origin client: one pooled aiohttp session for every origin.

Bodies are never read whole: callers iterate :meth:`OriginResponse.chunks`, which reads as
the consumer pulls (aiohttp pauses the socket when its buffer passes the high-water mark), so
a 1 GB body passes in constant memory. Every network await sits under a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from weaver.config.schema import Config
from weaver.proxy.errors import OriginError

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024


@dataclass(slots=True)
class OriginResponse:
    """An origin's answer whose body has not been read yet."""

    url: str
    status: int
    headers: CIMultiDictProxy[str]
    _response: aiohttp.ClientResponse
    _read_timeout_s: float

    @property
    def content_type(self) -> str:
        return self._response.content_type

    @property
    def is_html(self) -> bool:
        return self.content_type in ("text/html", "application/xhtml+xml")

    async def chunks(self, *, deadline: float | None = None) -> AsyncIterator[bytes]:
        """Yield the body as it arrives.

        Each read is bounded by the read timeout, and by ``deadline`` (loop time) when
        given; the timeout never spans a ``yield``, so it cannot fire in the consumer.

        Raises:
            TimeoutError: a read outlived its bound.
            OriginError: the connection broke mid-body.
        """
        content = self._response.content
        loop = asyncio.get_running_loop()
        while True:
            limit = loop.time() + self._read_timeout_s
            if deadline is not None:
                limit = min(limit, deadline)
            try:
                async with asyncio.timeout_at(limit):
                    chunk = await content.readany()
            except aiohttp.ClientError as exc:
                raise OriginError(self.url, f"body broke off ({type(exc).__name__})") from exc
            if not chunk:
                return
            yield chunk


class OriginClient:
    """A pooled client for every configured origin."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OriginClient:
        server = self._config.server
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, limit_per_host=256, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=server.connect_timeout_s, sock_read=None
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | CIMultiDict[str],
        body: AsyncIterator[bytes] | bytes | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[OriginResponse]:
        """Send a request; yield the response with its body unread.

        The response is released when the context exits, which closes the connection if
        the body was not read to the end (so a cancelled fetch stops the origin's work).

        Raises:
            OriginError: connection refused, reset, or no headers within the timeout.
            TimeoutError: ``deadline`` passed before the headers arrived.
        """
        assert self._session is not None, "OriginClient used outside its context"
        read_timeout_s = self._config.server.read_timeout_s
        loop = asyncio.get_running_loop()
        limit = loop.time() + read_timeout_s
        is_deadline = deadline is not None and deadline < limit
        if deadline is not None:
            limit = min(limit, deadline)
        try:
            async with asyncio.timeout_at(limit):
                response = await self._session.request(
                    method,
                    URL(url, encoded=True),  # already normal: sent exactly as keyed
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
        except TimeoutError:
            if is_deadline:
                raise
            raise OriginError(url, "no answer in time", status=504) from None
        except aiohttp.ClientError as exc:
            raise OriginError(url, f"unreachable ({type(exc).__name__})") from exc
        try:
            yield OriginResponse(url, response.status, response.headers, response, read_timeout_s)
        finally:
            if not response.content.at_eof():
                response.close()  # drop the connection: the origin sees the cancel
            response.release()
