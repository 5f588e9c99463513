"""Fill bodies: fetch (and weave) one page from its origin into a :class:`Fill` and the store.

The bytes go to the fill's followers and to the store's blob writer at once; the entry is
committed only after the last byte, when its hash is known, and only if the page may be
stored: the shell and every blocking fragment storable (RFC 9111 §3), no fragment fell
back. Its lifetime is the shortest of theirs; its tags the union of theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from multidict import CIMultiDict

from weaver.cache.fills import Fill, Head
from weaver.cache.manifest import Manifest
from weaver.cache.policy import Answer, Refusal
from weaver.cache.store import BlobWriter
from weaver.config.schema import OriginConfig, RouteConfig
from weaver.proxy import access_log, entries, metrics
from weaver.proxy.conductor import Conductor, new_sequencer
from weaver.proxy.edge import Edge
from weaver.proxy.entries import EntryFacts, variant_of
from weaver.proxy.forwarding import strip_hop_by_hop
from weaver.proxy.origin import OriginResponse
from weaver.proxy.scanner import format_drops
from weaver.proxy.sequencer import Sequencer
from weaver.proxy.weave import Weave
from weaver.proxy.weave_events import FragmentRecord, SetHead, ShellChunk, ShellEnd, WeaveRecord

log = logging.getLogger(__name__)

# Server-Timing stays below this; the access log has every entry.
MAX_TIMING_BYTES = 2048


# Headers of the shell that do not describe the woven body.
_SHELL_HEADERS_DROPPED = ("Content-Length", "Content-Encoding", "ETag", "Content-MD5")


@dataclass(frozen=True, slots=True)
class FillPlan:
    """What a fill needs of the request that started it (it may outlive that request).

    Args:
        key: the store key; "" when the response must not be stored or shared.
        headers: the shell request as Weaver sends it: the page's canonical request on a
            shared route, the visitor's own otherwise (DESIGN.md, "Request headers").
        fragment_headers: what the blocking fragments are fetched with (no Host).
        host_header: the Host to send to the route's origin (``preserve_host``), if any.
        stale: a stored entry this fill revalidates (conditional request) or replaces.
    """

    key: str
    method: str
    url: str
    headers: CIMultiDict[str]
    fragment_headers: CIMultiDict[str]
    route: RouteConfig
    origin: OriginConfig
    host_header: str | None = None
    stale: Manifest | None = None


__all__ = ["FillPlan", "fill_page"]


async def fill_page(fill: Fill, edge: Edge, plan: FillPlan) -> None:
    """Fetch ``plan.url`` into ``fill``; weave it when it is HTML; store it when allowed."""
    request_time = edge.clock.time()
    started = time.perf_counter()
    headers = plan.headers  # sent as planned unless Host or conditionals are added
    if plan.host_header is not None or plan.stale is not None:
        headers = CIMultiDict(plan.headers)
        if plan.host_header is not None:
            headers["Host"] = plan.host_header
        if plan.stale is not None:
            headers.update(entries.conditional_headers(plan.stale))
    async with edge.client.request(plan.method, plan.url, headers=headers) as resp:
        response_time = edge.clock.time()
        if resp.status == 304 and plan.stale is not None:
            await _revalidated(fill, edge, plan, resp, request_time, response_time)
            return
        refusal = entries.shell_refusal(
            plan.route,
            Answer(resp.status, resp.headers, request_time, response_time),
            plan.headers,
            plan.key,
        )
        reason = None if refusal is None else str(refusal)
        writer = await entries.begin(edge.store, plan.key, refusal)
        try:
            if resp.is_html:
                weave = await _weave(fill, edge, plan, resp, writer, started, reason)
            else:
                weave = None
                head_headers = strip_hop_by_hop(resp.headers)
                fill.set_head(_head(plan, resp.status, head_headers, reason))
                while chunk := await resp.read():
                    if writer is not None:
                        await writer.write(chunk)
                    await fill.feed(chunk)
            if writer is not None:
                await _commit(fill, edge, writer, plan, resp, weave, request_time, response_time)
                writer = None
            elif reason is not None:
                log.debug("%s not stored: %s", plan.url, reason)
        finally:
            if writer is not None:
                writer.abort()


def _head(plan: FillPlan, status: int, headers: CIMultiDict[str], reason: str | None) -> Head:
    return Head(
        status,
        headers,
        is_shareable=reason is None,
        variant=variant_of(plan.headers, headers.get("Vary")),
    )


async def _weave(
    fill: Fill,
    edge: Edge,
    plan: FillPlan,
    resp: OriginResponse,
    writer: BlobWriter | None,
    started: float,
    reason: str | None,
) -> WeaveRecord | None:
    """Weave the shell into ``fill`` (and ``writer``); its record if there is a body to
    commit (the record is for the store's rules, so a page not stored never builds it)."""
    shell_s = time.perf_counter() - started
    weave = Weave(
        config=edge.config,
        route=plan.route,
        origin=plan.origin,
        base_url=resp.url,
        shell_links=tuple(resp.headers.getall("Link", [])),
    )
    async with asyncio.TaskGroup() as tasks:
        conductor = Conductor(
            weave=weave,
            store=edge.store,
            clock=edge.clock,
            client=edge.client,
            config=edge.config,
            route=plan.route,
            origin=plan.origin,
            fragment_headers=plan.fragment_headers,
            host_header=plan.host_header,
            tasks=tasks,
            root=new_sequencer(edge.config, tasks),
            on_fragment_end=metrics.observe_fragment,
        )
        try:
            await _weave_into(fill, conductor, plan, resp, writer, shell_s, reason)
            # The whole body went out: every part ended, every include was found.
            fill.slots = [(s.slot, s.plan.url, s.plan.timeout_s) for s in weave.suspense]
            fill.channels = list(weave.channels)
            if writer is None:
                # Nothing to commit: the followers end their responses now, the last
                # bytes with the end of the body; one turn of the loop lets them write it
                # before this page's record, metrics and log line are made.
                fill.finish()
                await asyncio.sleep(0)
            # The wrap-up does no work per include: each was counted as it ended (the
            # conductor's on_fragment_end) and the log line's timing is made only if written.
            if dropped := weave.dropped:  # once per page, fragments included
                log.warning("%s: ESI markup removed: %s", plan.url, format_drops(dict(dropped)))
            metrics.observe_shell(shell_s)
            access_log.woven(
                edge.config,
                plan.url,
                fill.head.result().status,
                lambda: server_timing(shell_s, weave.record().fragments, max_bytes=None),
            )
        finally:
            conductor.close()
    return weave.record() if writer is not None else None


async def _weave_into(
    fill: Fill,
    conductor: Conductor,
    plan: FillPlan,
    resp: OriginResponse,
    writer: BlobWriter | None,
    shell_s: float,
    reason: str | None,
) -> None:
    """Conduct the shell onto a sequencer; feed its output to the fill and the writer.

    This task conducts the shell itself while that leaves nothing for another task to
    finish: no include found yet and the head given after each chunk. A page without
    includes is so woven with no task, future or wake-up of its own. From the first chunk
    that finds an include (or leaves the head waiting for a primary) the conductor runs
    the rest of the body in its own task, as it always did, and this one consumes.
    """
    seq = conductor.root
    heads: list[SetHead] = []
    conductor.on_head = heads.append
    rest: AsyncIterator[bytes] | None = None  # what the conductor's own task conducts
    try:
        while chunk := await resp.read():
            await conductor.feed(ShellChunk(chunk))
            if conductor.weave.has_fragments or not heads:
                rest = resp.chunks()
                break
            if not fill.head.done():
                _set_head(fill, plan, resp, heads[0], shell_s, reason)
                await _put_ready(fill, writer, seq)
                fill.on_started(conductor.start_fragments)
            else:
                await _put_ready(fill, writer, seq)
        else:
            await conductor.feed(ShellEnd())
    except Exception as exc:  # the conductor pushes it in place (as it would have)
        rest = _Failing(exc)
    if rest is not None:
        head_may_go: asyncio.Future[SetHead] = asyncio.get_running_loop().create_future()
        if heads:
            head_may_go.set_result(heads[0])
        conductor.on_head = head_may_go.set_result
        conductor.tasks.create_task(conductor.conduct(rest))
        heads.append(await head_may_go)
    if not fill.head.done():
        _set_head(fill, plan, resp, heads[0], shell_s, reason)
        await _put(fill, writer, seq.take_ready())
        # Fragment fetches start once a client has the head and first bytes (or after a
        # grace period): starting twenty fetches must not delay the first byte.
        fill.on_started(conductor.start_fragments)
    if rest is None and not conductor.weave.has_fragments:
        await _put_ready(fill, writer, seq)  # ended, and nothing else to wait for
        return
    async for data in seq:
        await _put(fill, writer, data)


def _set_head(
    fill: Fill,
    plan: FillPlan,
    resp: OriginResponse,
    woven: SetHead,
    shell_s: float,
    reason: str | None,
) -> None:
    status = woven.status if woven.status is not None else resp.status
    headers = strip_hop_by_hop(resp.headers)
    for name in _SHELL_HEADERS_DROPPED:
        headers.popall(name, None)
    if woven.location is not None:
        headers["Location"] = woven.location
    headers.popall("Link", None)
    for link in woven.links:
        headers.add("Link", link)
    headers["Server-Timing"] = server_timing(shell_s, woven.record.fragments)
    record = woven.record
    fill.slots = [(s.slot, s.plan.url, s.plan.timeout_s) for s in record.suspense]
    fill.channels = list(record.channels)
    fill.set_head(_head(plan, status, headers, reason))


async def _put_ready(fill: Fill, writer: BlobWriter | None, seq: Sequencer) -> None:
    """Put what the sequencer has ready (it hands out at most 64 KiB at a time)."""
    while data := seq.take_ready():
        await _put(fill, writer, data)


async def _put(fill: Fill, writer: BlobWriter | None, data: bytes) -> None:
    if data:
        if writer is not None:
            await writer.write(data)
        await fill.feed(data)


class _Failing:
    """A body that breaks off with ``exc`` at once: the rest of one that did."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __aiter__(self) -> _Failing:
        return self

    async def __anext__(self) -> bytes:
        raise self.exc


async def _commit(
    fill: Fill,
    edge: Edge,
    writer: BlobWriter,
    plan: FillPlan,
    resp: OriginResponse,
    weave: WeaveRecord | None,
    request_time: float,
    response_time: float,
) -> None:
    """Commit the written body if the whole page may be stored; abort it otherwise."""
    head = fill.head.result()
    facts = entries.page_facts(
        EntryFacts(
            key=plan.key,
            status=head.status,
            headers=tuple(head.headers.items()),
            freshness=entries.response_freshness(
                plan.route, resp.headers, request_time, response_time
            ),
            etag=resp.headers.get("ETag"),
            last_modified=resp.headers.get("Last-Modified"),
            variant=head.variant,
            slots=tuple(fill.slots),
            channels=tuple(fill.channels),
        ),
        plan.route,
        weave,
        Answer(resp.status, resp.headers, request_time, response_time),
        plan.headers,
    )
    if isinstance(facts, Refusal):
        log.info("%s not stored: %s", plan.url, facts)
        writer.abort()
        return
    assert edge.store is not None
    await entries.commit(edge.store, writer, facts, alias_variant=True)


async def _revalidated(
    fill: Fill,
    edge: Edge,
    plan: FillPlan,
    resp: OriginResponse,
    request_time: float,
    response_time: float,
) -> None:
    """RFC 9111 §4.3.4: the origin said 304; refresh the stored headers and replay."""
    assert plan.stale is not None and edge.store is not None
    entry = await entries.refresh(
        edge.store, plan.key, plan.stale, plan.route, resp.headers, request_time, response_time
    )
    manifest = entry.manifest
    fill.set_head(
        Head(
            manifest.status,
            CIMultiDict(manifest.headers),
            is_shareable=True,
            cache_status="REVALIDATED",
        )
    )
    async for chunk in entry.body():
        await fill.feed(chunk)


def server_timing(
    shell_s: float, fragments: Sequence[FragmentRecord], *, max_bytes: int | None = MAX_TIMING_BYTES
) -> str:
    """``Server-Timing``: the shell, then one entry per include that has ended (name,
    duration, outcome); includes still running are left out (the log has them all).

    Values are sanitised (no control characters, quotes escaped, src cut to 100
    characters) and the header is bounded: past ``max_bytes`` one ``more`` entry says how
    many were left out, so a page of 2,000 includes cannot make a header clients refuse.
    """
    entries = [f"shell;dur={shell_s * 1000:.1f}"]
    size = len(entries[0])
    left_out = 0
    for index, record in enumerate(fragments):
        if not record.is_done:
            continue
        entry = f'f{index};desc="{_timing_text(record.src)} {record.outcome}"'
        if record.duration_s is not None:
            entry += f";dur={record.duration_s * 1000:.1f}"
        if max_bytes is not None and size + len(entry) + 40 > max_bytes:
            left_out += 1
            continue
        entries.append(entry)
        size += len(entry) + 2
    if left_out:
        entries.append(f'more;desc="{left_out} more in the log"')
    return ", ".join(entries)


def _timing_text(text: str) -> str:
    printable = "".join(c for c in text[:100] if c.isprintable() and c.isascii())
    return printable.replace("\\", "\\\\").replace('"', '\\"')
