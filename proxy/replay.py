"""Replaying a stored paint: the stored bytes, byte for byte, with correct replay headers.

``ETag`` is the content hash of the body, so ``If-None-Match`` is answered from the
manifest alone (304). A single ``Range`` gets 206 (RFC 9110 §14); several ranges get the
whole body with 200, which RFC 9110 allows. ``Age`` is recomputed (RFC 9111 §5.1).

A visitor who accepts a content coding gets the stored body's variant in it, compressed
once and stored beside it: ETag ``"<blob>-<coding>"``, so a 304 needs no compression
either, and ``Range`` counts that variant's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator

from aiohttp import web
from multidict import CIMultiDict

from weaver.cache.errors import CacheError
from weaver.cache.freshness import http_date, parse_cache_control
from weaver.cache.manifest import Manifest
from weaver.cache.store import VARIANT_MAX_BYTES, Entry, variant_of_entry
from weaver.proxy.compress import add_vary, choose_encoding, is_negotiable, variant_etag
from weaver.proxy.compressors import (
    Encoding,
    StreamCompressor,
    compress_whole,
    new_compressor,
    whole_level,
)

# Directives a response carrying a visitor's session cookie must not pass downstream.
log = logging.getLogger(__name__)

# A large body streams from disk in reads this big: one thread hop per 512 KiB (an
# 8 MiB hit took 28 ms in 64 KiB hops), at most two such chunks held per response.
STREAM_CHUNK_BYTES = 512 * 1024

_SHARED_ONLY = ("public", "s-maxage")

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

# RFC 9110 §15.4.5: a 304 carries the headers a 200 would have, but none describing a body.
_NOT_IN_304 = ("Content-Length", "Content-Range", "Content-Encoding", "Transfer-Encoding")


def private_downstream(headers: CIMultiDict[str]) -> None:
    """A response carrying a visitor's session cookie is private to caches downstream of
    Weaver; what Weaver stored keeps the origin's own cache headers."""
    directives = parse_cache_control(headers.get("Cache-Control"))
    kept = [
        name if value is None else f"{name}={value}"
        for name, value in directives.items()
        if name not in _SHARED_ONLY and name != "private"
    ]
    headers["Cache-Control"] = ", ".join(["private", *kept])
    for name in ("CDN-Cache-Control", "Surrogate-Control"):
        headers.popall(name, None)


def etag_of(manifest: Manifest) -> str:
    return f'"{manifest.blob}"'


def replay_headers(manifest: Manifest, *, cache_status: str, age: str) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(manifest.headers)
    for name in ("ETag", "Age", "Content-Length", "Accept-Ranges", "X-Weaver-Cache"):
        headers.popall(name, None)
    headers["ETag"] = etag_of(manifest)
    headers["Age"] = age
    headers["Accept-Ranges"] = "bytes"
    headers["X-Weaver-Cache"] = cache_status
    return headers


