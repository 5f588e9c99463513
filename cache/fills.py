"""Single-flight fills: one origin fetch whose head and bytes any number of clients follow.

Fills live beside the store they fill: what a fill fetches and how it is woven is the
proxy's (``weaver.proxy.filling`` gives the body coroutine); this module only shares
its head and bytes and owns its task.

A :class:`Fill` is produced by one task (the fill task, owned by the app's :class:`Fills`)
and consumed by one :class:`Follower` per client that asked for its key while it ran
(request coalescing). It belongs to no one client: the one that started it may leave and
the others keep receiving the same bytes. When the last follower leaves before the end,
the fill task is cancelled, and with it every origin and fragment fetch made for it.

Streams:
- fill task → fill buffer: chunks; termination by :meth:`Fill.finish` or
  :meth:`Fill.fail`. Backpressure: the buffer holds what the slowest follower has not read.
  Past ``max_buffer_bytes`` the producer waits while even the fastest follower is behind
  (PAUSE_READING: the pace of the fastest client); followers that hold the buffer back
  while another keeps up are cut off (DISCONNECT_LAGGING: their response is aborted,
  they are never sent a body with a hole in it).
- fill buffer → follower: each reads by absolute offset, as fast as its client.

Keys whose last answer could not be shared are remembered (Varnish's hit-for-miss): their
requests fetch at once rather than follow a fill that would refuse them; a shareable
answer ends the memory. At most ``max_unshareable`` keys (DROP_OLDEST).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

from weaver.cache.errors import FillFailed, FollowerLagged

log = logging.getLogger(__name__)


class FillState(enum.Enum):
    STARTING = "starting"  # the head is not known yet
    STREAMING = "streaming"
    DONE = "done"
    FAILED = "failed"


@dataclass(slots=True)
class Head:
    """What every follower of a fill answers with, before the per-client headers."""

    status: int
    headers: CIMultiDict[str]
    is_shareable: bool  # may be given to other visitors: coalesced now, stored after
    cache_status: str = "MISS"
    # The leader's values of the response's Vary headers (hashed): a follower that would
    # have sent other values gets its own fetch (RFC 9111 §4.1).
    variant: str = ""


class Fill:
    """The head and bytes of one fetch, readable by many followers at once."""

    def __init__(self, key: str, *, max_buffer_bytes: int = 4 * 1024 * 1024) -> None:
        self.key = key
        self.max_buffer_bytes = max_buffer_bytes
        self.state = FillState.STARTING
        self.head: asyncio.Future[Head] = asyncio.get_running_loop().create_future()
        self._head_waiters: list[asyncio.Future[None]] = []  # see Follower.head
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._base = 0  # absolute offset of _chunks[0]
        self._end = 0  # absolute offset after the last chunk
        self._followers: dict[int, int] = {}  # follower id -> offset
        self._lagged: set[int] = set()
        self._next_id = 0
        self._changed = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        # Set while the producer waits for room (PAUSE_READING); tests wait on it.
        self.is_paused = asyncio.Event()
        # What the page asks of each visitor's session, known once the weave has run.
        self._started: list[Callable[[], None]] | None = []  # None once started
        self.slots: list[tuple[str, str, float]] = []  # suspense slot id, URL, timeout
        self.channels: list[str] = []

    @property
    def _is_over(self) -> bool:
        return self.state in (FillState.DONE, FillState.FAILED)

    @property
    def is_joinable(self) -> bool:
        """A new follower would get the whole body: nothing has been trimmed yet."""
        return self.state in (FillState.STARTING, FillState.STREAMING) and self._base == 0

    @property
    def follower_count(self) -> int:
        return len(self._followers)

    @property
    def size(self) -> int:
        return self._end

    # producer side (the fill task)

    def set_head(self, head: Head) -> None:
        if not self.head.done():
            self.head.set_result(head)
            self._wake_head_waiters()
        self.state = FillState.STREAMING

    async def feed(self, chunk: bytes) -> None:
        """Append ``chunk``; waits while the buffer is full and every follower is behind."""
        if not chunk:
            return
        self._chunks.append(chunk)
        self._end += len(chunk)
        self._changed.set()
        while self._buffered() > self.max_buffer_bytes and self._followers:
            fastest = max(self._followers.values())
            if self._end - fastest < self.max_buffer_bytes // 2:
                self._drop_lagging()
                continue
            self._space.clear()
            self.is_paused.set()
            try:
                await self._space.wait()
            finally:
                self.is_paused.clear()

    def on_started(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once a follower has written the head and first bytes."""
        if self._started is None:
            callback()
        else:
            self._started.append(callback)

    def mark_started(self) -> None:
        """A client has its first bytes: work that would delay them may start now."""
        callbacks, self._started = self._started, None
        for callback in callbacks or ():
            callback()

    def finish(self) -> None:
        """The body is whole: followers end once they have read it (idempotent)."""
        self.state = FillState.DONE
        self._changed.set()

    def fail(self, error: BaseException) -> None:
        """The fill broke off; followers that have the head are aborted. After
        :meth:`finish` the body stays whole: a failed wrap-up is the fill task's to log."""
        if self.state is FillState.DONE:
            return
        self.error = error
        self.state = FillState.FAILED
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: followers each get it from the future
            self._wake_head_waiters()
        self._changed.set()

    def _wake_head_waiters(self) -> None:
        for waiter in self._head_waiters:
            if not waiter.done():  # cancelled when its follower left
                waiter.set_result(None)
        self._head_waiters.clear()

    # consumer side

    def follow(self) -> Follower:
        """A new reader from offset 0; only while :attr:`is_joinable`."""
        if not self.is_joinable:
            raise RuntimeError(f"fill {self.key} can no longer be joined")
        follower_id = self._next_id
        self._next_id += 1
        self._followers[follower_id] = 0
        return Follower(self, follower_id)

    def _leave(self, follower_id: int) -> None:
        self._followers.pop(follower_id, None)
        self._lagged.discard(follower_id)
        self._trim()
        if not self._followers and self.state in (FillState.STARTING, FillState.STREAMING):
            if self.task is not None:
                self.task.cancel()  # nobody is left to receive it: stop every fetch

    async def _read(self, follower_id: int) -> bytes:
        while True:
            if follower_id in self._lagged:
                raise FollowerLagged(f"fell more than {self.max_buffer_bytes} bytes behind")
            offset = self._followers[follower_id]
            if offset < self._end:
                data = self._slice_from(offset)
                self._followers[follower_id] = offset + len(data)
                self._trim()
                return data
            if self.state is FillState.DONE:
                return b""
            if self.state is FillState.FAILED:
                raise FillFailed(f"fill {self.key} broke off") from self.error
            self._changed.clear()
            await self._changed.wait()

    def _slice_from(self, offset: int) -> bytes:
        position = self._base
        parts: list[bytes] = []
        for chunk in self._chunks:
            end = position + len(chunk)
            if end > offset:
                parts.append(chunk[offset - position :] if offset > position else chunk)
                if sum(map(len, parts)) >= 64 * 1024:
                    break
            position = end
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _buffered(self) -> int:
        return self._end - self._base

    def _trim(self) -> None:
        if self._base == 0 and self._end <= self.max_buffer_bytes and not self._is_over:
            return  # a small body is kept whole while it runs, so late requests can join
        slowest = min(self._followers.values(), default=self._end)
        while self._chunks and self._base + len(self._chunks[0]) <= slowest:
            self._base += len(self._chunks.popleft())
        if self._buffered() <= self.max_buffer_bytes:
            self._space.set()
        elif self._followers and self._end - max(self._followers.values()) < (
            self.max_buffer_bytes // 2
        ):
            self._space.set()  # the producer re-checks and drops who holds it back

    def _drop_lagging(self) -> None:
        for follower_id, offset in list(self._followers.items()):
            if self._end - offset > self.max_buffer_bytes:
                self._lagged.add(follower_id)
                del self._followers[follower_id]
        self._changed.set()
        self._trim()


