"""TLS (proxy/tls.py): the server context from ``tls_cert``/``tls_key``, then Weaver as the
TLS edge in a real ``weaver serve``, with a certificate the test makes."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.certs import self_signed
from tests.integration.harness import html
from tests.integration.ops_harness import weaver_serve
from tests.servers import serve_app
from weaver.proxy.tls import TlsError, server_context


def test_no_certificate_means_no_tls() -> None:
    assert server_context("", "", where="server") is None


async def test_the_context_is_tls_1_2_or_later_and_offers_only_http_1_1_to_a_real_client(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path)
    context = server_context(str(cert), str(key), where="server")
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="over tls")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started
    try:
        async with asyncio.timeout(10):
            trust = ssl.create_default_context(cafile=str(cert))
            trust.set_alpn_protocols(["h2", "http/1.1"])
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trust)
            ssl_object = writer.get_extra_info("ssl_object")
            assert ssl_object.selected_alpn_protocol() == "http/1.1"  # never h2
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"over tls")


@pytest.mark.parametrize("damage", ["missing", "not-pem", "wrong-key"])
def test_an_unusable_certificate_or_key_names_the_config_keys_and_the_fix(
    tmp_path: Path, damage: str
) -> None:
    cert, key = self_signed(tmp_path)
    if damage == "missing":
        key = tmp_path / "nowhere.pem"
    elif damage == "not-pem":
        key.write_text("not a key")
    else:
        other = tmp_path / "other"
        other.mkdir()
        _, key = self_signed(other)  # a key, but not the certificate's
    with pytest.raises(TlsError) as raised:
        server_context(str(cert), str(key), where="session")
    message = str(raised.value)
    assert message.startswith(f"session.tls_cert / session.tls_key: cannot load {str(cert)!r}")
    assert message.endswith("(PEM certificate chain and an unencrypted PEM private key)")


async def test_pages_are_served_over_tls_with_the_host_prefixed_session_cookie(
    tmp_path: Path,
) -> None:
    async def page(request: web.Request) -> web.Response:
        return html('hello <weaver-subscribe channel="deals"/>', **{"Cache-Control": "no-store"})

    origin = web.Application()
    origin.router.add_get("/", page)
    cert, key = self_signed(tmp_path)
    config = tmp_path / "weaver.toml"
    async with serve_app(origin) as origin_url:
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:0"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
            f'[session]\nlisten = "127.0.0.1:0"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
            f'[cache]\ndir = "{tmp_path / "cache"}"\n'
            f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n'
            '[[route]]\npath = "/"\norigin = "o"\n'
        )
        trust = ssl.create_default_context(cafile=str(cert))
        async with weaver_serve(config) as weaver, aiohttp.ClientSession() as client:
            assert weaver.url.startswith("https://127.0.0.1:")
            async with client.get(weaver.url + "/", ssl=trust) as resp:
                assert resp.status == 200
                assert (await resp.read()).startswith(b"hello")
                cookie = resp.headers["Set-Cookie"]
                assert cookie.startswith("__Host-weaver_session=") and "Secure" in cookie
            assert "sessions on wss://127.0.0.1:" in weaver.err.text
