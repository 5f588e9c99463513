"""The conductor: turns a scanned origin stream into pushes onto a sequencer.

Text goes on as it is scanned; each blocking include becomes a fragment whose fetch starts
the moment its tag is seen (a task in the page's TaskGroup) and whose output is a nested
:class:`Sequencer` pushed in the include's place, so fragments run in parallel and are
spliced in document order. Fragments are scanned too, so includes nest up to
``server.max_include_depth``. Suspense includes become deterministic placeholders.

A failing fragment never fails the page: it yields its ``alt``, else its fallback (or
nothing with ``onerror="continue"``), and what it already streamed stays, with a comment
marking the cut. Only the shell's own failure fails the page.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from weaver.cache import freshness as fresh
from weaver.cache import manifest as manifests
from weaver.cache.clock import SYSTEM_CLOCK, Clock
from weaver.cache.freshness import CacheState
from weaver.cache.keys import cache_key, normalise_url, parse_vary, request_vary_values
from weaver.cache.manifest import Manifest
from weaver.cache.policy import Answer, Rules, entry_policy
from weaver.cache.store import BlobWriter, Store
from weaver.config.schema import Config, IncludeMode, OriginConfig, RouteConfig
from weaver.proxy.errors import FragmentError, FragmentLimit, OriginError
from weaver.proxy.includes import IncludePlan, plan_include
from weaver.proxy.origin import OriginClient, OriginResponse
from weaver.proxy.scanner import Drop, Include, Scanner, Subscribe, Text
from weaver.proxy.sequencer import Sequencer
from weaver.proxy.slots import cut_marker, placeholder, slot_id

log = logging.getLogger(__name__)

MAX_SUSPENSE_BYTES = 1024 * 1024

# The one script tag a page with suspense or channels carries (the same for everyone).
BOOTSTRAP = b'<script type="module" src="/_weaver/client.js"></script>'

# A fragment fetch waits for the response's first bytes to go out, at most this long.
FRAGMENT_START_GRACE_S = 0.002


class Outcome(StrEnum):
    """What became of one include (Server-Timing, logs, and the cache's rules)."""

    PENDING = "pending"
    OK = "ok"
    ALT = "alt"  # the include's alt answered instead
    TIMEOUT = "timeout"
    ERROR = "error"
    REFUSED = "refused"  # src not allowed or not a valid URL
    DEPTH = "depth"  # nested deeper than server.max_include_depth
    LOOP = "loop"  # the same src on its own ancestor chain
    LIMIT = "limit"  # past server.max_includes or server.max_fragment_requests
    SUSPENSE = "suspense"  # left as a placeholder for the session

    @property
    def is_fallback(self) -> bool:
        return self not in (Outcome.PENDING, Outcome.OK, Outcome.ALT, Outcome.SUSPENSE)


@dataclass(slots=True)
class FragmentRecord:
    """What happened to one include: for Server-Timing, logs and the cache's rules."""

    src: str
    mode: IncludeMode
    started_s: float
    duration_s: float | None = None
    outcome: Outcome = Outcome.PENDING
    status: int | None = None
    streamed_bytes: int = 0
    headers: CIMultiDictProxy[str] | None = None
    ttl_left_s: float | None = None  # freshness left when fetched or read from the cache
    is_cached: bool = False

    @property
    def is_done(self) -> bool:
        return self.outcome is not Outcome.PENDING


@dataclass(frozen=True, slots=True)
class SuspenseSlot:
    """A suspense include left as a placeholder; the session delivers its content."""

    slot: str
    plan: IncludePlan


@dataclass(frozen=True, slots=True)
class PrimaryHead:
    """What the primary fragment decided for the page (Tailor's primary fragment)."""

    status: int
    location: str | None


@dataclass(slots=True)
class Weave:
    """The weave of one page request: owns its fragment fetches through ``tasks``.

    Args:
        fragment_headers: what every blocking fragment is fetched with (the page's
            canonical request on a shared route, the visitor's own otherwise), no Host.
        host_header: the Host sent to the route's own origin (``preserve_host``), if any.
        tasks: the request's TaskGroup; cancelling it (client gone) stops every fetch.
    """

    client: OriginClient
    config: Config
    route: RouteConfig
    origin: OriginConfig
    fragment_headers: CIMultiDict[str]
    tasks: asyncio.TaskGroup
    host_header: str | None = None
    store: Store | None = None  # fragments are cached under their own keys
    clock: Clock = SYSTEM_CLOCK  # the app's: fragment freshness
    fragments: list[FragmentRecord] = field(default_factory=list)
    suspense: list[SuspenseSlot] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    has_fallback: bool = False
    primary: asyncio.Future[PrimaryHead] | None = None
    # Called once the shell's first chunk is scanned (or the shell ended): the response
    # head may go then. A primary include counts only if it was found by then.
    on_first_chunk: Callable[[], None] | None = None
    # Set once the response's first bytes are out (or FRAGMENT_START_GRACE_S after a tag):
    # fragment fetches start then, so starting twenty of them does not delay the TTFB.
    is_started: bool = False
    requests_made: int = 0
    _waiting: list[Coroutine[Any, Any, None]] = field(default_factory=list)
    _go_timer: asyncio.TimerHandle | None = None
    _is_head_out: bool = False
    _warned: set[Outcome] = field(default_factory=set)
    dropped: Counter[Drop] = field(default_factory=Counter)  # esi markup the scanner removed

    def start_fragments(self) -> None:
        """Start every fragment fetch waiting, and later ones at once. Idempotent."""
        self.is_started = True
        if self._go_timer is not None:
            self._go_timer.cancel()
            self._go_timer = None
        waiting, self._waiting = self._waiting, []
        for coro in waiting:
            self.tasks.create_task(coro)

    def close(self) -> None:
        """Drop fetches that never started (the page ended or broke off before)."""
        if self._go_timer is not None:
            self._go_timer.cancel()
            self._go_timer = None
        waiting, self._waiting = self._waiting, []
        for coro in waiting:
            coro.close()

    def _start(self, coro: Coroutine[Any, Any, None], *, is_urgent: bool) -> None:
        if self.is_started or is_urgent:
            self.tasks.create_task(coro)
            return
        self._waiting.append(coro)
        if self._go_timer is None:
            loop = asyncio.get_running_loop()
            self._go_timer = loop.call_later(FRAGMENT_START_GRACE_S, self.start_fragments)

    def sequencer(self) -> Sequencer:
        return Sequencer(
            max_buffer_bytes=self.config.server.fragment_buffer_bytes, task_group=self.tasks
        )

    async def conduct_page(
        self, body: AsyncIterator[bytes], seq: Sequencer, *, base_url: str
    ) -> None:
        """Scan the shell's body onto ``seq`` and end it.

        If the shell breaks off, the error is pushed in place so that the consumer fails
        the response instead of ending it as if it were whole.
        """
        try:
            await self.conduct(body, seq, base_url=base_url, path=(), chain=(), record=None)
            seq.push_deferred(self._bootstrap)
        except Exception as exc:
            seq.push(_Raising(exc))
        finally:
            self._head_may_go()
            seq.end()

    def _head_may_go(self) -> None:
        if not self._is_head_out:
            self._is_head_out = True
            if self.on_first_chunk is not None:
                self.on_first_chunk()

    def _bootstrap(self) -> bytes:
        """The client runtime's script tag, last in a page that has suspense slots or
        channels. Decided when the consumer gets there, after every fragment ended, so it
        depends only on the page's bytes, never on timing."""
        return BOOTSTRAP if self.suspense or self.channels else b""

    async def conduct(
        self,
        body: AsyncIterator[bytes],
        seq: Sequencer,
        *,
        base_url: str,
        path: tuple[int, ...],
        chain: tuple[str, ...],
        record: FragmentRecord | None,
    ) -> None:
        """Scan ``body`` and push its text, fragments and placeholders onto ``seq``.

        A chunk's events are all pushed before the consumer is waited for (one drain per
        chunk), so the head never waits on a buffer that only the head's sender empties.
        """
        scanner = Scanner()
        async for chunk in body:
            for event in scanner.feed(chunk):
                self._on_event(event, seq, base_url, path, chain, record)
            if record is None:
                self._head_may_go()
            await seq.drain()
        for event in scanner.close():
            self._on_event(event, seq, base_url, path, chain, record)
        self.dropped.update(scanner.dropped)

    def _on_event(
        self,
        event: Text | Include | Subscribe,
        seq: Sequencer,
        base_url: str,
        path: tuple[int, ...],
        chain: tuple[str, ...],
        record: FragmentRecord | None,
    ) -> None:
        if isinstance(event, Text):
            if record is not None:
                record.streamed_bytes += len(event.data)
            seq.push_bytes(event.data)
        elif isinstance(event, Subscribe):
            if event.channel not in self.channels:
                self.channels.append(event.channel)
        elif isinstance(event, Include):
            self._on_include(event, seq, base_url, path, chain)

    def _on_include(
        self,
        include: Include,
        seq: Sequencer,
        base_url: str,
        path: tuple[int, ...],
        chain: tuple[str, ...],
    ) -> None:
        plan = plan_include(
            include, base_url=base_url, route=self.route, origin=self.origin, config=self.config
        )
        loop = asyncio.get_running_loop()
        record = FragmentRecord(plan.src, plan.mode, loop.time())
        self.fragments.append(record)
        position = (*path, include.index)
        depth = len(chain)
        server = self.config.server

        def fallback(outcome: Outcome, why: str) -> None:
            if outcome not in self._warned:  # once per page: a page of 10,000 is one line
                self._warned.add(outcome)
                log.warning("include %s not fetched (%s): %s", plan.src, outcome, why)
            self.has_fallback = True
            record.outcome = outcome
            record.duration_s = 0.0
            text = cut_marker(plan.src, outcome)
            if not plan.continue_on_error:
                text += plan.fallback
            seq.push_bytes(text)

        if len(self.fragments) > server.max_includes:
            fallback(Outcome.LIMIT, f"more than server.max_includes = {server.max_includes}")
        elif plan.refused is not None:
            fallback(Outcome.REFUSED, plan.refused)
        elif plan.mode is IncludeMode.SUSPENSE:
            slot = slot_id(position, plan.src, is_stream=plan.is_stream)
            record.outcome = Outcome.SUSPENSE
            record.duration_s = 0.0
            self.suspense.append(SuspenseSlot(slot, plan))
            seq.push_bytes(placeholder(slot, plan.fallback, plan.src))
        elif depth >= server.max_include_depth:
            fallback(Outcome.DEPTH, f"server.max_include_depth = {depth} reached")
        elif plan.url in chain:
            fallback(Outcome.LOOP, "it includes itself")
        else:
            is_primary = plan.is_primary and depth == 0 and not self._is_head_out
            if is_primary and self.primary is None:
                self.primary = loop.create_future()
            inner = self.sequencer()
            seq.push(inner)
            # The primary decides the head, so it never waits for the head to go out.
            self._start(
                self._fragment(plan, inner, position, (*chain, plan.url), record, is_primary),
                is_urgent=is_primary,
            )

    def _count_request(self, plan: IncludePlan) -> None:
        limit = self.config.server.max_fragment_requests
        self.requests_made += 1
        if self.requests_made > limit:
            raise FragmentLimit(plan.src, f"more than server.max_fragment_requests = {limit}")

    async def _fragment(
        self,
        plan: IncludePlan,
        inner: Sequencer,
        path: tuple[int, ...],
        chain: tuple[str, ...],
        record: FragmentRecord,
        is_primary: bool,
    ) -> None:
        """Fetch one blocking fragment into ``inner``; never raises but CancelledError."""
        loop = asyncio.get_running_loop()
        outcome: Outcome = Outcome.OK
        try:
            await self._fetch_into(plan.url, inner, path, chain, record, plan, is_primary)
        except TimeoutError:
            outcome = Outcome.TIMEOUT
        except FragmentLimit as exc:
            if Outcome.LIMIT not in self._warned:
                self._warned.add(Outcome.LIMIT)
                log.warning("fragment %s not fetched: %s", plan.src, exc.reason)
            outcome = Outcome.LIMIT
        except (OriginError, FragmentError) as exc:
            log.info("fragment %s failed: %s", plan.src, exc)
            outcome = Outcome.ERROR
        except Exception:
            log.exception("fragment %s failed unexpectedly", plan.src)
            outcome = Outcome.ERROR
        try:
            if outcome is Outcome.ERROR and plan.alt_url and record.streamed_bytes == 0:
                try:
                    await self._fetch_into(plan.alt_url, inner, path, chain, record, plan, False)
                    outcome = Outcome.ALT
                except (TimeoutError, OriginError, FragmentError) as exc:
                    log.info("fragment %s alt %s failed: %s", plan.src, plan.alt_url, exc)
            record.outcome = outcome
            if outcome.is_fallback:
                self.has_fallback = True
                marker = cut_marker(plan.src, outcome)
                if record.streamed_bytes or plan.continue_on_error:
                    inner.push_bytes(marker)
                else:
                    inner.push_bytes(marker + plan.fallback)
                if is_primary and self.primary is not None and not self.primary.done():
                    self.primary.set_result(PrimaryHead(502, None))
        finally:
            record.duration_s = loop.time() - record.started_s
            inner.end()

    def _headers_for(self, url: str) -> CIMultiDict[str]:
        headers = CIMultiDict(self.fragment_headers)
        parts = urlsplit(url)
        if self.host_header is not None and (parts.scheme, parts.hostname, parts.port) == (
            self.origin.scheme,
            self.origin.host,
            self.origin.port,
        ):
            headers["Host"] = self.host_header
        return headers

    async def _fetch_into(
        self,
        url: str,
        inner: Sequencer,
        path: tuple[int, ...],
        chain: tuple[str, ...],
        record: FragmentRecord,
        plan: IncludePlan,
        is_primary: bool,
    ) -> None:
        deadline = asyncio.get_running_loop().time() + plan.timeout_s
        url = request_url(plan.src, url)
        headers = self._headers_for(url)
        key = fragment_key(url, headers, self.route.vary)
        if self.store is not None:
            entry = await self.store.get(key)
            if entry is not None and _is_fresh(entry.manifest, headers, self.clock.time()):
                stored = CIMultiDictProxy(CIMultiDict(entry.manifest.headers))
                self._on_status(plan, record, entry.manifest.status, stored, is_primary)
                freshness = entry.manifest.freshness
                record.ttl_left_s = freshness.lifetime_s - freshness.age(self.clock.time())
                record.is_cached = True
                await self._stream(entry.body(), stored, url, inner, path, chain, record)
                return
        self._count_request(plan)
        async with self.client.request("GET", url, headers=headers, deadline=deadline) as resp:
            request_time = self.clock.time()
            self._on_status(plan, record, resp.status, resp.headers, is_primary)
            writer = await self._fragment_writer(key, headers, resp)
            body = resp.chunks(deadline=deadline)
            try:
                await self._stream(
                    _tee(body, writer) if writer else body,
                    resp.headers,
                    url,
                    inner,
                    path,
                    chain,
                    record,
                )
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
            answer = Answer(resp.status, resp.headers, request_time, self.clock.time())
            policy = entry_policy(
                answer, rules=Rules.fragment(self.route), request_headers=headers, key=key
            )
            freshness = policy.freshness
            record.ttl_left_s = freshness.lifetime_s - freshness.initial_age_s
            if writer is not None:
                kept = fresh.filter_stored_headers(resp.headers.items())
                await writer.commit(
                    manifests.new_manifest(
                        key,
                        resp.status,
                        tuple(kept),
                        freshness,
                        tags=policy.tags,
                        etag=resp.headers.get("ETag"),
                        last_modified=resp.headers.get("Last-Modified"),
                        variant=variant_of(headers, resp.headers.get("Vary")),
                    )
                )

    def _on_status(
        self,
        plan: IncludePlan,
        record: FragmentRecord,
        status: int,
        headers: CIMultiDictProxy[str],
        is_primary: bool,
    ) -> None:
        record.status = status
        record.headers = headers
        if is_primary and self.primary is not None and not self.primary.done():
            self.primary.set_result(PrimaryHead(status, headers.get("Location")))
            if status >= 500:
                raise FragmentError(plan.src, f"primary answered {status}")
        elif not 200 <= status < 300:
            raise FragmentError(plan.src, f"answered {status}")

    async def _fragment_writer(
        self, key: str, sent: CIMultiDict[str], resp: OriginResponse
    ) -> BlobWriter | None:
        """A writer for the fragment's own cache entry, if it may be stored (2xx only)."""
        if self.store is None:
            return None
        now = self.clock.time()
        answer = Answer(resp.status, resp.headers, now, now)
        policy = entry_policy(
            answer, rules=Rules.fragment(self.route), request_headers=sent, key=key
        )
        return await self.store.begin(key) if policy.is_stored else None

    async def _stream(
        self,
        body: AsyncIterator[bytes],
        headers: CIMultiDictProxy[str],
        url: str,
        inner: Sequencer,
        path: tuple[int, ...],
        chain: tuple[str, ...],
        record: FragmentRecord,
    ) -> None:
        """A fragment's body into ``inner``: scanned (nested includes) when it is HTML."""
        content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type in ("text/html", "application/xhtml+xml"):
            await self.conduct(body, inner, base_url=url, path=path, chain=chain, record=record)
            return
        async for chunk in body:
            record.streamed_bytes += len(chunk)
            inner.push_bytes(chunk)
            await inner.drain()


def request_url(src: str, url: str) -> str:
    """``url`` in its normal form (RFC 3986 §6.2.2): what is fetched is what is keyed.

    Raises:
        FragmentError: ``url`` is not an http(s) URL with a valid host.
    """
    normal = normalise_url(url)
    if normal is None:
        raise FragmentError(src, "not a valid http(s) URL")
    authority, target = normal
    return f"{url.partition('://')[0].lower()}://{authority}{target}"


def fragment_key(url: str, sent: Mapping[str, str], vary: tuple[str, ...]) -> str:
    """A fragment's cache key: its URL and the route's vary headers as sent."""
    parts = urlsplit(url)
    values = request_vary_values(vary, (), sent)
    target = parts.path + ("?" + parts.query if parts.query else "")
    return cache_key("GET", parts.netloc, target, values, scheme=parts.scheme)


def variant_of(sent: Mapping[str, str], vary_header: str | None) -> str:
    """The values the origin's Vary names had in the request Weaver *sent* (RFC 9111
    §4.1), hashed: a stored entry serves only requests that agree on them, and a
    manifest on disk never holds a visitor's cookie or credentials in clear."""
    names = parse_vary(vary_header) or ()
    if not names:
        return ""
    lowered: dict[str, list[str]] = {}
    for name, value in sent.items():
        lowered.setdefault(name.lower(), []).append(" ".join(value.split()))
    text = "\n".join(f"{n}={','.join(lowered.get(n, []))}" for n in sorted(set(names)))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _is_fresh(manifest: Manifest, sent: Mapping[str, str], now: float) -> bool:
    if manifest.is_soft_purged:
        return False
    vary = CIMultiDict(manifest.headers).get("Vary")
    if vary and (parse_vary(vary) is None or variant_of(sent, vary) != manifest.variant):
        return False
    return manifest.freshness.state(now) is CacheState.FRESH


async def _tee(body: AsyncIterator[bytes], writer: BlobWriter) -> AsyncIterator[bytes]:
    async for chunk in body:
        await writer.write(chunk)
        yield chunk


async def fetch_suspense(
    client: OriginClient, plan: IncludePlan, *, headers: CIMultiDict[str]
) -> str:
    """Fetch a suspense fragment for one visitor, with their own headers (``headers``).

    Raises:
        TimeoutError: the fragment took longer than its timeout.
        FragmentError: it answered an error status or more than MAX_SUSPENSE_BYTES.
        OriginError: it could not be reached.
    """
    deadline = asyncio.get_running_loop().time() + plan.timeout_s
    url = request_url(plan.src, plan.url)
    async with client.request("GET", url, headers=headers, deadline=deadline) as resp:
        if not 200 <= resp.status < 300:
            raise FragmentError(plan.src, f"answered {resp.status}")
        body = bytearray()
        async for chunk in resp.chunks(deadline=deadline):
            body += chunk
            if len(body) > MAX_SUSPENSE_BYTES:
                raise FragmentError(plan.src, f"larger than {MAX_SUSPENSE_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


class _Raising:
    """An async iterable that fails where it stands in the sequence."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __aiter__(self) -> _Raising:
        return self

    async def __anext__(self) -> bytes:
        raise self.exc
