"""The hit lane: a fresh, hot, plain cache hit answered with bytes prepared once.

A hit through the ordinary path normalises the URL, routes, builds the key, reads the
manifest, computes freshness, negotiates the coding and builds and serialises a header
multidict: far more work than the bytes it sends. The first ordinary hit of an entry
that needs nothing per visitor records what it answered (status line and headers,
serialised once, without Date and Age; the body it sent) under the request's raw Host
and target. Later requests with the same raw Host and target, and no header that could
change the answer, get those bytes with only Date and Age made for them.

An entry is used only while it is *exactly* the one the store holds (the same manifest
object, in its memory tier or manifest cache: a purge, a refresh, a soft purge or an
eviction replaces or drops it), while it is fresh, and while its body can be had
without waiting (memory, or a verified small file in the page cache); otherwise the
request takes the ordinary path, which records the entry again. Pages that open a
session (suspense slots, channels), entries that vary on anything but Accept-Encoding,
and requests with conditionals, ranges, request Cache-Control or Pragma never take it.

Bounded: at most ``MAX_ENTRIES`` recorded answers (oldest dropped) and
``MAX_CODINGS_SEEN`` distinct Accept-Encoding values remembered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate

from aiohttp import HttpVersion11, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from weaver.cache.manifest import Manifest
from weaver.cache.store import Store
from weaver.proxy.compress import choose_encoding
from weaver.proxy.compressors import Encoding

MAX_ENTRIES = 4096
MAX_CODINGS_SEEN = 256

# A request with any of these may need another answer than the recorded one.
_DISQUALIFYING = (
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
    "If-Range",
    "Range",
    "Cache-Control",
    "Pragma",
)
# Past this much unsent, the request waits for the client to read (backpressure).
_HIGH_WATER_BYTES = 64 * 1024

# Set per response by the lane itself.
_PER_RESPONSE = ("Date", "Age", "Content-Length", "Server-Timing", "Connection")


@dataclass(slots=True)
class _Answer:
    head: bytes  # status line and the fixed headers, each line ending CRLF
    body: bytes | None  # None: the stored identity body, read from the store per answer


@dataclass(slots=True)
class _Lane:
    key: str
    manifest: Manifest
    fresh_until: float  # wall-clock time the entry stops being fresh
    stored_at: float
    initial_age_s: float
    is_negotiable: bool  # answered in the visitor's coding (else always identity)
    route: str  # the route's path, for metrics
    answers: dict[Encoding | None, _Answer] = field(default_factory=dict)


class HitLane:
    """Recorded answers for fresh, plain, hot hits; see the module docstring."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._codings: dict[str, Encoding | None] = {}
        self._date_second = -1
        self._date = b""

    def answer(self, request: web.BaseRequest) -> LaneResponse | None:
        """The recorded answer for ``request``, or None: take the ordinary path."""
        if request.method != "GET":
            return None
        lane = self._lanes.get((request.host, request.raw_path))
        if lane is None:
            return None
        headers = request.headers
        for name in _DISQUALIFYING:
            if name in headers:
                return None
        now = self._clock()
        if now >= lane.fresh_until or self._store.current_manifest(lane.key) is not lane.manifest:
            del self._lanes[(request.host, request.raw_path)]
            return None
        coding = self._coding(headers.get("Accept-Encoding")) if lane.is_negotiable else None
        answer = lane.answers.get(coding)
        if answer is None:
            return None
        body = answer.body if answer.body is not None else self._store.read_now(lane.manifest)
        if body is None:
            return None  # on disk and not in the page cache: the ordinary path reads it
        age = int(lane.initial_age_s + now - lane.stored_at)
        tail = b"Date: %s\r\nAge: %d\r\nContent-Length: %d\r\n" % (
            self._http_date(now),
            max(0, age),
            len(body),
        )
        keep_alive = request.keep_alive
        if not keep_alive:
            tail += b"Connection: close\r\n"
        elif request.version < HttpVersion11:
            tail += b"Connection: keep-alive\r\n"
        return LaneResponse(answer.head + tail + b"\r\n", body, keep_alive, lane.route)

    def record(
        self,
        request: web.Request,
        key: str,
        manifest: Manifest,
        response: web.Response,
        *,
        is_negotiable: bool,
        route: str,
    ) -> None:
        """Remember ``response`` (an ordinary hit's, not yet sent) for ``request``."""
        body = response.body
        if request.method != "GET" or not isinstance(body, bytes) or response.status != 200:
            return
        if manifest.slots or manifest.channels or "Set-Cookie" in response.headers:
            return
        for name in _DISQUALIFYING:
            if name in request.headers:
                return
        if is_negotiable:
            accept = request.headers.get("Accept-Encoding")
            coding = self._coding(accept)
            if response.headers.get("Content-Encoding", None) != (coding.value if coding else None):
                return  # not the answer this Accept-Encoding gets: never record it
        else:
            coding = None
        freshness = manifest.freshness
        place = (request.host, request.raw_path)
        lane = self._lanes.get(place)
        if lane is None or lane.manifest is not manifest:
            if len(self._lanes) >= MAX_ENTRIES:
                del self._lanes[next(iter(self._lanes))]
            lane = _Lane(
                key=key,
                manifest=manifest,
                fresh_until=freshness.stored_at + freshness.lifetime_s - freshness.initial_age_s,
                stored_at=freshness.stored_at,
                initial_age_s=freshness.initial_age_s,
                is_negotiable=is_negotiable,
                route=route,
            )
            self._lanes[place] = lane
        # The identity body stays the store's (memory tier or page cache): the lane keeps
        # no second copy; a coding's body is the variant's, kept with its answer.
        lane.answers[coding] = _Answer(_serialise_head(response), body if coding else None)

    def clear(self) -> None:
        self._lanes.clear()

    def _coding(self, accept_encoding: str | None) -> Encoding | None:
        text = accept_encoding or ""
        try:
            return self._codings[text]
        except KeyError:
            coding = choose_encoding(accept_encoding)
            if len(self._codings) < MAX_CODINGS_SEEN:
                self._codings[text] = coding
            return coding

    def _http_date(self, now: float) -> bytes:
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date = formatdate(second, usegmt=True).encode("ascii")
        return self._date


def _serialise_head(response: web.Response) -> bytes:
    headers: CIMultiDict[str] = CIMultiDict(response.headers)
    for name in _PER_RESPONSE:
        headers.popall(name, None)
    headers["Server-Timing"] = "cache;desc=hit"
    lines = [f"HTTP/1.1 {response.status} {response.reason}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    return "".join(lines).encode("latin-1")


_LANE_HEADERS = {"X-Weaver-Cache": "HIT"}


class LaneResponse(web.StreamResponse):
    """A response whose bytes were prepared by the lane: written as they are."""

    def __init__(self, head: bytes, body: bytes, keep_alive: bool, route: str) -> None:
        # Not serialised (prepare writes the prepared bytes): what access logs and
        # metrics read of the response.
        super().__init__(headers=_LANE_HEADERS)
        self._head = head
        self._data = body
        self._keep_alive = keep_alive
        self.route = route

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        writer = request.writer
        transport = request.transport
        if self._head and transport is not None and not transport.is_closing():
            head, self._head = self._head, b""
            transport.writelines((head, self._data))  # one writev, as aiohttp's own path
            self._body_length = len(head) + len(self._data)  # what access logs report
            self._payload_writer = writer
            if transport.get_write_buffer_size() > _HIGH_WATER_BYTES:
                await writer.drain()  # a client that does not read holds this request
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        """Nothing more: the head said the length, and the body was written whole."""
