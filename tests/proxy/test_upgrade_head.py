from __future__ import annotations

import pytest
from multidict import CIMultiDict

from weaver.proxy.forwarding import Peer
from weaver.proxy.http1 import BodyFraming
from weaver.proxy.upgrade_head import (
    authority,
    is_upgrade_request,
    origin_request_head,
    parse_chunk_size,
    parse_response_head,
    response_framing,
)

VISITOR = Peer(address="10.0.0.7", scheme="https", host="shop.test")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Connection": "Upgrade", "Upgrade": "websocket"}, True),
        ({"Connection": "keep-alive, upgrade", "Upgrade": "h2c"}, True),
        ({"Connection": "keep-alive", "Upgrade": "websocket"}, False),
        ({"Connection": "Upgrade"}, False),
        ({"Connection": "Upgrade", "Upgrade": " "}, False),
        ({}, False),
    ],
)
def test_an_upgrade_request_names_upgrade_in_connection_and_has_an_upgrade_header(
    headers: dict[str, str], expected: bool
) -> None:
    assert is_upgrade_request(CIMultiDict(headers)) is expected


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (b"a=1; weaver_session=s; b=2", b"Cookie: a=1; b=2\r\n"),
        (b"__Host-weaver_session=s;a=1", b"Cookie: a=1\r\n"),
        (b"weaver_session=s", b""),
        (
            b"weaver_session_x=1; xweaver_session=2",
            b"Cookie: weaver_session_x=1; xweaver_session=2\r\n",
        ),
    ],
)
def test_weavers_session_cookie_is_taken_out_and_the_others_stay(
    cookie: bytes, expected: bytes
) -> None:
    head = origin_request_head("GET", "/", [(b"Cookie", cookie)], host="o", peer=VISITOR)
    cookie_lines = [line + b"\r\n" for line in head.split(b"\r\n") if line.startswith(b"Cookie")]
    assert b"".join(cookie_lines) == expected


def test_origin_request_keeps_the_visitors_headers_and_replaces_forwarding_and_host() -> None:
    raw = [
        (b"Host", b"shop.test"),
        (b"Connection", b"keep-alive, Upgrade, X-Secret-Hop"),
        (b"Upgrade", b"websocket"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Secret-Hop", b"1"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"Cookie", b"weaver_session=s; theme=dark"),
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"Forwarded", b"for=6.6.6.6"),
        (b"X-Caf\xc3\xa9", b"cr\xc3\xa8me"),
    ]
    head = origin_request_head("GET", "/chat?room=%2F7", raw, host="127.0.0.1:9000", peer=VISITOR)
    assert head == (
        b"GET /chat?room=%2F7 HTTP/1.1\r\n"
        b"Host: 127.0.0.1:9000\r\n"
        b"Upgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Cookie: theme=dark\r\n"
        b"X-Caf\xc3\xa9: cr\xc3\xa8me\r\n"
        b"Connection: Upgrade\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: shop.test\r\n"
        b"X-Forwarded-For: 10.0.0.7\r\n"
        b"Forwarded: for=10.0.0.7;proto=https;host=shop.test\r\n"
        b"\r\n"
    )


def test_a_chunked_body_is_announced_and_a_length_is_not_sent_with_it() -> None:
    raw = [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")]
    head = origin_request_head("POST", "/", raw, host="o", peer=VISITOR, is_chunked=True)
    assert b"Content-Length" not in head
    assert head.count(b"Transfer-Encoding: chunked\r\n") == 1


def test_forwarded_quotes_ipv6_peers_and_hosts_with_ports() -> None:
    visitor = Peer(address="::1", scheme="http", host="shop.test:8080")
    head = origin_request_head("GET", "/", [], host="o", peer=visitor)
    assert b'Forwarded: for="[::1]";proto=http;host="shop.test:8080"\r\n' in head


@pytest.mark.parametrize(
    ("scheme", "host", "port", "expected"),
    [
        ("http", "127.0.0.1", 80, "127.0.0.1"),
        ("http", "127.0.0.1", 9000, "127.0.0.1:9000"),
        ("https", "shop.test", 443, "shop.test"),
        ("https", "::1", 8443, "[::1]:8443"),
    ],
)
def test_host_header_leaves_out_the_default_port(
    scheme: str, host: str, port: int, expected: str
) -> None:
    assert authority(scheme, host, port) == expected


def test_response_head_is_parsed_and_kept_byte_for_byte() -> None:
    raw = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept:  s3pPLMBiTxaQ9kYGzzhZRbK+xOo= \r\n\r\n"
    )
    head = parse_response_head(raw)
    assert head is not None
    assert (head.status, head.reason, head.raw) == (101, "Switching Protocols", raw)
    assert head.values("sec-websocket-accept") == ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 101 Switching Protocols\r\n",  # no empty line
        b"HTTP/2 101 x\r\n\r\n",
        b"HTTP/1.1 99 x\r\n\r\n",
        b"HTTP/1.1 101 x\r\nUpgrade : websocket\r\n\r\n",
        b"HTTP/1.1 101 x\r\nUpgrade: websocket\r\n folded\r\n\r\n",
        b"HTTP/1.1 101 x\r\nX: a\x00b\r\n\r\n",
        b"HTTP/1.1 101 x\r\nno colon\r\n\r\n",
    ],
)
def test_malformed_response_heads_are_none(raw: bytes) -> None:
    assert parse_response_head(raw) is None


@pytest.mark.parametrize(
    ("head", "method", "expected"),
    [
        (b"HTTP/1.1 403 F\r\nContent-Length: 12\r\n\r\n", "GET", (BodyFraming.LENGTH, 12)),
        (b"HTTP/1.1 403 F\r\nContent-Length: 12\r\n\r\n", "HEAD", (BodyFraming.NONE, 0)),
        (b"HTTP/1.1 204 N\r\nContent-Length: 12\r\n\r\n", "GET", (BodyFraming.NONE, 0)),
        (b"HTTP/1.1 400 B\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", (BodyFraming.CHUNKED, 0)),
        (b"HTTP/1.1 400 B\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", (BodyFraming.UNTIL_CLOSE, 0)),
        (b"HTTP/1.1 400 B\r\n\r\n", "GET", (BodyFraming.UNTIL_CLOSE, 0)),
        (b"HTTP/1.1 400 B\r\nContent-Length: 3, 3\r\n\r\n", "GET", (BodyFraming.LENGTH, 3)),
        (b"HTTP/1.1 400 B\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "GET", None),
        (b"HTTP/1.1 400 B\r\nContent-Length: -3\r\n\r\n", "GET", None),
    ],
)
def test_a_declined_upgrades_body_ends_as_rfc_9112_says(
    head: bytes, method: str, expected: tuple[BodyFraming, int] | None
) -> None:
    parsed = parse_response_head(head)
    assert parsed is not None
    assert response_framing(parsed, method) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b"1a", 26), (b"0", 0), (b"FF;name=value", 255), (b"", None), (b"-1", None), (b"1 2", None)],
)
def test_chunk_size_lines(line: bytes, expected: int | None) -> None:
    assert parse_chunk_size(line) == expected
