"""The origin client against real origins on 127.0.0.1: aiohttp apps, and raw asyncio
servers where a test needs bytes aiohttp would not send."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from tests.certs import self_signed
from tests.servers import serve_app
from weaver.config.load import build_config
from weaver.config.schema import Config
from weaver.proxy.errors import OriginError
from weaver.proxy.origin import OriginClient
from weaver.proxy.origin_pool import HIGH_WATER_BYTES, PoolStats

TIMEOUT_S = 20
BODY = b"0123456789abcdef" * 4096  # 64 KiB
SOCKET_READ_BYTES = 256 * 1024  # asyncio's largest single read


def _config(**server: str) -> Config:
    return build_config(
        {
            "server": server,
            "origin": [{"name": "o", "url": "http://127.0.0.1:1"}],
            "route": [{"path": "/", "origin": "o"}],
        },
        "<test>",
    )


@asynccontextmanager
async def _client(**server: str) -> AsyncIterator[OriginClient]:
    async with OriginClient(_config(**server)) as client:
        yield client


async def _until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (the caller's asyncio.timeout bounds it)."""
    # The pool has no event for "a request is waiting": yield to the loop until it shows.
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0)


async def _body(client: OriginClient, url: str, method: str = "GET") -> tuple[int, bytes]:
    async with client.request(method, url, headers={}) as resp:
        return resp.status, b"".join([chunk async for chunk in resp.chunks()])


class Transports:
    """An origin app that records which connection carried each request."""

    def __init__(self) -> None:
        self.seen: list[object] = []  # the transports themselves: their ids stay unique
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    @property
    def connections(self) -> int:
        return len({id(transport) for transport in self.seen})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.transport)

        tail = request.match_info["tail"]
        if tail == "chunked":
            response = web.StreamResponse(headers={"X-Kind": "chunked"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for piece in (b"hello", b", ", b"world"):
                await response.write(piece)
            await response.write_eof()
            return response
        if tail == "nothing":
            return web.Response(status=204)
        if tail == "unchanged":
            return web.Response(status=304, headers={"ETag": '"v1"'})
        if tail == "close":
            return web.Response(body=b"bye", headers={"Connection": "close"})
        return web.Response(body=BODY, headers={"X-Kind": "length", "X-Path": request.path_qs})


@asynccontextmanager
async def _raw_origin(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]],
) -> AsyncIterator[str]:
    """A raw TCP origin: ``serve(reader, writer, connection_number)`` per connection."""
    count = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        try:
            await serve(reader, writer, count)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed: what these origins expect sooner or later
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_content_length_body_arrives_whole_with_status_and_headers() -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, _client() as client:
        async with client.request("GET", url + "/a%2Fb?q=1", headers={}) as resp:
            assert resp.status == 200 and resp.url == url + "/a%2Fb?q=1"
            assert resp.headers["X-Kind"] == "length"
            assert resp.headers["X-Path"] == "/a%2Fb?q=1"  # the target exactly as given
            assert resp.content_type == "application/octet-stream" and not resp.is_html
            assert b"".join([c async for c in resp.chunks()]) == BODY


async def test_a_chunked_body_arrives_unchunked() -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, _client() as client:
        async with client.request("GET", url + "/chunked", headers={}) as resp:
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert b"".join([c async for c in resp.chunks()]) == b"hello, world"


async def test_a_body_without_framing_ends_when_the_origin_closes() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n")
        writer.write(b"<p>until close</p>")
        await writer.drain()

    async with asyncio.timeout(TIMEOUT_S), _raw_origin(serve) as url, _client() as client:
        async with client.request("GET", url + "/", headers={}) as resp:
            assert resp.is_html and resp.content_type == "text/html"
            assert b"".join([c async for c in resp.chunks()]) == b"<p>until close</p>"
        assert client.pool_stats().idle == 0  # a connection that ended the body is not kept


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("HEAD", "/", 200), ("GET", "/nothing", 204), ("GET", "/unchanged", 304)],
)
async def test_responses_without_a_body_end_at_once_and_keep_the_connection(
    method: str, path: str, status: int
) -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, _client() as client:
        assert await _body(client, url + path, method) == (status, b"")
        assert await _body(client, url + "/") == (200, BODY)
    assert origin.connections == 1


async def test_sequential_requests_reuse_one_connection() -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, _client() as client:
        for path in ("/", "/chunked", "/", "/nothing"):
            await _body(client, url + path)
        assert client.pool_stats().idle == 1
    assert len(origin.seen) == 4 and origin.connections == 1


async def test_a_response_that_says_close_is_not_reused() -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, _client() as client:
        assert await _body(client, url + "/close") == (200, b"bye")
        await _body(client, url + "/")
    assert origin.connections == 2


