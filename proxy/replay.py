"""Replaying a stored paint: the stored bytes, byte for byte, with correct replay headers.

``ETag`` is the content hash of the body, so ``If-None-Match`` is answered from the
manifest alone (304). A single ``Range`` gets 206 (RFC 9110 §14); several ranges get the
whole body with 200, which RFC 9110 allows. ``Age`` is recomputed (RFC 9111 §5.1).
"""

from __future__ import annotations

import re

from aiohttp import web
from multidict import CIMultiDict

from weaver.cache.freshness import parse_cache_control
from weaver.cache.manifest import Manifest
from weaver.cache.store import Entry

# Directives a response carrying a visitor's session cookie must not pass downstream.
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

    ``set_cookie`` is the visitor's session cookie: per response, never stored; the
    response then says ``private`` to caches downstream.
    """
    manifest = entry.manifest
    headers = replay_headers(manifest, cache_status=cache_status, age=age)
    if set_cookie is not None:
        headers.add("Set-Cookie", set_cookie)
        private_downstream(headers)
    if server_timing is not None:
        headers["Server-Timing"] = server_timing
    etag = headers["ETag"]
    if_none_match = request.headers.get("If-None-Match")
    if manifest.status == 200 and if_none_match is not None and etag_matches(if_none_match, etag):
        for name in _NOT_IN_304:
            headers.popall(name, None)
        return web.Response(status=304, headers=headers)
    status, start, end = manifest.status, 0, manifest.size
    range_header = request.headers.get("Range")
    if manifest.status == 200 and range_header is not None and _if_range_holds(request, etag):
        chosen = parse_range(range_header, manifest.size)
        if chosen == "416":
            headers["Content-Range"] = f"bytes */{manifest.size}"
            headers["Content-Length"] = "0"
            return web.Response(status=416, headers=headers)
        if isinstance(chosen, tuple):
            start, end = chosen
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{manifest.size}"
    whole = entry.whole
    if whole is not None:  # in memory and verified: one write, like a plain server
        body = whole if (start, end) == (0, len(whole)) else whole[start:end]
        if request.method == "HEAD":
            headers["Content-Length"] = str(end - start)
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, headers=headers, body=body)
    headers["Content-Length"] = str(end - start)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if request.method != "HEAD":
        async for chunk in entry.body(start=start, end=end):
            await response.write(chunk)
    await response.write_eof()
    return response


def _if_range_holds(request: web.Request, etag: str) -> bool:
    """RFC 9110 §13.1.5: a Range with a non-matching If-Range gets the whole body."""
    if_range = request.headers.get("If-Range")
    return if_range is None or if_range.strip() == etag
