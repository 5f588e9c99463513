"""The garbage collector of a serving process: rare collections, startup frozen out.

A full collection walks every object the collector tracks. With thousands of sessions
(their connections, tasks, buffers and logs) that walk stalls the event loop for about
100 ms, and it falls in the middle of whatever allocates: a channel message's fan-out,
whose p99 it then sets (loadtests/bench_sessions.py, 1,000 sessions: p99 108-135 ms
with CPython's defaults, 28 ms with the collector off, 26-29 ms with :data:`THRESHOLDS`).
Weaver frees almost everything by reference counting; cycles are rare, so collecting
less often costs little memory. What exists when serving starts (modules, config, the
app) is frozen: no collection walks it again.
"""

from __future__ import annotations

import gc

# gen0 after 50,000 allocations net (CPython: 700); gen1 and full collections as often
# as CPython counts them (10, 10: a full one every 5M allocations net, and only when the
# long-lived objects grew by 25%). Rarer full collections (50, 100) measured the same
# p99 and let a 5-minute soak's RSS grow 3x faster; with (10, 10) the 10-minute soak
# levels off about 8 MB above CPython's defaults (loadtests/README.md).
THRESHOLDS = (50_000, 10, 10)


def tune_for_serving() -> None:
    """Set :data:`THRESHOLDS` and freeze what exists now. For a serving process only
    (``weaver serve``, a worker, ``weaver demo``), never a library caller's."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
