"""The scanner's events and drop records: attribute lookup and how drops read in a log."""

from __future__ import annotations

from weaver.proxy.scanner_events import Drop, DropReason, Include, format_drops


def test_an_include_answers_its_first_attribute_of_a_name_or_the_default() -> None:
    include = Include("esi", (("src", "/a"), ("alt", "/b"), ("src", "/c")), b"", 0, b"")
    assert include.get("src") == "/a"
    assert include.get("alt") == "/b"
    assert include.get("onerror") is None
    assert include.get("onerror", "continue") == "continue"


def test_a_drop_reads_as_its_tag_and_reason() -> None:
    assert str(Drop("/esi:vars", DropReason.STRAY_END_TAG)) == (
        "</esi:vars> (end tag without its start tag)"
    )


def test_drops_format_in_their_order_with_a_count_only_when_repeated() -> None:
    drops = {
        Drop("esi:try", DropReason.NOT_IMPLEMENTED): 3,
        Drop("esi:include", DropReason.NO_SRC): 1,
        Drop("esi:remove", DropReason.UNCLOSED): 1,
    }
    assert format_drops(drops) == (
        "<esi:try> (not implemented by Weaver) x3, <esi:include> (include without src), "
        "<esi:remove> (never closed)"
    )
    assert format_drops({}) == ""