def _not_modified(
    request: web.Request, if_none_match: str | None, etag: str, headers: CIMultiDict[str]
) -> bool:
    """RFC 9110 §13.2.2: If-None-Match decides when sent, else If-Modified-Since
    against the stored Last-Modified; the visitor's validators are answered here."""
    if if_none_match is not None:
        return etag_matches(if_none_match, etag)
    since = http_date(request.headers.get("If-Modified-Since"))
    modified = http_date(headers.get("Last-Modified"))
    return since is not None and modified is not None and modified <= since


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison against a list of entity tags, or ``*``."""
    if if_none_match.strip() == "*":
        return True
    tags = (tag.strip() for tag in if_none_match.split(","))
    return any(tag.removeprefix("W/") == etag for tag in tags)


def parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=a-b`` range as (start, end exclusive); None to ignore; "416" if
    unsatisfiable. Several ranges, other units or junk are ignored (200 with the whole)."""
    match = _RANGE.match(value.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        length = int(last)
        if length == 0:
            return "416"
        return max(0, size - length), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if last and int(last) < start:
        return None  # invalid: RFC 9110 §14.1.1 says ignore the header
    if start >= size:
        return "416"
    return start, end


async def replay(
    request: web.Request,
    entry: Entry,
    *,
    cache_status: str,
    age: str,
    set_cookie: str | None = None,
    server_timing: str | None = None,
) -> web.StreamResponse:
    """Answer ``request`` from ``entry``; the body streams from the store, verified.

    A compressible body the origin sent unencoded is answered in the coding the request
    prefers (:mod:`weaver.proxy.compress`), from a variant compressed once and stored
    beside it; it has its own ``ETag`` (``"<blob>-br"``), and ``Range`` and
    ``If-None-Match`` apply to it. Either way such a response says
    ``Vary: Accept-Encoding``. A body the origin encoded is replayed untouched.

    ``set_cookie`` is the visitor's session cookie: per response, never stored; the
    response then says ``private`` to caches downstream.

    Raises:
        DamagedBlob, StoreError: a body to compress is damaged or gone; its entry is
            removed, nothing was sent.
    """
    manifest = entry.manifest
    headers = replay_headers(manifest, cache_status=cache_status, age=age)
    if set_cookie is not None:
        headers.add("Set-Cookie", set_cookie)
        private_downstream(headers)
    if server_timing is not None:
        headers["Server-Timing"] = server_timing
    encoding = _negotiate(request, manifest, headers)
    etag = headers["ETag"]
    if_none_match = request.headers.get("If-None-Match")
    if manifest.status == 200 and _not_modified(request, if_none_match, etag, headers):
        for name in _NOT_IN_304:
            headers.popall(name, None)
        return web.Response(status=304, headers=headers)
    if encoding is None:
        return await _identity(request, entry, headers, etag)
    if manifest.size > VARIANT_MAX_BYTES:
        return await _compressed_stream(request, entry, headers, encoding)
    make = functools.partial(_compress_whole, encoding=encoding)
    body = await variant_of_entry(entry, encoding.value, make)
    status, start, end = manifest.status, 0, len(body)
    if manifest.status == 200:
        chosen = _range(request, headers, etag, len(body))
        if isinstance(chosen, web.Response):
            return chosen
        if chosen is not None:
            status, (start, end) = 206, chosen
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return web.Response(status=status, headers=headers)
    return web.Response(status=status, headers=headers, body=body[start:end])


def _negotiate(
    request: web.Request, manifest: Manifest, headers: CIMultiDict[str]
) -> Encoding | None:
    """The coding to replay ``manifest`` in; ``headers`` become that representation's."""
    if not is_negotiable(headers, status=manifest.status, size=manifest.size):
        return None
    add_vary(headers, "Accept-Encoding")
    encoding = choose_encoding(request.headers.get("Accept-Encoding"))
    if encoding is not None:
        headers["Content-Encoding"] = encoding.value
        headers["ETag"] = variant_etag(headers["ETag"], encoding)
    return encoding


def _compress_whole(data: bytes, *, encoding: Encoding) -> bytes:
    return compress_whole(data, encoding)


def _range(
    request: web.Request, headers: CIMultiDict[str], etag: str, size: int
) -> tuple[int, int] | web.Response | None:
    """The requested range of a ``size``-byte body, a 416 answer, or None for the whole.

    Sets ``Content-Range`` in ``headers`` for a satisfiable range.
    """
    range_header = request.headers.get("Range")
    if range_header is None or not _if_range_holds(request, etag):
        return None
    chosen = parse_range(range_header, size)
    if chosen == "416":
        headers["Content-Range"] = f"bytes */{size}"
        headers["Content-Length"] = "0"
        return web.Response(status=416, headers=headers)
    if isinstance(chosen, tuple):
        headers["Content-Range"] = f"bytes {chosen[0]}-{chosen[1] - 1}/{size}"
        return chosen
    return None


async def _identity(
    request: web.Request, entry: Entry, headers: CIMultiDict[str], etag: str
) -> web.StreamResponse:
    """The stored bytes as they are (in memory: one write; else streamed from disk)."""
    manifest = entry.manifest
    status, start, end = manifest.status, 0, manifest.size
    if manifest.status == 200:
        chosen = _range(request, headers, etag, manifest.size)
        if isinstance(chosen, web.Response):
            return chosen
        if chosen is not None:
            status, (start, end) = 206, chosen
    whole = entry.whole
    if whole is not None:  # in memory and verified: one write, like a plain server
        body = whole if (start, end) == (0, len(whole)) else whole[start:end]
        if request.method == "HEAD":
            headers["Content-Length"] = str(end - start)
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, headers=headers, body=body)
    headers["Content-Length"] = str(end - start)
    response = web.StreamResponse(status=status, headers=headers)
    if request.method == "HEAD":
        await response.prepare(request)
        await response.write_eof()
        return response
    # The first chunk is read before the head goes: a blob found damaged (or gone) then
    # raises while the caller can still answer from the origin instead.
    # The body's file closes when the response ends or the visitor leaves (aclosing).
    async with contextlib.aclosing(entry.body(STREAM_CHUNK_BYTES, start=start, end=end)) as chunks:
        first = await anext(chunks, b"")
        await response.prepare(request)
        await response.write(first)
        try:
            async for chunk in chunks:
                await response.write(chunk)
        except CacheError as exc:  # changed on disk mid-stream: never end it as if whole
            log.warning("replay of %s aborted: %s", entry.manifest.key, exc)
            if request.transport is not None:
                request.transport.abort()
            return response
    await response.write_eof()
    return response


