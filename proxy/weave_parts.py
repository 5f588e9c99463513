"""One fragment's part of a weave: its lifecycle (a :class:`State` with one place that
changes it, :meth:`Part.move_to`) and the record it builds; the weave's :class:`Parts`
(which ended since the driver asked) and its head's :class:`HeadState` (pure)."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

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


class HeadState(enum.Enum):
    """The lifecycle of a page's response head (the weave's ``_head``)."""

    UNSENT = "unsent"
    WAITING_PRIMARY = "waiting primary"  # the shell was scanned; the primary decides
    SENT = "sent"


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


@dataclass(slots=True)
class Parts:
    """A weave's fragments, part ``n`` at ``n - 1``; ended ones queue for :meth:`take_ended`.

    The queue lets the driver count each include as it ends (the page's wrap-up then
    does no work per include); it holds at most the weave's parts.
    """

    _all: list[Part] = field(default_factory=list)
    _ended: list[Part] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[Part]:
        return iter(self._all)

    def add(self, part: Part) -> int:
        """Add ``part``; returns its number."""
        self._all.append(part)
        return len(self._all)

    def get(self, part: int) -> Part:
        return self._all[part - 1]

    def live(self, part: int, attempt: int, state: State | None) -> Part:
        """The fragment ``part`` if ``attempt`` is its current fetch in ``state``.

        Raises:
            WeaveError: no such part, or not fetching with ``attempt`` in ``state``.
        """
        if not 1 <= part <= len(self._all):
            raise WeaveError(f"no fragment part {part}")
        frag = self._all[part - 1]
        if frag.attempt != attempt or frag.state is State.ENDED:
            raise WeaveError(f"part {part} attempt {attempt} is not fetching")
        if state is not None and frag.state is not state:
            raise WeaveError(f"part {part} is {frag.state.value}, not {state.value}")
        return frag

    def end(self, frag: Part, outcome: Outcome, *, duration_s: float) -> None:
        """The one place a fragment ends (:meth:`Part.end`), queued for the driver."""
        frag.end(outcome, duration_s=duration_s)
        self._ended.append(frag)

    def take_ended(self) -> list[FragmentRecord]:
        """The records of the parts that ended since the last call, in the order they did."""
        if not self._ended:
            return []
        ended, self._ended = self._ended, []
        return [frag.frozen() for frag in ended]
