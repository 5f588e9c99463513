"""``/metrics`` in the Prometheus text format, across every worker of a node.

With several workers the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` (a directory it
creates and removes) before starting them: prometheus-client then keeps each worker's
values in files there, and a scrape answered by any worker sums them all. The cache's
disk figures are read at scrape time (the disk is shared by the node's workers); its
memory-tier figures are the answering worker's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from weaver.cache.store import StoreUsage
from weaver.proxy.edge import EDGE_KEY
from weaver.proxy.weave_events import FragmentRecord, Outcome
from weaver.session import stats
from weaver.session.stats import SessionEvent

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "weaver_requests",
    "HTTP requests answered, by route (its path in the config), cache status and status class",
    ["route", "cache", "status"],
)
ORIGIN_SECONDS = Histogram(
    "weaver_origin_seconds",
    "Time from asking the origin for a page to its response head",
    buckets=_LATENCY_BUCKETS,
)
FRAGMENT_SECONDS = Histogram(
    "weaver_fragment_seconds",
    "Time a fragment took, by outcome",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
)
FRAGMENTS = Counter("weaver_fragments", "Includes ended, by outcome", ["outcome"])
SESSIONS_OPEN = Gauge(
    "weaver_session_sockets_open", "Session sockets open", multiprocess_mode="livesum"
)
SESSION_MESSAGES = Counter(
    "weaver_session_messages", "Session messages, in (from clients) and out", ["direction"]
)
OUTBOX_OVERFLOWS = Counter(
    "weaver_session_outbox_overflows", "Session consumers that fell behind their outbox bound"
)
CLOSES_1013 = Counter("weaver_session_closes_1013", "Session sockets closed with 1013")
BUS_CONNECTED = Gauge(
    "weaver_bus_connected", "1 while this worker's bus is connected", multiprocess_mode="livemin"
)


# Looked up once: a fan-out counts one message out per recipient, and labels() costs
# ~1.6 µs a call (a lock and a key built) against ~0.3 µs for inc() on the child.
_MESSAGES_IN = SESSION_MESSAGES.labels("in")
_MESSAGES_OUT = SESSION_MESSAGES.labels("out")


def _on_session_event(event: SessionEvent, times: int) -> None:
    if event is SessionEvent.MESSAGE_OUT:  # once per fan-out (session/stats.py): first
        _MESSAGES_OUT.inc(times)
        return
    match event:
        case SessionEvent.SOCKET_OPENED:
            SESSIONS_OPEN.inc(times)
        case SessionEvent.SOCKET_CLOSED:
            SESSIONS_OPEN.dec(times)
        case SessionEvent.MESSAGE_IN:
            _MESSAGES_IN.inc(times)
        case SessionEvent.OUTBOX_OVERFLOW:
            OUTBOX_OVERFLOWS.inc(times)
        case SessionEvent.CLOSE_1013:
            CLOSES_1013.inc(times)


stats.set_listener(_on_session_event)


# Labelled children by (route, cache status, status class): looked up once, not per
# request (labels() takes a lock and builds a key). Bounded: the labels are config
# routes, a few cache statuses and five status classes.
_REQUEST_CHILDREN: dict[tuple[str, str, int], Any] = {}
_MAX_REQUEST_CHILDREN = 4096


def observe_request(route: str, cache: str, status: int) -> None:
    key = (route, cache, status // 100)
    child = _REQUEST_CHILDREN.get(key)
    if child is None:
        child = REQUESTS.labels(route, cache, f"{status // 100}xx")
        if len(_REQUEST_CHILDREN) < _MAX_REQUEST_CHILDREN:
            _REQUEST_CHILDREN[key] = child
    child.inc()


# The same for fragments, by outcome (a closed enum): counted as each include ends, so
# a page of 20 includes neither takes 40 locks nor loops over them as it ends.
_FRAGMENT_CHILDREN: dict[Outcome, tuple[Any, Any]] = {}


def observe_shell(shell_s: float) -> None:
    """One page woven: the origin's time to its head."""
    ORIGIN_SECONDS.observe(shell_s)


def observe_fragment(record: FragmentRecord) -> None:
    """One include ended (or was cut): counted by outcome, and timed if it has a time."""
    children = _FRAGMENT_CHILDREN.get(record.outcome)
    if children is None:
        outcome = record.outcome.value
        children = (FRAGMENTS.labels(outcome), FRAGMENT_SECONDS.labels(outcome))
        _FRAGMENT_CHILDREN[record.outcome] = children
    children[0].inc()
    if record.duration_s is not None:
        children[1].observe(record.duration_s)


class _StoreCollector(Collector):
    def __init__(self, usage: StoreUsage) -> None:
        self._usage = usage

    def collect(self) -> Iterable[Metric]:
        u = self._usage
        for name, doc, value in (
            ("weaver_cache_disk_bytes", "Bytes the disk tier holds (shared)", u.disk_bytes),
            ("weaver_cache_disk_items", "Rows the disk tier holds (shared)", u.disk_items),
            ("weaver_cache_memory_bytes", "Bytes this worker's memory tier holds", u.memory_bytes),
            (
                "weaver_cache_memory_entries",
                "Entries this worker's memory tier holds",
                u.memory_entries,
            ),
            (
                "weaver_cache_memory_evictions",
                "Entries this worker's memory tier dropped for room",
                u.memory_evictions,
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


def render(usage: StoreUsage | None) -> bytes:
    """Every metric of this node (all workers), then the cache's."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    if usage is not None:
        cache = CollectorRegistry()
        cache.register(_StoreCollector(usage))
        text += generate_latest(cache)
    return text


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /_weaver/metrics``: the Prometheus text format (``/metrics`` is the origin's)."""
    edge = request.app[EDGE_KEY]
    usage = await edge.store.usage() if edge.store is not None else None
    return web.Response(
        body=render(usage),
        headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
    )
