"""One fragment's part of a weave: its lifecycle (a :class:`State` with one place that
changes it, :meth:`Part.move_to`) and the record it builds (pure)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDictProxy

from weaver.proxy.errors import ProxyError
from weaver.proxy.includes import IncludePlan
from weaver.proxy.scanner import Scanner
from weaver.proxy.weave_events import FIRST, FragmentRecord, Outcome


class State(enum.Enum):
    """The lifecycle of one part (the document's or a fragment's)."""

    ORDERED = "ordered"  # a fetch was ordered; no head yet
    STREAMING = "streaming"  # its head is in; chunks flow
    ENDED = "ended"  # ended, cut or given up


_TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.ORDERED: frozenset({State.ORDERED, State.STREAMING, State.ENDED}),
    State.STREAMING: frozenset({State.ORDERED, State.ENDED}),  # ORDERED again: its alt
    State.ENDED: frozenset(),
}


class WeaveError(ProxyError):
    """An event the weave's state does not allow (a driver bug, never page content)."""


@dataclass(slots=True)
class Part:
    """A fragment's mutable state inside the weave (never leaves it: see :meth:`frozen`)."""

    plan: IncludePlan
    path: tuple[int, ...]
    chain: tuple[str, ...]
    is_primary: bool
    started_s: float
    base_url: str = ""  # the URL its current fetch asked for (nested includes resolve on it)
    state: State = State.ORDERED
    attempt: int = FIRST
    scanner: Scanner | None = None
    outcome: Outcome = Outcome.PENDING
    duration_s: float | None = None
    status: int | None = None
    streamed_bytes: int = 0
    headers: CIMultiDictProxy[str] | None = None
    ttl_left_s: float | None = None
    is_cached: bool = False

    def move_to(self, state: State) -> None:
        """The one place a part's state changes.

        Raises:
            WeaveError: ``_TRANSITIONS`` does not allow it.
        """
        if state not in _TRANSITIONS[self.state]:
            raise WeaveError(f"a part cannot go from {self.state.value} to {state.value}")
        self.state = state

    def end(self, outcome: Outcome, *, duration_s: float) -> None:
        self.move_to(State.ENDED)
        self.outcome, self.duration_s = outcome, duration_s

    def frozen(self) -> FragmentRecord:
        """Its record as it stands (the weave's record is built of these)."""
        return FragmentRecord(
            src=self.plan.src,
            mode=self.plan.mode,
            started_s=self.started_s,
            duration_s=self.duration_s,
            outcome=self.outcome,
            status=self.status,
            streamed_bytes=self.streamed_bytes,
            headers=self.headers,
            ttl_left_s=self.ttl_left_s,
            is_cached=self.is_cached,
        )
