"""``server.tls_cert``/``tls_key``: Weaver as the TLS edge, with a certificate the test makes."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.harness import html
from tests.integration.ops_harness import weaver_serve
from tests.servers import serve_app


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


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
