"""The event-stream parser of streaming slots (pure): the same events at every split."""

from __future__ import annotations

from weaver.proxy.suspense import SseEvent, SseParser, progress_of
from weaver.session.slots import Progress

STREAM = (
    b": a comment\n"
    b'event: progress\ndata: {"stage": "s", "percent": 5}\n\n'
    b"data: <p>one\r\ndata: two</p>\r\n\r\n"
    b"id: 7\rdata: <b>\xc3\xa9</b>\r\r"
    b"event: done\ndata:\n\n"
)
EXPECTED = [
    SseEvent("progress", '{"stage": "s", "percent": 5}'),
    SseEvent("message", "<p>one\ntwo</p>"),
    SseEvent("message", "<b>é</b>"),
    SseEvent("done", ""),
]


def parse(chunks: list[bytes]) -> list[SseEvent]:
    parser = SseParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_the_parser_finds_the_same_events_whole_byte_by_byte_and_at_every_split() -> None:
    assert parse([STREAM]) == EXPECTED
    assert parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED
    for cut in range(len(STREAM)):
        assert parse([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_progress_payloads_are_clamped_and_bad_ones_leave_fields_empty() -> None:
    assert progress_of('{"stage":"a","percent":140,"message":"m"}') == Progress("a", 100.0, "m")
    assert progress_of('{"percent":-3}') == Progress("", 0.0, "")
    assert progress_of('{"percent":true,"stage":5}') == Progress("", None, "")
    assert progress_of("not json") == Progress("", None, "not json")
    assert progress_of("[1]") == Progress()
