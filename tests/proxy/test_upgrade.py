"""Upgrades (proxy/upgrade.py): the client inbox of an upgraded connection on a real
socket's transport, then the app's own WebSockets (and other upgrades) through Weaver,
against a real origin."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from tests.certs import self_signed
from tests.integration.harness import TOKEN, Recorder, Stack, weaver_config, weaver_stack
from tests.servers import Handler, serve_app
from weaver.config.load import build_config
from weaver.proxy.app import build_app
from weaver.proxy.upgrade import ClientInbox

TIMEOUT_S = 20
MIB = 1024 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


INBOX_BOUND = 64 * 1024
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Feeding(asyncio.Protocol):
    """What aiohttp's server protocol does once ``set_parser`` gave it the inbox."""

    def __init__(self) -> None:
        self.paused = asyncio.Event()
        self._inbox: ClientInbox | None = None
        self._transport: asyncio.Transport | None = None

    @property
    def inbox(self) -> ClientInbox:
        assert self._inbox is not None
        return self._inbox

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inbox = ClientInbox(transport, max_bytes=INBOX_BOUND)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        assert self.inbox.feed_data(data) == (False, b"")
        if not self._transport.is_reading():
            self.paused.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.feed_eof()


async def test_inbox_pauses_reading_at_its_bound_and_resumes_when_taken() -> None:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, feeding = await loop.connect_accepted_socket(Feeding, ours)
    _, client = await asyncio.open_connection(sock=theirs)

    async def send() -> None:
        client.write(PAYLOAD)
        await client.drain()
        client.close()
        await client.wait_closed()

    async with asyncio.timeout(TIMEOUT_S), asyncio.TaskGroup() as tasks:
        tasks.create_task(send())
        await feeding.paused.wait()
        assert not transport.is_reading()
        held = feeding.inbox.buffered_bytes
        assert (
            INBOX_BOUND <= held < INBOX_BOUND + 256 * 1024
        )  # the bound plus at most one socket read
        received = await feeding.inbox.read()
        assert len(received) == held
        assert transport.is_reading()
        while chunk := await feeding.inbox.read():
            received += chunk
            assert feeding.inbox.buffered_bytes == 0
        assert received == PAYLOAD
    transport.close()


async def test_inbox_hands_out_what_it_holds_before_the_end() -> None:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, feeding = await loop.connect_accepted_socket(Feeding, ours)
    feeding.inbox.feed_data(b"last words")
    feeding.inbox.feed_eof()
    async with asyncio.timeout(TIMEOUT_S):
        assert await feeding.inbox.read() == b"last words"
        assert await feeding.inbox.read() == b""
    transport.close()
    theirs.close()


@dataclass
class Origin:
    """What the origin's WebSocket handlers saw."""

    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_codes: list[int | None] = field(default_factory=list)
    close_messages: list[object] = field(default_factory=list)
    release_reads: asyncio.Event = field(default_factory=asyncio.Event)

    def routes(self) -> dict[str, Handler]:
        return {
            "/ws/echo": self.echo,
            "/ws/bye": self.bye,
            "/ws/slow-echo": self.slow_echo,
            "/ws/refuse": refuse,
            "/ws/bad": bad_request_chunked,
        }

    async def echo(self, request: web.Request) -> web.StreamResponse:
        return await self._echo(request, is_slow=False)

    async def slow_echo(self, request: web.Request) -> web.StreamResponse:
        """Reads nothing until released, so what the client sends piles up in between."""
        return await self._echo(request, is_slow=True)

    async def _echo(self, request: web.Request, *, is_slow: bool) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=8 * MIB)
        await ws.prepare(request)
        if is_slow:
            await self.release_reads.wait()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
        finally:
            self.close_codes.append(ws.close_code)
            self.closed.set()
        return ws

    async def bye(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello, then bye")
        await ws.close(code=4000, message=b"origin says bye")
        self.closed.set()
        return ws


async def refuse(request: web.Request) -> web.StreamResponse:
    return web.Response(status=403, text="no socket for you", headers={"X-App": "refused"})


async def bad_request_chunked(request: web.Request) -> web.StreamResponse:
    # No length: aiohttp sends it chunked (HTTP/1.1), which Weaver must decode.
    response = web.StreamResponse(status=400, headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    for part in (b"bad ", b"upgrade ", b"request"):
        await response.write(part)
    await response.write_eof()
    return response


@asynccontextmanager
async def stack_with(origin: Origin, **route: object) -> AsyncIterator[tuple[Stack, Recorder]]:
    recorder = Recorder()
    async with weaver_stack(origin.routes(), recorder, **route) as stack:
        yield stack, recorder


def ws_url(stack: Stack, path: str) -> str:
    return stack.url.replace("http://", "ws://") + path


UPGRADE_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
}


async def test_text_and_binary_messages_echo_through_weaver() -> None:
    origin = Origin()
    async with asyncio.timeout(TIMEOUT_S), stack_with(origin) as (stack, _):
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(ws_url(stack, "/ws/echo")) as ws,
        ):
            await ws.send_str("héllo")
            assert await ws.receive_str() == "héllo"
            await ws.send_bytes(b"\x00\xff binary \r\n\r\n")
            assert await ws.receive_bytes() == b"\x00\xff binary \r\n\r\n"
        await origin.closed.wait()


