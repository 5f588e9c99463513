"""Upgrade requests (the app's own WebSockets, or any protocol) proxied as a byte stream.

Weaver opens a raw connection to the route's origin, sends the visitor's request head
(:func:`weaver.proxy.upgrade_head.origin_request_head`) and reads the origin's answer. A
``101 Switching Protocols`` head goes to the visitor byte for byte and from then on bytes
are spliced both ways, never decoded into frames: what the app and its client say to each
other (frames, close codes, extensions, subprotocols) is theirs. Any other answer is
relayed as an ordinary response. A route with ``websocket = false`` refuses upgrades with
``403 Forbidden``: the request is well formed (400 would blame the client) and ``426
Upgrade Required`` means the opposite (that the server *wants* a protocol switch).

How the visitor's connection is taken over from aiohttp's server (read against aiohttp
3.14's ``web_protocol.py``, ``web_ws.py``, ``http_parser.py``, ``_http_parser.pyx``), the
way :class:`aiohttp.web.WebSocketResponse` does it, minus the frame codec:

- **Reading.** ``RequestHandler.set_parser(p)`` routes every later byte of the connection
  to ``p.feed_data(data)`` (and ``p.feed_eof()`` when it is lost), and first hands it the
  bytes that arrived behind the request head (``_message_tail``). :class:`ClientInbox`
  is that ``p``: a bounded buffer the client→origin pump reads. ``request.content`` is
  not used: for an upgrade without a body it is ``EMPTY_PAYLOAD``, and aiohttp's parser
  treats only ``Upgrade: websocket`` as a switch, so for any other protocol it would
  parse the client's next bytes as HTTP; ``set_parser`` takes them away from the HTTP
  parser in both cases. It is called before the 101 goes out, so every byte the client
  sends after seeing it reaches the inbox. (A client that sends a non-WebSocket protocol
  before it has the 101 loses those bytes in aiohttp's parser; RFC 6455 and h2c clients
  wait for the 101, as the upgrade may be refused.)
- **Writing.** The head and the origin's bytes go through ``request.writer`` (the
  response's ``StreamWriter``): it counts what was sent, so aiohttp never writes an error
  page on top, and its ``drain()`` waits on the transport's flow control.
- **After.** The handler returns a :class:`SwitchedResponse`: ``prepare()`` wrote the
  exact head and ``write_eof()`` writes nothing (no chunk terminator, no second head);
  ``force_close()`` and ``keep_alive(False)`` make aiohttp close the connection once the
  handler returns instead of reading another request from it.

Backpressure, both ways, named:

- client→origin (``PAUSE_READING``): the inbox pauses the client's transport when it
  holds :data:`INBOX_MAX_BYTES`; the pump takes the buffer only after the origin writer's
  ``drain()`` (asyncio's write buffer high-water mark) returned.
- origin→client: the pump awaits the client writer's ``drain()`` before reading more from
  the origin; the origin's ``StreamReader`` pauses its socket past twice its limit.

Termination: the pumps run in one TaskGroup; the first to end (EOF or a connection error
on either side) cancels the other, then the origin connection is closed and the handler
returns, which closes the visitor's. A visitor who disconnects cancels the handler
(``handler_cancellation``) or ends the inbox, so the origin sees its socket close.

Bounds: the origin's response head (:data:`MAX_HEAD_BYTES`), the wait for it (the
server's ``read_timeout``), the connect (``connect_timeout``). Idle upgraded connections
are NOT limited: WebSockets may stay open for hours; liveness is the app's business
(its own pings), as the bytes are not ours to read.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from weaver.cache.keys import normalise_target
from weaver.config.schema import OriginConfig, RouteConfig
from weaver.proxy.edge import Edge
from weaver.proxy.errors import OriginError
from weaver.proxy.forwarding import Peer, strip_hop_by_hop
from weaver.proxy.http1 import BodyFraming
from weaver.proxy.pages import error_page, origin_error_page
from weaver.proxy.upgrade_head import (
    ResponseHead,
    authority,
    origin_request_head,
    parse_chunk_size,
    parse_response_head,
    response_framing,
)
from weaver.proxy.visitor import peer_of

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024
# Client bytes held for the origin before Weaver stops reading the client's socket.
INBOX_MAX_BYTES = 256 * 1024


class ClientInbox:
    """Bytes the client sent after its upgrade request, on their way to the origin.

    aiohttp's server protocol feeds it (it stands in for the parser
    ``WebSocketResponse`` installs with ``set_parser``); the client→origin pump reads it.
    Overflow policy ``PAUSE_READING``: holding ``max_bytes`` or more pauses the client's
    transport; taking the buffer resumes it.
    """

    def __init__(self, transport: asyncio.Transport, max_bytes: int = INBOX_MAX_BYTES) -> None:
        self._transport = transport
        self._max_bytes = max_bytes
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._is_eof = False
        self._is_pausing = False
        self._ready = asyncio.Event()

    @property
    def buffered_bytes(self) -> int:
        return self._size

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Called by aiohttp with bytes from the client; returns (eof, tail) as its
        parsers do: never EOF (the stream ends with the connection), no tail."""
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)
            self._ready.set()
            self.apply_flow_control()
        return False, b""

    def feed_eof(self) -> None:
        """Called by aiohttp when the client's connection is lost."""
        self._is_eof = True
        self._ready.set()

    async def read(self) -> bytes:
        """Everything buffered, at once; ``b""`` at the end. Cancel-safe: nothing is
        taken until it returns."""
        while not self._chunks and not self._is_eof:
            self._ready.clear()
            await self._ready.wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self.apply_flow_control()
        return data

    def apply_flow_control(self) -> None:
        """Pause the client's transport at the bound, resume it below."""
        if self._size >= self._max_bytes and not self._is_pausing:
            self._is_pausing = True
            self._transport.pause_reading()
        elif self._size < self._max_bytes and self._is_pausing:
            self._is_pausing = False
            if not self._transport.is_closing():
                self._transport.resume_reading()


