"""The memory tier: verified small bodies with their manifests, bounded, least recent out.

A hit found here touches neither the disk nor a thread. Only bodies the store has
verified are put here, so what it serves was proven when it was read or written.
Fast: every method is a few dict operations, called on the loop.
"""

from __future__ import annotations

from collections import OrderedDict

from weaver.cache.manifest import Manifest


class MemoryTier:
    """Entries by key, at most ``max_bytes`` of bodies, each at most ``entry_max_bytes``.

    Overflow: DROP_OLDEST (the least recently used entry goes; it stays on disk).
    """

    def __init__(self, max_bytes: int, entry_max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entry_max_bytes = entry_max_bytes
        self.bytes = 0
        self.evictions = 0  # entries dropped for room since the store opened (metrics)
        self._entries: OrderedDict[str, tuple[Manifest, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: str) -> tuple[Manifest, bytes] | None:
        """The entry for ``key`` without counting it as used."""
        return self._entries.get(key)

    def get(self, key: str) -> tuple[Manifest, bytes] | None:
        """The entry for ``key``, now the most recently used."""
        hot = self._entries.get(key)
        if hot is not None:
            self._entries.move_to_end(key)
        return hot

    def remember(self, key: str, manifest: Manifest, body: bytes) -> None:
        """Keep ``body`` (verified) if it fits; older entries make room."""
        if len(body) > self.entry_max_bytes or len(body) > self.max_bytes:
            return
        self.forget(key)
        self._entries[key] = (manifest, body)
        self.bytes += len(body)
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= len(evicted)
            self.evictions += 1

    def update(self, key: str, manifest: Manifest) -> None:
        """A new manifest for the same body (a 304's headers, a soft purge)."""
        hot = self._entries.get(key)
        if hot is not None:
            self._entries[key] = (manifest, hot[1])

    def forget(self, key: str) -> None:
        hot = self._entries.pop(key, None)
        if hot is not None:
            self.bytes -= len(hot[1])
