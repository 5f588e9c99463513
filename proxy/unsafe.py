"""Unsafe methods (POST, PUT, DELETE, ...): passed to the origin as the visitor sent them,
never stored; a success invalidates what they name (RFC 9111 §4.4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import HttpVersion11, web

from weaver.cache import freshness as fresh
from weaver.cache.keys import key_prefix, normalise_target
from weaver.proxy.edge import Edge
from weaver.proxy.forwarding import strip_hop_by_hop, visitor_headers
from weaver.proxy.visitor import Visit


async def unsafe(visit: Visit) -> web.StreamResponse:
    """Unsafe methods always go to the origin as the visitor sent them (a body keeps its
    Content-Length); a success invalidates what they name (RFC 9111 §4.4) as soon as its
    status is known, so a client that leaves at once does not keep stale entries."""
    request, edge = visit.request, visit.edge
    url = visit.origin.url + visit.target
    headers = visitor_headers(request.headers, visit.peer, for_fill=False)
    if visit.origin.preserve_host:
        headers["Host"] = request.host
    body = _body(request) if request.body_exists else None
    async with edge.client.request(request.method, url, headers=headers, body=body) as resp:
        targets = fresh.invalidation_targets(
            request.method, resp.status, str(request.url), resp.headers
        )
        if edge.store is not None and targets:
            await _invalidate(edge, visit.authority, targets)
        response_headers = strip_hop_by_hop(resp.headers)
        response_headers["X-Weaver-Cache"] = "BYPASS"
        response = web.StreamResponse(status=resp.status, headers=response_headers)
        if request.version < HttpVersion11:
            response.force_close()
        await response.prepare(request)
        async for chunk in resp.chunks():
            await response.write(chunk)
        await response.write_eof()
    return response


async def _invalidate(edge: Edge, host: str, targets: list[str]) -> None:
    """RFC 9111 §4.4: drop every stored variant of each target path."""
    assert edge.store is not None
    for target in targets:
        path = normalise_target(urlsplit(target).path or "/")
        prefix = key_prefix(host, path)
        for key in await edge.store.keys():
            rest = key[len(prefix) :]
            if key.startswith(prefix) and (not rest or rest[0] in "?|"):
                await edge.store.delete(key)


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(64 * 1024):
        yield chunk
