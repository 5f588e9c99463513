"""The async iterable sequencer of the seeds: many producers at once, output in push order.

A :class:`Sequencer` is an ordered list of *parts*. A part is bytes pushed directly, an
async iterable run by its own producer task, or another sequencer (a fragment's own stream,
so includes nest). Every producer runs from the moment it is pushed; the consumer reads the
parts strictly in push order, so the output is the concatenation in document order however
the producers' completion times are ordered.

Streams (the streaming contract of DESIGN.md):

- producer → part buffer: framing is chunks of bytes; backpressure PAUSE_READING: a
  producer whose part holds more than ``max_buffer_bytes`` unread bytes waits (and so does
  its origin read) until the consumer takes them. Direct pushes are bounded the same way
  through :meth:`Sequencer.drain`.
- part buffer → consumer: the consumer pulls; the head part's chunks go out as soon as they
  arrive (the head fast path), parts further on wait their turn in their buffers.
- termination: :meth:`Sequencer.end` says no more parts follow; a producer's part ends when
  its iterable does. An error in a producer stays in its part: ``on_error`` turns it into
  replacement bytes, or the consumer raises it when it reaches that part.
- cancellation: :meth:`Sequencer.aclose` (and leaving ``async with``) cancels every
  producer, nested sequencers' included.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from weaver.proxy.errors import SequencerClosed

log = logging.getLogger(__name__)

# The consumer joins what is ready into writes of at most this many bytes.
MAX_WRITE_BYTES = 64 * 1024

OnError = Callable[[Exception], bytes]


class _Part:
    """One slot of the sequence: a bounded buffer of chunks, its end and its error."""

    __slots__ = ("child", "chunks", "deferred", "error", "is_closed", "nbytes", "space", "task")

    def __init__(self, *, is_closed: bool = False, child: Sequencer | None = None) -> None:
        self.deferred: Callable[[], bytes] | None = None
        self.chunks: deque[bytes] = deque()
        self.nbytes = 0
        self.is_closed = is_closed
        self.child = child
        self.error: Exception | None = None
        self.space: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None


class Sequencer(AbstractAsyncContextManager["Sequencer"]):
    """Concatenate pushed byte sources in push order while their producers run at once.

    Args:
        max_buffer_bytes: the most unread bytes one part holds before its producer pauses.
        task_group: where producer tasks run; without one, the sequencer opens its own
            when entered with ``async with``. Either way :meth:`aclose` cancels them.
    """

    def __init__(
        self, *, max_buffer_bytes: int = 256 * 1024, task_group: asyncio.TaskGroup | None = None
    ) -> None:
        if max_buffer_bytes < 1:
            raise ValueError(f"max_buffer_bytes must be positive, got {max_buffer_bytes}")
        self.max_buffer_bytes = max_buffer_bytes
        self._task_group = task_group
        self._owns_task_group = False
        self._parts: deque[_Part] = deque()
        self._producers: set[asyncio.Task[None]] = set()
        self._children: list[Sequencer] = []
        self._changed = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._pending_direct_bytes = 0
        self.is_ended = False
        self.is_closed = False

    async def __aenter__(self) -> Sequencer:
        if self._task_group is None:
            self._task_group = asyncio.TaskGroup()
            await self._task_group.__aenter__()
            self._owns_task_group = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.aclose()
        if self._owns_task_group and self._task_group is not None:
            await self._task_group.__aexit__(exc_type, exc, tb)

    # producer side

    def push(self, source: AsyncIterable[bytes], *, on_error: OnError | None = None) -> None:
        """Append ``source``; its producer starts now (a nested Sequencer needs none).

        Raises:
            SequencerClosed: after :meth:`end` or :meth:`aclose`.
        """
        self._check_open()
        if isinstance(source, Sequencer):
            self._children.append(source)
            self._append(_Part(child=source))
            return
        if self._task_group is None:
            raise RuntimeError("Sequencer.push needs a task_group or `async with Sequencer()`")
        part = _Part()
        part.space = asyncio.Event()
        self._append(part)
        task = self._task_group.create_task(self._produce(part, source, on_error))
        part.task = task
        self._producers.add(task)
        task.add_done_callback(self._producers.discard)

    def push_bytes(self, data: bytes) -> None:
        """Append ``data``; pair with :meth:`drain` to respect the buffer bound.

        Raises:
            SequencerClosed: after :meth:`end` or :meth:`aclose`.
        """
        self._check_open()
        if not data:
            return
        tail = self._parts[-1] if self._parts else None
        if tail is not None and tail.is_closed and tail.child is None and tail.task is None:
            tail.chunks.append(data)
            tail.nbytes += len(data)
        else:
            part = _Part(is_closed=True)
            part.chunks.append(data)
            part.nbytes = len(data)
            self._append(part)
        self._pending_direct_bytes += len(data)
        if self._pending_direct_bytes > self.max_buffer_bytes:
            self._drained.clear()
        self._changed.set()

    def push_deferred(self, make: Callable[[], bytes]) -> None:
        """Append bytes computed by ``make()`` when the consumer reaches them: after every
        part before them was consumed (so after every producer before them ended).

        Raises:
            SequencerClosed: after :meth:`end` or :meth:`aclose`.
        """
        self._check_open()
        part = _Part(is_closed=True)
        part.deferred = make
        self._append(part)

    async def drain(self) -> None:
        """Wait until the directly pushed bytes not yet read are within the bound.

        Cancel-safe. Returns at once once the sequencer is closed (nothing will be read).
        """
        await self._drained.wait()

    def end(self) -> None:
        """No more parts follow; the consumer finishes after the last one. Idempotent."""
        self.is_ended = True
        self._changed.set()

    def aclose(self) -> None:
        """Cancel every producer, nested ones too; the consumer stops at once."""
        if self.is_closed:
            return
        self.is_closed = True
        self.is_ended = True
        for task in list(self._producers):
            task.cancel()
        for child in self._children:
            child.aclose()
        self._parts.clear()
        self._drained.set()
        self._changed.set()

    # consumer side

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._consume()

    async def _consume(self) -> AsyncGenerator[bytes, None]:
        """Yield the parts' bytes in push order, joined into writes of a useful size."""
        try:
            while True:
                ready = self._take_ready()
                if ready:
                    yield ready
                    continue
                if self.is_closed:
                    return
                if not self._parts:
                    if self.is_ended:
                        return
                    await self._wait_changed()
                    continue
                head = self._parts[0]
                if head.child is not None:
                    async for chunk in head.child:
                        yield chunk
                    self._parts.popleft()
                elif head.error is not None:
                    error, head.error = head.error, None
                    raise error
                elif head.is_closed and not head.chunks:
                    self._parts.popleft()
                else:
                    await self._wait_changed()
        except BaseException:
            self.aclose()
            raise

    def take_ready(self) -> bytes:
        """What the consumer can have without waiting (b"" if nothing); consumes it."""
        return self._take_ready()

    def _take_ready(self) -> bytes:
        """Everything readable at the head without waiting, up to MAX_WRITE_BYTES."""
        out: list[bytes] = []
        size = 0
        direct = 0
        while self._parts and size < MAX_WRITE_BYTES:
            head = self._parts[0]
            if head.child is not None:
                break
            if head.deferred is not None:
                make, head.deferred = head.deferred, None
                data = make()
                if data:
                    head.chunks.append(data)
                    head.nbytes += len(data)
            while head.chunks and size < MAX_WRITE_BYTES:
                chunk = head.chunks.popleft()
                head.nbytes -= len(chunk)
                size += len(chunk)
                out.append(chunk)
                if head.task is None:
                    direct += len(chunk)
            if head.space is not None and head.nbytes <= self.max_buffer_bytes:
                head.space.set()
            if head.chunks or not head.is_closed or head.error is not None:
                break  # an error goes to the consumer after the bytes before it
            self._parts.popleft()
        if direct:
            self._pending_direct_bytes -= direct
            if self._pending_direct_bytes <= self.max_buffer_bytes:
                self._drained.set()
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    async def _wait_changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    # internals

    def _check_open(self) -> None:
        if self.is_ended:
            raise SequencerClosed("the sequencer was ended; nothing more can be pushed")

    def _append(self, part: _Part) -> None:
        self._parts.append(part)
        self._changed.set()

    async def _produce(
        self, part: _Part, source: AsyncIterable[bytes], on_error: OnError | None
    ) -> None:
        """Copy ``source`` into ``part``; never raises but CancelledError."""
        assert part.space is not None
        try:
            async for chunk in source:
                if not chunk:
                    continue
                part.chunks.append(chunk)
                part.nbytes += len(chunk)
                self._changed.set()
                while part.nbytes > self.max_buffer_bytes and not self.is_closed:
                    part.space.clear()  # PAUSE_READING until the consumer takes some
                    await part.space.wait()
        except Exception as exc:
            if on_error is None:
                part.error = exc
            else:
                try:
                    replacement = on_error(exc)
                except Exception as handler_exc:
                    part.error = handler_exc
                else:
                    if replacement:
                        part.chunks.append(replacement)
                        part.nbytes += len(replacement)
        finally:
            part.is_closed = True
            self._changed.set()