async def test_megabyte_messages_arrive_whole_and_in_order_both_ways() -> None:
    """9 MiB each way, the origin reading nothing until the first MiB is sent: Weaver's
    paused reads and drains (bounds: tests/proxy/test_upgrade.py) lose and reorder
    nothing. The client reads while it sends, as an echo client must (an echo that
    nobody reads stalls any TCP pipe, proxied or not)."""
    origin = Origin()
    messages = [bytes([n]) * MIB + n.to_bytes(4, "big") for n in range(8)]
    text = "é" * (MIB // 2)
    async with asyncio.timeout(TIMEOUT_S), stack_with(origin) as (stack, _):
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(ws_url(stack, "/ws/slow-echo"), max_msg_size=8 * MIB) as ws,
        ):

            async def send() -> None:
                for message in messages:
                    await ws.send_bytes(message)
                    origin.release_reads.set()
                await ws.send_str(text)

            async def receive() -> tuple[list[bytes], str]:
                received = [await ws.receive_bytes() for _ in messages]
                return received, await ws.receive_str()

            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(send())
                receiving = tasks.create_task(receive())
            assert receiving.result() == (messages, text)


async def test_origin_sees_the_visitors_cookies_but_never_weavers_session_cookie() -> None:
    origin = Origin()
    async with asyncio.timeout(TIMEOUT_S), stack_with(origin) as (stack, recorder):
        headers = {
            "Cookie": "a=1; weaver_session=secret; b=2; __Host-weaver_session=x",
            "Origin": "http://shop.test",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.test",
            "Sec-WebSocket-Protocol": "chat",
        }
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(ws_url(stack, "/ws/echo?room=7"), headers=headers) as ws,
        ):
            await ws.send_str("ping")
            assert await ws.receive_str() == "ping"
        seen = recorder.headers["/ws/echo?room=7"]
        weaver_host = stack.url.removeprefix("http://")
        assert seen["Cookie"] == "a=1; b=2"
        assert seen["Origin"] == "http://shop.test"
        assert seen["Sec-WebSocket-Protocol"] == "chat"
        assert seen["Upgrade"] == "websocket"
        assert seen["Connection"] == "Upgrade"
        assert seen["Host"] == stack.origin_url.removeprefix("http://")
        assert seen["X-Forwarded-For"] == "127.0.0.1"
        assert seen["X-Forwarded-Proto"] == "http"
        assert seen["X-Forwarded-Host"] == weaver_host
        assert seen["Forwarded"] == f'for=127.0.0.1;proto=http;host="{weaver_host}"'


async def test_client_closing_is_seen_by_the_origin_with_its_code() -> None:
    origin = Origin()
    async with asyncio.timeout(TIMEOUT_S), stack_with(origin) as (stack, _):
        async with aiohttp.ClientSession() as client:
            ws = await client.ws_connect(ws_url(stack, "/ws/echo"))
            await ws.send_str("one")
            assert await ws.receive_str() == "one"
            await ws.close(code=4001, message=b"client done")
            await origin.closed.wait()
        assert origin.close_codes == [4001]


async def test_client_dropping_its_connection_closes_the_origins_socket() -> None:
    """No close frame: the client's TCP connection just ends after the handshake."""
    origin = Origin()
    async with asyncio.timeout(TIMEOUT_S), stack_with(origin) as (stack, _):
        host, port = stack.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        request_head = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE_HEADERS.items())
        writer.write(f"GET /ws/echo HTTP/1.1\r\nHost: {host}\r\n{request_head}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        accept = base64.b64encode(
            hashlib.sha1(UPGRADE_HEADERS["Sec-WebSocket-Key"].encode() + WS_GUID).digest()
        )
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"Sec-WebSocket-Accept: " + accept + b"\r\n" in head
        writer.close()
        await writer.wait_closed()
        await origin.closed.wait()
        assert origin.close_codes == [None]  # no close frame: its socket just ended


async def test_origin_closing_is_seen_by_the_client_with_its_code_and_reason() -> None:
    origin = Origin()
    async with asyncio.timeout(TIMEOUT_S), stack_with(origin) as (stack, _):
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(ws_url(stack, "/ws/bye")) as ws,
        ):
            assert await ws.receive_str() == "hello, then bye"
            msg = await ws.receive()
            assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4000, "origin says bye")
            assert (await ws.receive()).type is WSMsgType.CLOSED
            assert ws.close_code == 4000


