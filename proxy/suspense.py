"""A suspense fragment fetched for one visitor, delivered whole or as it streams.

A fragment streams when its include asks (the ``stream`` attribute or the route rule's
``stream = true``, carried in its slot id: :func:`weaver.proxy.slots.is_stream_slot`) or
when it answers ``text/event-stream``. A streaming fragment is woven by the same engine as
the paint: its body is scanned, its blocking includes are fetched in parallel the moment
their tags are seen (a :class:`Weave` with the visitor's headers) and spliced in document
order by a :class:`Sequencer`, nested to ``server.max_include_depth``; what the sequencer
lets out goes to the session as ``slot-append`` as soon as it is out.

An event-stream fragment (WHATWG HTML §9.2) sends ``data:`` events holding HTML to append,
``event: progress`` with ``{"stage", "percent", "message"}`` JSON, and ``event: done``.

Stream: origin → scanner → sequencer → ``emit`` (the session's log and outboxes).
Backpressure: the sequencer's part buffers pause the origin reads; the session side never
waits (outboxes merge or disconnect, session/slots.py). Termination: the body's end or
``event: done``; past ``MAX_STREAM_BYTES`` it fails. Cancellation: cancelling the caller
closes the origin connection (OriginClient.request) and every nested fetch (the TaskGroup).
Timeouts: a streaming fragment's ``timeout`` bounds the wait for its response head; each
later read is bounded by ``server.read_timeout``.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from multidict import CIMultiDict

from weaver.config.schema import Config, OriginConfig, RouteConfig
from weaver.proxy.conductor import Conductor, new_sequencer
from weaver.proxy.entries import request_url
from weaver.proxy.errors import FragmentError
from weaver.proxy.includes import IncludePlan
from weaver.proxy.origin import OriginClient, OriginResponse
from weaver.proxy.weave import Weave
from weaver.session.slots import Append, Emit, Progress, Replace

MAX_SUSPENSE_BYTES = 1024 * 1024  # one slot's whole HTML
MAX_STREAM_BYTES = 8 * 1024 * 1024  # one slot stream's HTML
MAX_SSE_LINE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str  # "message" when the stream named none
    data: str


class SseParser:
    """Incremental text/event-stream parser (pure; WHATWG HTML §9.2.6): any chunking
    gives the same events. ``id``, ``retry`` and comments are ignored."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Raises:
        FragmentError: a line longer than MAX_SSE_LINE_BYTES."""
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                if len(self._buffer) > MAX_SSE_LINE_BYTES:
                    raise FragmentError("event-stream", "a line is over 1 MiB")
                return events
            end, after = cut
            line = self._buffer[:end].decode("utf-8", "replace")
            self._buffer = self._buffer[after:]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line ends and the next begins (CRLF, LF or CR), or None. A CR
    last in the buffer waits for the next byte: it may be half of a CRLF."""
    for index, byte in enumerate(buffer):
        if byte == 0x0A:
            return index, index + 1
        if byte == 0x0D:
            if index + 1 == len(buffer):
                return None
            return index, index + (2 if buffer[index + 1] == 0x0A else 1)
    return None


def progress_of(data: str) -> Progress:
    """An ``event: progress`` payload; what is missing or malformed is left empty."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Progress(message=data)
    if not isinstance(value, dict):
        return Progress()
    percent = value.get("percent")
    if isinstance(percent, int | float) and not isinstance(percent, bool):
        percent = float(min(100.0, max(0.0, percent)))
    else:
        percent = None
    stage, message = value.get("stage"), value.get("message")
    return Progress(
        stage=stage if isinstance(stage, str) else "",
        percent=percent,
        message=message if isinstance(message, str) else "",
    )


@dataclass(frozen=True, slots=True)
class SlotFetch:
    """Everything one visitor's slot fetch needs (its headers are the visitor's own)."""

    client: OriginClient
    config: Config
    route: RouteConfig
    origin: OriginConfig
    plan: IncludePlan
    headers: CIMultiDict[str]


async def fetch_slot(fetch: SlotFetch, emit: Emit) -> None:
    """Fetch one suspense slot and ``emit`` its content: one Replace, or Appends and
    Progress as it streams. Cancel-safe: cancelling closes every origin connection.

    Raises:
        TimeoutError: no response head within the fragment's timeout (or, for a fragment
            that does not stream, no whole body).
        FragmentError: an error status, or too large.
        OriginError: unreachable, or the body broke off.
    """
    plan = fetch.plan
    loop = asyncio.get_running_loop()
    deadline = loop.time() + plan.timeout_s
    url = request_url(plan.src, plan.url)
    async with fetch.client.request("GET", url, headers=fetch.headers, deadline=deadline) as resp:
        if not 200 <= resp.status < 300:
            raise FragmentError(plan.src, f"answered {resp.status}")
        is_sse = resp.content_type == "text/event-stream"
        if not (plan.is_stream or is_sse):
            emit(Replace(await _whole(resp, plan, deadline)))
            return
        body = _sse_html(resp, emit) if is_sse else resp.chunks()
        if is_sse or resp.is_html:
            await _woven(fetch, body, resp.url, emit)
        else:
            await _plain(body, emit)


async def _whole(resp: OriginResponse, plan: IncludePlan, deadline: float) -> str:
    body = bytearray()
    async for chunk in resp.chunks(deadline=deadline):
        body += chunk
        if len(body) > MAX_SUSPENSE_BYTES:
            raise FragmentError(plan.src, f"larger than {MAX_SUSPENSE_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


async def _sse_html(resp: OriginResponse, emit: Emit) -> AsyncIterator[bytes]:
    """The HTML of an event stream's data events; its progress events go to ``emit``."""
    parser = SseParser()
    async for chunk in resp.chunks():
        for event in parser.feed(chunk):
            if event.event == "progress":
                emit(progress_of(event.data))
            elif event.event == "done":
                return
            elif event.event == "message" and event.data:
                yield event.data.encode()


async def _woven(fetch: SlotFetch, body: AsyncIterator[bytes], url: str, emit: Emit) -> None:
    """Weave ``body`` with the page's core and driver (scan it, fetch its blocking
    includes in parallel, splice them in order) and emit what comes out as it comes out.
    Its includes nest under its own URL (``chain``) and it sets no response head."""
    weave = Weave(
        config=fetch.config,
        route=fetch.route,
        origin=fetch.origin,
        base_url=url,
        chain=(url,),
        is_page=False,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            conductor = Conductor(
                weave=weave,
                client=fetch.client,
                config=fetch.config,
                route=fetch.route,
                origin=fetch.origin,
                fragment_headers=fetch.headers,
                tasks=tasks,
                root=new_sequencer(fetch.config, tasks),
                is_started=True,  # no response head to wait for: fetch at once
            )
            tasks.create_task(_conduct(conductor, body))
            await _plain(aiter(conductor.root), emit)
    except BaseExceptionGroup as group:  # the first failure, as the caller knows it
        raise group.exceptions[0] from None


async def _conduct(conductor: Conductor, body: AsyncIterator[bytes]) -> None:
    try:
        await conductor.conduct(body)  # a break pushes its error in place, then ends
    finally:
        conductor.close()
        conductor.root.end()


async def _plain(body: AsyncIterator[bytes], emit: Emit) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    total = 0
    async for chunk in body:
        total += len(chunk)
        if total > MAX_STREAM_BYTES:
            raise FragmentError("slot stream", f"larger than {MAX_STREAM_BYTES} bytes")
        text = decoder.decode(chunk)
        if text:
            emit(Append(text))
    tail = decoder.decode(b"", final=True)
    if tail:
        emit(Append(tail))
