"""Weaving a page's shell into its fill: alone while no include turns up, then through a
:class:`~weaver.proxy.conductor.Conductor` (the driver of the page's
:class:`~weaver.proxy.weave.Weave`); the woven head (Link merged, Server-Timing) and the
page's wrap-up (its metrics and ``woven`` log line).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from weaver.cache.fills import Fill
from weaver.cache.store import BlobWriter
from weaver.proxy import access_log, metrics
from weaver.proxy.conductor import BOOTSTRAP, Conductor, Raising, new_sequencer
from weaver.proxy.edge import Edge
from weaver.proxy.fill_plan import FillPlan
from weaver.proxy.forwarding import strip_hop_by_hop
from weaver.proxy.origin import OriginResponse
from weaver.proxy.scanner import format_drops
from weaver.proxy.weave import Weave
from weaver.proxy.weave_events import (
    Command,
    Emit,
    EmitBootstrap,
    EndPart,
    FragmentRecord,
    SetHead,
    ShellChunk,
    ShellEnd,
    WeaveRecord,
)
from weaver.proxy.weave_parts import WeaveError

log = logging.getLogger(__name__)

# Server-Timing stays below this; the access log has every entry.
MAX_TIMING_BYTES = 2048


# Headers of the shell that do not describe the woven body.
_SHELL_HEADERS_DROPPED = ("Content-Length", "Content-Encoding", "ETag", "Content-MD5")


__all__ = ["MAX_TIMING_BYTES", "server_timing", "weave_page"]


async def weave_page(
    fill: Fill,
    edge: Edge,
    plan: FillPlan,
    resp: OriginResponse,
    writer: BlobWriter | None,
    started: float,
    reason: str | None,
) -> WeaveRecord | None:
    """Weave the shell into ``fill`` (and ``writer``); its record if there is a body to
    commit (the record is for the store's rules, so a page not stored never builds it).

    This task weaves the shell itself while no include has turned up; only then are the
    driver's conductor, root sequencer and TaskGroup built (a page without includes
    never builds them).
    """
    shell_s = time.perf_counter() - started
    weave = Weave(
        config=edge.config,
        route=plan.route,
        origin=plan.origin,
        base_url=resp.url,
        shell_links=tuple(resp.headers.getall("Link", [])),
    )
    woven = _Woven(fill, plan, resp, writer, weave, shell_s, reason)
    handover = await woven.alone()
    if handover is None:
        await woven.wrap_up(edge)
    else:
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
                await woven.conducted(conductor, handover)
                await woven.wrap_up(edge)
            finally:
                conductor.close()
    return weave.record() if writer is not None else None


@dataclass(slots=True)
class _Handover:
    """What the conductor takes over: the weave's answer to the last event (not carried
    out yet) and the rest of the shell (None: it ended)."""

    commands: list[Command]
    rest: AsyncIterator[bytes] | None


@dataclass(slots=True)
class _Woven:
    """One page's weave fed to its fill: by this task alone, then (from the first
    include, or a head left waiting) through a conductor."""

    fill: Fill
    plan: FillPlan
    resp: OriginResponse
    writer: BlobWriter | None
    weave: Weave
    shell_s: float
    reason: str | None

    async def alone(self) -> _Handover | None:
        """Weave the shell in this task while that leaves nothing for another task to
        finish: no include found and the head given by each chunk. A page without
        includes is so woven with no task, future, sequencer or wake-up of its own.
        Returns what the conductor must take over, or None: the body is whole.
        """
        weave, loop = self.weave, asyncio.get_running_loop()
        try:
            while chunk := await self.resp.read():
                commands = weave.handle(ShellChunk(chunk), loop.time())
                if weave.has_fragments or not weave.is_head_sent:
                    return _Handover(commands, self.resp.chunks())
                await _put(self.fill, self.writer, self._carried_out(commands))
            commands = weave.handle(ShellEnd(), loop.time())
            if weave.has_fragments or not weave.is_head_sent:
                return _Handover(commands, None)
            await _put(self.fill, self.writer, self._carried_out(commands))
        except Exception as exc:  # the conductor pushes it in place (as it would have)
            return _Handover([], Raising(exc))
        return None

    def _carried_out(self, commands: list[Command]) -> bytes:
        """Carry out the orders of a weave that has no include: the bytes it emits (the
        head is set on the way)."""
        emitted: list[bytes] = []
        for command in commands:
            match command:
                case Emit(data=data):
                    emitted.append(data)
                case SetHead():
                    self._set_head(command)
                case EmitBootstrap():
                    if self.weave.needs_bootstrap:
                        emitted.append(BOOTSTRAP)
                case EndPart():
                    pass
                case _:  # every other order is about an include: the conductor's
                    raise WeaveError(f"{command!r} without an include")
        return emitted[0] if len(emitted) == 1 else b"".join(emitted)

    async def conducted(self, conductor: Conductor, handover: _Handover) -> None:
        """Carry out ``handover`` and conduct the rest of the shell in the conductor's own
        task; this one feeds the sequencer's output to the fill and the writer."""
        fill, seq = self.fill, conductor.root
        heads: list[SetHead] = []
        conductor.on_head = heads.append
        if fill.head.done():
            fill.on_started(conductor.start_fragments)
        rest = handover.rest
        try:
            await conductor.carry_out(handover.commands)
        except Exception as exc:  # as if the shell had broken off there
            rest = Raising(exc)
        if heads or fill.head.done():  # the head is known: nothing to wait for
            if rest is not None:
                conductor.tasks.create_task(conductor.conduct(rest))
        else:  # it goes once the weave says (e.g. the primary answered)
            head_may_go: asyncio.Future[SetHead] = asyncio.get_running_loop().create_future()
            conductor.on_head = head_may_go.set_result
            if rest is not None:
                conductor.tasks.create_task(conductor.conduct(rest))
            heads.append(await head_may_go)
        if not fill.head.done():
            self._set_head(heads[0])
            await _put(fill, self.writer, seq.take_ready())
            # Fragment fetches start once a client has the head and first bytes (or after
            # a grace period): starting twenty fetches must not delay the first byte.
            fill.on_started(conductor.start_fragments)
        async for data in seq:
            await _put(fill, self.writer, data)

    def _set_head(self, woven: SetHead) -> None:
        if not self.fill.head.done():
            _set_head(self.fill, self.plan, self.resp, woven, self.shell_s, self.reason)

    async def wrap_up(self, edge: Edge) -> None:
        """The whole body went out: every part ended, every include was found. No work
        per include here: each was counted as it ended (the conductor's
        ``on_fragment_end``) and the log line's timing is made only if it is written."""
        fill, weave, shell_s = self.fill, self.weave, self.shell_s
        fill.slots = [(s.slot, s.plan.url, s.plan.timeout_s) for s in weave.suspense]
        fill.channels = list(weave.channels)
        if self.writer is None:
            # Nothing to commit: the followers end their responses now, the last bytes
            # with the end of the body; one turn of the loop lets them write it before
            # this page's metrics and log line are made.
            fill.finish()
            await asyncio.sleep(0)
        if dropped := weave.dropped:  # once per page, fragments included
            log.warning("%s: ESI markup removed: %s", self.plan.url, format_drops(dict(dropped)))
        metrics.observe_shell(shell_s)
        access_log.woven(
            edge.config,
            self.plan.url,
            fill.head.result().status,
            lambda: server_timing(shell_s, weave.record().fragments, max_bytes=None),
        )


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
    fill.set_head(plan.head(status, headers, reason))


async def _put(fill: Fill, writer: BlobWriter | None, data: bytes) -> None:
    if data:
        if writer is not None:
            await writer.write(data)
        await fill.feed(data)


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
