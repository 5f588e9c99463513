"""The scanner's byte grammar: attributes, where a tag ends, what waits at a chunk's end."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weaver.proxy.scanner_grammar import (
    IN_REMOVE,
    IN_REMOVE_IN_COMMENT,
    LONGEST_TOKEN,
    MARKER_REACH,
    MARKERS,
    PREFIXES,
    START,
    START_CREDIT,
    START_IN_COMMENT,
    TAG,
    find_start,
    malformed_esi,
    may_become_esi,
    parse_attrs,
    safe_end,
    simple_include,
    tag_end,
)


def test_attributes_are_lowercased_unescaped_and_booleans_are_empty() -> None:
    attrs = parse_attrs(b" SRC=\"/a?x=1&amp;y=2\" alt='/b' data-n=3 primary")
    assert attrs == (("src", "/a?x=1&y=2"), ("alt", "/b"), ("data-n", "3"), ("primary", ""))


def test_attributes_that_are_not_utf8_are_replaced_not_raised() -> None:
    assert parse_attrs(b' src="/\xff"') == (("src", "/\ufffd"),)


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"<esi:include src=/a/>", 21),
        (b"<esi:include src='>'/>x", 22),  # a quoted ">" is a value
        (b'<esi:include src=">"/>', 22),
        (b"<esi:include src=a'b>", 21),  # a quote inside an unquoted value opens nothing
        (b"<esi:include src='never closed", None),
    ],
)
def test_a_tag_ends_at_its_first_unquoted_gt(data: bytes, end: int | None) -> None:
    assert tag_end(data, 0, 1024) == end


def test_a_tag_end_past_the_bound_is_not_found() -> None:
    data = b"<esi:include src=/a/>"
    assert tag_end(data, 0, len(data)) == len(data)
    assert tag_end(data, 0, len(data) - 1) is None


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"plain", 5),
        (b"abc<", 3),
        (b"abc<ES", 3),  # names are case-insensitive
        (b"abc</weaver", 3),
        (b"abc<![CDA", 3),
        (b"abc-", 3),  # may become "-->"
        (b"abc--", 3),
        (b"abc<p", 5),
        (b"a-b", 3),
        (b"abc<esi:x", 9),  # a whole token is the pattern's business, not the tail's
    ],
)
def test_only_a_possible_markup_start_at_the_end_waits(data: bytes, end: int) -> None:
    assert safe_end(data, 0) == end


def test_the_tail_that_waits_starts_no_earlier_than_the_scan() -> None:
    assert safe_end(b"a<es", 1) == 1
    assert safe_end(b"a<es", 2) == 4


def test_every_token_but_the_comment_end_starts_markup_and_its_prefix_waits() -> None:
    for prefix in PREFIXES:
        token = prefix.replace(b"cdata", b"CDATA")  # XML's marker is case-sensitive
        assert (START.match(token) is not None) is (prefix != b"-->"), prefix
        assert safe_end(b"x" + prefix[:-1], 0) == 1, prefix


@pytest.mark.parametrize(
    ("data", "rest", "expected"),
    [
        (b"<!--", b"", True),
        (b"<!--", b"E", True),
        (b"<!--", b"es", True),
        (b"<!--", b"esi", False),
        (b"<!--", b"x", False),
        (b"<!--", b"ex", False),
    ],
)
def test_a_comment_opening_may_become_an_esi_comment_only_while_short(
    data: bytes, rest: bytes, expected: bool
) -> None:
    assert may_become_esi(data + rest, len(data)) is expected


@pytest.mark.parametrize(
    ("data", "name", "end"),
    [
        (b"<esi:vars a='>x", "esi:vars", 14),  # through the first ">", quotes or not
        (b"<ESI:Foo <p>", "esi:foo", 9),  # up to the next "<"
        (b"</esi:x y", "/esi:x", 9),  # else to the end of the data
        (b"<esi: x>", "esi:", 8),
    ],
)
def test_an_unreadable_esi_tag_ends_at_gt_or_before_lt(data: bytes, name: str, end: int) -> None:
    assert malformed_esi(data, 0, 1024) == (name, end)


def test_an_unreadable_esi_tag_is_read_no_further_than_the_bound() -> None:
    data = b"xx<esi:include src='" + b"a" * 50 + b">"
    assert malformed_esi(data, 2, 20) == ("esi:include", 22)


def test_a_whole_tag_reads_its_parts() -> None:
    tag = TAG.fullmatch(b'</ESI:include a="1" />')
    assert tag is not None
    assert tag.groups() == (b"/", b"ESI:include", b' a="1"', b"/")


PATTERNS = (START, START_IN_COMMENT, IN_REMOVE, IN_REMOVE_IN_COMMENT)
# Pieces that make tokens, near-tokens and marker bytes that are no token, in any case.
PIECES = (
    b"<",
    b"/",
    b"esi:",
    b"ESI:",
    b"Esi",
    b"weaver-",
    b"WEAVER-",
    b"!--",
    b"!--esi",
    b"-->",
    b"![CDATA[",
    b"![cdata[",
    b":",
    b"!",
    b"-",
    b"--",
    b"data-x",
    b"a:b",
    b"<!doctype>",
    b"<p>",
    b"text ",
    b"x" * 40,
)
documents = st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join)


@given(documents, st.integers(min_value=0, max_value=400), st.sampled_from(PATTERNS))
def test_find_start_finds_what_the_regex_finds(
    data: bytes, pos: int, pattern: re.Pattern[bytes]
) -> None:
    for credit in (START_CREDIT, 0, -1):  # markers, markers past their credit, regex alone
        match, _ = find_start(pattern, data, pos, credit)
        expected = pattern.search(data, pos)
        assert (match and match.span()) == (expected and expected.span())


def test_every_token_holds_a_marker_within_reach() -> None:
    for token in PREFIXES:
        first = min(token.find(m) for m in MARKERS if m in token)
        assert 0 <= first <= MARKER_REACH
        assert len(token) <= LONGEST_TOKEN


def test_find_start_gives_up_on_dense_markers_and_says_so() -> None:
    data = b'<p class="a-b">' * 400 + b"<esi:include src=/x/>"
    match, credit = find_start(START, data, 0, START_CREDIT)
    assert match is not None and match.group() == b"<esi:"
    assert credit < 0  # the caller searches the rest of this chunk with the regex alone
    plain = b"<p>no markers here</p>" * 400
    assert find_start(START, plain, 0, START_CREDIT) == (None, START_CREDIT + len(plain))


def _general(data: bytes, start: int, max_bytes: int) -> tuple[object, ...] | None:
    """How tag_end, TAG and parse_attrs read an empty esi:include at ``start``."""
    end = tag_end(data, start, max_bytes)
    tag = TAG.fullmatch(data, start, end) if end is not None else None
    if end is None or tag is None or tag.group(1) or not tag.group(4):
        return None
    if tag.group(2).lower() != b"esi:include":
        return None
    return parse_attrs(tag.group(3)), data[start:end], end


@pytest.mark.parametrize(
    ("data", "attrs"),
    [
        (b'<esi:include src="/f/1"/>', (("src", "/f/1"),)),
        (b'x<ESI:Include SRC="/a?b=1" alt="/b"  onerror="continue" />y', None),
        (b'<esi:include\n\tsrc="/a" data-x=""/>', (("src", "/a"), ("data-x", ""))),
    ],
)
def test_a_simple_include_is_read_in_one_match_as_the_general_way_reads_it(
    data: bytes, attrs: tuple[tuple[str, str], ...] | None
) -> None:
    start = data.index(b"<")
    got = simple_include(data, start, 1024)
    assert got is not None and got == _general(data, start, 1024)
    assert attrs is None or got[0] == attrs


@pytest.mark.parametrize(
    "data",
    [
        b'<esi:include src="/a?x=1&amp;y=2"/>',  # to unescape
        b"<esi:include src='/a'/>",  # single quotes
        b"<esi:include src=/a/>",  # unquoted
        b'<esi:include src="/a">',  # not empty
        b'<esi:include src="/\xc3\xa9"/>',  # to decode
        b'<esi:include src="/a"',  # not ended yet
        b'</esi:include src="/a"/>',
        b'<esi:remove src="/a"/>',
    ],
)
def test_any_other_markup_is_left_to_the_general_way(data: bytes) -> None:
    assert simple_include(data, 0, 1024) is None


def test_a_simple_include_past_the_bound_is_left_to_the_general_way() -> None:
    data = b'<esi:include src="/a"/>'
    assert simple_include(data, 0, len(data)) is not None
    assert simple_include(data, 0, len(data) - 1) is None
    assert tag_end(data, 0, len(data) - 1) is None


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["src", "SRC", "alt", "onerror", "data-x", "a"]),
            st.one_of(st.binary(max_size=8), st.text("/ab?=-'", max_size=8).map(str.encode)),
        ),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from([b" ", b"  ", b"\n", b"\t", b"\f"]),
    st.sampled_from([b"", b" ", b"\r\n"]),
    st.integers(min_value=1, max_value=64),
)
def test_whenever_the_one_match_reads_a_tag_it_reads_it_as_the_general_way(
    attrs: list[tuple[str, bytes]], space: bytes, tail: bytes, max_bytes: int
) -> None:
    body = b"".join(space + name.encode() + b'="' + value + b'"' for name, value in attrs)
    data = b"<esi:include" + body + tail + b"/>rest"
    got = simple_include(data, 0, max_bytes)
    if got is not None:
        assert got == _general(data, 0, max_bytes)
