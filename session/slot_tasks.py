"""Suspense slots' tasks: a fetch or a stream producer per slot, owned by its session.

A whole-slot fetch ends in one ``slot`` (or ``slot-error`` ``timeout|error``); a stream
(session/slots.py) sends ``slot-append``/``slot-progress`` as it goes and ends in
``slot-done`` or ``slot-error``. The session owns the tasks (a socket may open later);
dropping the session cancels them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from weaver.session.live import Session
from weaver.session.messages import Slot, SlotAppend, SlotDone, SlotError, SlotProgress
from weaver.session.slots import (
    Append,
    Progress,
    SlotEnd,
    SlotEvent,
    SlotProducer,
    SlotStream,
    StreamState,
)

log = logging.getLogger(__name__)

SuspenseFetch = Callable[[], Awaitable[str]]
Spawn = Callable[[Coroutine[Any, Any, None], set[asyncio.Task[None]]], asyncio.Task[None]]


def run_suspense(
    spawn: Spawn, session: Session, fetches: Sequence[tuple[str, SuspenseFetch]]
) -> list[asyncio.Task[None]]:
    """Start the fetches now, owned by the session; results go on in completion order."""
    return [spawn(_suspense(session, slot, fetch), session.tasks) for slot, fetch in fetches]


def run_slot_streams(
    spawn: Spawn, session: Session, producers: Sequence[tuple[str, SlotProducer]]
) -> list[asyncio.Task[None]]:
    """Start slot producers now, owned by the session; a ``cancel`` stops one."""
    tasks = []
    for slot, producer in producers:
        stream = session.streams.new(slot)
        stream.task = spawn(run_slot(session, stream, producer), session.tasks)
        tasks.append(stream.task)
    return tasks


async def _suspense(session: Session, slot: str, fetch: SuspenseFetch) -> None:
    try:
        html = await fetch()
    except TimeoutError:
        session.set_slot(SlotError(slot, SlotEnd.TIMEOUT.value))
    except Exception as exc:
        log.info("suspense %s for session %s failed: %s", slot, session.id, exc)
        session.set_slot(SlotError(slot, SlotEnd.ERROR.value))
    else:
        session.set_slot(Slot(slot, html))


async def run_slot(session: Session, stream: SlotStream, producer: SlotProducer) -> None:
    """Run ``producer`` for ``stream`` and end the slot with ``slot-done`` or
    ``slot-error``. Re-raises CancelledError after saying ``cancelled`` when the client
    asked for it (a dropped session's streams end silently)."""
    slot = stream.slot

    def emit(event: SlotEvent) -> None:
        if stream.state is not StreamState.STREAMING:
            return
        if isinstance(event, Append):
            if event.html:
                stream.parts.append(event.html)
                session.emit(SlotAppend(slot, event.html))
        elif isinstance(event, Progress):
            session.emit(SlotProgress(slot, event.stage, event.percent, event.message))
        elif not stream.parts:  # Replace: a fragment that does not stream
            stream.transition(StreamState.WHOLE)
            session.set_slot(Slot(slot, event.html))
        else:  # content already streamed: the rest goes on as an append
            emit(Append(event.html))

    try:
        await producer(emit)
    except TimeoutError:
        _fail(session, stream, SlotEnd.TIMEOUT)
    except asyncio.CancelledError:
        if stream.is_cancel_requested:
            _fail(session, stream, SlotEnd.CANCELLED)
        raise
    except Exception as exc:
        log.info("slot %s for session %s failed: %s", slot, session.id, exc)
        _fail(session, stream, SlotEnd.ERROR)
    else:
        if stream.state is StreamState.STREAMING:
            stream.transition(StreamState.DONE)
            session.emit(SlotDone(slot))


def _fail(session: Session, stream: SlotStream, reason: SlotEnd) -> None:
    if stream.state is not StreamState.STREAMING:
        return
    stream.transition(StreamState.FAILED)
    stream.reason = reason
    session.emit(SlotError(stream.slot, reason.value))
