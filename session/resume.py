"""A session's bounded message log (pure): what a reconnecting client missed.

Overflow policy DROP_OLDEST: past ``max_messages`` or ``max_bytes`` the oldest entries go;
a client whose last seq is older than the log's start gets ``None`` from :meth:`since`
and the hub sends ``reset`` and the current state instead of a silent gap.
"""

from __future__ import annotations

from collections import deque


class SessionLog:
    __slots__ = ("_bytes", "_entries", "last_seq", "max_bytes", "max_messages")

    def __init__(self, *, max_messages: int = 256, max_bytes: int = 256 * 1024) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.last_seq = 0
        self._entries: deque[tuple[int, bytes]] = deque()
        self._bytes = 0

    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def append(self, seq: int, message: bytes) -> None:
        """Log the message numbered ``seq`` (from :meth:`next_seq`)."""
        self._entries.append((seq, message))
        self._bytes += len(message)
        while self._entries and (
            len(self._entries) > self.max_messages or self._bytes > self.max_bytes
        ):
            _, dropped = self._entries.popleft()
            self._bytes -= len(dropped)

    @property
    def first_seq(self) -> int:
        """The oldest seq still held (last_seq + 1 when empty)."""
        return self._entries[0][0] if self._entries else self.last_seq + 1

    def since_oldest(self) -> list[tuple[int, bytes]]:
        """Every (seq, message) still held, oldest first."""
        return list(self._entries)

    def since(self, last_seq: int) -> list[tuple[int, bytes]] | None:
        """(seq, message) after ``last_seq``; None when the log no longer reaches back."""
        if last_seq >= self.last_seq:
            return [] if last_seq == self.last_seq else None  # from the future: reset
        if last_seq + 1 < self.first_seq:
            return None
        return [(seq, message) for seq, message in self._entries if seq > last_seq]
