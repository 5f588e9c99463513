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
from dataclasses import dataclass

from multidict import CIMultiDict

from weaver.cache import freshness as fresh
from weaver.cache import manifest as manifests
from weaver.cache.fills import Fill, Head
from weaver.cache.manifest import Manifest
from weaver.cache.policy import Answer, Part, Policy, Rules, entry_policy
from weaver.cache.store import BlobWriter
from weaver.config.schema import OriginConfig, RouteConfig
from weaver.proxy import access_log, metrics
from weaver.proxy.conductor import FragmentRecord, Outcome, PrimaryHead, Weave, variant_of
from weaver.proxy.edge import Edge
from weaver.proxy.forwarding import strip_hop_by_hop
from weaver.proxy.origin import OriginResponse
from weaver.proxy.scanner import format_drops

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


def variant_key(key: str, variant: str) -> str:
    """Where one variant of ``key`` is stored (RFC 9111 §4.1's secondary key)."""
    return f"{key}|variant={variant}"


async def fill_page(fill: Fill, edge: Edge, plan: FillPlan) -> None:
    """Fetch ``plan.url`` into ``fill``; weave it when it is HTML; store it when allowed."""
    request_time = edge.clock.time()
    started = time.perf_counter()
    headers = CIMultiDict(plan.headers)
    if plan.host_header is not None:
        headers["Host"] = plan.host_header
    if plan.stale is not None and not plan.stale.fragments:
        headers.update(fresh.conditional_headers(dict(plan.stale.headers)))
    async with edge.client.request(plan.method, plan.url, headers=headers) as resp:
        response_time = edge.clock.time()
        if resp.status == 304 and plan.stale is not None:
            await _revalidated(fill, edge, plan, resp, request_time, response_time)
            return
        reason = _unstorable(plan, resp, request_time, response_time)
        writer = await edge.store.begin(plan.key) if reason is None and edge.store else None
        try:
            if resp.is_html:
                weave = await _weave(fill, edge, plan, resp, writer, started, reason)
            else:
                weave = None
                head_headers = strip_hop_by_hop(resp.headers)
                fill.set_head(_head(plan, resp.status, head_headers, reason))
                async for chunk in resp.chunks():
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


def _unstorable(
    plan: FillPlan, resp: OriginResponse, request_time: float, response_time: float
) -> str | None:
    policy = _policy(plan, resp, request_time, response_time, None)
    return None if policy.refusal is None else str(policy.refusal)


def _policy(
    plan: FillPlan,
    resp: OriginResponse,
    request_time: float,
    response_time: float,
    weave: Weave | None,
) -> Policy:
    parts = [] if weave is None else [_part(r) for r in weave.fragments]
    return entry_policy(
        Answer(resp.status, resp.headers, request_time, response_time),
        [p for p in parts if p is not None],
        rules=Rules.page(plan.route),
        request_headers=plan.headers,
        key=plan.key,
        has_fallback=weave is not None and weave.has_fallback,
    )


def _part(record: FragmentRecord) -> Part | None:
    """A blocking fragment for the cache's policy; None for a suspense include."""
    if record.outcome is Outcome.SUSPENSE:
        return None
    return Part(
        record.src,
        str(record.outcome),
        is_answered=record.outcome in (Outcome.OK, Outcome.ALT),
        status=record.status,
        headers=record.headers,
        ttl_left_s=record.ttl_left_s,
    )


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
) -> Weave:
    shell_s = time.perf_counter() - started
    async with asyncio.TaskGroup() as tasks:
        weave = Weave(
            store=edge.store,
            client=edge.client,
            config=edge.config,
            route=plan.route,
            origin=plan.origin,
            fragment_headers=plan.fragment_headers,
            host_header=plan.host_header,
            tasks=tasks,
            clock=edge.clock,
        )
        try:
            await _weave_into(fill, weave, plan, resp, writer, shell_s, reason)
        finally:
            weave.close()
    fill.slots = [(s.slot, s.plan.url, s.plan.timeout_s) for s in weave.suspense]
    if weave.dropped:  # once per page, fragments included
        log.warning("%s: ESI markup removed: %s", plan.url, format_drops(weave.dropped))
    metrics.observe_weave(shell_s, weave.fragments)
    access_log.woven(
        edge.config,
        plan.url,
        fill.head.result().status,
        server_timing(shell_s, weave.fragments, max_bytes=None),
    )
    return weave


