"""The clock the cache reads: wall time for HTTP dates and ages (injected, never global).

The app owns one :class:`Clock` (``SystemClock`` in production) and hands it to every
reader of the time of day: the request handler, the hit lane, fills and fragment fetches.
Tests pass a :class:`ManualClock` and move it on, so expiry, stale-while-revalidate and
stale-if-error are exact and instant instead of waiting in real time.

Durations measured for Server-Timing and metrics (``time.perf_counter``) and the loop's
deadlines are not read here: they measure real elapsed time, which a test does not move.
The store's racy-fingerprint rule compares with file ctimes the kernel stamps, so it keeps
the real wall clock too (see :class:`weaver.cache.store.Store`'s ``clock_ns``).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Where the time of day comes from."""

    def time(self) -> float:
        """Seconds since the epoch (the HTTP dates and ages of RFC 9111 §4.2.3)."""
        ...


class SystemClock:
    """The real wall clock."""

    def time(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when told to: ``advance`` it past an entry's lifetime.

    Args:
        start: its first reading; by default the real time now, so that ``Date``
            headers an origin sends stay close to what the cache reads.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move on by ``seconds`` (never back: ages in the cache only grow).

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError(f"a clock moves forward only, not by {seconds} s")
        self._now += seconds
