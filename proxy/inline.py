"""Inline suspense delivery: a first view's slots follow the paint in the same response.

A route with ``suspense_delivery = "inline"`` answers a page's GET with the paint — the
stored bytes, identical for every visitor — and then, in the same HTTP response, each
slot's content as it completes, in completion order::

    …</html>                                        the paint, byte for byte
    <script>window.__weaverSwap||…</script>         once: the swap function
    <template data-weaver-for="SLOT">…</template><script>__weaverSwap("SLOT",0)</script>
    <template data-weaver-for="SLOT" data-weaver-append>…</template>
        <script>__weaverSwap("SLOT",1)</script>    a streaming slot's chunk (one line)
    <script>__weaverSwap("SLOT",2,{"stage":…,"percent":…,"message":…})</script>   progress
    <script>__weaverSwap("SLOT",3)</script>         a streaming slot is done
    <script>__weaverSwap("SLOT",4,"timeout")</script>   failed: the fallback stays

The document ends when the last slot has ended (done, failed or timed out). A streaming
slot sends one ``data-weaver-append`` template per chunk, in order (chunks still queued
when the client is ready for more go as one). A template holds the slot's HTML as *text*
(``&`` and ``<`` escaped): a chunk of a streaming slot may end inside a tag, and a
fragment's stray ``</template>`` or unclosed ``<textarea>`` must not break the rest of the
document; the swap sets ``innerHTML`` from the text, exactly as the session client does.
Parsers put content after ``</html>`` into the body (WHATWG HTML §13.2.6.4.23), so the
paint needs no change. Pages with a Content-Security-Policy must allow these inline
scripts (a nonce is not possible: the paint is shared).

The visitor's slot fetches are owned by the request (an :class:`InlineSlots` task group):
they are never started on the session, so nothing of them goes over the WebSocket, a
reconnect or ``reset`` does not re-send them, and a visitor who leaves cancels them. The
session still opens (for pushes, patches and events).

Backpressure: the fetches run while the paint streams and their events wait in a queue
bounded by ``MAX_PENDING_BYTES`` of HTML and ``MAX_PENDING_EVENTS`` events (policy
FAIL_SLOT: a slot whose event would go past either fails with ``error``; its fallback,
or what it streamed, stays). Once the paint has gone, the queue is drained as fast as
the visitor reads.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import orjson

from weaver.proxy.errors import FragmentError
from weaver.session.slots import Append, Progress, Replace, SlotEnd, SlotEvent, SlotProducer

log = logging.getLogger(__name__)

MAX_PENDING_BYTES = 16 * 1024 * 1024  # slot HTML queued while the paint is still going
MAX_PENDING_EVENTS = 65_536  # slot events queued (progress and tiny appends count too)
MAX_SLOTS = 4096  # inline slots of one response; each keeps a place for its end

# Kinds of swap (the second argument of __weaverSwap).
_WHOLE, _APPEND, _PROGRESS, _DONE, _ERROR = range(5)

# The swap function (proxy/inline_swap.js), sent once before the first template; its
# comments and indentation are dropped (no line of it starts inside a string).
SWAP_SCRIPT = (
    b"<script>"
    + "\n".join(
        line.strip()
        for line in (Path(__file__).parent / "inline_swap.js").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("//")
    ).encode()
    + b"</script>"
)


def _call(slot: str, kind: int, arg: bytes = b"") -> bytes:
    extra = b"," + arg if arg else b""
    return b'<script>__weaverSwap("%s",%d%s)</script>' % (slot.encode(), kind, extra)


def _json(value: object) -> bytes:
    """JSON safe inside a ``<script>``: no ``<`` (so no ``</script>``)."""
    return orjson.dumps(value).replace(b"<", b"\\u003c")


def template(slot: str, markup: str, *, is_append: bool) -> bytes:
    """A slot's HTML as a template and the call that swaps it in (pure)."""
    attrs = b" data-weaver-append" if is_append else b""
    text = html.escape(markup, quote=False).encode()
    kind = _APPEND if is_append else _WHOLE
    return (
        b'<template data-weaver-for="%s"%s>' % (slot.encode(), attrs)
        + text
        + b"</template>"
        + _call(slot, kind)
    )


def progress_call(slot: str, progress: Progress) -> bytes:
    value = {"stage": progress.stage, "percent": progress.percent, "message": progress.message}
    return _call(slot, _PROGRESS, _json(value))


def end_call(slot: str, reason: SlotEnd | None, *, was_whole: bool) -> bytes:
    """How a slot ended: nothing more for a whole slot, ``done``, or the failure."""
    if reason is not None:
        return _call(slot, _ERROR, _json(reason.value))
    return b"" if was_whole else _call(slot, _DONE)


