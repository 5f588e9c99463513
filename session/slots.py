"""Slot streams: suspense content delivered as it arrives, per visitor.

A slot's producer (the proxy weaves the fragment and calls ``emit``) yields events:
:class:`Append` (HTML to add), :class:`Progress` (stage, percent, message) or one
:class:`Replace` (a fragment that does not stream: the whole content, one ``slot``
message as before). Each becomes a numbered session message, in the order emitted:

- ``{"type":"slot-append","seq":n,"id":"SLOT","html":"…"}``
- ``{"type":"slot-progress","seq":n,"id":"SLOT","stage":"…","percent":p,"message":"…"}``
- ``{"type":"slot-done","seq":n,"id":"SLOT"}`` when the producer ends, or
  ``{"type":"slot-error","seq":n,"id":"SLOT","reason":"timeout|error|cancelled"}``.

Streams (DESIGN.md, streaming contract): producer → session log and outboxes, framed as
messages; termination is always ``slot-done`` or ``slot-error``. Cancellation: a client's
``cancel`` or the client leaving (its socket closed with 1000/1001) cancels the producer's
task, which closes its origin connection; a network loss does not (the client resumes).
Backpressure: an outbox that is queueing merges adjacent ``slot-append`` messages of one
slot (:func:`merge_append`), so a slow client gets fewer, larger chunks and no loss; the
log keeps every chunk; a ``reset`` re-sends each slot's HTML so far (:func:`reset_messages`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from weaver.session.messages import Slot, SlotDone, SlotError

SLOT_APPEND = b'{"type":"slot-append",'  # how encode() begins every slot-append


class SlotEnd(StrEnum):
    """Why a slot ended without its content: the ``reason`` of ``slot-error``."""

    TIMEOUT = "timeout"
    ERROR = "error"
    CANCELLED = "cancelled"


class StreamState(StrEnum):
    STREAMING = "streaming"
    WHOLE = "whole"  # delivered as one ``slot`` message (the session's slot state has it)
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Append:
    html: str


@dataclass(frozen=True, slots=True)
class Progress:
    stage: str = ""
    percent: float | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Replace:
    html: str


SlotEvent = Append | Progress | Replace
Emit = Callable[[SlotEvent], None]
SlotProducer = Callable[[Emit], Awaitable[None]]


@dataclass(slots=True)
class SlotStream:
    """One slot's stream on one session: what it sent so far, how it ended."""

    slot: str
    parts: list[str] = field(default_factory=list)
    state: StreamState = StreamState.STREAMING
    reason: SlotEnd | None = None
    task: asyncio.Task[None] | None = None
    is_cancel_requested: bool = False

    def transition(self, to: StreamState) -> None:
        """The one place a stream's state changes.

        Raises:
            RuntimeError: the stream already ended.
        """
        if self.state is not StreamState.STREAMING:
            raise RuntimeError(f"slot {self.slot} is {self.state}; cannot become {to}")
        self.state = to


class SlotStreams:
    """A session's slot streams, by slot id."""

    def __init__(self) -> None:
        self.streams: dict[str, SlotStream] = {}

    def __len__(self) -> int:
        return len(self.streams)

    def new(self, slot: str) -> SlotStream:
        stream = SlotStream(slot)
        self.streams[slot] = stream
        return stream

    def cancel(self, slot: str) -> bool:
        """Cancel ``slot``'s producer (it ends with ``slot-error`` ``cancelled``).
        Returns whether a stream was running."""
        stream = self.streams.get(slot)
        if stream is None or stream.task is None or stream.task.done():
            return False
        stream.is_cancel_requested = True
        stream.task.cancel()
        return True

    def cancel_all(self) -> int:
        """Cancel every running stream (the visitor left the page); how many were."""
        return sum(self.cancel(slot) for slot in list(self.streams))


def reset_messages(streams: SlotStreams) -> Iterator[Slot | SlotDone | SlotError]:
    """What a ``reset`` re-sends for the streams (whole slots are in the session's slot
    state): each slot's HTML so far as one ``slot`` message, then how it ended."""
    for stream in streams.streams.values():
        if stream.state is StreamState.WHOLE:
            continue
        if stream.parts:
            yield Slot(stream.slot, "".join(stream.parts))
        if stream.state is StreamState.DONE:
            yield SlotDone(stream.slot)
        elif stream.state is StreamState.FAILED and stream.reason is not None:
            yield SlotError(stream.slot, stream.reason.value)


def merge_append(older: bytes, newer: bytes, newer_seq: int) -> bytes | None:
    """``older`` and ``newer`` as one ``slot-append`` numbered ``newer_seq`` when both are
    ``slot-append`` messages of the same slot and ``older`` is under MAX_MERGED_BYTES,
    else None. The client sees the later seq (seqs only need to grow; the log holds the
    chunks between) and the same HTML. Costs a copy, never a JSON parse: a message is
    ``{"type":"slot-append","seq":n,"id":"SLOT","html":"…"}`` as :func:`encode` writes it,
    and two JSON string bodies joined are the JSON string of the joined text."""
    if len(older) >= MAX_MERGED_BYTES:
        return None
    if not (older.startswith(SLOT_APPEND) and newer.startswith(SLOT_APPEND)):
        return None
    old_at, new_at = older.find(_HTML), newer.find(_HTML)
    old_id, new_id = older.find(_ID), newer.find(_ID)
    if min(old_at, new_at, old_id, new_id) < 0 or older[old_id:old_at] != newer[new_id:new_at]:
        return None
    head = b'{"type":"slot-append","seq":%d' % newer_seq
    return head + newer[new_id:new_at] + older[old_at:-2] + newer[new_at + len(_HTML) : -2] + b'"}'


MAX_MERGED_BYTES = 64 * 1024
_ID = b',"id":"'
_HTML = b',"html":"'