async def test_a_consumer_that_stops_early_closes_the_connection_and_cancels_the_origin() -> None:
    cancelled = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            while True:
                await response.write(BODY)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    app = web.Application()
    app.router.add_get("/", endless)
    async with asyncio.timeout(TIMEOUT_S), serve_app(app) as url, _client() as client:
        async with client.request("GET", url + "/", headers={}) as resp:
            async for _ in resp.chunks():
                break
        await cancelled.wait()
        assert client.pool_stats() == PoolStats(open=0, idle=0, waiting=0)


async def test_a_large_body_streams_in_bounded_memory_to_a_slow_consumer() -> None:
    total_bytes = 50 * 1024 * 1024

    async def large(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = total_bytes
        await response.prepare(request)
        for _ in range(total_bytes // len(BODY)):
            await response.write(BODY)
        return response

    app = web.Application()
    app.router.add_get("/", large)
    received = peak = 0
    async with asyncio.timeout(TIMEOUT_S * 3), serve_app(app) as url, _client() as client:
        async with client.request("GET", url + "/", headers={}) as resp:
            async for chunk in resp.chunks():
                received += len(chunk)
                for _ in range(20):  # the consumer lags: the origin runs ahead meanwhile
                    await asyncio.sleep(0)
                peak = max(peak, resp.buffered_bytes)
    assert received == total_bytes
    assert HIGH_WATER_BYTES < peak <= HIGH_WATER_BYTES + SOCKET_READ_BYTES


async def test_a_stale_kept_alive_connection_is_retried_once_for_get_not_for_post() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        if n % 2 == 1:  # odd connections time out as the second request arrives
            await reader.readuntil(b"\r\n\r\n")
            return
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(answer)

    async with asyncio.timeout(TIMEOUT_S), _raw_origin(serve) as url, _client() as client:
        assert await _body(client, url + "/") == (200, b"ok")  # connection 1
        assert await _body(client, url + "/") == (200, b"ok")  # 1 closes: retried on 2
        assert await _body(client, url + "/") == (200, b"ok")  # connection 2 serves on
        assert await _body(client, url + "/", "POST") == (200, b"ok")  # 2 is well
        async with _client() as other:
            assert await _body(other, url + "/", "POST") == (200, b"ok")  # connection 3
            with pytest.raises(OriginError) as caught:
                await _body(other, url + "/", "POST")  # 3 closes: a POST is not resent
    assert caught.value.status == 502 and caught.value.reason == "closed before answering"


async def test_the_pool_bounds_connections_per_origin_and_hands_them_over_in_order() -> None:
    release, first_arrived = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        order.append(request.path)
        if request.path == "/first":
            first_arrived.set()
            await release.wait()
        return web.Response(text=request.path)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    config = _config()
    async with (
        asyncio.timeout(TIMEOUT_S),
        serve_app(app) as url,
        OriginClient(config, max_per_origin=1) as client,
        asyncio.TaskGroup() as tasks,
    ):
        first = tasks.create_task(_body(client, url + "/first"))
        await first_arrived.wait()
        second = tasks.create_task(_body(client, url + "/second"))
        await _until(lambda: client.pool_stats().waiting == 1)
        third = tasks.create_task(_body(client, url + "/third"))
        await _until(lambda: client.pool_stats().waiting == 2)
        assert client.pool_stats().open == 1
        release.set()
        assert [await t for t in (first, second, third)] == [
            (200, b"/first"),
            (200, b"/second"),
            (200, b"/third"),
        ]
    assert order == ["/first", "/second", "/third"]


async def test_the_total_bound_closes_an_idle_connection_for_another_origin() -> None:
    one, two = Transports(), Transports()
    async with (
        asyncio.timeout(TIMEOUT_S),
        serve_app(one.app) as url_one,
        serve_app(two.app) as url_two,
        OriginClient(_config(), max_connections=1) as client,
    ):
        await _body(client, url_one + "/")
        assert client.pool_stats().idle == 1
        await _body(client, url_two + "/")
        assert client.pool_stats().open == 1
        await _body(client, url_one + "/")
    assert one.connections == 2 and two.connections == 1


async def test_a_refused_connection_is_a_502() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        async with asyncio.timeout(TIMEOUT_S), _client() as client:
            with pytest.raises(OriginError) as caught:
                await _body(client, f"http://127.0.0.1:{port}/")
    assert caught.value.status == 502
    assert caught.value.reason == "unreachable (ConnectionRefusedError)"


async def test_an_origin_that_never_accepts_is_a_504_after_the_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the accept queue: later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            async with asyncio.timeout(TIMEOUT_S), _client(connect_timeout="200ms") as client:
                with pytest.raises(OriginError) as caught:
                    await _body(client, f"http://127.0.0.1:{port}/")
        finally:
            for filler in fillers:
                filler.close()
    assert caught.value.status == 504 and caught.value.reason == "no connection in time"


async def test_no_head_within_the_read_timeout_is_a_504_and_a_deadline_a_timeout() -> None:
    async def silent(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/", silent)
    async with (
        asyncio.timeout(TIMEOUT_S),
        serve_app(app) as url,
        _client(read_timeout="200ms") as client,
    ):
        with pytest.raises(OriginError) as caught:
            await _body(client, url + "/")
        assert caught.value.status == 504 and caught.value.reason == "no answer in time"
        deadline = asyncio.get_running_loop().time() + 0.05
        with pytest.raises(TimeoutError):
            async with client.request("GET", url + "/", headers={}, deadline=deadline):
                pass


async def test_a_body_that_stalls_past_the_read_timeout_raises_timeout_error() -> None:
    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 10
        await response.prepare(request)
        await response.write(b"12345")
        await asyncio.Event().wait()
        return response

    app = web.Application()
    app.router.add_get("/", stalls)
    async with (
        asyncio.timeout(TIMEOUT_S),
        serve_app(app) as url,
        _client(read_timeout="200ms") as client,
    ):
        async with client.request("GET", url + "/", headers={}) as resp:
            chunks = resp.chunks()
            assert await anext(chunks) == b"12345"
            with pytest.raises(TimeoutError):
                await anext(chunks)


async def test_a_body_cut_short_is_an_origin_error() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await writer.drain()

    async with asyncio.timeout(TIMEOUT_S), _raw_origin(serve) as url, _client() as client:
        with pytest.raises(OriginError) as caught:
            await _body(client, url + "/")
    assert caught.value.reason == "body broke off (body broke off)"


async def test_a_malformed_answer_is_a_502() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async with asyncio.timeout(TIMEOUT_S), _raw_origin(serve) as url, _client() as client:
        with pytest.raises(OriginError) as caught:
            await _body(client, url + "/")
    assert caught.value.status == 502
    assert caught.value.reason == "malformed answer (bad status line)"


class Uploads:
    """An origin that answers with what it received."""

    def __init__(self) -> None:
        self.framing: list[tuple[str | None, str | None]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        headers = request.headers
        self.framing.append((headers.get("Content-Length"), headers.get("Transfer-Encoding")))
        return web.Response(body=await request.read())


async def _parts() -> AsyncIterator[bytes]:
    for part in (b"one ", b"", b"two ", b"three"):
        yield part


async def test_request_bodies_keep_a_known_length_else_go_chunked() -> None:
    origin = Uploads()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, _client() as client:
        async with client.request("POST", url + "/", headers={}, body=b"x" * 100_000) as resp:
            assert b"".join([c async for c in resp.chunks()]) == b"x" * 100_000
        streamed = {"Content-Length": "13"}
        async with client.request("PUT", url + "/", headers=streamed, body=_parts()) as resp:
            assert b"".join([c async for c in resp.chunks()]) == b"one two three"
        async with client.request("PUT", url + "/", headers={}, body=_parts()) as resp:
            assert b"".join([c async for c in resp.chunks()]) == b"one two three"
        assert await _body(client, url + "/", "POST") == (200, b"")
    assert origin.framing == [("100000", None), ("13", None), (None, "chunked"), ("0", None)]


async def test_the_callers_host_header_is_sent_instead_of_the_origins() -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.Response()

    app = web.Application()
    app.router.add_get("/", handle)
    async with asyncio.timeout(TIMEOUT_S), serve_app(app) as url, _client() as client:
        async with client.request("GET", url + "/", headers={"Host": "shop.test"}):
            pass
        async with client.request("GET", url + "/", headers={}):
            pass
    assert seen == ["shop.test", url.removeprefix("http://")]


@pytest.fixture
def self_signed_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key."""
    return self_signed(tmp_path)


async def test_an_https_origin_is_verified_against_the_trusted_certificates(
    self_signed_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_pair
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    origin = Transports()
    runner = web.AppRunner(origin.app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    sockets = getattr(site._server, "sockets", None)  # as tests/servers.py reads the port
    assert sockets
    port = sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(TIMEOUT_S):
            async with _client() as untrusting:
                with pytest.raises(OriginError) as caught:
                    await _body(untrusting, f"https://127.0.0.1:{port}/")
            assert caught.value.reason == "unreachable (SSLCertVerificationError)"
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            async with _client() as client:
                assert await _body(client, f"https://127.0.0.1:{port}/") == (200, BODY)
                assert await _body(client, f"https://127.0.0.1:{port}/chunked") == (
                    200,
                    b"hello, world",
                )
    finally:
        await runner.cleanup()
    assert origin.connections == 1
