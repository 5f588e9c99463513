"""The store on real diskcache directories: whole entries or nothing, damage is a miss."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from tests.cache.stored import manifest, read
from weaver.cache import manifest as manifests
from weaver.cache.errors import DamagedBlob, StoreError
from weaver.cache.store import Store, digest_of


async def test_round_trip_is_byte_identical_and_named_by_content(store: Store) -> None:
    body = os.urandom(50_000)
    stored = await store.put(manifest("GET h/a"), body)
    assert stored.blob == hashlib.blake2b(body, digest_size=32).hexdigest()
    assert stored.size == len(body)
    assert await read(store, "GET h/a") == body
    assert await store.get("GET h/missing") is None


async def test_identical_bodies_are_stored_once(tmp_path: Path) -> None:
    body = os.urandom(200_000)  # big enough to be a file of its own
    async with Store(str(tmp_path), max_size_bytes=10**9, memory_max_bytes=0) as store:
        first = await store.put(manifest("GET h/a"), body)
        second = await store.put(manifest("GET h/b"), body)
        assert first.blob == second.blob
        files = [p for p in (tmp_path / "db").rglob("*.val")]
        assert len(files) == 1
        assert await read(store, "GET h/b") == body


async def test_a_large_body_streams_in_chunks_from_disk(tmp_path: Path) -> None:
    body = os.urandom(5 * 1024 * 1024)
    async with Store(str(tmp_path), max_size_bytes=10**9) as store:
        writer = await store.begin("GET h/big")
        for start in range(0, len(body), 100_000):
            await writer.write(body[start : start + 100_000])
        await writer.commit(manifest("GET h/big"))
        entry = await store.get("GET h/big")
        assert entry is not None and entry.whole is None  # not read whole into memory
        chunks = [chunk async for chunk in entry.body(64 * 1024)]
        assert len(chunks) > 1 and max(map(len, chunks)) <= 64 * 1024
        assert b"".join(chunks) == body
        part = b"".join([c async for c in entry.body(start=1000, end=3000)])
        assert part == body[1000:3000]


async def test_an_aborted_write_leaves_nothing(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**9) as store:
        writer = await store.begin("GET h/a")
        await writer.write(os.urandom(3 * 1024 * 1024))  # past the spill: a temporary file
        assert list((tmp_path / "tmp").rglob("body-*"))
        writer.abort()
        assert await store.keys() == []
        assert list((tmp_path / "tmp").rglob("body-*")) == []
        assert await writer.commit(manifest("GET h/a")) is None


async def test_a_body_over_the_entry_bound_is_not_stored(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10 * 1024 * 1024) as store:
        with pytest.raises(StoreError, match="over the bound"):
            await store.put(manifest("GET h/a"), b"x" * 2 * 1024 * 1024)
        assert await store.keys() == []


def blob_file(root: Path) -> Path:
    [path] = list((root / "db").rglob("*.val"))
    return path


@pytest.mark.parametrize("size", [100_000, 400_000])  # verified whole / verified in a pass
async def test_a_blob_damaged_on_disk_is_a_miss_and_removed(tmp_path: Path, size: int) -> None:
    body = os.urandom(size)
    async with Store(str(tmp_path), max_size_bytes=10**9, memory_max_bytes=0) as store:
        await store.put(manifest("GET h/a"), body)
        path = blob_file(tmp_path)
        data = bytearray(path.read_bytes())
        data[size // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        assert await store.get("GET h/a") is None
        assert await store.keys() == []


def damage_in_place(path: Path) -> None:
    """Flip one byte in the middle; keep the size and put the old mtime back (os.utime)."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(before.st_size // 2)
        byte = handle.read(1)
        handle.seek(before.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def past_ctime_tick(path: Path, probe: Path) -> None:
    """Wait until the file system's clock is past ``path``'s ctime (a tick is 1-10 ms).

    A write in the tick of the verification could leave ctime as it was; the store
    never trusts such a fingerprint with its real clock, but these tests move its clock
    on, so they wait here for the tick: on an event (a new ctime), not for a duration.
    """
    ctime_ns = path.stat().st_ctime_ns
    while True:
        probe.touch()
        if probe.stat().st_ctime_ns > ctime_ns:
            return


def clock_ahead() -> int:
    return time.time_ns() + 60 * 10**9  # every blob file looks old: fingerprints trusted


async def stream(store: Store, key: str, start: int = 0, end: int | None = None) -> bytes:
    entry = await store.get(key)
    assert entry is not None
    return b"".join([chunk async for chunk in entry.body(start=start, end=end)])


@pytest.mark.parametrize("size", [100_000, 2 * 1024 * 1024])  # read whole / streamed
async def test_a_blob_damaged_after_it_was_verified_is_a_miss_even_with_its_mtime_back(
    tmp_path: Path, size: int
) -> None:
    body = os.urandom(size)
    async with Store(
        str(tmp_path), max_size_bytes=10**9, memory_max_bytes=0, clock_ns=clock_ahead
    ) as store:
        await store.put(manifest("GET h/a"), body)
        path = blob_file(tmp_path)
        for _ in range(2):  # verified, then served on its fingerprint
            assert await stream(store, "GET h/a") == body
        past_ctime_tick(path, tmp_path / "probe")
        damage_in_place(path)
        assert await store.get("GET h/a") is None
        assert await store.keys() == [] and not path.exists()
        assert await store.check() == []


async def test_a_range_of_a_blob_damaged_after_get_is_refused_before_any_byte(
    tmp_path: Path,
) -> None:
    body = os.urandom(2 * 1024 * 1024)
    async with Store(str(tmp_path), max_size_bytes=10**9, clock_ns=clock_ahead) as store:
        await store.put(manifest("GET h/a"), body)
        assert await stream(store, "GET h/a", 1000, 70_000) == body[1000:70_000]
        entry = await store.get("GET h/a")
        assert entry is not None
        path = blob_file(tmp_path)
        past_ctime_tick(path, tmp_path / "probe")
        damage_in_place(path)
        got: list[bytes] = []
        with pytest.raises(DamagedBlob):
            async for chunk in entry.body(start=1000, end=70_000):
                got.append(chunk)
        assert got == []
        assert await store.get("GET h/a") is None
        assert await store.keys() == [] and not path.exists()
        assert await store.check() == []


async def test_a_blob_damaged_while_it_streams_never_gives_its_last_chunk(tmp_path: Path) -> None:
    body = os.urandom(2 * 1024 * 1024)
    async with Store(str(tmp_path), max_size_bytes=10**9, clock_ns=clock_ahead) as store:
        await store.put(manifest("GET h/a"), body)
        assert await stream(store, "GET h/a") == body
        entry = await store.get("GET h/a")
        assert entry is not None
        path = blob_file(tmp_path)
        past_ctime_tick(path, tmp_path / "probe")
        got = bytearray()
        with pytest.raises(DamagedBlob, match="changed while it was read"):
            async for chunk in entry.body(64 * 1024):
                if not got:
                    damage_in_place(path)  # the middle is read later
                got += chunk
        assert len(got) < len(body)
        assert await store.get("GET h/a") is None
        assert await store.check() == []


async def test_a_touched_but_intact_blob_streams_whole(tmp_path: Path) -> None:
    body = os.urandom(2 * 1024 * 1024)
    async with Store(str(tmp_path), max_size_bytes=10**9, clock_ns=clock_ahead) as store:
        await store.put(manifest("GET h/a"), body)
        entry = await store.get("GET h/a")
        assert entry is not None
        path = blob_file(tmp_path)
        past_ctime_tick(path, tmp_path / "probe")
        got = bytearray()
        async for chunk in entry.body(64 * 1024):
            if not got:
                os.utime(path)  # a new ctime, the same bytes: re-hashed, not dropped
            got += chunk
        assert got == body
        assert await stream(store, "GET h/a") == body


async def test_the_memory_tier_serves_the_bytes_it_verified_and_check_finds_the_disk_damage(
    tmp_path: Path,
) -> None:
    body = os.urandom(100_000)
    async with Store(str(tmp_path), max_size_bytes=10**9) as store:
        await store.put(manifest("GET h/a"), body)
        damage_in_place(blob_file(tmp_path))
        assert await stream(store, "GET h/a") == body  # the memory copy, never the disk's
        assert await store.check() == [f"GET h/a: blob {digest_of(body)} damaged"]


async def test_a_garbled_manifest_is_a_miss(store: Store) -> None:
    await store.put(manifest("GET h/a"), b"body")
    db = store._db
    db.set(("manifest", "GET h/a"), b"{not a manifest")
    store._forget("GET h/a")
    assert await store.get("GET h/a") is None
    with pytest.raises(StoreError):
        manifests.decode(b"[]")


async def test_the_memory_tier_is_bounded(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**9, memory_max_bytes=100_000) as store:
        for i in range(10):
            await store.put(manifest(f"GET h/{i}"), bytes([i]) * 30_000)
        assert store._memory.bytes <= 100_000
        assert len(store._memory) == 3
        for i in range(10):  # evicted from memory, still on disk
            assert await read(store, f"GET h/{i}") == bytes([i]) * 30_000


async def test_the_size_bound_evicts_and_never_serves_a_manifest_without_its_blob(
    tmp_path: Path,
) -> None:
    async with Store(str(tmp_path), max_size_bytes=2 * 1024 * 1024, memory_max_bytes=0) as store:
        for i in range(40):
            await store.put(manifest(f"GET h/{i}"), bytes([i]) * 150_000)
        volume = await asyncio.to_thread(store._db.volume)
        assert volume < 4 * 1024 * 1024
        served = 0
        for i in range(40):
            body = await read(store, f"GET h/{i}")
            assert body is None or body == bytes([i]) * 150_000
            served += body is not None
        assert 0 < served < 40
        assert await store.check() == []


async def test_opening_sweeps_only_the_temporary_writes_of_processes_gone(tmp_path: Path) -> None:
    """Workers share a store: one that restarts must not delete another's write."""
    tmp = tmp_path / "tmp"
    gone = tmp / "999999999-dead"  # no such process
    alive = tmp / f"{os.getppid()}-live"  # the test runner's parent: alive
    for folder in (gone, alive):
        folder.mkdir(parents=True)
        (folder / "body-1").write_bytes(b"partial")
    (tmp / "body-old-layout").write_bytes(b"partial")
    async with Store(str(tmp_path), max_size_bytes=10**9):
        assert not gone.exists() and not (tmp / "body-old-layout").exists()
        assert (alive / "body-1").read_bytes() == b"partial"


async def test_a_manifest_of_the_old_format_on_disk_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    # Version 1 copied the seven freshness fields into the manifest; version 2 embeds them.
    old = (
        b'{"key":"GET h/a","status":200,"headers":[],"blob":"00","size":4,"stored_at":1.0,'
        b'"initial_age_s":0.0,"lifetime_s":60.0,"version":1}'
    )
    async with Store(str(tmp_path), max_size_bytes=10**9) as store:
        await store.put(manifest("GET h/a"), b"body")
        await asyncio.to_thread(store._db.set, ("manifest", "GET h/a"), old)
    async with Store(str(tmp_path), max_size_bytes=10**9) as reopened:
        assert await reopened.get("GET h/a") is None
        assert await reopened.keys() == []  # the unreadable row is gone
