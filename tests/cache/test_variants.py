"""Compressed variants (cache/variants.py, through the store): made once, verified, bounded."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
from pathlib import Path

import diskcache
import pytest

from weaver.cache import manifest as manifests
from weaver.cache.blobs import digest_of
from weaver.cache.errors import DamagedBlob
from weaver.cache.freshness import Freshness
from weaver.cache.manifest import Manifest
from weaver.cache.store import Store
from weaver.cache.variants import VARIANT_MAX_BYTES

BODY = b"<p>a page that compresses well</p>\n" * 3000  # about 100 KB: a file on disk


def manifest(key: str) -> Manifest:
    return Manifest(
        key=key,
        status=200,
        headers=(("Content-Type", "text/html"),),
        blob="",
        size=0,
        freshness=Freshness(stored_at=1.0, initial_age_s=0.0, lifetime_s=60.0),
    )


def damage(root: Path, digest: str) -> None:
    """Flip the first bytes of blob ``digest``'s file, as a bad disk would."""
    db = diskcache.Cache(str(root / "db"))
    with db.get(("blob", digest), read=True) as handle:
        path = Path(handle.name)
    db.close()
    data = bytearray(path.read_bytes())
    data[:2] = bytes(b ^ 0xFF for b in data[:2])
    path.write_bytes(bytes(data))


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


async def test_a_variant_round_trips_and_is_found_after_a_restart(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**9) as store:
        stored = await store.put(manifest("GET h/a"), BODY)
        assert await store.get_variant(stored.blob, "gzip") is None
        await store.put_variant(stored.blob, "gzip", gzipped(BODY))
        assert await store.get_variant(stored.blob, "gzip") == gzipped(BODY)
        assert await store.get_variant(stored.blob, "br") is None
    async with Store(str(tmp_path), max_size_bytes=10**9, memory_max_bytes=0) as store:
        assert await store.get_variant(stored.blob, "gzip") == gzipped(BODY)
        assert await store.check_variants() == []
        assert await store.check() == []


async def test_concurrent_requests_for_a_variant_compress_it_once(tmp_path: Path) -> None:
    calls: list[int] = []
    started, release = threading.Event(), threading.Event()

    def make(data: bytes) -> bytes:
        calls.append(len(data))
        started.set()
        release.wait(timeout=5)  # every caller is waiting on this make
        return gzipped(data)

    async with Store(str(tmp_path), max_size_bytes=10**9, memory_max_bytes=0) as store:
        stored = await store.put(manifest("GET h/a"), BODY)
        async with asyncio.timeout(10), asyncio.TaskGroup() as tasks:
            waiters = [
                tasks.create_task(store.make_variant(stored, "gzip", make)) for _ in range(50)
            ]
            await asyncio.to_thread(started.wait, 5)
            release.set()
        assert {w.result() for w in waiters} == {gzipped(BODY)}
        assert calls == [len(BODY)]
        assert store.variants_made == 1
        again = await store.make_variant(stored, "gzip", make)
        assert (again, store.variants_made) == (gzipped(BODY), 1)
        assert await store.check_variants() == []


async def test_a_caller_that_leaves_does_not_stop_the_make(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    def make(data: bytes) -> bytes:
        started.set()
        release.wait(timeout=5)
        return gzipped(data)

    async with Store(str(tmp_path), max_size_bytes=10**9) as store:
        stored = await store.put(manifest("GET h/a"), BODY)
        async with asyncio.timeout(10):
            async with asyncio.TaskGroup() as tasks:
                leaver = tasks.create_task(store.make_variant(stored, "gzip", make))
                stayer = tasks.create_task(store.make_variant(stored, "gzip", make))
                await asyncio.to_thread(started.wait, 5)
                leaver.cancel()
                release.set()
            assert leaver.cancelled()
            assert stayer.result() == gzipped(BODY)
        assert store.variants_made == 1


async def test_the_identity_given_in_memory_is_compressed_without_reading_disk(
    tmp_path: Path,
) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**9) as store:
        stored = await store.put(manifest("GET h/a"), b"tiny")
        made = await store.make_variant(stored, "gzip", gzipped, identity=b"tiny")
        assert gzip.decompress(made) == b"tiny"


async def test_a_damaged_variant_is_a_miss_and_removed(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**9, memory_max_bytes=0) as store:
        stored = await store.put(manifest("GET h/a"), BODY)
        variant = os.urandom(300_000)  # a file of its own, to damage on disk
        await store.put_variant(stored.blob, "br", variant)
    damage(tmp_path, digest_of(variant))
    async with Store(str(tmp_path), max_size_bytes=10**9, memory_max_bytes=0) as store:
        assert await store.check_variants() != []
        assert await store.get_variant(stored.blob, "br") is None
        assert await store.check_variants() == []
        made = await store.make_variant(stored, "br", gzipped)  # made anew
        assert made == gzipped(BODY)
        assert await store.check_variants() == []


async def test_a_damaged_body_is_never_compressed_and_its_entry_is_removed(
    tmp_path: Path,
) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**9, memory_max_bytes=0) as store:
        stored = await store.put(manifest("GET h/a"), BODY)
    damage(tmp_path, stored.blob)
    async with Store(str(tmp_path), max_size_bytes=10**9, memory_max_bytes=0) as store:
        with pytest.raises(DamagedBlob):
            await store.make_variant(stored, "gzip", gzipped)
        assert await store.get("GET h/a") is None
        assert store.variants_made == 0
        assert await store.check() == []


async def test_a_variant_over_the_bound_is_not_stored(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**9) as store:
        stored = await store.put(manifest("GET h/a"), BODY)
        await store.put_variant(stored.blob, "br", b"x" * (VARIANT_MAX_BYTES + 1))
        assert await store.get_variant(stored.blob, "br") is None
        too_big = manifests.replace(stored, size=VARIANT_MAX_BYTES + 1)
        with pytest.raises(ValueError, match="over the variant bound"):
            await store.make_variant(too_big, "br", gzipped)


async def test_variants_are_evicted_with_the_size_bound(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=2 * 1024**2, memory_max_bytes=0) as store:
        stored = await store.put(manifest("GET h/a"), BODY)
        for n in range(40):  # 40 incompressible 100 KB variants: twice the bound
            await store.put_variant(stored.blob, f"enc{n}", os.urandom(100_000))
        found = [await store.get_variant(stored.blob, f"enc{n}") for n in range(40)]
        assert found[0] is None
        assert found[-1] is not None
        assert await store.check_variants() == []
