"""The injected clock: the system one reads the time, the manual one moves when told."""

from __future__ import annotations

import time

import pytest

from weaver.cache.clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock


def test_the_system_clock_reads_the_wall_clock() -> None:
    before = time.time()
    assert before <= SystemClock().time() <= time.time()
    assert isinstance(SYSTEM_CLOCK, Clock)


def test_a_manual_clock_stands_still_until_advanced() -> None:
    clock = ManualClock(start=100.0)
    assert clock.time() == clock.time() == 100.0
    clock.advance(1.5)
    assert clock.time() == 101.5
    assert isinstance(clock, Clock)


def test_a_manual_clock_starts_at_the_real_time_by_default() -> None:
    before = time.time()
    assert before <= ManualClock().time() <= time.time()


def test_a_manual_clock_never_goes_back() -> None:
    clock = ManualClock(start=5.0)
    with pytest.raises(ValueError, match="forward only"):
        clock.advance(-1)
    assert clock.time() == 5.0