async def test_route_without_websockets_refuses_the_upgrade_with_403() -> None:
    origin = Origin()
    async with asyncio.timeout(TIMEOUT_S), stack_with(origin, websocket=False) as (stack, rec):
        async with aiohttp.ClientSession() as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await client.ws_connect(ws_url(stack, "/ws/echo"))
            assert info.value.status == 403
            async with client.get(stack.url + "/ws/echo", headers=UPGRADE_HEADERS) as resp:
                assert resp.status == 403
                body = await resp.text()
        assert "websocket = false" in body
        assert rec.requests == []


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [("/ws/refuse", 403, "no socket for you"), ("/ws/bad", 400, "bad upgrade request")],
)
async def test_origin_declining_the_upgrade_is_relayed_as_its_own_answer(
    path: str, status: int, body: str
) -> None:
    origin = Origin()
    async with asyncio.timeout(TIMEOUT_S), stack_with(origin) as (stack, _):
        async with aiohttp.ClientSession() as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await client.ws_connect(ws_url(stack, path))
            assert info.value.status == status
            async with client.get(stack.url + path, headers=UPGRADE_HEADERS) as resp:
                assert resp.status == status
                assert await resp.text() == body
                assert resp.headers["X-Weaver-Cache"] == "BYPASS"


async def test_unreachable_origin_answers_the_upgrade_with_502() -> None:
    async with serve_app(web.Application()) as gone_url:
        pass  # the port is free again: nothing listens there now
    with tempfile.TemporaryDirectory(prefix="weaver-cache-") as cache_dir:
        app = build_app(weaver_config(gone_url, cache_dir))
        async with asyncio.timeout(TIMEOUT_S), serve_app(app) as url:
            async with aiohttp.ClientSession() as client:
                async with client.get(url + "/ws/echo", headers=UPGRADE_HEADERS) as resp:
                    assert resp.status == 502
                    assert 'the origin "shop"' in await resp.text()


@asynccontextmanager
async def raw_origin(answer: bytes | None, *, hangs_up: bool) -> AsyncIterator[str]:
    """An origin that reads a request head, sends ``answer`` (or nothing), then hangs up
    or waits for Weaver to."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        if not hangs_up:
            await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"


@asynccontextmanager
async def weaver_before(origin_url: str, **server: object) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="weaver-cache-") as cache_dir:
        config = build_config(
            {
                "server": server,
                "session": {"publish_token": TOKEN, "secret": "s", "listen": "127.0.0.1:0"},
                "cache": {"dir": cache_dir},
                "origin": [{"name": "shop", "url": origin_url}],
                "route": [{"path": "/", "origin": "shop"}],
            },
            "<test>",
        )
        async with serve_app(build_app(config)) as url:
            yield url


@pytest.mark.parametrize(
    ("answer", "hangs_up", "status", "reason"),
    [
        (b"HTTP/1.1 101 OK\r\nX: " + b"a" * 70_000, False, 502, "over 65536 bytes"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", False, 502, "malformed response head"),
        (b"HTTP/1.1 101 Switching", True, 502, "closed the connection without an answer"),
        (None, False, 504, "no answer to the upgrade in time"),
    ],
)
async def test_an_origin_answering_the_upgrade_badly_gets_the_client_a_gateway_error(
    answer: bytes | None, hangs_up: bool, status: int, reason: str
) -> None:
    async with asyncio.timeout(TIMEOUT_S), raw_origin(answer, hangs_up=hangs_up) as origin_url:
        async with weaver_before(origin_url, read_timeout="200ms") as url:
            async with aiohttp.ClientSession() as client:
                async with client.get(url + "/ws", headers=UPGRADE_HEADERS) as resp:
                    assert resp.status == status
                    assert reason in await resp.text()


async def test_any_other_protocol_is_spliced_byte_for_byte_both_ways() -> None:
    """Not a WebSocket: aiohttp's parser does not switch for it, Weaver still does."""
    head_seen: list[bytes] = []
    origin_saw_eof = asyncio.Event()
    switched = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo/1\r\n\r\n"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(switched + b"greeting\r\n\r\n")
        while data := await reader.read(65536):
            writer.write(data[::-1])
            await writer.drain()
        origin_saw_eof.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with asyncio.timeout(TIMEOUT_S), server:
        origin_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with weaver_before(origin_url) as url:
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
                "Upgrade: echo/1\r\n\r\n".encode()
            )
            assert await reader.readexactly(len(switched)) == switched
            assert await reader.readexactly(12) == b"greeting\r\n\r\n"
            writer.write(b"GET / HTTP/1.1\r\n\r\n")  # not HTTP any more: bytes for the origin
            assert await reader.readexactly(18) == b"\n\r\n\r1.1/PTTH / TEG"
            writer.close()
            await writer.wait_closed()
            await origin_saw_eof.wait()
    assert head_seen[0].startswith(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n" in head_seen[0]


@pytest.fixture
def tls_origin_cert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1 that Weaver's default context trusts
    (through SSL_CERT_FILE); returns the origin's server context."""
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_an_https_origins_websocket_is_reached_over_tls(
    tls_origin_cert: ssl.SSLContext,
) -> None:
    origin = Origin()
    app = web.Application()
    app.router.add_get("/ws/echo", origin.echo)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls_origin_cert)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with asyncio.timeout(TIMEOUT_S), weaver_before(f"https://127.0.0.1:{port}") as url:
            async with (
                aiohttp.ClientSession() as client,
                client.ws_connect(url.replace("http://", "ws://") + "/ws/echo") as ws,
            ):
                await ws.send_str("over tls")
                assert await ws.receive_str() == "over tls"
            await origin.closed.wait()
    finally:
        await runner.cleanup()
