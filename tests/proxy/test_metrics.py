"""``/_weaver/metrics`` (proxy/metrics.py): what a Prometheus scrape reads.

Counters are process-wide, so each test reads a value before and after what it does and
asserts the difference; the scrape is parsed with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import html, weaver_stack
from weaver.cache.store import StoreUsage
from weaver.config.schema import IncludeMode
from weaver.proxy.metrics import observe_fragment, observe_request, observe_shell, render
from weaver.proxy.weave_events import FragmentRecord, Outcome
from weaver.session import stats
from weaver.session.stats import SessionEvent


def _fragment_counts(*outcomes: str) -> dict[tuple[str, str], float]:
    """Each outcome's fragment count and timed count, now (counters are process-wide)."""
    names = ("weaver_fragments_total", "weaver_fragment_seconds_count")
    return {(n, o): _value(n, outcome=o) for n in names for o in outcomes}


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_requests_are_counted_by_route_cache_status_and_status_class() -> None:
    labels = {"route": "/metrics-test", "cache": "MISS"}
    before_2xx = _value("weaver_requests_total", status="2xx", **labels)
    before_5xx = _value("weaver_requests_total", status="5xx", **labels)
    for status in (200, 204, 299, 502):
        observe_request("/metrics-test", "MISS", status)
    assert _value("weaver_requests_total", status="2xx", **labels) == before_2xx + 3
    assert _value("weaver_requests_total", status="5xx", **labels) == before_5xx + 1


def test_each_ended_include_is_counted_by_outcome_and_timed_and_a_page_by_its_shell() -> None:
    def record(outcome: Outcome, duration_s: float | None = 0.02) -> FragmentRecord:
        return FragmentRecord("/f", IncludeMode.BLOCKING, 0.0, duration_s, outcome)

    ended = [
        record(Outcome.OK),
        record(Outcome.OK),
        record(Outcome.TIMEOUT, 0.3),
        record(Outcome.REFUSED, None),  # never fetched: counted, not timed
    ]
    before = _fragment_counts("ok", "timeout", "refused")
    pages = _value("weaver_origin_seconds_count")
    for fragment in ended:
        observe_fragment(fragment)
    observe_shell(0.001)
    after = _fragment_counts(*{o for _, o in before})
    assert {key: after[key] - before[key] for key in before} == {
        ("weaver_fragments_total", "ok"): 2,
        ("weaver_fragments_total", "timeout"): 1,
        ("weaver_fragments_total", "refused"): 1,
        ("weaver_fragment_seconds_count", "ok"): 2,
        ("weaver_fragment_seconds_count", "timeout"): 1,
        ("weaver_fragment_seconds_count", "refused"): 0,
    }
    assert _value("weaver_origin_seconds_count") == pages + 1


def test_session_events_move_the_session_gauges_and_counters() -> None:
    names: tuple[tuple[str, dict[str, str]], ...] = (
        ("weaver_session_sockets_open", {}),
        ("weaver_session_messages_total", {"direction": "in"}),
        ("weaver_session_messages_total", {"direction": "out"}),
        ("weaver_session_outbox_overflows_total", {}),
        ("weaver_session_closes_1013_total", {}),
    )
    before = [_value(name, **labels) for name, labels in names]
    for event in (
        SessionEvent.SOCKET_OPENED,
        SessionEvent.SOCKET_OPENED,
        SessionEvent.SOCKET_CLOSED,
        SessionEvent.MESSAGE_IN,
        SessionEvent.MESSAGE_OUT,
        SessionEvent.MESSAGE_OUT,
        SessionEvent.OUTBOX_OVERFLOW,
        SessionEvent.CLOSE_1013,
    ):
        stats.count(event)
    after = [_value(name, **labels) for name, labels in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 2, 1, 1]
    stats.count(SessionEvent.SOCKET_CLOSED)  # leave the gauge as it was


def test_a_render_ends_with_the_cache_s_figures() -> None:
    usage = StoreUsage(
        disk_bytes=4096, disk_items=3, memory_bytes=100, memory_entries=2, memory_evictions=1
    )
    text = render(usage).decode()
    scraped = _scraped(text)
    assert {name: value for (name, _), value in scraped.items() if "cache" in name} == {
        "weaver_cache_disk_bytes": 4096,
        "weaver_cache_disk_items": 3,
        "weaver_cache_memory_bytes": 100,
        "weaver_cache_memory_entries": 2,
        "weaver_cache_memory_evictions": 1,
    }
    assert "weaver_requests_total" in text or "weaver_requests_created" in text
    assert "weaver_cache" not in render(None).decode()  # no store: no cache figures


async def test_a_scrape_is_prometheus_text_never_stored_with_the_node_s_cache_figures() -> None:
    async def page(request: web.Request) -> web.Response:
        return html("hello", **{"Cache-Control": "max-age=60"})

    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page}) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/") as resp:
            await resp.read()
        async with client.get(stack.url + "/_weaver/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            assert resp.headers["Cache-Control"] == "no-store"
            scraped = _scraped(await resp.text())
    assert scraped[("weaver_cache_disk_items", ())] > 0  # the page just stored
    route = (("cache", "MISS"), ("route", "/"), ("status", "2xx"))
    assert scraped[("weaver_requests_total", route)] >= 1


async def test_a_woven_page_s_includes_are_counted_by_the_time_its_body_is_whole() -> None:
    async def page(request: web.Request) -> web.Response:
        shell = '<esi:include src="/ok"/><esi:include src="/gone"/><esi:include src="/ok"/>'
        return html(shell, **{"Cache-Control": "no-store"})

    async def ok(request: web.Request) -> web.Response:
        return html("fine")

    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPGone()

    before = _fragment_counts("ok", "error")
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": page, "/ok": ok, "/gone": gone}) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/") as resp:
            assert (await resp.text()).startswith("fine")
            # the followers end the body after the fill's last include ended: counted
            after = _fragment_counts(*{o for _, o in before})
    assert {key: after[key] - before[key] for key in before} == {
        ("weaver_fragments_total", "ok"): 2,
        ("weaver_fragments_total", "error"): 1,
        ("weaver_fragment_seconds_count", "ok"): 2,
        ("weaver_fragment_seconds_count", "error"): 1,
    }
