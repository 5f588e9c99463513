"""The hub's housekeeping queues (pure): which sessions expire, which keys to refresh.

Both are insertion-ordered dicts used as queues ordered by time, so a janitor tick costs
O(what is due + 1) and a new session past ``max_sessions`` evicts in O(1), however many
sessions the hub holds (a scan of 100,000 sessions per second, or per new session in a
reconnect storm, is what this replaces).
"""

from __future__ import annotations

from collections import OrderedDict


class DetachedSessions:
    """Sessions without a consumer, the longest-detached first.

    A session is appended when it loses its last consumer (or is created without one)
    and removed when a consumer attaches or it is dropped. The clock is monotonic, so
    appending keeps the order by detach time; a clock that steps back (an injected one)
    is clamped to the newest entry's time, which keeps the order.
    """

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._since)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._since

    def detach(self, session_id: str, now: float) -> None:
        """``session_id`` has no consumer since ``now`` (O(1))."""
        self._since.pop(session_id, None)
        if self._since:
            now = max(now, next(reversed(self._since.values())))
        self._since[session_id] = now

    def discard(self, session_id: str) -> None:
        """A consumer attached, or the session was dropped (O(1))."""
        self._since.pop(session_id, None)

    def longest(self) -> str | None:
        """The session detached the longest, or None if every session has a consumer."""
        return next(iter(self._since), None)

    def expired(self, now: float, hold_s: float) -> list[str]:
        """Sessions detached more than ``hold_s`` before ``now``, oldest first; visits
        only those and the first that is not (the caller drops them)."""
        due = []
        for session_id, since in self._since.items():
            if now - since <= hold_s:
                break
            due.append(session_id)
        return due


class TouchQueue:
    """Attached sessions whose shared keys need their expiry pushed back, least recently
    touched first. A session that attaches is due at once (it goes to the front)."""

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._at)

    def add(self, session_id: str) -> None:
        self._at[session_id] = float("-inf")
        self._at.move_to_end(session_id, last=False)

    def discard(self, session_id: str) -> None:
        self._at.pop(session_id, None)

    def due(self, now: float, every_s: float) -> list[str]:
        """Sessions last touched more than ``every_s`` before ``now`` (front of the queue
        only: O(due + 1))."""
        due = []
        for session_id, at in self._at.items():
            if now - at <= every_s:
                break
            due.append(session_id)
        return due

    def touched(self, session_ids: list[str], now: float) -> None:
        """``session_ids`` were touched at ``now``: to the back of the queue."""
        for session_id in session_ids:
            if session_id in self._at:
                self._at[session_id] = now
                self._at.move_to_end(session_id)
