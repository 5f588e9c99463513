"""An entry found in the store: its body whole from memory, or streamed from disk."""

from __future__ import annotations

import gzip
from pathlib import Path

from weaver.cache.entry import variant_of_entry
from weaver.cache.freshness import Freshness
from weaver.cache.manifest import Manifest
from weaver.cache.store import Store


def manifest(key: str) -> Manifest:
    freshness = Freshness(stored_at=1.0, initial_age_s=0.0, lifetime_s=60.0)
    return Manifest(key=key, status=200, headers=(), blob="", size=0, freshness=freshness)


async def test_a_small_body_is_whole_and_sliced_in_chunks(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**9) as store:
        await store.put(manifest("GET h/a"), b"0123456789")
        entry = await store.get("GET h/a")
        assert entry is not None and entry.whole == b"0123456789"
        chunks = [c async for c in entry.body(4, start=1, end=9)]
        assert chunks == [b"1234", b"5678"]


async def test_a_large_body_streams_from_disk_by_range(tmp_path: Path) -> None:
    body = bytes(range(256)) * 2048  # 512 KiB: over the memory entry bound
    async with Store(str(tmp_path), max_size_bytes=10**9, memory_max_bytes=0) as store:
        await store.put(manifest("GET h/a"), body)
        entry = await store.get("GET h/a")
        assert entry is not None and entry.whole is None
        assert b"".join([c async for c in entry.body()]) == body
        assert b"".join([c async for c in entry.body(start=1000, end=70_000)]) == body[1000:70_000]


async def test_a_variant_of_an_entry_is_made_from_its_body_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def make(data: bytes) -> bytes:
        calls.append(len(data))
        return gzip.compress(data, mtime=0)

    async with Store(str(tmp_path), max_size_bytes=10**9) as store:
        await store.put(manifest("GET h/a"), b"page " * 100)
        entry = await store.get("GET h/a")
        assert entry is not None
        first = await variant_of_entry(entry, "gzip", make)
        assert await variant_of_entry(entry, "gzip", make) == first
        assert gzip.decompress(first) == b"page " * 100
        assert calls == [500]