async def _compressed_stream(
    request: web.Request, entry: Entry, headers: CIMultiDict[str], encoding: Encoding
) -> web.StreamResponse:
    """A body too large to store a variant of, compressed as it streams from disk.

    Its length is not known in advance, so ``Range`` is ignored (RFC 9110 §14.2 allows
    it) and the response says ``Accept-Ranges: none``. Each chunk is compressed in a
    thread (64 KiB at a time, about a millisecond each).
    """
    headers["Accept-Ranges"] = "none"
    response = web.StreamResponse(status=entry.manifest.status, headers=headers)
    await response.prepare(request)
    if request.method != "HEAD":
        compressor = new_compressor(encoding, level=whole_level(encoding, entry.manifest.size))
        async for chunk in entry.body():
            out = await asyncio.to_thread(compressor.compress, chunk)
            if out:
                await response.write(out)
        await response.write(compressor.finish())
    await response.write_eof()
    return response


def inline_headers(headers: CIMultiDict[str]) -> None:
    """Headers of a response whose paint is followed by the visitor's inline slots: no
    validators (the body is this visitor's alone: a 304 must never bring back another
    view's slots), no length or ranges, and ``private`` to caches downstream."""
    for name in ("ETag", "Last-Modified", "Content-Length", "Accept-Ranges"):
        headers.popall(name, None)
    private_downstream(headers)


async def replay_inline(
    request: web.Request,
    entry: Entry,
    tail: AsyncIterator[bytes],
    *,
    cache_status: str,
    age: str,
    set_cookie: str | None = None,
    server_timing: str | None = None,
) -> web.StreamResponse:
    """The stored paint, byte for byte, then ``tail`` (the inline slots) in the same body.

    Conditional requests are not answered with 304 (:func:`inline_headers`). A visitor
    who accepts a coding gets the whole response compressed live, the paint flushed
    before the tail: a stored variant cannot be continued, so none is used (a hit costs
    one streaming compression of its paint).

    Raises:
        DamagedBlob, StoreError: the body is damaged or gone; nothing was sent.
    """
    manifest = entry.manifest
    headers = replay_headers(manifest, cache_status=cache_status, age=age)
    inline_headers(headers)
    if set_cookie is not None:
        headers.add("Set-Cookie", set_cookie)
    if server_timing is not None:
        headers["Server-Timing"] = server_timing
    compressor: StreamCompressor | None = None
    if is_negotiable(headers, status=manifest.status):  # its length is not known
        add_vary(headers, "Accept-Encoding")
        encoding = choose_encoding(request.headers.get("Accept-Encoding"))
        if encoding is not None:
            headers["Content-Encoding"] = encoding.value
            compressor = new_compressor(encoding)
    async with contextlib.aclosing(entry.body()) as chunks:
        first = await anext(chunks, b"")  # a damaged blob raises while we can still go on
        response = web.StreamResponse(status=manifest.status, headers=headers)
        await response.prepare(request)
        try:
            paint = [first]
            async for chunk in chunks:
                paint.append(chunk)
                if len(paint) >= 4:
                    await _write(response, compressor, b"".join(paint), is_flushed=False)
                    paint = []
            await _write(response, compressor, b"".join(paint), is_flushed=True)
        except CacheError as exc:  # changed on disk mid-stream: never end it as if whole
            log.warning("replay of %s aborted: %s", manifest.key, exc)
            if request.transport is not None:
                request.transport.abort()
            return response
    async for data in tail:
        await _write(response, compressor, data, is_flushed=True)
    await response.write_eof(compressor.finish() if compressor is not None else b"")
    return response


async def _write(
    response: web.StreamResponse,
    compressor: StreamCompressor | None,
    data: bytes,
    *,
    is_flushed: bool,
) -> None:
    if compressor is not None:
        data = compressor.compress(data) + (compressor.flush() if is_flushed else b"")
    if data:
        await response.write(data)


def _if_range_holds(request: web.Request, etag: str) -> bool:
    """RFC 9110 §13.1.5: a Range with a non-matching If-Range gets the whole body."""
    if_range = request.headers.get("If-Range")
    return if_range is None or if_range.strip() == etag