async def _weave_into(
    fill: Fill,
    weave: Weave,
    plan: FillPlan,
    resp: OriginResponse,
    writer: BlobWriter | None,
    shell_s: float,
    reason: str | None,
) -> None:
    """Conduct the shell onto a sequencer; feed its output to the fill and the writer."""
    seq = weave.sequencer()
    scanned = asyncio.Event()  # the shell's first chunk is scanned: the head may go
    weave.on_first_chunk = scanned.set
    weave.tasks.create_task(weave.conduct_page(resp.chunks(), seq, base_url=resp.url))
    await scanned.wait()
    status = resp.status
    headers = strip_hop_by_hop(resp.headers)
    for name in _SHELL_HEADERS_DROPPED:
        headers.popall(name, None)
    if weave.primary is not None:
        head: PrimaryHead = await weave.primary
        status = head.status
        if head.location is not None:
            headers["Location"] = head.location
    headers.popall("Link", None)
    for link in merged_links(resp, weave.fragments):
        headers.add("Link", link)
    headers["Server-Timing"] = server_timing(shell_s, weave.fragments)
    fill.slots = [(s.slot, s.plan.url, s.plan.timeout_s) for s in weave.suspense]
    fill.channels = weave.channels
    fill.set_head(_head(plan, status, headers, reason))
    first = seq.take_ready()
    if first:
        if writer is not None:
            await writer.write(first)
        await fill.feed(first)
    # Fragment fetches start once a client has the head and first bytes (or after a
    # grace period): starting twenty fetches must not delay the first byte.
    fill.on_started(weave.start_fragments)
    async for chunk in seq:
        if writer is not None:
            await writer.write(chunk)
        await fill.feed(chunk)


async def _commit(
    fill: Fill,
    edge: Edge,
    writer: BlobWriter,
    plan: FillPlan,
    resp: OriginResponse,
    weave: Weave | None,
    request_time: float,
    response_time: float,
) -> None:
    """Commit the written body if the whole page may be stored; abort it otherwise."""
    policy = _policy(plan, resp, request_time, response_time, weave)
    if policy.refusal is not None:
        log.info("%s not stored: %s", plan.url, policy.refusal)
        writer.abort()
        return
    head = fill.head.result()
    stored_headers = fresh.filter_stored_headers(head.headers.items())
    manifest = manifests.new_manifest(
        plan.key,
        head.status,
        tuple(stored_headers),
        policy.freshness,
        etag=resp.headers.get("ETag"),
        last_modified=resp.headers.get("Last-Modified"),
        tags=policy.tags,
        slots=tuple(fill.slots),
        channels=tuple(fill.channels),
        fragments=policy.fragments,
        variant=head.variant,
    )
    stored = await writer.commit(manifest)
    if stored is not None and stored.variant and edge.store is not None:
        await edge.store.alias(
            manifests.replace(stored, key=variant_key(stored.key, stored.variant))
        )


async def _revalidated(
    fill: Fill,
    edge: Edge,
    plan: FillPlan,
    resp: OriginResponse,
    request_time: float,
    response_time: float,
) -> None:
    """RFC 9111 §4.3.4: the origin said 304; refresh the stored headers and replay."""
    stale = plan.stale
    assert stale is not None and edge.store is not None
    merged = fresh.merge_304(list(stale.headers), resp.headers)
    freshness = fresh.freshness_from_response(
        request_time=request_time,
        response_time=response_time,
        response_headers=CIMultiDict(merged),
        route_ttl_s=plan.route.ttl_s,
    )
    manifest = manifests.replace(
        stale,
        headers=tuple(fresh.filter_stored_headers(merged)),
        freshness=freshness,
        is_soft_purged=False,
    )
    await edge.store.update_manifest(plan.key, manifest)
    entry = await edge.store.get(plan.key)
    if entry is None:
        raise RuntimeError(f"{plan.key} vanished while it was revalidated")
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
    shell_s: float, fragments: list[FragmentRecord], *, max_bytes: int | None = MAX_TIMING_BYTES
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


def merged_links(shell: OriginResponse, fragments: list[FragmentRecord]) -> list[str]:
    """``Link`` headers of the shell and of the blocking fragments answered so far."""
    links: list[str] = []
    sources = [shell.headers.getall("Link", [])]
    sources += [r.headers.getall("Link", []) for r in fragments if r.headers is not None]
    for values in sources:
        for value in values:
            if value not in links:
                links.append(value)
    return links
