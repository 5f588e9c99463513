"""The scanner: every tag form, any chunking gives the same output, never raises."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weaver.proxy.scanner import (
    MAX_BODY_BYTES,
    MAX_DROP_KINDS,
    MAX_TAG_BYTES,
    Drop,
    DropReason,
    Event,
    Include,
    Scanner,
    Subscribe,
    Text,
    format_drops,
)

Bounds = tuple[int, int]
DEFAULT_BOUNDS: Bounds = (MAX_TAG_BYTES, MAX_BODY_BYTES)


def run(
    data: bytes, cuts: list[int] | None = None, bounds: Bounds = DEFAULT_BOUNDS
) -> tuple[list[Event], dict[Drop, int]]:
    """Feed ``data`` cut at ``cuts``; the events with adjacent text merged, and the drops.

    After every call the scanner holds back no more than its bound.
    """
    scanner = Scanner(max_tag_bytes=bounds[0], max_body_bytes=bounds[1])
    events: list[Event] = []
    start = 0
    for cut in [*sorted(set(cuts or [])), len(data)]:
        events += scanner.feed(data[start:cut])
        assert scanner.held_bytes < scanner.max_body_bytes
        start = cut
    events += scanner.close()
    assert scanner.held_bytes == 0
    return merged(events), scanner.dropped


def scan(data: bytes, cuts: list[int] | None = None) -> list[Event]:
    """Feed ``data`` cut at ``cuts``; return the events with adjacent text merged."""
    return run(data, cuts)[0]


def dropped(data: bytes) -> dict[Drop, int]:
    return run(data)[1]


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
    page = b'x<esi:include src="/a"></esi:include>y'
    events, drops = run(page)
    assert [type(e) for e in events] == [Text, Include, Text]
    assert text(events) == b"xy"
    assert drops == {}


def test_markup_weaver_does_not_handle_passes_through() -> None:
    page = b'<weaver-slot id="w1">x</weaver-slot></weaver-include><weaver-x a=">">'
    assert scan(page) == [Text(page)]


def test_esi_markup_inside_markup_passed_as_text_is_still_handled() -> None:
    page = b"<weaver-slot title=\"<esi:include src='/a'/>\">x</weaver-slot>"
    events = scan(page)
    assert [i.get("src") for i in includes(events)] == ["/a"]
    assert text(events) == b'<weaver-slot title="">x</weaver-slot>'


NI, MALFORMED, STRAY = DropReason.NOT_IMPLEMENTED, DropReason.MALFORMED, DropReason.STRAY_END_TAG


@pytest.mark.parametrize(
    ("page", "out", "drops"),
    [
        # From Varnish's e00019 ("Push corners in new ESI parser").
        (b"<1></esi:comment foo><1>", b"<1><1>", {Drop("/esi:comment", STRAY): 1}),
        (
            b"<2><esi:comment / ><esi:comment doo><2>",
            b"<2><2>",
            {Drop("esi:comment", MALFORMED): 2},
        ),
        (b'<3><esi:remove foo="bar"></esi:remove><3>', b"<3><3>", {}),
        (b'<4><esi:include src="foo"><esi:incl><4>', b"<4><4>", {Drop("esi:incl", NI): 1}),
        # From e00008 ("ESI parsing errors").
        (b"a<esi:bogosity/>b", b"ab", {Drop("esi:bogosity", NI): 1}),
        (
            b"<esi:comment>\n foo\n</esi:comment>",
            b"\n foo\n",
            {Drop("esi:comment", MALFORMED): 1, Drop("/esi:comment", STRAY): 1},
        ),
        (
            b"<esi:remove/>x</esi:remove>y",
            b"xy",
            {Drop("esi:remove", MALFORMED): 1, Drop("/esi:remove", STRAY): 1},
        ),
        (b"<esi:include\n\t\n\t>x", b"x", {Drop("esi:include", DropReason.NO_SRC): 1}),
        (b"<esi:include  src/>x", b"x", {Drop("esi:include", DropReason.NO_SRC): 1}),
        (
            b'<esi:include  src="foofof />\n<p>x</p>',
            b"\n<p>x</p>",
            {Drop("esi:include", MALFORMED): 1},
        ),
        (b"a</esi:include>b", b"ab", {Drop("/esi:include", STRAY): 1}),
        (b'<esi:include src="foo"> </esi:include>', b" ", {Drop("/esi:include", STRAY): 1}),
        # Elements Weaver does not implement lose their tags and keep their content.
        (
            b"<esi:vars>Hi $(HTTP_HOST)</esi:vars>",
            b"Hi $(HTTP_HOST)",
            {Drop("esi:vars", NI): 1, Drop("/esi:vars", NI): 1},
        ),
        (
            b"<esi:try><esi:attempt>a</esi:attempt><esi:except>b</esi:except></esi:try>",
            b"ab",
            {
                Drop("esi:try", NI): 1,
                Drop("esi:attempt", NI): 1,
                Drop("/esi:attempt", NI): 1,
                Drop("esi:except", NI): 1,
                Drop("/esi:except", NI): 1,
                Drop("/esi:try", NI): 1,
            },
        ),
        (b"<ESI:Foo a='1'>x", b"x", {Drop("esi:foo", NI): 1}),
        (b"<esi:>x", b"x", {Drop("esi:", MALFORMED): 1}),
        (b"<esi:foo1>x", b"x", {Drop("esi:foo", MALFORMED): 1}),
        (b'<esi:foo a="<p>">x', b"x", {Drop("esi:foo", NI): 1}),
        (b"<esi:foo b<p>x</p>", b"<p>x</p>", {Drop("esi:foo", MALFORMED): 1}),
        # Unterminated: to the end of the stream.
        (b'a<esi:include src="/a"', b"a", {Drop("esi:include", MALFORMED): 1}),
        (b"a<esi:", b"a", {Drop("esi:", MALFORMED): 1}),
        (b"a</esi:remove", b"a", {Drop("/esi:remove", MALFORMED): 1}),
        (b"a<esi:remove>never removed", b"a", {Drop("esi:remove", DropReason.UNCLOSED): 1}),
    ],
)
def test_esi_markup_weaver_does_not_handle_is_dropped_and_counted(
    page: bytes, out: bytes, drops: dict[Drop, int]
) -> None:
    for events, got in (run(page), run(page, list(range(1, len(page))))):
        assert text(events) == out
        assert got == drops
        assert all(i.get("src") == "foo" for i in includes(events))


def test_drops_read_well_in_a_log_line() -> None:
    assert format_drops(dropped(b"<esi:vars>$(X)</esi:vars></esi:include><esi:vars>")) == (
        "<esi:vars> (not implemented by Weaver) x2, </esi:vars> (not implemented by Weaver), "
        "</esi:include> (end tag without its start tag)"
    )


def test_the_kinds_of_drops_kept_are_bounded() -> None:
    names = [a + b for a in "abcdefgh" for b in "abcdefgh"]
    drops = dropped(b"".join(f"<esi:{name}>".encode() for name in names))
    assert len(drops) == MAX_DROP_KINDS + 1
    assert drops[Drop("esi:*", NI)] == len(names) - MAX_DROP_KINDS
    assert sum(drops.values()) == len(names)


@pytest.mark.parametrize(
    "page",
    [
        b"<weaver-include />",  # no src
        b'<weaver-include src="/a"',  # never closed
        b"<weaver-include src=/a>fallback without its end",
        b"<weaver-subscribe/>",
        b"<!--esi open comment",
        b"<",
        b"<![CDATA[ never closed <esi:include src=/a/>",
    ],
)
def test_malformed_markup_passes_through_unchanged(page: bytes) -> None:
    for events in (scan(page), byte_by_byte(page)):
        assert text(events) == page.replace(b"<!--esi", b"")  # an ESI comment opens
        assert includes(events) == []


def test_malformed_markup_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="weaver.proxy.scanner")
    scan(b"<weaver-include/>" * 5 + b"<weaver-subscribe/><esi:foo>")
    assert len(caplog.records) == 1


def test_a_tag_that_never_ends_is_given_up_at_the_bound() -> None:
    page = b"<esi:include src='" + b"a" * (MAX_TAG_BYTES + 10)
    scanner = Scanner()
    events = scanner.feed(page)
    assert text(events) == page[MAX_TAG_BYTES:]  # decided without waiting for the end
    assert scanner.held_bytes == 0
    assert scanner.dropped == {Drop("esi:include", MALFORMED): 1}


def test_a_removal_streams_without_holding_its_content() -> None:
    scanner = Scanner()
    events = scanner.feed(b"a<esi:remove>" + b"x" * (MAX_BODY_BYTES + 10))
    assert text(events) == b"a"
    assert scanner.held_bytes == 0
    events = scanner.feed(b"y</esi:remove>b") + scanner.close()
    assert text(events) == b"b"
    assert scanner.dropped == {}


def test_other_esi_end_tags_inside_a_removal_are_removed_with_it() -> None:
    page = b"a<esi:remove>b</esi:vars>c</esi:include x='>'>d</esi:remove>e"
    for events, drops in (run(page), run(page, list(range(1, len(page))))):
        assert text(events) == b"ae"
        assert drops == {}


@pytest.mark.parametrize("bounds", [DEFAULT_BOUNDS, (32, 64)])
def test_an_unfinished_end_tag_inside_a_removal_does_not_end_it(bounds: Bounds) -> None:
    page = b"a<esi:remove>b</esi:remove" + b" " * 40
    for events, drops in (run(page, bounds=bounds), run(page, [20, 30], bounds=bounds)):
        assert text(events) == b"a"
        assert drops == {Drop("esi:remove", DropReason.UNCLOSED): 1}


def test_a_closing_weaver_subscribe_tag_is_dropped() -> None:
    page = b'<weaver-subscribe channel="c"></weaver-subscribe>x'
    for events in (scan(page), byte_by_byte(page)):
        assert events == [Subscribe("c"), Text(b"x")]


@pytest.mark.parametrize(
    "page",
    [
        b"<weaver-include@ src=/a>x</weaver-include>",  # unreadable
        b"<weaver-include src=/a>x<!-- a comment that hides the end </weaver-include>",
        b"<weaver-include src=/a>x<![CDATA[ hides the end </weaver-include>",
    ],
)
def test_a_weaver_include_that_cannot_be_read_passes_as_text(page: bytes) -> None:
    for events in (scan(page), byte_by_byte(page)):
        assert events == [Text(page)]


# CDATA (Varnish e00002, e00007) and comments: opaque, passed byte for byte, dropped inside
# esi:remove.


def test_a_cdata_section_inside_esi_remove_does_not_end_the_removal() -> None:
    page = (
        b"<esi:remove>\n<![CDATA[</esi:remove>]]>\nThis is a test: Unseen University\n"
        b"</esi:remove>\nThis is a test: Hello world\n"
    )
    for events in (scan(page), byte_by_byte(page)):
        assert text(events) == b"\nThis is a test: Hello world\n"


def test_markup_inside_cdata_passes_byte_for_byte_with_its_markers() -> None:
    page = b'a<![CDATA[<esi:include src="/x"/></esi:remove><!--esi <esi:foo> -->]]>b'
    for events, drops in (run(page), run(page, list(range(1, len(page))))):
        assert events == [Text(page)]
        assert drops == {}


def test_a_cdata_section_hides_the_end_of_an_esi_comment() -> None:
    page = b'<!--esi <![CDATA[ --> ]]> <esi:include src="/a"/> -->.'
    events = scan(page)
    assert text(events) == b" <![CDATA[ --> ]]>  ."
    assert [i.get("src") for i in includes(events)] == ["/a"]


def test_a_cdata_section_hides_the_end_of_a_fallback() -> None:
    page = b"<weaver-include src=/a>x<![CDATA[</weaver-include>]]>y</weaver-include>z"
    events = scan(page)
    assert [i.fallback for i in includes(events)] == [b"x<![CDATA[</weaver-include>]]>y"]
    assert text(events) == b"z"


@pytest.mark.parametrize(
    ("page", "out"),
    [
        (b'a<!-- <esi:include src="/old"/> -->b', b'a<!-- <esi:include src="/old"/> -->b'),
        (b"<esi:remove><!-- </esi:remove> -->secret</esi:remove>b", b"b"),
        (b"<!--><esi:foo>", b"<!-->"),  # "<!-->" is a whole comment in HTML5
        (b"<!---><esi:foo>", b"<!--->"),
        (b"<!-- never closed <esi:foo>", b"<!-- never closed <esi:foo>"),
        (b"<!--esi <!-- --> <esi:foo> -->b", b" <!-- -->  b"),
    ],
)
def test_an_html_comment_is_opaque_as_in_varnish(page: bytes, out: bytes) -> None:
    for events in (scan(page), byte_by_byte(page)):
        assert text(events) == out
        assert includes(events) == []


def test_an_esi_comment_split_after_its_dashes_is_still_an_esi_comment() -> None:
    page = b'<!--esi <esi:include src="/a"/> -->'
    for cut in range(len(page)):
        assert [i.get("src") for i in includes(scan(page, [cut]))] == ["/a"], cut


def test_a_comment_hides_the_end_of_a_fallback() -> None:
    page = b"<weaver-include src=/a>x<!--</weaver-include>-->y</weaver-include>z"
    events = scan(page)
    assert [i.fallback for i in includes(events)] == [b"x<!--</weaver-include>-->y"]


def test_cdata_is_case_sensitive_as_in_xml() -> None:
    page = b"<![cdata[<esi:include src=/a/>]]>"
    assert text(scan(page)) == b"<![cdata[]]>"


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


ADVERSARIAL = [
    b"<esi:",
    b"</esi:",
    b"<ESI:",
    b"include",
    b"remove",
    b"comment",
    b"vars",
    b" src=",
    b'"/f"',
    b"'/g'",
    b"/>",
    b">",
    b"<",
    b"/",
    b" ",
    b"=",
    b"</esi:remove>",
    b"<esi:remove>",
    b"<esi:include src='/f'/>",
    b"<esi:include src='/f'>",
    b"</esi:include>",
    b"<esi:comment/>",
    b"<![CDATA[",
    b"]]>",
    b"]",
    b"<!--esi",
    b"<!--",
    b"<!-",
    b"esi",
    b"-->",
    b"-",
    b"<weaver-include",
    b" src=/w>",
    b"</weaver-include>",
    b"<weaver-slot>",
    b"<weaver-subscribe channel=c/>",
    b'"',
    b"'",
    b"text",
]
BOUNDS: list[Bounds] = [(16, 16), (24, 64), DEFAULT_BOUNDS]


@given(
    st.lists(st.sampled_from(ADVERSARIAL) | st.binary(max_size=4), max_size=60),
    st.lists(st.integers(min_value=0, max_value=600), max_size=20),
    st.sampled_from(BOUNDS),
)
def test_adversarial_markup_never_reaches_the_output_as_text(
    pieces: list[bytes], cuts: list[int], bounds: Bounds
) -> None:
    page = b"".join(pieces)
    whole = run(page, bounds=bounds)  # run() also checks the bound on held-back bytes
    assert run(page, [c for c in cuts if c <= len(page)], bounds) == whole
    assert run(page, list(range(1, len(page))), bounds) == whole
    # Fed whole, each Text is the bytes between two pieces of markup, or a CDATA section
    # or a comment, which pass as they are.
    scanner = Scanner(max_tag_bytes=bounds[0], max_body_bytes=bounds[1])
    for event in scanner.feed(page) + scanner.close():
        if isinstance(event, Text) and not event.data.startswith((b"<![CDATA[", b"<!--")):
            lowered = event.data.lower()
            assert b"<esi:" not in lowered, event
            assert b"</esi:" not in lowered, event