class SwitchedResponse(web.StreamResponse):
    """The origin's 101 head, written to the client byte for byte; after it the connection
    carries the spliced stream, so aiohttp must write nothing more for this response."""

    def __init__(self, head: ResponseHead) -> None:
        super().__init__(status=101, reason=head.reason or None, headers=head.headers)
        self._raw_head = head.raw
        self._head_writer: AbstractStreamWriter | None = None
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._head_writer is None:
            self._head_writer = request.writer
            await request.writer.write(self._raw_head)
        return self._head_writer

    async def write_eof(self, data: bytes = b"") -> None:
        """Nothing: the stream ended when either side closed; HTTP has no say in it."""


async def proxy_upgrade(
    request: web.Request, edge: Edge, route: RouteConfig, origin: OriginConfig
) -> web.StreamResponse:
    """Answer an upgrade request (see the module docstring): refused (403) on a route
    with ``websocket = false``, 502/504 when the origin cannot be reached or does not
    answer in time, the origin's own answer otherwise."""
    if not route.is_upgrade_allowed:
        upgrade = request.headers.get("Upgrade", "")
        detail = (
            f'Upgrade requests (here "{upgrade}") are turned off for the route "{route.path}" '
            "(websocket = false in its configuration)."
        )
        return error_page(403, "Forbidden", detail)
    server = edge.config.server
    try:
        reader, writer = await _connect(origin, server.connect_timeout_s)
    except OriginError as exc:
        log.warning("upgrade to origin %s failed for %s: %s", origin.name, request.path, exc)
        return origin_error_page(origin, exc)
    try:
        try:
            async with asyncio.timeout(server.read_timeout_s):
                await _send_request(request, origin, peer_of(request, edge), writer)
                head = await _read_head(reader, origin.url)
        except TimeoutError:
            raise OriginError(origin.url, "no answer to the upgrade in time", status=504) from None
        except OSError as exc:
            raise OriginError(origin.url, f"connection broke ({type(exc).__name__})") from exc
        if head.status != 101:
            return await _relay(request, head, reader, origin.url, server.read_timeout_s)
        return await _splice(request, head, reader, writer)
    except OriginError as exc:
        log.warning("upgrade to origin %s failed for %s: %s", origin.name, request.path, exc)
        return origin_error_page(origin, exc)
    finally:
        writer.close()  # after a splice, flushes what the client sent last (its close frame)


