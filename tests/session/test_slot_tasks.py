"""Suspense slots' tasks (session/slot_tasks.py): a fetch or a stream producer per slot,
run by its session; how each ends (``slot``, ``slot-done``, ``slot-error`` with its
reason); cancelled by the client, by the visitor leaving, or silently when the session
is dropped. The producers are gated on events: no sleeps order anything."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import orjson

from weaver.config.schema import SessionConfig
from weaver.session.live import Session
from weaver.session.outbox import Outbox
from weaver.session.slot_tasks import run_slot_streams, run_suspense
from weaver.session.slots import Append, Emit, Progress, Replace, SlotEnd, StreamState


def spawn(coro: Coroutine[Any, Any, None], owner: set[asyncio.Task[None]]) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(coro)
    owner.add(task)
    task.add_done_callback(owner.discard)
    return task


def session_with_consumer() -> tuple[Session, list[dict[str, Any]]]:
    """A session and what its one consumer receives (decoded)."""
    session = Session(
        "sid", SessionConfig(secret="s"), log_max_messages=50, log_max_bytes=10**5, now=0
    )
    written: list[dict[str, Any]] = []

    def write(message: bytes) -> bool:
        written.append(orjson.loads(message))
        return True

    box = Outbox(max_messages=50, max_bytes=10**5)
    box.direct = write
    session.outboxes.add(box)
    return session, written


def without_seq(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "seq"} for m in messages]


async def end_session(session: Session) -> None:
    """What dropping the session does to its tasks: cancel them, and wait."""
    tasks = list(session.tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_suspense_results_go_out_in_completion_order() -> None:
    session, written = session_with_consumer()
    first_go, second_go = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        await first_go.wait()
        return "<p>slow</p>"

    async def fast() -> str:
        await second_go.wait()
        return "<p>fast</p>"

    async with asyncio.timeout(5):
        tasks = run_suspense(spawn, session, [("w_slow", slow), ("w_fast", fast)])
        assert set(tasks) == session.tasks  # owned by the session
        second_go.set()
        await tasks[1]
        first_go.set()
        await tasks[0]
    assert without_seq(written) == [
        {"type": "slot", "id": "w_fast", "html": "<p>fast</p>"},
        {"type": "slot", "id": "w_slow", "html": "<p>slow</p>"},
    ]
    assert [m["seq"] for m in written] == [1, 2]
    assert session.tasks == set()


async def test_a_failing_or_timed_out_suspense_fetch_becomes_its_slot_error() -> None:
    session, written = session_with_consumer()

    async def times_out() -> str:
        raise TimeoutError

    async def fails() -> str:
        raise ValueError("origin said no")

    async with asyncio.timeout(5):
        tasks = run_suspense(spawn, session, [("w_a", times_out), ("w_b", fails)])
        await asyncio.gather(*tasks)
    assert without_seq(written) == [
        {"type": "slot-error", "id": "w_a", "reason": "timeout"},
        {"type": "slot-error", "id": "w_b", "reason": "error"},
    ]
    assert set(session.slots) == {"w_a", "w_b"}  # a reset re-sends the error


async def test_a_stream_sends_appends_and_progress_in_order_then_done() -> None:
    session, written = session_with_consumer()

    async def producer(emit: Emit) -> None:
        emit(Progress("search", 10.0, "looking"))
        emit(Append("<li>1</li>"))
        emit(Append(""))  # nothing to add: no message
        emit(Append("<li>2</li>"))

    async with asyncio.timeout(5):
        (task,) = run_slot_streams(spawn, session, [("w_list", producer)])
        await task
    assert without_seq(written) == [
        {
            "type": "slot-progress",
            "id": "w_list",
            "stage": "search",
            "percent": 10.0,
            "message": "looking",
        },
        {"type": "slot-append", "id": "w_list", "html": "<li>1</li>"},
        {"type": "slot-append", "id": "w_list", "html": "<li>2</li>"},
        {"type": "slot-done", "id": "w_list"},
    ]
    stream = session.streams.streams["w_list"]
    assert (stream.state, stream.parts) == (StreamState.DONE, ["<li>1</li>", "<li>2</li>"])


async def test_a_replace_before_any_append_is_one_whole_slot_and_no_done() -> None:
    session, written = session_with_consumer()

    async def producer(emit: Emit) -> None:
        emit(Replace("<p>whole</p>"))
        emit(Append("<p>late</p>"))  # the slot was delivered whole: ignored

    async with asyncio.timeout(5):
        (task,) = run_slot_streams(spawn, session, [("w", producer)])
        await task
    assert without_seq(written) == [{"type": "slot", "id": "w", "html": "<p>whole</p>"}]
    assert session.streams.streams["w"].state is StreamState.WHOLE


async def test_a_replace_after_appends_goes_on_as_an_append() -> None:
    session, written = session_with_consumer()

    async def producer(emit: Emit) -> None:
        emit(Append("<p>a</p>"))
        emit(Replace("<p>b</p>"))

    async with asyncio.timeout(5):
        (task,) = run_slot_streams(spawn, session, [("w", producer)])
        await task
    assert [m["type"] for m in written] == ["slot-append", "slot-append", "slot-done"]
    assert written[1]["html"] == "<p>b</p>"


async def test_a_producer_error_or_timeout_ends_the_slot_with_its_reason() -> None:
    session, written = session_with_consumer()

    async def breaks(emit: Emit) -> None:
        emit(Append("<p>part</p>"))
        raise RuntimeError("origin reset the connection")

    async def times_out(emit: Emit) -> None:
        raise TimeoutError

    async with asyncio.timeout(5):
        tasks = run_slot_streams(spawn, session, [("w_a", breaks), ("w_b", times_out)])
        await asyncio.gather(*tasks)
    assert without_seq(written) == [
        {"type": "slot-append", "id": "w_a", "html": "<p>part</p>"},
        {"type": "slot-error", "id": "w_a", "reason": "error"},
        {"type": "slot-error", "id": "w_b", "reason": "timeout"},
    ]
    assert session.streams.streams["w_a"].reason is SlotEnd.ERROR
    assert session.streams.streams["w_b"].reason is SlotEnd.TIMEOUT


async def test_a_client_cancel_stops_the_producer_and_says_cancelled() -> None:
    session, written = session_with_consumer()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def endless(emit: Emit) -> None:
        emit(Append("<p>1</p>"))
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async with asyncio.timeout(5):
        (task,) = run_slot_streams(spawn, session, [("w", endless)])
        await started.wait()
        assert session.streams.cancel("w") is True
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and stopped.is_set()
    assert without_seq(written)[-1] == {"type": "slot-error", "id": "w", "reason": "cancelled"}
    assert session.streams.cancel("w") is False  # already ended


async def test_the_visitor_leaving_cancels_every_running_stream() -> None:
    session, written = session_with_consumer()
    started = asyncio.Event()

    async def endless(emit: Emit) -> None:
        started.set()
        await asyncio.Event().wait()

    async def quick(emit: Emit) -> None:
        emit(Append("x"))

    async with asyncio.timeout(5):
        tasks = run_slot_streams(
            spawn, session, [("w_a", endless), ("w_b", endless), ("w_c", quick)]
        )
        await tasks[2]
        await started.wait()
        assert session.streams.cancel_all() == 2  # w_c already ended
        await asyncio.gather(*tasks, return_exceptions=True)
    ends = {(m["id"], m["type"], m.get("reason")) for m in written if m["type"] != "slot-append"}
    assert ends == {
        ("w_a", "slot-error", "cancelled"),
        ("w_b", "slot-error", "cancelled"),
        ("w_c", "slot-done", None),
    }
    assert session.tasks == set()


async def test_a_dropped_sessions_streams_and_fetches_end_silently() -> None:
    session, written = session_with_consumer()
    started = asyncio.Event()

    async def endless_stream(emit: Emit) -> None:
        emit(Append("<p>1</p>"))
        await asyncio.Event().wait()

    async def endless_fetch() -> str:
        started.set()
        await asyncio.Event().wait()
        return ""

    async with asyncio.timeout(5):
        run_slot_streams(spawn, session, [("w_s", endless_stream)])
        run_suspense(spawn, session, [("w_f", endless_fetch)])
        await started.wait()
        await end_session(session)
    assert without_seq(written) == [{"type": "slot-append", "id": "w_s", "html": "<p>1</p>"}]
    assert session.tasks == set()
    assert session.streams.streams["w_s"].state is StreamState.STREAMING  # no end said
