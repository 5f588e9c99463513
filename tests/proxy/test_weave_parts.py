"""A fragment part's lifecycle: the transitions its State allows, and its record."""

from __future__ import annotations

import pytest

from weaver.config.schema import IncludeMode
from weaver.proxy.includes import IncludePlan
from weaver.proxy.weave_events import FragmentRecord, Outcome
from weaver.proxy.weave_parts import Part, Parts, State, WeaveError

PLAN = IncludePlan(
    src="/f",
    url="http://o/f",
    mode=IncludeMode.BLOCKING,
    timeout_s=1.0,
    alt_url=None,
    continue_on_error=False,
    fallback=b"",
    is_primary=False,
)

ALLOWED = {
    (State.ORDERED, State.ORDERED),  # an alt ordered before any head
    (State.ORDERED, State.STREAMING),
    (State.ORDERED, State.ENDED),
    (State.STREAMING, State.ORDERED),  # an alt ordered after a refused head
    (State.STREAMING, State.ENDED),
}


def part(state: State) -> Part:
    new = Part(plan=PLAN, path=(0,), chain=("http://o/f",), is_primary=False, started_s=1.0)
    new.state = state
    return new


@pytest.mark.parametrize("before", list(State))
@pytest.mark.parametrize("after", list(State))
def test_a_part_moves_only_along_the_transition_table(before: State, after: State) -> None:
    moving = part(before)
    if (before, after) in ALLOWED:
        moving.move_to(after)
        assert moving.state is after
    else:
        with pytest.raises(WeaveError, match=f"from {before.value} to {after.value}"):
            moving.move_to(after)
        assert moving.state is before


def test_an_ended_part_records_its_outcome_and_duration() -> None:
    ending = part(State.STREAMING)
    ending.streamed_bytes = 5
    ending.end(Outcome.OK, duration_s=0.5)
    assert ending.frozen() == FragmentRecord(
        "/f", IncludeMode.BLOCKING, 1.0, duration_s=0.5, outcome=Outcome.OK, streamed_bytes=5
    )


def fresh(attempt: int = 0) -> Part:
    new = part(State.ORDERED)
    new.attempt = attempt
    return new


def test_parts_are_numbered_from_one_in_the_order_they_are_added() -> None:
    parts = Parts()
    first, second = fresh(), fresh()
    assert (parts.add(first), parts.add(second)) == (1, 2)
    assert parts.get(1) is first and parts.get(2) is second
    assert list(parts) == [first, second] and len(parts) == 2


def test_a_live_part_is_its_current_attempt_in_the_state_asked_for() -> None:
    parts = Parts()
    parts.add(fresh(attempt=1))
    assert parts.live(1, 1, State.ORDERED) is parts.get(1)
    assert parts.live(1, 1, None) is parts.get(1)
    with pytest.raises(WeaveError, match="no fragment part 2"):
        parts.live(2, 1, None)
    with pytest.raises(WeaveError, match="no fragment part 0"):
        parts.live(0, 1, None)
    with pytest.raises(WeaveError, match="part 1 attempt 0 is not fetching"):
        parts.live(1, 0, None)
    with pytest.raises(WeaveError, match="part 1 is ordered, not streaming"):
        parts.live(1, 1, State.STREAMING)
    parts.end(parts.get(1), Outcome.ERROR, duration_s=0.1)
    with pytest.raises(WeaveError, match="part 1 attempt 1 is not fetching"):
        parts.live(1, 1, None)


def test_ended_parts_are_taken_once_each_in_the_order_they_ended() -> None:
    parts = Parts()
    for _ in range(3):
        parts.add(fresh())
    assert parts.take_ended() == []
    parts.end(parts.get(3), Outcome.TIMEOUT, duration_s=0.5)
    parts.end(parts.get(1), Outcome.OK, duration_s=0.25)
    taken = parts.take_ended()
    assert [(r.outcome, r.duration_s) for r in taken] == [
        (Outcome.TIMEOUT, 0.5),
        (Outcome.OK, 0.25),
    ]
    assert parts.take_ended() == []
    assert parts.get(2).state is State.ORDERED  # still running: not taken
