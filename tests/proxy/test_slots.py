"""Slot ids, placeholders and cut markers (proxy/slots.py): the same bytes for everyone."""

from __future__ import annotations

import re

from weaver.proxy.slots import cut_marker, is_stream_slot, placeholder, slot_id


def test_a_slot_id_depends_only_on_position_and_src() -> None:
    first = slot_id((0, 3, 1), "/cart")
    assert first == slot_id((0, 3, 1), "/cart")  # every visitor, every process
    assert re.fullmatch(r"w[0-9a-f]{12}", first)
    assert len({first, slot_id((0, 3, 2), "/cart"), slot_id((0, 3, 1), "/recs")}) == 3
    assert slot_id((1, 2), "/x") != slot_id((12,), "/x")  # positions are not run together


def test_a_streaming_slot_says_so_in_its_id() -> None:
    streamed = slot_id((0,), "/ticker", is_stream=True)
    assert re.fullmatch(r"ws[0-9a-f]{12}", streamed)
    assert is_stream_slot(streamed)
    assert not is_stream_slot(slot_id((0,), "/ticker"))
    assert not is_stream_slot("ws123")  # too short to be one of ours


def test_a_placeholder_holds_the_fallback_and_escapes_the_src() -> None:
    assert placeholder("w0123456789ab", b"cart\xe2\x80\xa6") == (
        b'<weaver-slot id="w0123456789ab">cart\xe2\x80\xa6</weaver-slot>'
    )
    assert placeholder("w0123456789ab", b"", '/x?a=1&b="2"') == (
        b'<weaver-slot id="w0123456789ab" data-src="/x?a=1&amp;b=&quot;2&quot;"></weaver-slot>'
    )


def test_a_cut_marker_is_one_comment_whatever_the_src() -> None:
    marker = cut_marker("/a-->b---c", "timeout")
    assert marker.startswith(b"<!-- weaver: fragment ") and marker.endswith(b" cut (timeout) -->")
    inner = marker[len(b"<!--") : -len(b"-->")]
    assert b"--" not in inner.replace(b"<!-- ", b"").strip(b" ") and b">" not in inner
