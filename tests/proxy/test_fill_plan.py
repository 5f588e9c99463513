"""A fill's plan (proxy/fill_plan.py): the head a fill answers with."""

from __future__ import annotations

from multidict import CIMultiDict

from weaver.config.load import build_config
from weaver.proxy.entries import variant_of
from weaver.proxy.fill_plan import FillPlan

CONFIG = build_config(
    {"origin": [{"name": "shop", "url": "http://o"}], "route": [{"path": "/", "origin": "shop"}]},
    "<test>",
)


def plan(headers: dict[str, str] | None = None) -> FillPlan:
    return FillPlan(
        key="k",
        method="GET",
        url="http://o/",
        headers=CIMultiDict(headers or {}),
        fragment_headers=CIMultiDict(),
        route=CONFIG.routes[0],
        origin=CONFIG.origins[0],
    )


def test_a_head_is_shareable_unless_a_reason_says_why_not() -> None:
    answered = CIMultiDict({"Content-Type": "text/html"})
    shared = plan().head(200, answered, None)
    assert (shared.status, shared.headers, shared.is_shareable, shared.variant) == (
        200,
        answered,
        True,
        "",
    )
    assert not plan().head(200, answered, "private").is_shareable


def test_a_head_carries_the_variant_of_the_headers_the_fill_sent() -> None:
    sent = plan({"Accept-Language": "fr"})
    vary = CIMultiDict({"Vary": "Accept-Language"})
    assert sent.head(200, vary, None).variant == variant_of(sent.headers, "Accept-Language")
    assert sent.head(200, vary, None).variant != plan().head(200, vary, None).variant
