"""What a fill needs of the request that started it, and the head a fill answers with."""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDict

from weaver.cache.fills import Head
from weaver.cache.manifest import Manifest
from weaver.config.schema import OriginConfig, RouteConfig
from weaver.proxy.entries import variant_of


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

    def head(self, status: int, headers: CIMultiDict[str], reason: str | None) -> Head:
        """The fill's head: shareable unless ``reason`` says why not, with its variant."""
        return Head(
            status,
            headers,
            is_shareable=reason is None,
            variant=variant_of(self.headers, headers.get("Vary")),
        )
