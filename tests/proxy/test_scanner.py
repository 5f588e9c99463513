"""The scanner: every tag form, any chunking gives the same output, never raises."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weaver.proxy.scanner import (
    MAX_BODY_BYTES,
    MAX_TAG_BYTES,
    Event,
    Include,
    Scanner,
    Subscribe,
    Text,
)


def scan(data: bytes, cuts: list[int] | None = None) -> list[Event]:
    """Feed ``data`` cut at ``cuts``; return the events with adjacent text merged."""
    scanner = Scanner()
    events: list[Event] = []
    start = 0
    for cut in sorted(set(cuts or [])):
        events += scanner.feed(data[start:cut])
        start = cut
    events += scanner.feed(data[start:])
    events += scanner.close()
    return merged(events)


def merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        assert not (isinstance(event, Text) and not event.data), "empty Text emitted"
        if isinstance(event, Text) and out and isinstance(out[-1], Text):
            out[-1] = Text(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def byte_by_byte(data: bytes) -> list[Event]:
    return scan(data, list(range(1, len(data))))


def includes(events: list[Event]) -> list[Include]:
    return [e for e in events if isinstance(e, Include)]


def text(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Text))


PAGE = (
    b"<!doctype html><p>a</p>"
    b'<esi:include src="/header" alt="/alt" onerror="continue"/>'
    b"<esi:remove><p>only without ESI</p></esi:remove>"
    b'<!--esi <esi:include src="/in-comment"/> -->'
    b'<esi:comment text="dropped"/>'
    b'<weaver-include src="/recs" mode="suspense" timeout="2s">soon</weaver-include>'
    b"<WEAVER-INCLUDE SRC=/caps primary/>"
    b'<weaver-subscribe channel="deals"/>'
    b"<p>the end &amp; more</p>"
)


def test_every_tag_form() -> None:
    events = scan(PAGE)
    assert events == [
        Text(b"<!doctype html><p>a</p>"),
        Include(
            "esi",
            (("src", "/header"), ("alt", "/alt"), ("onerror", "continue")),
            b"",
            0,
            b'<esi:include src="/header" alt="/alt" onerror="continue"/>',
        ),
        Text(b" "),
        Include("esi", (("src", "/in-comment"),), b"", 1, b'<esi:include src="/in-comment"/>'),
        Text(b" "),
        Include(
            "weaver",
            (("src", "/recs"), ("mode", "suspense"), ("timeout", "2s")),
            b"soon",
            2,
            b'<weaver-include src="/recs" mode="suspense" timeout="2s">soon</weaver-include>',
        ),
        Include(
            "weaver",
            (("src", "/caps"), ("primary", "")),
            b"",
            3,
            b"<WEAVER-INCLUDE SRC=/caps primary/>",
        ),
        Subscribe("deals"),
        Text(b"<p>the end &amp; more</p>"),
    ]


def test_attribute_values_are_unescaped_and_a_quoted_gt_does_not_end_the_tag() -> None:
    [include] = includes(scan(b"<esi:include src='/q?a=1&amp;b=>2'/>"))
    assert include.get("src") == "/q?a=1&b=>2"
    assert include.get("missing") is None


def test_an_optional_closing_esi_include_tag_is_dropped() -> None:
    events = scan(b'x<esi:include src="/a"></esi:include>y')
    assert [type(e) for e in events] == [Text, Include, Text]
    assert text(events) == b"xy"


def test_markup_weaver_does_not_handle_passes_through() -> None:
    page = b'<esi:try><esi:attempt>a</esi:attempt></esi:try><weaver-slot id="w1">x</weaver-slot>'
    assert scan(page) == [Text(page)]


@pytest.mark.parametrize(
    "page",
    [
        b"<esi:include />",  # no src
        b'<esi:include src="/a"',  # never closed
        b"<weaver-include src=/a>fallback without its end",
        b"<esi:remove>never removed",
        b"<weaver-subscribe/>",
        b"<!--esi open comment",
        b"<esi:",
        b"<",
    ],
)
def test_malformed_markup_passes_through_unchanged(page: bytes) -> None:
    for events in (scan(page), byte_by_byte(page)):
        assert text(events) == page.replace(b"<!--esi", b"")  # an ESI comment opens
        assert includes(events) == []


def test_malformed_markup_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="weaver.proxy.scanner")
    scan(b"<esi:include/>" * 5 + b"<weaver-subscribe/>")
    assert len(caplog.records) == 1


def test_a_tag_that_never_ends_is_given_up_at_the_bound() -> None:
    page = b"<esi:include src='" + b"a" * (MAX_TAG_BYTES + 10)
    scanner = Scanner()
    events = scanner.feed(page)
    assert text(events).startswith(b"<esi:include")  # released without waiting for EOF
    assert includes(events + scanner.close()) == []


def test_a_fallback_that_never_ends_is_given_up_at_the_bound() -> None:
    page = b"<weaver-include src=/a>" + b"x" * (MAX_BODY_BYTES + 10)
    scanner = Scanner()
    events = merged(scanner.feed(page) + scanner.close())
    assert text(events) == page


def test_plain_html_passes_in_few_events() -> None:
    page = b"<html><body>" + b"<p class='x'>text</p>" * 5000 + b"</body></html>"
    scanner = Scanner()
    events = scanner.feed(page) + scanner.close()
    assert len(events) <= 2
    assert text(events) == page


def test_whole_byte_by_byte_and_every_two_way_split_agree() -> None:
    expected = scan(PAGE)
    assert byte_by_byte(PAGE) == expected
    for cut in range(len(PAGE)):
        assert scan(PAGE, [cut]) == expected, cut


@given(st.lists(st.integers(min_value=0, max_value=len(PAGE)), max_size=30))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    assert scan(PAGE, cuts) == scan(PAGE)


PIECES = [
    b"<esi:",
    b"include",
    b" src=",
    b'"/f"',
    b"/>",
    b">",
    b"<",
    b"</esi:remove>",
    b"<esi:remove>",
    b"<weaver-include src=/w>",
    b"</weaver-include>",
    b"<!--esi",
    b"-->",
    b"-",
    b'"',
    b"'",
    b"text ",
    b"\xff\xfe",
    b"<weaver-subscribe channel=c/>",
]


@given(
    st.lists(st.sampled_from(PIECES) | st.binary(max_size=8), max_size=40),
    st.lists(st.integers(min_value=0, max_value=400), max_size=20),
)
def test_arbitrary_input_never_raises_and_chunking_never_matters(
    pieces: list[bytes], cuts: list[int]
) -> None:
    page = b"".join(pieces)
    whole = scan(page)
    assert scan(page, [c for c in cuts if c <= len(page)]) == whole
    if b"<" not in page:
        assert text(whole) == page


@given(st.binary(max_size=300).filter(lambda b: b"<" not in b))
def test_input_without_markup_is_output_byte_for_byte(page: bytes) -> None:
    assert text(scan(page)) == page
