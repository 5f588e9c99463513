"""Fill bodies: fetch (and weave) one page from its origin into a :class:`Fill` and the store.

An HTML body is woven on the way (:mod:`weaver.proxy.weaving`). The bytes go to the
fill's followers and to the store's blob writer at once; the entry is committed only after
the last byte, when its hash is known, and only if the page may be stored: the shell and
every blocking fragment storable (RFC 9111 §3), no fragment fell back. Its lifetime is the
shortest of theirs; its tags the union of theirs.
"""

from __future__ import annotations

import logging
import time

from multidict import CIMultiDict

from weaver.cache.fills import Fill, Head
from weaver.cache.policy import Answer, Refusal
from weaver.cache.store import BlobWriter
from weaver.proxy import entries
from weaver.proxy.edge import Edge
from weaver.proxy.entries import EntryFacts
from weaver.proxy.fill_plan import FillPlan
from weaver.proxy.forwarding import strip_hop_by_hop
from weaver.proxy.origin import OriginResponse
from weaver.proxy.weave_events import WeaveRecord
from weaver.proxy.weaving import weave_page

log = logging.getLogger(__name__)

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
                weave = await weave_page(fill, edge, plan, resp, writer, started, reason)
            else:
                weave = None
                head_headers = strip_hop_by_hop(resp.headers)
                fill.set_head(plan.head(resp.status, head_headers, reason))
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
