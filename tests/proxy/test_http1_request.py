"""The request head and body framing Weaver sends its origins (proxy/http1_request.py)."""

from __future__ import annotations

import pytest

from weaver.proxy.http1_request import LAST_CHUNK, RequestBody, chunk, request_head


def test_the_request_head_sends_the_target_and_headers_as_given() -> None:
    head = request_head(
        "GET", "/a%2Fb?q=1", "o.test:8080", [("Accept", "*/*"), ("X-A", "1")], RequestBody.NONE
    )
    assert head == (
        b"GET /a%2Fb?q=1 HTTP/1.1\r\nHost: o.test:8080\r\nAccept: */*\r\nX-A: 1\r\n\r\n"
    )


def test_the_callers_host_wins_and_framing_headers_are_weavers() -> None:
    headers = [("Host", "shop.test"), ("Content-Length", "99"), ("Transfer-Encoding", "gzip")]
    head = request_head("POST", "/", "o", headers, RequestBody.LENGTH, 3)
    assert head == b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\n\r\n"


def test_a_streamed_body_keeps_the_callers_length_else_goes_chunked() -> None:
    kept = request_head("PUT", "/", "o", [("Content-Length", "5")], RequestBody.LENGTH)
    assert kept is not None and b"Content-Length: 5\r\n" in kept
    chunked = request_head("PUT", "/", "o", [], RequestBody.CHUNKED)
    assert chunked is not None and b"Transfer-Encoding: chunked\r\n" in chunked
    assert b"Content-Length" not in chunked
    assert chunk(b"hello") + LAST_CHUNK == b"5\r\nhello\r\n0\r\n\r\n"


def test_a_post_without_a_body_says_its_length_is_zero() -> None:
    head = request_head("POST", "/", "o", [], RequestBody.NONE)
    assert head == b"POST / HTTP/1.1\r\nHost: o\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize(
    "headers", [[("X-A", "1\r\nX-Evil: 1")], [("X A", "1")], [("X-A", "a\nb")]]
)
def test_a_header_that_would_split_the_request_is_refused(headers: list[tuple[str, str]]) -> None:
    assert request_head("GET", "/", "o", headers, RequestBody.NONE) is None
