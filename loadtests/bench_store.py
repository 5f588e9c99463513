"""bench_store: what one cache hit costs the store, in µs, by body size and tier.

``Store.get`` then the whole body read through ``Entry.body`` (what a replay does), and a
Range read of 64 KiB from the middle, for a 20 KiB body (from the memory tier, and from
disk with the tier off) and a 2 MiB body (a file, streamed). Median and p90 of
``ROUNDS`` runs, after a warm-up that verified every blob once. The page cache holds the
files: this is the store's own cost (hashing, syscalls, thread hops), not the disk's.
Run: ``python -m loadtests.bench_store``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time

from weaver.cache.freshness import Freshness
from weaver.cache.manifest import Manifest
from weaver.cache.store import Store

ROUNDS = 400


def manifest(key: str) -> Manifest:
    return Manifest(
        key=key, status=200, headers=(), blob="", size=0,
        freshness=Freshness(stored_at=0.0, initial_age_s=0.0, lifetime_s=3600.0),
    )  # fmt: skip


async def hit(store: Store, key: str, start: int = 0, end: int | None = None) -> int:
    entry = await store.get(key)
    assert entry is not None, key
    return sum([len(chunk) async for chunk in entry.body(start=start, end=end)])


async def measure(store: Store, key: str, start: int = 0, end: int | None = None) -> str:
    for _ in range(20):  # warm-up: the first read verifies; its fingerprint settles
        await hit(store, key, start, end)
    await asyncio.sleep(1.1)  # past the racy-timestamp window of a just-written file
    await hit(store, key, start, end)
    times = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        await hit(store, key, start, end)
        times.append((time.perf_counter() - began) * 1e6)
    times.sort()
    return f"median {statistics.median(times):8.0f} µs   p90 {times[int(len(times) * 0.9)]:8.0f} µs"


async def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        small, large = os.urandom(20 * 1024), os.urandom(2 * 1024 * 1024)
        async with Store(os.path.join(root, "m"), max_size_bytes=1 << 30) as memory:
            await memory.put(manifest("GET h/20k"), small)
            print("20 KiB, memory tier     ", await measure(memory, "GET h/20k"))
        async with Store(
            os.path.join(root, "d"), max_size_bytes=1 << 30, memory_max_bytes=0
        ) as disk:
            await disk.put(manifest("GET h/20k"), small)
            await disk.put(manifest("GET h/2m"), large)
            print("20 KiB, disk            ", await measure(disk, "GET h/20k"))
            print("2 MiB, whole            ", await measure(disk, "GET h/2m"))
            mid = len(large) // 2
            print("2 MiB, Range 64 KiB     ", await measure(disk, "GET h/2m", mid, mid + 65536))


if __name__ == "__main__":
    asyncio.run(main())