async def _connect(
    origin: OriginConfig, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    tls = ssl.create_default_context() if origin.scheme == "https" else None
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.open_connection(
                origin.host, origin.port, ssl=tls, limit=MAX_HEAD_BYTES
            )
    except TimeoutError:
        raise OriginError(origin.url, "no connection in time", status=504) from None
    except OSError as exc:
        raise OriginError(origin.url, f"unreachable ({type(exc).__name__})") from exc


async def _send_request(
    request: web.Request, origin: OriginConfig, peer: Peer, writer: asyncio.StreamWriter
) -> None:
    """The visitor's request head, then its body if it has one (re-chunked if it came
    chunked: aiohttp has decoded the coding)."""
    is_chunked = request.body_exists and "Content-Length" not in request.headers
    prefix = urlsplit(origin.url).path
    head = origin_request_head(
        request.method,
        prefix + normalise_target(request.rel_url.raw_path_qs),
        request.raw_headers,
        host=authority(origin.scheme, origin.host, origin.port),
        peer=peer,
        is_chunked=is_chunked,
    )
    writer.write(head)
    if request.body_exists:
        async for chunk in request.content.iter_chunked(CHUNK_BYTES):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if is_chunked else chunk)
            await writer.drain()
        if is_chunked:
            writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _read_head(reader: asyncio.StreamReader, url: str) -> ResponseHead:
    """The origin's final response head; interim 1xx answers other than 101 are skipped
    (RFC 9110 §15.2). Bytes after the head stay in ``reader``."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise OriginError(url, f"response head over {MAX_HEAD_BYTES} bytes") from None
        except asyncio.IncompleteReadError:
            raise OriginError(url, "closed the connection without an answer") from None
        head = parse_response_head(raw)
        if head is None:
            raise OriginError(url, "malformed response head")
        if head.status >= 200 or head.status == 101:
            return head


async def _relay(
    request: web.Request,
    head: ResponseHead,
    reader: asyncio.StreamReader,
    url: str,
    read_timeout_s: float,
) -> web.StreamResponse:
    """The origin declined the upgrade: its answer goes to the visitor as it is."""
    framing = response_framing(head, request.method)
    if framing is None:
        raise OriginError(url, "ambiguous Content-Length")
    headers = strip_hop_by_hop(CIMultiDict(head.headers))
    if framing[0] is not BodyFraming.LENGTH:
        headers.popall("Content-Length", None)
    headers["X-Weaver-Cache"] = "BYPASS"
    response = web.StreamResponse(status=head.status, reason=head.reason or None, headers=headers)
    await response.prepare(request)
    try:
        async for chunk in _body(reader, framing, url, read_timeout_s):
            await response.write(chunk)
    except OriginError as exc:
        log.warning("relaying the origin's answer to %s broke off: %s", request.path, exc)
        if request.transport is not None:
            request.transport.abort()  # never end a broken body as if it were whole
        return response
    await response.write_eof()
    return response


async def _body(
    reader: asyncio.StreamReader, framing: tuple[BodyFraming, int], url: str, timeout_s: float
) -> AsyncIterator[bytes]:
    """A response body as it arrives, decoded from its framing; each read is bounded
    by ``timeout_s`` (never across a ``yield``).

    Raises:
        OriginError: the body broke off, timed out, or its chunked coding is malformed.
    """
    kind, remaining = framing
    if kind is BodyFraming.NONE:
        return
    is_chunked = kind is BodyFraming.CHUNKED
    try:
        while True:
            if is_chunked and remaining == 0:
                async with asyncio.timeout(timeout_s):
                    size = parse_chunk_size((await reader.readuntil(b"\r\n"))[:-2])
                if size is None:
                    raise OriginError(url, "malformed chunked body")
                if size == 0:  # trailers, ended by an empty line; dropped
                    async with asyncio.timeout(timeout_s):
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass
                    return
                remaining = size
            if kind is not BodyFraming.UNTIL_CLOSE and remaining == 0:
                return
            async with asyncio.timeout(timeout_s):
                want = CHUNK_BYTES if kind is BodyFraming.UNTIL_CLOSE else remaining
                chunk = await reader.read(min(CHUNK_BYTES, want))
            if not chunk:
                if kind is BodyFraming.UNTIL_CLOSE:
                    return
                raise OriginError(url, "body broke off")
            remaining -= len(chunk)
            yield chunk
            if is_chunked and remaining == 0:
                async with asyncio.timeout(timeout_s):
                    if await reader.readexactly(2) != b"\r\n":
                        raise OriginError(url, "malformed chunked body")
    except TimeoutError:
        raise OriginError(url, "body stalled", status=504) from None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
        raise OriginError(url, f"body broke off ({type(exc).__name__})") from exc


async def _splice(
    request: web.Request,
    head: ResponseHead,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> web.StreamResponse:
    """Take over the visitor's connection and splice bytes both ways until one side ends."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client went away before the upgrade")
    inbox = ClientInbox(transport)
    # Duck-typed: aiohttp calls only feed_data and feed_eof on the parser it is given.
    request.protocol.set_parser(inbox)  # type: ignore[arg-type]
    inbox.apply_flow_control()  # set_parser may have resumed reading past our bound
    request.protocol.keep_alive(False)
    response = SwitchedResponse(head)
    await response.prepare(request)
    async with asyncio.TaskGroup() as tasks:
        up = tasks.create_task(_client_to_origin(inbox, writer))
        down = tasks.create_task(_origin_to_client(reader, request.writer))
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
    return response


async def _client_to_origin(inbox: ClientInbox, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await inbox.read():
            writer.write(data)
            await writer.drain()
    except OSError as exc:
        log.debug("upgraded stream: origin write ended: %r", exc)


async def _origin_to_client(reader: asyncio.StreamReader, client: AbstractStreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK_BYTES):
            await client.write(data)
            await client.drain()
    except OSError as exc:
        log.debug("upgraded stream: client write or origin read ended: %r", exc)