@dataclass(frozen=True, slots=True)
class _End:
    reason: SlotEnd | None


_Item = tuple[str, SlotEvent | _End]
MakeProducer = Callable[[str, str, float], SlotProducer]


class InlineOverflow(FragmentError):
    """The slot's events would take the queue past MAX_PENDING_BYTES."""


class InlineSlots:
    """One response's inline slot fetches and what they produced, in completion order.

    An async context manager: its task group owns the fetches; leaving it (the response
    ended, or the client went away) cancels the ones still running and waits for them.
    """

    def __init__(self, make_producer: MakeProducer, *, max_pending_bytes: int = MAX_PENDING_BYTES):
        self._make = make_producer
        self._max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0
        # Bounded by bytes and by count: past max_pending_bytes of HTML or
        # MAX_PENDING_EVENTS events queued, the slot that would add more fails instead
        # (overflow policy FAIL_SLOT: slot-error "error", the fallback stays). MAX_SLOTS
        # places are kept for the slots' ends, so an end always fits.
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(MAX_PENDING_EVENTS + MAX_SLOTS)
        self._group = asyncio.TaskGroup()
        self._tasks: list[asyncio.Task[None]] = []
        self._started: set[str] = set()
        self._open = 0

    async def __aenter__(self) -> InlineSlots:
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await self._group.__aexit__(exc_type, exc, tb)

    @property
    def count(self) -> int:
        """How many slots were started."""
        return len(self._started)

    def start(self, slots: Sequence[tuple[str, str, float]]) -> None:
        """Start the fetches of ``slots`` (id, URL, timeout) not started yet."""
        for slot, url, timeout_s in slots:
            if slot in self._started:
                continue
            if len(self._started) >= MAX_SLOTS:
                log.warning("inline slot %s keeps its fallback: over %d slots", slot, MAX_SLOTS)
                continue
            self._started.add(slot)
            self._open += 1
            producer = self._make(slot, url, timeout_s)
            self._tasks.append(self._group.create_task(self._run(slot, producer)))

    async def _run(self, slot: str, producer: SlotProducer) -> None:
        def emit(event: SlotEvent) -> None:
            size = len(event.html) if isinstance(event, Append | Replace) else 0
            if self._pending_bytes + size > self._max_pending_bytes:
                raise InlineOverflow(slot, f"over {self._max_pending_bytes} bytes queued")
            if self._queue.qsize() >= MAX_PENDING_EVENTS:  # the rest is kept for ends
                raise InlineOverflow(slot, f"over {MAX_PENDING_EVENTS} events queued")
            self._pending_bytes += size
            self._queue.put_nowait((slot, event))

        reason: SlotEnd | None = None
        try:
            await producer(emit)
        except TimeoutError:
            reason = SlotEnd.TIMEOUT
        except Exception as exc:
            log.info("inline slot %s failed: %s", slot, exc)
            reason = SlotEnd.ERROR
        self._queue.put_nowait((slot, _End(reason)))

    async def tail(self) -> AsyncIterator[bytes]:
        """The markup after the paint: the swap function, then each slot's templates
        and calls as they come, until every started slot has ended. Events already
        queued go as one chunk (adjacent appends of one slot as one template)."""
        if not self._open:
            return
        yield SWAP_SCRIPT
        is_whole: set[str] = set()  # slots that came as one Replace
        is_streamed: set[str] = set()
        while self._open:
            items = [await self._queue.get()]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            out = bytearray()
            for slot, markup, event in _merged(items):
                if isinstance(event, _End):
                    self._open -= 1
                    out += end_call(slot, event.reason, was_whole=slot in is_whole)
                elif isinstance(event, Progress):
                    out += progress_call(slot, event)
                else:
                    self._pending_bytes -= len(markup)
                    is_append = isinstance(event, Append) or slot in is_streamed
                    (is_streamed if is_append else is_whole).add(slot)
                    out += template(slot, markup, is_append=is_append)
            yield bytes(out)


def _merged(items: list[_Item]) -> list[tuple[str, str, SlotEvent | _End]]:
    """``items`` with each run of appends to one slot joined: (slot, html, event)."""
    out: list[tuple[str, str, SlotEvent | _End]] = []
    for slot, event in items:
        markup = event.html if isinstance(event, Append | Replace) else ""
        if out and isinstance(event, Append):
            last_slot, last_markup, last = out[-1]
            if last_slot == slot and isinstance(last, Append):
                out[-1] = (slot, last_markup + markup, last)
                continue
        out.append((slot, markup, event))
    return out
