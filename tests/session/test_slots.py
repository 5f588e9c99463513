"""Slot streams on the hub: merging for slow clients, reset, and the pure helpers."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from tests.session.harness import SseEvent, read_sse_event, running_hub
from weaver.session.messages import Slot, SlotAppend, SlotDone, encode
from weaver.session.slots import (
    MAX_MERGED_BYTES,
    Append,
    Emit,
    Progress,
    SlotStream,
    SlotStreams,
    StreamState,
    merge_append,
    reset_messages,
)


def test_adjacent_appends_of_one_slot_merge_into_valid_json_with_the_later_seq() -> None:
    older = encode(SlotAppend("ws1", 'a"<b>\n'), 3)
    newer = encode(SlotAppend("ws1", "é\\x"), 5)
    merged = merge_append(older, newer, 5)
    assert merged is not None
    assert orjson.loads(merged) == {
        "type": "slot-append",
        "seq": 5,
        "id": "ws1",
        "html": 'a"<b>\né\\x',
    }


def test_appends_of_other_slots_other_types_or_a_full_message_do_not_merge() -> None:
    older = encode(SlotAppend("ws1", "a"), 1)
    assert merge_append(older, encode(SlotAppend("ws2", "b"), 2), 2) is None
    assert merge_append(older, encode(SlotDone("ws1"), 2), 2) is None
    assert merge_append(encode(Slot("ws1", "a"), 1), older, 2) is None
    big = encode(SlotAppend("ws1", "x" * MAX_MERGED_BYTES), 1)
    assert merge_append(big, encode(SlotAppend("ws1", "b"), 2), 2) is None


def test_a_reset_resends_each_streams_html_so_far_and_how_it_ended() -> None:
    streams = SlotStreams()
    running, done = streams.new("ws1"), streams.new("ws2")
    running.parts += ["<p>a</p>", "<p>b</p>"]
    done.parts.append("<p>c</p>")
    done.transition(StreamState.DONE)
    streams.new("ws3")  # nothing yet: nothing to re-send
    assert list(reset_messages(streams)) == [
        Slot("ws1", "<p>a</p><p>b</p>"),
        Slot("ws2", "<p>c</p>"),
        SlotDone("ws2"),
    ]


def test_a_stream_that_ended_cannot_change_state_again() -> None:
    stream = SlotStream("ws1")
    stream.transition(StreamState.DONE)
    try:
        stream.transition(StreamState.FAILED)
    except RuntimeError as exc:
        assert "ws1 is done" in str(exc)
    else:
        raise AssertionError("an ended stream changed state")


CHUNKS = 2000
CHUNK = "<i>token</i> "


async def test_a_client_behind_a_burst_gets_merged_chunks_with_identical_final_html() -> None:
    """An SSE consumer has no direct write: a burst of appends queues in its outbox and
    is merged (a WebSocket consumer queues the same way once its socket buffer is full);
    with 2,000 chunks and room for 16 messages, nothing is dropped or disconnected."""
    async with (
        asyncio.timeout(30),
        running_hub(outbound_max_messages=16) as running,
        aiohttp.ClientSession() as http,
    ):
        session_id, cookie = running.page()

        async def producer(emit: Emit) -> None:
            emit(Progress(stage="start", percent=0.0))
            for _ in range(CHUNKS):  # faster than any client: no await in between
                emit(Append(CHUNK))

        url = running.http_url + "/_weaver/events"
        async with http.get(url, headers={"Cookie": cookie}) as resp:
            assert (await read_sse_event(resp.content)).data["type"] == "hello"
            running.hub.run_slot_streams(session_id, [("ws1", producer)])
            events: list[SseEvent] = []
            while not events or events[-1].data["type"] != "slot-done":
                events.append(await read_sse_event(resp.content))
    appends = [e.data for e in events if e.data["type"] == "slot-append"]
    assert "".join(m["html"] for m in appends) == CHUNK * CHUNKS
    assert len(appends) < CHUNKS / 10  # merged, not dropped, and not disconnected
    ids = [e.id for e in events]
    assert ids == [e.data["seq"] for e in events] and ids == sorted(set(i for i in ids if i))


async def test_a_resume_past_the_log_gets_a_reset_with_each_slots_html_so_far() -> None:
    async with (
        asyncio.timeout(30),
        running_hub(log_max_messages=32) as running,
        aiohttp.ClientSession() as http,
    ):
        session_id, cookie = running.page()
        done = asyncio.Event()

        async def producer(emit: Emit) -> None:
            for _ in range(100):
                emit(Append(CHUNK))
            done.set()
            await asyncio.Event().wait()  # still streaming when the client comes back

        tasks = running.hub.run_slot_streams(session_id, [("ws1", producer)])
        await done.wait()
        url = running.http_url + "/_weaver/events?last_seq=1"
        async with http.get(url, headers={"Cookie": cookie}) as resp:
            events = [await read_sse_event(resp.content) for _ in range(3)]
        tasks[0].cancel()
    assert [e.data["type"] for e in events] == ["hello", "reset", "slot"]
    assert events[2].data["html"] == CHUNK * 100
