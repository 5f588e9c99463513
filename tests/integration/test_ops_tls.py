"""``server.tls_cert``/``tls_key``: Weaver as the TLS edge, with a certificate the test makes."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.certs import self_signed
from tests.integration.harness import html
from tests.integration.ops_harness import weaver_serve
from tests.servers import serve_app


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
