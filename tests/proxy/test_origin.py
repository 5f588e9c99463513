"""The origin client against real origins on 127.0.0.1: aiohttp apps, and raw asyncio
servers where a test needs bytes aiohttp would not send."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.certs import self_signed
from tests.proxy.origin_servers import (
    BODY,
    Transports,
    origin_client,
    raw_origin,
    read_body,
)
from tests.servers import serve_app
from weaver.proxy.errors import OriginError

TIMEOUT_S = 20


async def test_a_content_length_body_arrives_whole_with_status_and_headers() -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, origin_client() as client:
        async with client.request("GET", url + "/a%2Fb?q=1", headers={}) as resp:
            assert resp.status == 200 and resp.url == url + "/a%2Fb?q=1"
            assert resp.headers["X-Kind"] == "length"
            assert resp.headers["X-Path"] == "/a%2Fb?q=1"  # the target exactly as given
            assert resp.content_type == "application/octet-stream" and not resp.is_html
            assert b"".join([c async for c in resp.chunks()]) == BODY


async def test_a_chunked_body_arrives_unchunked() -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, origin_client() as client:
        async with client.request("GET", url + "/chunked", headers={}) as resp:
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert b"".join([c async for c in resp.chunks()]) == b"hello, world"


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

    async with asyncio.timeout(TIMEOUT_S), raw_origin(serve) as url, origin_client() as client:
        assert await read_body(client, url + "/") == (200, b"ok")  # connection 1
        assert await read_body(client, url + "/") == (200, b"ok")  # 1 closes: retried on 2
        assert await read_body(client, url + "/") == (200, b"ok")  # connection 2 serves on
        assert await read_body(client, url + "/", "POST") == (200, b"ok")  # 2 is well
        async with origin_client() as other:
            assert await read_body(other, url + "/", "POST") == (200, b"ok")  # connection 3
            with pytest.raises(OriginError) as caught:
                await read_body(other, url + "/", "POST")  # 3 closes: a POST is not resent
    assert caught.value.status == 502 and caught.value.reason == "closed before answering"


async def test_a_refused_connection_is_a_502() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        async with asyncio.timeout(TIMEOUT_S), origin_client() as client:
            with pytest.raises(OriginError) as caught:
                await read_body(client, f"http://127.0.0.1:{port}/")
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
            async with asyncio.timeout(TIMEOUT_S), origin_client(connect_timeout="200ms") as client:
                with pytest.raises(OriginError) as caught:
                    await read_body(client, f"http://127.0.0.1:{port}/")
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
        origin_client(read_timeout="200ms") as client,
    ):
        with pytest.raises(OriginError) as caught:
            await read_body(client, url + "/")
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
        origin_client(read_timeout="200ms") as client,
    ):
        async with client.request("GET", url + "/", headers={}) as resp:
            chunks = resp.chunks()
            assert await anext(chunks) == b"12345"
            with pytest.raises(TimeoutError):
                await anext(chunks)


async def test_read_gives_the_body_piece_by_piece_then_empty_and_a_cut_body_raises() -> None:
    origin = Transports()
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, origin_client() as client:
        async with client.request("GET", url + "/chunked", headers={}) as resp:
            body = b""
            while data := await resp.read():
                body += data
            assert (body, await resp.read()) == (b"hello, world", b"")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await writer.drain()

    async with asyncio.timeout(TIMEOUT_S), raw_origin(serve) as url, origin_client() as client:
        async with client.request("GET", url + "/", headers={}) as resp:
            assert await resp.read() == b"12345"
            with pytest.raises(OriginError):
                await resp.read()


async def test_a_body_cut_short_is_an_origin_error() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await writer.drain()

    async with asyncio.timeout(TIMEOUT_S), raw_origin(serve) as url, origin_client() as client:
        with pytest.raises(OriginError) as caught:
            await read_body(client, url + "/")
    assert caught.value.reason == "body broke off (body broke off)"


async def test_a_malformed_answer_is_a_502() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async with asyncio.timeout(TIMEOUT_S), raw_origin(serve) as url, origin_client() as client:
        with pytest.raises(OriginError) as caught:
            await read_body(client, url + "/")
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
    async with asyncio.timeout(TIMEOUT_S), serve_app(origin.app) as url, origin_client() as client:
        async with client.request("POST", url + "/", headers={}, body=b"x" * 100_000) as resp:
            assert b"".join([c async for c in resp.chunks()]) == b"x" * 100_000
        streamed = {"Content-Length": "13"}
        async with client.request("PUT", url + "/", headers=streamed, body=_parts()) as resp:
            assert b"".join([c async for c in resp.chunks()]) == b"one two three"
        async with client.request("PUT", url + "/", headers={}, body=_parts()) as resp:
            assert b"".join([c async for c in resp.chunks()]) == b"one two three"
        assert await read_body(client, url + "/", "POST") == (200, b"")
    assert origin.framing == [("100000", None), ("13", None), (None, "chunked"), ("0", None)]


async def test_the_callers_host_header_is_sent_instead_of_the_origins() -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.Response()

    app = web.Application()
    app.router.add_get("/", handle)
    async with asyncio.timeout(TIMEOUT_S), serve_app(app) as url, origin_client() as client:
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
            async with origin_client() as untrusting:
                with pytest.raises(OriginError) as caught:
                    await read_body(untrusting, f"https://127.0.0.1:{port}/")
            assert caught.value.reason == "unreachable (SSLCertVerificationError)"
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            async with origin_client() as client:
                assert await read_body(client, f"https://127.0.0.1:{port}/") == (200, BODY)
                assert await read_body(client, f"https://127.0.0.1:{port}/chunked") == (
                    200,
                    b"hello, world",
                )
    finally:
        await runner.cleanup()
    assert origin.connections == 1
