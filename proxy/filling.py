"""Fill bodies: fetch (and weave) one page from its origin into a :class:`Fill` and the store.

The bytes go to the fill's followers and to the store's blob writer at once; the entry is
committed only after the last byte, when its hash is known, and only if the page may be
stored: the shell and every blocking fragment storable (RFC 9111 §3), no fragment fell
back. Its lifetime is the shortest of theirs; its tags the union of theirs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from multidict import CIMultiDict

from weaver.cache import freshness as fresh
from weaver.cache import manifest as manifests
from weaver.cache.keys import parse_vary
from weaver.cache.manifest import Manifest
from weaver.cache.store import BlobWriter
from weaver.config.schema import OriginConfig, RouteConfig
from weaver.proxy.conductor import FragmentRecord, PrimaryHead, Weave
from weaver.proxy.edge import Edge
from weaver.proxy.origin import OriginResponse, strip_hop_by_hop
from weaver.proxy.paint import Fill, Head

log = logging.getLogger(__name__)

# The response headers wait for the shell to be scanned to its end or this far, so that a
# primary fragment found in it can decide the status. Most shells are far smaller.
HEADER_HOLD_BYTES = 64 * 1024

# Headers of the shell that do not describe the woven body.
_SHELL_HEADERS_DROPPED = ("Content-Length", "Content-Encoding", "ETag", "Content-MD5")


@dataclass(frozen=True, slots=True)
class FillPlan:
    """What a fill needs of the request that started it (it may outlive that request).

    Args:
        key: the store key; "" when the response must not be stored or shared.
        variant: ``key`` extended with the values of the origin's Vary headers, so a
            stored entry is reused only for requests that agree on them.
        vary_headers: the visitor's headers the route varies on; all fragments get.
        stale: a stored entry this fill revalidates (conditional request) or replaces.
    """

    key: str
    method: str
    url: str
    headers: CIMultiDict[str]
    vary_headers: dict[str, str]
    route: RouteConfig
    origin: OriginConfig
    request_headers: dict[str, str]
    stale: Manifest | None = None


async def fill_page(fill: Fill, edge: Edge, plan: FillPlan) -> None:
    """Fetch ``plan.url`` into ``fill``; weave it when it is HTML; store it when allowed."""
    request_time = time.time()
    started = time.perf_counter()
    headers = CIMultiDict(plan.headers)
    if plan.stale is not None and not plan.stale.fragments:
        headers.update(fresh.conditional_headers(dict(plan.stale.headers)))
    async with edge.client.request(plan.method, plan.url, headers=headers) as resp:
        response_time = time.time()
        if resp.status == 304 and plan.stale is not None:
            await _revalidated(fill, edge, plan, resp, request_time, response_time)
            return
        reason = _unstorable(plan, resp)
        writer = await edge.store.begin(plan.key) if reason is None and edge.store else None
        try:
            if resp.is_html:
                weave = await _weave(fill, edge, plan, resp, writer, started, reason)
            else:
                weave = None
                head_headers = strip_hop_by_hop(resp.headers)
                fill.set_head(Head(resp.status, head_headers, is_shareable=reason is None))
                async for chunk in resp.chunks():
                    if writer is not None:
                        await writer.write(chunk)
                    await fill.feed(chunk)
            if writer is not None:
                await _commit(fill, writer, plan, resp, weave, request_time, response_time)
                writer = None
            elif reason is not None:
                log.debug("%s not stored: %s", plan.url, reason)
        finally:
            if writer is not None:
                writer.abort()


def _unstorable(plan: FillPlan, resp: OriginResponse) -> str | None:
    if not plan.key:
        return "not cacheable"
    reason = fresh.storable(
        method="GET",
        status=resp.status,
        request_headers=plan.request_headers,
        response_headers=resp.headers,
        route_allows_private=False,
        route_ttl_s=plan.route.ttl_s,
    )
    return reason


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
            visitor_headers=plan.vary_headers,
            tasks=tasks,
        )
        try:
            await _weave_into(fill, weave, plan, resp, writer, shell_s, reason)
        finally:
            weave.close()
    fill.slots = [(s.slot, s.plan.url, s.plan.timeout_s) for s in weave.suspense]
    log.info(
        "woven %s status=%d %s",
        plan.url,
        fill.head.result().status,
        server_timing(shell_s, weave.fragments),
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
    held = asyncio.Event()
    weave.tasks.create_task(
        weave.conduct_page(_hold_until_scanned(resp.chunks(), held), seq, base_url=resp.url)
    )
    await held.wait()
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
    fill.set_head(Head(status, headers, is_shareable=reason is None))
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
    writer: BlobWriter,
    plan: FillPlan,
    resp: OriginResponse,
    weave: Weave | None,
    request_time: float,
    response_time: float,
) -> None:
    """Commit the written body if the whole page may be stored; abort it otherwise."""
    freshness = fresh.freshness_from_response(
        request_time=request_time,
        response_time=response_time,
        response_headers=resp.headers,
        route_ttl_s=plan.route.ttl_s,
    )
    tags = list(plan.route.tags) + list(fresh.tags_from_headers(resp.headers))
    fragments: list[str] = []
    if weave is not None:
        if weave.has_fallback:
            log.info("%s not stored: assembled with a fallback", plan.url)
            writer.abort()
            return
        for record in weave.fragments:
            problem = _fragment_problem(record, plan)
            if problem is not None:
                log.info("%s not stored: fragment %s %s", plan.url, record.src, problem)
                writer.abort()
                return
            assert record.headers is not None or record.outcome == "suspense"
            if record.headers is None:
                continue
            if record.ttl_left_s is not None:  # what is left of the fragment's lifetime
                lifetime = freshness.initial_age_s + record.ttl_left_s
            else:
                lifetime = fresh.freshness_lifetime(record.headers, route_ttl_s=plan.route.ttl_s)
            freshness = dataclasses.replace(
                freshness, lifetime_s=min(freshness.lifetime_s, lifetime)
            )
            tags.extend(fresh.tags_from_headers(record.headers))
            fragments.append(record.src)
    head = fill.head.result()
    stored_headers = fresh.filter_stored_headers(head.headers.items())
    manifest = manifests.new_manifest(
        plan.key,
        head.status,
        tuple(stored_headers),
        freshness,
        etag=resp.headers.get("ETag"),
        last_modified=resp.headers.get("Last-Modified"),
        tags=tuple(dict.fromkeys(tags)),
        slots=tuple(fill.slots),
        channels=tuple(fill.channels),
        fragments=tuple(fragments),
        variant=variant_of(plan.headers, resp.headers.get("Vary")),
    )
    await writer.commit(manifest)


def variant_of(sent: Mapping[str, str], vary_header: str | None) -> str:
    """The values the origin's Vary names had in the request Weaver *sent* to the origin.

    Weaver forwards only the route's vary headers (and X-Forwarded-*), so the origin
    cannot have varied on anything else: a Vary naming a header that was not sent
    matches every request, one naming X-Forwarded-For matches that client only.
    """
    names = parse_vary(vary_header) or ()
    lowered = {name.lower(): value for name, value in sent.items()}
    return "|".join(f"{n}={lowered.get(n, '')}" for n in sorted(set(names)))


def _fragment_problem(record: FragmentRecord, plan: FillPlan) -> str | None:
    if record.outcome == "suspense":
        return None
    if record.outcome not in ("ok", "alt") or record.headers is None:
        return f"ended {record.outcome}"
    return fresh.storable(
        method="GET",
        status=record.status or 0,
        request_headers={},
        response_headers=record.headers,
        route_allows_private=False,
        route_ttl_s=plan.route.ttl_s,
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
        stored_at=freshness.stored_at,
        initial_age_s=freshness.initial_age_s,
        lifetime_s=freshness.lifetime_s,
        stale_while_revalidate_s=freshness.stale_while_revalidate_s,
        stale_if_error_s=freshness.stale_if_error_s,
        must_revalidate=freshness.must_revalidate,
        no_cache=freshness.no_cache,
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


def server_timing(shell_s: float, fragments: list[FragmentRecord]) -> str:
    """``Server-Timing``: the shell, then one entry per include (name, duration, outcome)."""
    entries = [f"shell;dur={shell_s * 1000:.1f}"]
    for index, record in enumerate(fragments):
        desc = f"{record.src} {record.outcome}".replace("\\", "\\\\").replace('"', '\\"')
        entry = f'f{index};desc="{desc}"'
        if record.duration_s is not None:
            entry += f";dur={record.duration_s * 1000:.1f}"
        entries.append(entry)
    return ", ".join(entries)


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


async def _hold_until_scanned(
    chunks: AsyncIterator[bytes], held: asyncio.Event
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through; set ``held`` once the shell ended or HEADER_HOLD_BYTES."""
    seen = 0
    try:
        async for chunk in chunks:
            seen += len(chunk)
            yield chunk
            if seen >= HEADER_HOLD_BYTES:
                held.set()
    finally:
        held.set()
