"""The memory tier: bounded by bytes, least recently used out, one entry per key."""

from __future__ import annotations

from weaver.cache.freshness import Freshness
from weaver.cache.manifest import Manifest
from weaver.cache.memory import MemoryTier


def manifest(key: str) -> Manifest:
    freshness = Freshness(stored_at=1.0, initial_age_s=0.0, lifetime_s=60.0)
    return Manifest(key=key, status=200, headers=(), blob="", size=0, freshness=freshness)


def test_the_least_recently_used_entry_goes_first_when_room_is_needed() -> None:
    tier = MemoryTier(max_bytes=30, entry_max_bytes=10)
    for key in "abc":
        tier.remember(key, manifest(key), b"x" * 10)
    assert tier.get("a") is not None  # used: now the newest
    tier.remember("d", manifest("d"), b"y" * 10)
    assert (tier.peek("b"), len(tier), tier.bytes, tier.evictions) == (None, 3, 30, 1)
    assert tier.peek("a") is not None


def test_a_body_over_the_entry_bound_or_the_tier_bound_is_not_kept() -> None:
    tier = MemoryTier(max_bytes=8, entry_max_bytes=100)
    tier.remember("big", manifest("big"), b"x" * 9)
    small = MemoryTier(max_bytes=100, entry_max_bytes=4)
    small.remember("big", manifest("big"), b"x" * 5)
    assert (len(tier), tier.bytes, len(small), small.bytes) == (0, 0, 0, 0)


def test_a_key_remembered_again_replaces_its_entry_and_its_bytes() -> None:
    tier = MemoryTier(max_bytes=100, entry_max_bytes=100)
    tier.remember("a", manifest("a"), b"x" * 10)
    tier.remember("a", manifest("a"), b"y" * 4)
    assert (len(tier), tier.bytes) == (1, 4)
    found = tier.get("a")
    assert found is not None and found[1] == b"yyyy"


def test_update_swaps_the_manifest_and_keeps_the_body() -> None:
    tier = MemoryTier(max_bytes=100, entry_max_bytes=100)
    tier.remember("a", manifest("a"), b"body")
    newer = manifest("a")
    tier.update("a", newer)
    tier.update("missing", manifest("missing"))  # nothing to update: nothing added
    assert tier.peek("a") == (newer, b"body")
    assert tier.peek("missing") is None


def test_forget_gives_its_bytes_back() -> None:
    tier = MemoryTier(max_bytes=100, entry_max_bytes=100)
    tier.remember("a", manifest("a"), b"body")
    tier.forget("a")
    tier.forget("a")
    assert (len(tier), tier.bytes, tier.get("a")) == (0, 0, None)