class Follower:
    """One client's view of a fill: its head, then its bytes from offset 0."""

    def __init__(self, fill: Fill, follower_id: int) -> None:
        self.fill = fill
        self._id = follower_id
        self._is_closed = False

    async def head(self) -> Head:
        """The fill's head; raises what broke the fill before its head was known."""
        fill = self.fill
        if not fill.head.done():
            # Its own waiter: if it leaves, that is cancelled, never the fill's head.
            waiter = asyncio.get_running_loop().create_future()
            fill._head_waiters.append(waiter)
            await waiter
        return fill.head.result()

    def is_ready(self) -> bool:
        """Whether the next read returns at once: bytes are waiting, or the fill ended."""
        fill = self.fill
        return (
            fill.state in (FillState.DONE, FillState.FAILED)
            or (self._id in fill._followers and fill._followers[self._id] < fill._end)
            or self._id in fill._lagged
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. Raises FillFailed or FollowerLagged on a broken body."""
        while data := await self.fill._read(self._id):
            yield data

    async def read(self) -> bytes:
        """The next bytes, ``b""`` at the end: :meth:`chunks` without an async generator."""
        return await self.fill._read(self._id)

    def close(self) -> None:
        """Leave the fill; the last follower to leave an unfinished fill cancels it."""
        if not self._is_closed:
            self._is_closed = True
            self.fill._leave(self._id)

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


FillBody = Callable[[Fill], Coroutine[Any, Any, None]]


class Fills:
    """The fills running in this process, by cache key; the owner of their tasks.

    A fill outlives the request that started it (its followers and background refreshes
    need that), so no request's TaskGroup can own it: this registry does, and
    :meth:`aclose` cancels and awaits every fill still running (app shutdown).

    Args:
        expected: errors a fill body raises that are not Weaver's fault (the origin's:
            unreachable, a timeout); they fail the fill and are logged without a trace.
        max_unshareable: how many keys whose last answer could not be shared are kept.
    """

    def __init__(
        self, *, expected: tuple[type[Exception], ...] = (), max_unshareable: int = 10_000
    ) -> None:
        self._expected = expected
        self._max_unshareable = max_unshareable
        self._unshareable: dict[str, None] = {}  # insertion-ordered: oldest first
        self._running: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._is_closed = False

    def joinable(self, key: str) -> Fill | None:
        fill = self._running.get(key)
        return fill if fill is not None and fill.is_joinable else None

    def to_follow(self, key: str) -> Fill | None:
        """The fill a new request for ``key`` should follow; none if it would be refused."""
        fill = self._running.get(key)
        if fill is None or not fill.is_joinable or key in self._unshareable:
            return None
        if _is_shareable(fill) is False:
            self._remember(key, is_shareable=False)
            return None
        return fill

    def is_unshareable(self, key: str) -> bool:
        """Whether the last fill of ``key`` answered what may not be shared."""
        return key in self._unshareable

    def _remember(self, key: str, *, is_shareable: bool) -> None:
        self._unshareable.pop(key, None)  # re-added last when still unshareable
        if not is_shareable:
            self._unshareable[key] = None
            if len(self._unshareable) > self._max_unshareable:
                del self._unshareable[next(iter(self._unshareable))]  # DROP_OLDEST

    def start(self, key: str, body: FillBody, *, max_buffer_bytes: int) -> Fill:
        """Start a fill for ``key`` running ``body(fill)``; the caller follows it at once.

        ``body`` sets the head, feeds the bytes and finishes; an exception fails the fill.
        An empty ``key`` is a private fill: never registered, never joined.
        """
        if self._is_closed:
            raise RuntimeError("the fill registry is closed (shutting down)")
        fill = Fill(key, max_buffer_bytes=max_buffer_bytes)
        if key:
            self._running[key] = fill
        task = asyncio.get_running_loop().create_task(self._run(fill, body))
        fill.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill

    def is_running(self, key: str) -> bool:
        return key in self._running

    async def idle(self) -> None:
        """Wait until no fill runs (background refreshes included); cancel-safe."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self) -> None:
        """Cancel every running fill and wait for them to stop."""
        self._is_closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, fill: Fill, body: FillBody) -> None:
        try:
            await body(fill)
        except asyncio.CancelledError:
            fill.fail(FillFailed(f"fill {fill.key} was cancelled"))
            raise
        except Exception as exc:
            if not isinstance(exc, self._expected):
                log.exception("fill %s failed", fill.key)
            fill.fail(exc)
        else:
            fill.finish()
        finally:
            if self._running.get(fill.key) is fill:
                del self._running[fill.key]
            if fill.key and (is_shareable := _is_shareable(fill)) is not None:
                self._remember(fill.key, is_shareable=is_shareable)


def _is_shareable(fill: Fill) -> bool | None:
    """Whether the fill's answer may be shared; None while (or if) it has no head."""
    head = fill.head  # never cancelled: only set_head and fail settle it
    return head.result().is_shareable if head.done() and head.exception() is None else None
