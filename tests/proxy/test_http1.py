from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weaver.proxy.http1 import (
    END,
    MAX_FIELDS,
    MAX_HEAD_BYTES,
    BodyFraming,
    EndOfMessage,
    Event,
    Failure,
    ParseError,
    ResponseHead,
    ResponseParser,
)

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/html\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello world"


def _read(
    parser: ResponseParser, pieces: list[bytes], *, eof: bool = False
) -> tuple[ResponseHead | None, bytes, bool, ParseError | None]:
    head: ResponseHead | None = None
    body = b""
    is_end = False
    error: ParseError | None = None
    events: list[Event] = []
    for piece in pieces:
        events += parser.feed(piece)
    if eof:
        events += parser.feed_eof()
    for event in events:
        if isinstance(event, ResponseHead):
            assert head is None and not body
            head = event
        elif isinstance(event, bytes):
            assert head is not None and not is_end
            body += event
        elif isinstance(event, EndOfMessage):
            is_end = True
        else:
            error = event
    return head, body, is_end, error


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("wire", [CHUNKED, LENGTH])
def test_a_response_reads_the_same_whole_and_byte_by_byte(wire: bytes) -> None:
    whole = _read(ResponseParser("GET"), [wire])
    bytewise = _read(ResponseParser("GET"), [wire[i : i + 1] for i in range(len(wire))])
    assert whole[1:] == bytewise[1:]
    assert whole[0] is not None and bytewise[0] is not None
    assert list(whole[0].headers.items()) == list(bytewise[0].headers.items())


@given(st.lists(st.integers(min_value=0), max_size=8), st.sampled_from([CHUNKED, LENGTH]))
def test_a_response_reads_the_same_at_every_split(cuts: list[int], wire: bytes) -> None:
    head, body, is_end, error = _read(ResponseParser("GET"), _splits(wire, cuts))
    assert head is not None and head.status == 200
    assert body == (b"hello, world" if wire is CHUNKED else b"hello world")
    assert is_end and error is None


def test_a_chunked_body_is_unchunked_and_its_trailers_dropped() -> None:
    head, body, is_end, error = _read(ResponseParser("GET"), [CHUNKED])
    assert head is not None and head.framing is BodyFraming.CHUNKED and head.is_keep_alive
    assert body == b"hello, world" and is_end and error is None
    assert "X-Trailer" not in head.headers


def test_headers_keep_their_order_and_repeats() -> None:
    head, _, _, _ = _read(ResponseParser("GET"), [LENGTH])
    assert head is not None
    assert head.headers.getall("x-a") == ["1", "2"] and head.length == 11


@pytest.mark.parametrize(
    ("wire", "method"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "GET"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "GET"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET"),
    ],
)
def test_responses_without_a_body_end_at_their_head(wire: bytes, method: str) -> None:
    parser = ResponseParser(method)
    head, body, is_end, error = _read(parser, [wire])
    assert head is not None and body == b"" and is_end and error is None
    assert head.is_keep_alive and parser.is_done


def test_informational_heads_are_skipped_for_the_final_one() -> None:
    wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + LENGTH
    head, body, is_end, _ = _read(ResponseParser("GET"), [wire])
    assert head is not None and head.status == 200 and "Link" not in head.headers
    assert body == b"hello world" and is_end


def test_a_body_without_framing_runs_until_the_connection_closes() -> None:
    parser = ResponseParser("GET")
    wire = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    head, body, is_end, _ = _read(parser, [wire])
    assert head is not None and head.framing is BodyFraming.UNTIL_CLOSE
    assert not head.is_keep_alive and body == b"all of it" and not is_end
    assert parser.feed_eof() == [END]


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n",
    ],
)
def test_connections_the_response_ends_are_not_kept(wire: bytes) -> None:
    head, _, is_end, _ = _read(ResponseParser("GET"), [wire])
    assert head is not None and is_end and not head.is_keep_alive


@pytest.mark.parametrize(
    ("wire", "failure"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", Failure.TRUNCATED),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", Failure.TRUNCATED),
        (b"", Failure.CLOSED_BEFORE_HEAD),
        (b"HTTP/1.1 200 OK\r\nContent-", Failure.MALFORMED),
    ],
)
def test_a_connection_closed_too_early_is_a_failure(wire: bytes, failure: Failure) -> None:
    _, _, is_end, error = _read(ResponseParser("GET"), [wire], eof=True)
    assert not is_end and error is not None and error.failure is failure


@pytest.mark.parametrize(
    ("wire", "detail"),
    [
        (b"HTTP/2 200\r\n\r\n", "bad status line"),
        (b"ICY 200 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "bad header field"),
        (b"HTTP/1.1 200 OK\r\n folded\r\n\r\n", "bad header field"),
        (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", "control character in a header value"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected 101 Switching Protocols"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            "chunk not followed by CRLF",
        ),
    ],
)
def test_a_malformed_response_is_a_parse_error_not_an_exception(wire: bytes, detail: str) -> None:
    parser = ResponseParser("GET")
    events = parser.feed(wire)
    assert events[-1] == ParseError(Failure.MALFORMED, detail)
    assert parser.feed(b"more") == [] and parser.has_extra


def test_a_head_past_its_bound_is_refused_before_it_ends() -> None:
    parser = ResponseParser("GET")
    wire = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEAD_BYTES
    assert parser.feed(wire) == [ParseError(Failure.MALFORMED, "head too large")]


def test_more_header_fields_than_the_bound_are_refused() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_FIELDS + 1))
    events = ResponseParser("GET").feed(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n")
    assert events == [ParseError(Failure.MALFORMED, "too many header fields")]


def test_bytes_after_the_response_forbid_reuse() -> None:
    parser = ResponseParser("GET")
    _read(parser, [LENGTH + b"HTTP/1.1 200 OK\r\n"])
    assert parser.has_extra


def test_non_ascii_header_values_round_trip_as_aiohttp_reads_them() -> None:
    wire = "HTTP/1.1 200 OK\r\nX-Name: café\r\nContent-Length: 0\r\n\r\n".encode()
    head, _, _, _ = _read(ResponseParser("GET"), [wire])
    assert head is not None and head.headers["X-Name"] == "café"
