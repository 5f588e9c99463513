"""The conductor: carries out a :class:`~weaver.proxy.weave.Weave`'s commands (the driver).

It feeds the weave what it sees — the document's chunks, each fragment's head, chunks, end
or failure — and does what the weave answers against the origin client, the sequencers
and the store (:mod:`weaver.proxy.entries`). Every rule (policy, depth, loops, bounds,
fallbacks, primary, Link) is the weave's; this module only does I/O.

Each fragment is a task in the request's TaskGroup, started the moment its tag is seen
(after the first bytes are out, or :data:`FRAGMENT_START_GRACE_S`), streaming into a nested
:class:`Sequencer` pushed in the include's place, so fragments run in parallel and are
spliced in document order. A fragment fetched from the origin is written to its own cache
entry as it streams and committed when the weave says it is whole (the page's one commit
path, :func:`weaver.proxy.entries.commit`).

A failing fragment never fails the document; only the document's own body breaking off
does, where it broke (the consumer raises there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from multidict import CIMultiDict

from weaver.cache.clock import SYSTEM_CLOCK, Clock
from weaver.cache.policy import Answer
from weaver.cache.store import BlobWriter, Store
from weaver.config.schema import Config, OriginConfig, RouteConfig
from weaver.proxy import entries
from weaver.proxy.entries import EntryFacts
from weaver.proxy.errors import FragmentError, OriginError
from weaver.proxy.origin import OriginClient
from weaver.proxy.sequencer import Sequencer
from weaver.proxy.weave import Weave
from weaver.proxy.weave_events import (
    FIRST,
    ROOT,
    Command,
    Commit,
    Cut,
    DeadlineReached,
    Emit,
    EmitBootstrap,
    EndPart,
    Event,
    Failure,
    FetchFragment,
    FragmentChunk,
    FragmentEnd,
    FragmentFailed,
    FragmentHead,
    FragmentMissed,
    FragmentRecord,
    SetHead,
    ShellChunk,
    ShellEnd,
    ShellFailed,
    StartSuspense,
    StopFetch,
)

log = logging.getLogger(__name__)

# The one script tag a page with suspense or channels carries (the same for everyone).
BOOTSTRAP = b'<script type="module" src="/_weaver/client.js"></script>'

# A fragment fetch waits for the response's first bytes to go out, at most this long.
FRAGMENT_START_GRACE_S = 0.002


@dataclass(slots=True)
class Conductor:
    """Carries out one weave's commands; owns its fragment fetches through ``tasks``.

    Args:
        root: the sequencer the document's output goes to.
        fragment_headers: what every blocking fragment is fetched with (the page's
            canonical request on a shared route, the visitor's own otherwise), no Host.
        host_header: the Host sent to the route's own origin (``preserve_host``), if any.
        tasks: the request's TaskGroup; cancelling it (client gone) stops every fetch.
        on_head: called with the weave's :class:`SetHead` when the response head may go.
        on_fragment_end: called with each include's record as it ends (or is cut), while
            the page is still waiting on others: a page's metrics, not its wrap-up's work.
        is_started: fetch at once (no response head to wait for, e.g. a slot stream).
    """

    weave: Weave
    client: OriginClient
    config: Config
    route: RouteConfig
    origin: OriginConfig
    fragment_headers: CIMultiDict[str]
    tasks: asyncio.TaskGroup
    root: Sequencer
    host_header: str | None = None
    store: Store | None = None
    clock: Clock = SYSTEM_CLOCK  # the app's: fragment freshness
    on_head: Callable[[SetHead], None] | None = None
    on_fragment_end: Callable[[FragmentRecord], None] | None = None
    is_started: bool = False
    _parts: dict[int, Sequencer] = field(default_factory=dict)
    _stopped: set[tuple[int, int]] = field(default_factory=set)
    _ended: set[int] = field(default_factory=set)
    _pending: dict[tuple[int, int], tuple[BlobWriter, EntryFacts]] = field(default_factory=dict)
    _waiting: list[Coroutine[Any, Any, None]] = field(default_factory=list)
    _go_timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self._parts[ROOT] = self.root

    def sequencer(self) -> Sequencer:
        return new_sequencer(self.config, self.tasks)

    # the document

    async def conduct(self, body: AsyncIterator[bytes]) -> None:
        """Feed ``body`` to the weave and carry out its orders until it ends.

        If the body breaks off, the error is pushed in place so that the consumer fails
        the response instead of ending it as if it were whole. A chunk's orders are all
        carried out before the consumer is waited for (one drain per chunk), so the head
        never waits on a buffer that only the head's sender empties.
        """
        try:
            async for chunk in body:
                await self.feed(ShellChunk(chunk))
                await self.root.drain()
        except Exception as exc:
            self.root.push(Raising(exc))
            await self.feed(ShellFailed())
            return
        await self.feed(ShellEnd())

    async def feed(self, event: Event) -> None:
        """Give the weave ``event`` and carry out what it orders, in order."""
        await self.carry_out(self.weave.handle(event, asyncio.get_running_loop().time()))

    async def carry_out(self, commands: list[Command]) -> None:
        """Carry out ``commands`` (the weave's answer to one event), in order; then report
        each include that ended to ``on_fragment_end``."""
        for command in commands:
            match command:
                case Emit(part=part, data=data):
                    self._parts[part].push_bytes(data)
                case Cut(part=part, text=text):
                    self._parts[part].push_bytes(text)
                case StartSuspense(part=part, placeholder=text):
                    self._parts[part].push_bytes(text)
                case FetchFragment():
                    if command.attempt == FIRST:
                        inner = self.sequencer()
                        self._parts[command.parent].push(inner)
                        self._parts[command.part] = inner
                    self._start(self._fetch(command), is_urgent=command.is_urgent)
                case StopFetch(part=part, attempt=attempt):
                    self._stopped.add((part, attempt))
                case SetHead():
                    if self.on_head is not None:
                        self.on_head(command)
                case Commit(part=part, attempt=attempt):
                    await self._commit(part, attempt)
                case EmitBootstrap(part=part):
                    self._parts[part].push_deferred(self._bootstrap)
                case EndPart(part=part):
                    self._ended.add(part)
                    self._parts[part].end()
        if self.on_fragment_end is not None:
            for record in self.weave.take_ended():
                self.on_fragment_end(record)

    async def _commit(self, part: int, attempt: int) -> None:
        """Commit the fragment's entry, if it was fetched to be stored. A store that
        fails loses the entry, never the page (the bytes are already out)."""
        pending = self._pending.pop((part, attempt), None)
        if pending is None or self.store is None:
            return
        try:
            await entries.commit(self.store, *pending)
        except Exception:
            log.exception("fragment %s not stored", pending[1].key)

    def _bootstrap(self) -> bytes:
        """The client runtime's script tag, last in a page that has suspense slots or
        channels. Decided when the consumer gets there, after every fragment ended, so it
        depends only on the page's bytes, never on timing."""
        return BOOTSTRAP if self.weave.needs_bootstrap else b""

    # starting fetches

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
        for writer, _ in self._pending.values():
            writer.abort()
        self._pending.clear()

    def _start(self, coro: Coroutine[Any, Any, None], *, is_urgent: bool) -> None:
        if self.is_started or is_urgent:
            self.tasks.create_task(coro)
            return
        self._waiting.append(coro)
        if self._go_timer is None:
            loop = asyncio.get_running_loop()
            self._go_timer = loop.call_later(FRAGMENT_START_GRACE_S, self.start_fragments)

    # one fragment fetch

    def _is_live(self, part: int, attempt: int) -> bool:
        return (part, attempt) not in self._stopped and part not in self._ended

    async def _fetch(self, order: FetchFragment) -> None:
        """Fetch one fragment (from the store or the origin) into its part, feeding the
        weave as it goes; never raises but CancelledError."""
        part, attempt = order.part, order.attempt
        failure: Failure | None = None
        try:
            await self._fetch_into(order)
        except TimeoutError:
            failure = Failure.TIMEOUT
        except (OriginError, FragmentError) as exc:
            log.info("fragment %s failed: %s", order.url, exc)
            failure = Failure.ERROR
        except Exception:
            log.exception("fragment %s failed unexpectedly", order.plan.src)
            failure = Failure.ERROR
        if failure is not None and self._is_live(part, attempt):
            if failure is Failure.TIMEOUT:
                await self.feed(DeadlineReached(part, attempt))
            else:
                await self.feed(FragmentFailed(part, failure, attempt))

    async def _fetch_into(self, order: FetchFragment) -> None:
        part, attempt = order.part, order.attempt
        deadline = asyncio.get_running_loop().time() + order.plan.timeout_s
        url = entries.request_url(order.plan.src, order.url)
        headers = self._headers_for(url)
        key = entries.fragment_key(url, headers, self.route.vary)
        inner = self._parts[part]
        cached = None
        if self.store is not None:
            cached = await entries.lookup_fragment(self.store, key, headers, self.clock.time())
        if cached is not None:
            head = FragmentHead(
                part,
                cached.status,
                cached.headers,
                url,
                attempt,
                is_cached=True,
                ttl_left_s=cached.ttl_left_s,
            )
            await self.feed(head)
            if await self._pump(part, attempt, cached.body, inner):
                await self.feed(FragmentEnd(part, attempt))
            return
        await self.feed(FragmentMissed(part, attempt))
        if not self._is_live(part, attempt):
            return  # past server.max_fragment_requests
        async with self.client.request("GET", url, headers=headers, deadline=deadline) as resp:
            request_time = self.clock.time()
            await self.feed(FragmentHead(part, resp.status, resp.headers, url, attempt))
            if not self._is_live(part, attempt):
                return
            answer = Answer(resp.status, resp.headers, request_time, request_time)
            refusal = entries.fragment_refusal(self.route, answer, headers, key)
            writer = await entries.begin(self.store, key, refusal)
            try:
                body = resp.chunks(deadline=deadline)
                if not await self._pump(
                    part, attempt, _tee(body, writer) if writer else body, inner
                ):
                    return
                response_time = self.clock.time()
                if writer is None:  # only its lifetime matters (the page's is the shortest)
                    freshness = entries.response_freshness(
                        self.route, resp.headers, request_time, response_time
                    )
                else:
                    answer = Answer(resp.status, resp.headers, request_time, response_time)
                    policy = entries.fragment_policy(self.route, answer, headers, key)
                    freshness = policy.freshness
                    facts = entries.fragment_facts(key, resp.status, resp.headers, headers, policy)
                    self._pending[(part, attempt)] = (writer, facts)
                    writer = None  # Commit takes it from here
                await self.feed(FragmentEnd(part, attempt, entries.ttl_left_s(freshness)))
            finally:
                if writer is not None:
                    writer.abort()

    async def _pump(
        self, part: int, attempt: int, body: AsyncIterator[bytes], inner: Sequencer
    ) -> bool:
        """Feed ``body`` to the weave chunk by chunk; False if it gave the fetch up."""
        async for chunk in body:
            if not self._is_live(part, attempt):
                return False
            await self.feed(FragmentChunk(part, chunk, attempt))
            await inner.drain()
        return self._is_live(part, attempt)

    def _headers_for(self, url: str) -> CIMultiDict[str]:
        """What a fragment at ``url`` is fetched with: ``fragment_headers`` as they are
        (read, never changed, by every fetch), or a copy with the preserved Host when
        ``url`` is on the route's own origin."""
        if self.host_header is None:
            return self.fragment_headers
        parts = urlsplit(url)
        if (parts.scheme, parts.hostname, parts.port) != (
            self.origin.scheme,
            self.origin.host,
            self.origin.port,
        ):
            return self.fragment_headers
        headers = CIMultiDict(self.fragment_headers)
        headers["Host"] = self.host_header
        return headers


def new_sequencer(config: Config, tasks: asyncio.TaskGroup) -> Sequencer:
    """A sequencer bounded by ``server.fragment_buffer_bytes`` running in ``tasks``."""
    return Sequencer(max_buffer_bytes=config.server.fragment_buffer_bytes, task_group=tasks)


async def _tee(body: AsyncIterator[bytes], writer: BlobWriter) -> AsyncIterator[bytes]:
    async for chunk in body:
        await writer.write(chunk)
        yield chunk


class Raising:
    """An async iterable that fails with ``exc`` at once: where it stands in a sequence,
    or as the rest of a body that broke off."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __aiter__(self) -> Raising:
        return self

    async def __anext__(self) -> bytes:
        raise self.exc
