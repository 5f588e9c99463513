"""Content codecs (pure): which codings Weaver can produce, and the compressors that make them.

Weaver compresses for the visitor in br, zstd where the ``zstandard`` package is installed,
and gzip. Two ways:

- :func:`compress_whole` makes a stored variant once, at a level worth its cost because
  every later hit replays it (see ``_WHOLE_LEVELS`` for what was measured).
- :func:`new_compressor` gives a streaming compressor for a live response, whose
  :meth:`StreamCompressor.flush` hands the client what it has so far (a sync flush), so
  compressing never holds back a page that is still arriving.

Which coding a visitor gets, and what it does to the headers, is :mod:`weaver.proxy.compress`.
No I/O and no asyncio here: callers run :func:`compress_whole` of large bodies in a thread.
"""

from __future__ import annotations

import enum
import gzip
import zlib
from typing import Protocol, cast

import brotli

try:  # optional: pip install weaver-edge[zstd]
    import zstandard

    HAS_ZSTD = True
except ImportError:  # pragma: no cover - depends on the installation
    HAS_ZSTD = False


class Encoding(enum.StrEnum):
    """A content coding Weaver can produce (its token in ``Content-Encoding``)."""

    BR = "br"
    ZSTD = "zstd"
    GZIP = "gzip"


# Server preference, best first: on equal q-values the earlier one wins. br beats zstd on
# HTML at the levels we use (see _WHOLE_LEVELS); both beat gzip.
AVAILABLE: tuple[Encoding, ...] = tuple(
    e for e in (Encoding.BR, Encoding.ZSTD, Encoding.GZIP) if e is not Encoding.ZSTD or HAS_ZSTD
)

# Bodies up to this size get each coding's best level when stored whole; larger ones a
# fast level, so one first request never costs seconds of a core.
WHOLE_BEST_MAX_BYTES = 64 * 1024

# (level for bodies up to WHOLE_BEST_MAX_BYTES, level above). Measured on one core of
# the shared machine, on a generated 20 KB shop page and a 37 KB rustdoc page:
#   gzip 6: 13.2% / 24.6% in 0.12 / 0.58 ms; gzip 9: 13.1% / 24.5% in 0.29 / 0.88 ms
#   br 5:    8.4% / 23.1% in 0.18 / 0.53 ms; br 11:   7.5% / 20.4% in 17 / 37 ms
#   zstd 3:  9.8% / 26.4% in 0.02 / 0.07 ms; zstd 19: 8.9% / 23.5% in 4.9 / 9.7 ms
# A variant is compressed once and replayed for every later visitor, so br 11 (10-12%
# fewer bytes than br 5 on every hit) is worth 20-40 ms once, in a thread; above 64 KiB
# its cost (about 1 ms per KiB) is not, and br 5 keeps most of the gain.
_WHOLE_LEVELS: dict[Encoding, tuple[int, int]] = {
    Encoding.BR: (11, 5),
    Encoding.ZSTD: (19, 6),
    Encoding.GZIP: (9, 6),
}

# Levels for live responses, compressed per visitor as they stream: the cost is paid on
# every request, and the first flush is on the way to the first byte. On the 20 KB shop
# page flushed in 11 pieces (a shell and 10 fragments): br 3 makes 2,436 bytes, br 4
# 2,390, br 2 2,788, gzip 6 2,972, zstd 3 2,664. With cold caches (as after the idle time
# between requests) br 3's first flush takes 46 us against br 4's 83-91 us (its larger
# hash tables), and its next 10 flushes 34 against 54-59 us: 2% more bytes for half the
# time. zstd 3 is zstd's default.
_STREAM_LEVELS: dict[Encoding, int] = {Encoding.BR: 3, Encoding.ZSTD: 3, Encoding.GZIP: 6}


class StreamCompressor(Protocol):
    """Compresses one response as it streams."""

    def compress(self, chunk: bytes) -> bytes:
        """Feed ``chunk``; returns what is ready (often nothing: the codec buffers)."""
        ...

    def flush(self) -> bytes:
        """Everything fed so far, decodable now (a sync flush); the stream goes on."""
        ...

    def finish(self) -> bytes:
        """The end of the stream; the compressor is done."""
        ...


class _Gzip:
    def __init__(self, level: int) -> None:
        # wbits 16 + 15: a gzip wrapper (RFC 1952) around a 32 KiB window.
        self._codec = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, chunk: bytes) -> bytes:
        return self._codec.compress(chunk)

    def flush(self) -> bytes:
        return self._codec.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._codec.flush(zlib.Z_FINISH)


class _BrotliCodec(Protocol):
    """brotli.Compressor as the library has it (its stubs omit ``flush``)."""

    def process(self, string: bytes) -> bytes: ...
    def flush(self) -> bytes: ...
    def finish(self) -> bytes: ...


class _Brotli:
    def __init__(self, level: int) -> None:
        self._codec = cast(_BrotliCodec, brotli.Compressor(quality=level, mode=brotli.MODE_TEXT))

    def compress(self, chunk: bytes) -> bytes:
        return self._codec.process(chunk)

    def flush(self) -> bytes:
        return self._codec.flush()

    def finish(self) -> bytes:
        return self._codec.finish()


class _Zstd:
    def __init__(self, level: int) -> None:
        self._flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        self._codec = zstandard.ZstdCompressor(level=level).compressobj()

    def compress(self, chunk: bytes) -> bytes:
        return self._codec.compress(chunk)

    def flush(self) -> bytes:
        return self._codec.flush(self._flush_block)

    def finish(self) -> bytes:
        return self._codec.flush()


def new_compressor(encoding: Encoding, *, level: int | None = None) -> StreamCompressor:
    """A streaming compressor for a live response (default: the per-request level).

    Raises:
        ValueError: ``encoding`` is zstd and the ``zstandard`` package is not installed.
    """
    chosen = _STREAM_LEVELS[encoding] if level is None else level
    if encoding is Encoding.GZIP:
        return _Gzip(chosen)
    if encoding is Encoding.BR:
        return _Brotli(chosen)
    if not HAS_ZSTD:
        raise ValueError("zstd needs the zstandard package (pip install weaver-edge[zstd])")
    return _Zstd(chosen)


def whole_level(encoding: Encoding, size: int) -> int:
    """The level a stored variant of a ``size``-byte body is made at."""
    best, fast = _WHOLE_LEVELS[encoding]
    return best if size <= WHOLE_BEST_MAX_BYTES else fast


def compress_whole(data: bytes, encoding: Encoding) -> bytes:
    """``data`` in ``encoding``, for storing; the same bytes give the same output.

    CPU-heavy for large bodies (about 1 ms per KiB at br 11): run it in a thread.

    Raises:
        ValueError: ``encoding`` is zstd and the ``zstandard`` package is not installed.
    """
    level = whole_level(encoding, len(data))
    if encoding is Encoding.GZIP:
        return gzip.compress(data, compresslevel=level, mtime=0)  # no clock in the bytes
    if encoding is Encoding.BR:
        return brotli.compress(data, quality=level, mode=brotli.MODE_TEXT)
    if not HAS_ZSTD:
        raise ValueError("zstd needs the zstandard package (pip install weaver-edge[zstd])")
    compressed: bytes = zstandard.ZstdCompressor(level=level).compress(data)
    return compressed
