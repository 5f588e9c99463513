"""The content codecs: what Weaver can produce, stored whole and streamed (proxy/compressors.py)."""

from __future__ import annotations

import gzip
import itertools
import zlib
from collections.abc import Callable

import brotli
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from weaver.proxy.compressors import AVAILABLE, Encoding, compress_whole, new_compressor

ALL = (Encoding.BR, Encoding.ZSTD, Encoding.GZIP)
PAGE = b"".join(b'<li class="item"><a href="/p/%d">Item %d</a></li>\n' % (i, i) for i in range(400))


def decode(data: bytes, encoding: Encoding) -> bytes:
    if encoding is Encoding.GZIP:
        return gzip.decompress(data)
    if encoding is Encoding.BR:
        return brotli.decompress(data)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def test_zstd_is_available_when_the_zstandard_package_is_installed() -> None:
    assert AVAILABLE == (Encoding.BR, Encoding.ZSTD, Encoding.GZIP)


@pytest.mark.parametrize("encoding", ALL)
def test_compress_whole_round_trips_and_is_deterministic(encoding: Encoding) -> None:
    first = compress_whole(PAGE, encoding)
    assert decode(first, encoding) == PAGE
    assert compress_whole(PAGE, encoding) == first
    assert len(first) < len(PAGE) // 4


@pytest.mark.parametrize("encoding", ALL)
def test_compress_whole_of_a_large_body_round_trips(encoding: Encoding) -> None:
    large = PAGE * 5  # past the best-level size: the fast level
    assert decode(compress_whole(large, encoding), encoding) == large


@pytest.mark.parametrize("encoding", ALL)
def test_a_flushed_stream_decodes_to_all_that_was_fed_so_far(encoding: Encoding) -> None:
    compressor = new_compressor(encoding)
    feed: Callable[[bytes], bytes]
    if encoding is Encoding.GZIP:
        reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
        feed = reader.decompress
    elif encoding is Encoding.BR:
        feed = brotli.Decompressor().process
    else:
        feed = zstandard.ZstdDecompressor().decompressobj().decompress
    seen = b""
    for start in range(0, len(PAGE), 3000):
        chunk = PAGE[start : start + 3000]
        sent = compressor.compress(chunk) + compressor.flush()
        seen += feed(sent)
        assert seen == PAGE[: start + len(chunk)]  # the client sees each chunk at once
    seen += feed(compressor.finish())
    assert seen == PAGE


@pytest.mark.parametrize("encoding", ALL)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(PAGE)), max_size=8))
def test_a_stream_decodes_to_the_body_whatever_the_chunking(
    encoding: Encoding, cuts: list[int]
) -> None:
    compressor = new_compressor(encoding)
    bounds = [0, *sorted(cuts), len(PAGE)]
    out = b"".join(compressor.compress(PAGE[a:b]) for a, b in itertools.pairwise(bounds))
    out += compressor.finish()
    assert decode(out, encoding) == PAGE


def test_a_live_br_stream_is_made_at_quality_3() -> None:
    # Quality 3, not 4: 2% more bytes on a streamed shop page for half the time of the
    # first flush, which is on the way to the first byte (see _STREAM_LEVELS).
    body = b"<html><body>" + b"<p>a listing line</p>" * 200
    live = new_compressor(Encoding.BR)
    reference = brotli.Compressor(quality=3, mode=brotli.MODE_TEXT)
    expected = reference.process(body) + reference.flush()  # type: ignore[attr-defined]  # untyped in the stubs
    assert live.compress(body) + live.flush() == expected
