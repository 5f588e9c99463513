"""Content codings for the visitor: negotiation (RFC 9110 §12.5.3) and header rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from weaver.proxy.compress import (
    MIN_COMPRESS_BYTES,
    add_vary,
    apply_encoding,
    apply_negotiated,
    choose_encoding,
    is_compressible,
    is_negotiable,
    negotiate,
    variant_etag,
)
from weaver.proxy.compressors import Encoding

ALL = (Encoding.BR, Encoding.ZSTD, Encoding.GZIP)


# negotiation


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("gzip", Encoding.GZIP),
        ("br", Encoding.BR),
        ("zstd", Encoding.ZSTD),
        ("gzip, deflate, br, zstd", Encoding.BR),  # Chrome: ties go to br
        ("gzip, zstd", Encoding.ZSTD),
        ("GZIP", Encoding.GZIP),
        ("x-gzip", Encoding.GZIP),
        ("gzip;q=1.0, br;q=0.5", Encoding.GZIP),
        ("br;q=0.2, gzip;q=0.8, zstd;q=0.5", Encoding.GZIP),
        ("*", Encoding.BR),
        ("*;q=0.5, gzip", Encoding.GZIP),
        ("br;q=0, *", Encoding.ZSTD),
        ("gzip ; q=0.9", Encoding.GZIP),
        ("identity;q=0, gzip", Encoding.GZIP),
        ("gzip;q=0.5, identity;q=0.5", Encoding.GZIP),  # a tie goes to the coding
    ],
)
def test_choose_encoding_follows_the_q_values_then_prefers_br(
    accept: str, chosen: Encoding
) -> None:
    assert choose_encoding(accept, available=ALL) is chosen


@pytest.mark.parametrize(
    "accept",
    [
        None,  # no header: a client that asks for nothing gets identity
        "",
        "identity",
        "deflate",
        "gzip;q=0",
        "*;q=0",
        "identity;q=0",  # nothing we have is acceptable: identity anyway, not a 406
        "gzip;q=0.5, identity",  # identity ranked above the coding
        "gzip;q=2",  # not a q-value: the member is dropped
        "gzip;q=0.0001",
        "br;q=abc",
        ",,;",
    ],
)
def test_choose_encoding_answers_identity_when_no_coding_is_preferred(
    accept: str | None,
) -> None:
    assert choose_encoding(accept, available=ALL) is None


def test_choose_encoding_offers_only_what_is_available() -> None:
    assert choose_encoding("br, zstd", available=(Encoding.GZIP,)) is None
    assert choose_encoding("br, gzip", available=(Encoding.GZIP,)) is Encoding.GZIP
    assert choose_encoding("*", available=()) is None


@given(st.text(max_size=80))
def test_choose_encoding_never_raises_on_any_header(accept: str) -> None:
    assert choose_encoding(accept, available=ALL) in (None, *ALL)


@pytest.mark.parametrize(
    ("content_type", "size", "expected"),
    [
        ("text/html; charset=utf-8", 20_000, True),
        ("text/css", None, True),  # unknown size: a stream is worth compressing
        ("application/json", 5000, True),
        ("application/problem+json", 5000, True),
        ("application/javascript", 5000, True),
        ("image/svg+xml", 5000, True),
        ("Text/HTML", 5000, True),
        ("text/html", MIN_COMPRESS_BYTES - 1, False),
        ("text/html", MIN_COMPRESS_BYTES, True),
        ("image/png", 50_000, False),
        ("application/octet-stream", 50_000, False),
        ("application/wasm", 50_000, False),
        ("text/event-stream", None, False),
        ("", 50_000, False),
        (None, 50_000, False),
    ],
)
def test_is_compressible_takes_text_types_above_a_kibibyte(
    content_type: str | None, size: int | None, expected: bool
) -> None:
    assert is_compressible(content_type, size) is expected


# live responses


HTML = {"Content-Type": "text/html", "Content-Length": "20000"}


def test_negotiate_encodes_a_plain_page_for_a_client_that_accepts_it() -> None:
    assert negotiate({"accept-encoding": "gzip, br"}, HTML, status=200) is Encoding.BR
    request = CIMultiDictProxy(CIMultiDict({"accept-encoding": "gzip"}))  # as aiohttp has it
    response = CIMultiDictProxy(CIMultiDict({"content-type": "text/html"}))  # size unknown
    assert negotiate(request, response, status=200) is Encoding.GZIP
    assert negotiate({"Accept-Encoding": "gzip"}, HTML, status=404) is Encoding.GZIP
    assert negotiate({}, HTML, status=200) is None


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"Content-Encoding": "gzip"}, 200),  # the origin's coding passes through
        ({"Cache-Control": "public, no-transform"}, 200),
        ({"Content-Range": "bytes 0-9/20000"}, 200),
        ({}, 204),
        ({}, 206),
        ({}, 304),
        ({}, 101),
        ({"Content-Type": "image/jpeg"}, 200),
        ({"Content-Length": "100"}, 200),
    ],
)
def test_negotiate_leaves_alone_what_must_not_or_need_not_be_encoded(
    extra: dict[str, str], status: int
) -> None:
    headers = CIMultiDict({**HTML, **extra})
    assert negotiate({"Accept-Encoding": "gzip, br"}, headers, status=status) is None
    before = CIMultiDict(headers)
    apply_encoding(headers, Encoding.BR, status=status)
    assert headers == before


def test_an_identity_content_encoding_is_no_encoding() -> None:
    headers = {**HTML, "Content-Encoding": "identity"}
    assert is_negotiable(headers, status=200)


def test_apply_encoding_sets_the_coding_and_drops_what_no_longer_holds() -> None:
    headers = CIMultiDict({**HTML, "ETag": '"abc"', "Accept-Ranges": "bytes", "Vary": "Cookie"})
    apply_encoding(headers, Encoding.GZIP, status=200)
    assert headers == CIMultiDict(
        {
            "Content-Type": "text/html",
            "ETag": '"abc-gzip"',
            "Vary": "Cookie, Accept-Encoding",
            "Content-Encoding": "gzip",
        }
    )


def test_apply_encoding_of_a_stored_variant_keeps_ranges_and_length() -> None:
    headers = CIMultiDict({**HTML, "ETag": '"abc"', "Accept-Ranges": "bytes"})
    apply_encoding(headers, Encoding.BR, status=200, is_stored=True)
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Length"] == "20000"  # the caller sets the variant's
    assert headers["ETag"] == '"abc-br"'


def test_apply_negotiated_is_apply_encoding_without_the_check() -> None:
    checked = CIMultiDict({**HTML, "ETag": '"abc"', "Accept-Ranges": "bytes"})
    trusted = CIMultiDict(checked)
    apply_encoding(checked, Encoding.GZIP, status=200)
    apply_negotiated(trusted, Encoding.GZIP)
    assert trusted == checked
    not_negotiable = CIMultiDict({"Content-Type": "image/png"})
    apply_negotiated(not_negotiable, None)  # the caller said it was: it varies
    assert not_negotiable["Vary"] == "Accept-Encoding"


def test_an_identity_answer_to_a_negotiable_response_still_varies() -> None:
    headers = CIMultiDict({**HTML, "ETag": '"abc"'})
    apply_encoding(headers, None, status=200)
    assert headers == CIMultiDict({**HTML, "ETag": '"abc"', "Vary": "Accept-Encoding"})


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([], "Accept-Encoding"),
        (["Cookie"], "Cookie, Accept-Encoding"),
        (["accept-encoding"], "accept-encoding"),
        (["Cookie, Accept-Encoding"], "Cookie, Accept-Encoding"),
        (["Cookie", "Accept-Language"], "Cookie, Accept-Language, Accept-Encoding"),
        (["Cookie", "Accept-Encoding"], "Cookie, Accept-Encoding"),
        (["*"], "*"),
    ],
)
def test_add_vary_merges_into_one_vary_without_duplicates(before: list[str], after: str) -> None:
    headers: CIMultiDict[str] = CIMultiDict([("Vary", value) for value in before])
    add_vary(headers, "Accept-Encoding")
    assert headers.getall("Vary") == [after]


@pytest.mark.parametrize(
    ("etag", "expected"),
    [
        ('"abc"', '"abc-br"'),
        ('W/"abc"', 'W/"abc-br"'),
        ('""', '"-br"'),
        ("abc", "abc"),  # not an entity tag: untouched
    ],
)
def test_variant_etag_suffixes_the_opaque_tag(etag: str, expected: str) -> None:
    assert variant_etag(etag, Encoding.BR) == expected
