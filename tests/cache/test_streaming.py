"""A large blob streamed from disk: proven bytes, and its file always closed."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from pathlib import Path
from typing import IO

from weaver.cache.blobs import BlobFiles, Fingerprint, digest_of
from weaver.cache.freshness import Freshness
from weaver.cache.manifest import Manifest
from weaver.cache.store import Store
from weaver.cache.streaming import open_owned

BODY = b"".join(b"line %07d\n" % i for i in range(40_000))  # 480 KB: on disk, streamed
FRESH = Freshness(stored_at=1e12, initial_age_s=0.0, lifetime_s=60.0)


def manifest(body: bytes) -> Manifest:
    return Manifest(
        key="k", status=200, headers=(), blob=digest_of(body), size=len(body), freshness=FRESH
    )


def small_memory_store(path: Path) -> Store:
    return Store(str(path), max_size_bytes=10**8, memory_entry_max_bytes=1024)


class GatedFiles:
    """The store's real blob files, whose opening waits for the test to let it go on:
    the cancellation of a visitor while a thread opens the file, produced on demand."""

    def __init__(self, files: BlobFiles) -> None:
        self.files = files
        self.entered = threading.Event()
        self.go = threading.Event()
        self.opened: list[IO[bytes]] = []

    def open_verified(self, manifest: Manifest) -> tuple[IO[bytes], Fingerprint | None]:
        self.entered.set()
        self.go.wait(5)
        handle, seen = self.files.open_verified(manifest)
        self.opened.append(handle)
        return handle, seen


class Told(io.BytesIO):
    """A blob's bytes as a file that tells the test when it is closed."""

    def __init__(self, data: bytes, loop: asyncio.AbstractEventLoop, closed: asyncio.Event):
        super().__init__(data)
        self._loop, self._closed = loop, closed

    def close(self) -> None:
        super().close()
        self._loop.call_soon_threadsafe(self._closed.set)


class GatedTold(GatedFiles):
    def __init__(self, files: BlobFiles, closed: asyncio.Event) -> None:
        super().__init__(files)
        self.loop = asyncio.get_running_loop()
        self.closed = closed

    def open_verified(self, manifest: Manifest) -> tuple[IO[bytes], Fingerprint | None]:
        handle, seen = super().open_verified(manifest)
        with handle:
            told = Told(handle.read(), self.loop, self.closed)
        self.opened[-1] = told
        return told, seen


async def test_a_streamed_blob_is_its_bytes_and_its_file_is_closed_after(tmp_path: Path) -> None:
    async with asyncio.timeout(10), small_memory_store(tmp_path) as store:
        stored = await store.put(manifest(BODY), BODY)
        entry = await store.get("k")
        assert entry is not None and entry.whole is None  # streamed from disk
        parts = [chunk async for chunk in entry.body(64 * 1024)]
        assert b"".join(parts) == BODY and len(parts) > 1
        assert stored.size == len(BODY)


async def test_a_body_left_after_its_first_chunk_closes_its_file_when_closed(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(10), small_memory_store(tmp_path) as store:
        await store.put(manifest(BODY), BODY)
        entry = await store.get("k")
        assert entry is not None
        files = store._blobs
        gated = GatedFiles(files)
        gated.go.set()
        store._blobs = gated  # type: ignore[assignment]  # the real files, observed
        try:
            async with contextlib.aclosing(entry.body(64 * 1024)) as body:
                assert (await anext(body)) == BODY[: 64 * 1024]
                (handle,) = gated.opened
                assert not handle.closed  # a visitor leaves here
            assert handle.closed
        finally:
            store._blobs = files


async def test_a_visitor_gone_while_the_file_is_opened_leaves_no_open_file(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(10), small_memory_store(tmp_path) as store:
        stored = await store.put(manifest(BODY), BODY)
        closed = asyncio.Event()
        gated = GatedTold(store._blobs, closed)
        async with asyncio.TaskGroup() as tasks:
            opening = tasks.create_task(open_owned(gated, stored))  # type: ignore[arg-type]
            await asyncio.to_thread(gated.entered.wait, 5)
            opening.cancel()  # the visitor went away; the thread cannot be stopped
        assert opening.cancelled() and not gated.opened
        gated.go.set()  # the thread opens the file after all: nobody is there to take it
        await closed.wait()
        assert gated.opened[0].closed
