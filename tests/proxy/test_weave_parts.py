"""A fragment part's lifecycle: the transitions its State allows, and its record."""

from __future__ import annotations

import pytest

from weaver.config.schema import IncludeMode
from weaver.proxy.includes import IncludePlan
from weaver.proxy.weave_events import FragmentRecord, Outcome
from weaver.proxy.weave_parts import Part, State, WeaveError

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
