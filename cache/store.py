"""The content-addressed store on diskcache: the only module that touches the disk.

Layout, in one ``diskcache.Cache`` (SQLite index, large values as files, eviction of the
least recently stored under ``max_size_bytes``):

- ``("blob", digest)``: a body, named by the BLAKE2b-256 of its bytes, stored once however
  many manifests name it (:mod:`weaver.cache.blobs`). Blobs are not reference-counted:
  purging a manifest leaves its blob to the size-bound eviction, which drops the least
  recently stored first.
- ``("manifest", key)``: the encoded :class:`~weaver.cache.manifest.Manifest`.
- ``("tag", tag)``: the keys stored with a purge tag.
- ``("variant", digest, encoding)``: a compressed variant (:mod:`weaver.cache.variants`).

This module is the facade; the parts are :mod:`~weaver.cache.index` (manifest and tag
rows, the keys known), :mod:`~weaver.cache.blobs` (writing and verifying bodies),
:mod:`~weaver.cache.memory` (the memory tier), :mod:`~weaver.cache.variants` and
:mod:`~weaver.cache.housekeeping` (sweeping dead writes, ``check``).

Writes follow diskcache's own order (file first, row committed after) and ours: blob
before manifest, manifest only once the whole body and its hash are known. A process
killed at any point leaves at most an orphan temporary file (swept by :meth:`Store.open`)
or an unreferenced blob (evicted in time), never a manifest naming a partial body.

A damaged blob is never served as a whole body (:mod:`weaver.cache.blobs` finds it): it
is a miss, logged, and removed with the manifest that named it (others miss later).
Blocking calls run in ``asyncio.to_thread``; those on the loop are named "fast".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import tempfile
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import diskcache

from weaver.cache import manifest as manifests
from weaver.cache.blobs import BlobFiles
from weaver.cache.blobs import BlobWriter as BlobWriter  # re-exported, as the rest
from weaver.cache.blobs import digest_of as digest_of
from weaver.cache.entry import Entry as Entry
from weaver.cache.entry import variant_of_entry as variant_of_entry
from weaver.cache.errors import DamagedBlob, StoreError
from weaver.cache.housekeeping import check_entries, sweep_temporary
from weaver.cache.index import Index
from weaver.cache.manifest import Manifest
from weaver.cache.memory import MemoryTier
from weaver.cache.streaming import open_owned, stream_blob
from weaver.cache.variants import VARIANT_MAX_BYTES as VARIANT_MAX_BYTES
from weaver.cache.variants import Variants

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoreUsage:
    disk_bytes: int  # diskcache's volume: its database and value files
    disk_items: int  # rows: manifests and blobs
    memory_bytes: int
    memory_entries: int
    memory_evictions: int  # since this process opened the store


class Store:
    """Manifests and content-addressed blobs under ``directory``, with a memory tier.

    Args:
        max_size_bytes: the disk bound; least recently used entries are evicted past it.
        memory_max_bytes: the memory tier's bound (0 turns it off).
        memory_entry_max_bytes: bodies up to this size are read and hashed whole on
            every read from disk, and may live in the memory tier.
        clock_ns: the real wall clock, for the racy-fingerprint rule (tests move it on).
    """

    def __init__(
        self,
        directory: str,
        *,
        max_size_bytes: int,
        memory_max_bytes: int = 64 * 1024 * 1024,
        memory_entry_max_bytes: int = 256 * 1024,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = Path(directory)
        self.max_size_bytes = max_size_bytes
        self.memory_max_bytes = memory_max_bytes
        self.memory_entry_max_bytes = memory_entry_max_bytes
        self._cache: diskcache.Cache | None = None
        self._memory = MemoryTier(memory_max_bytes, memory_entry_max_bytes)
        self._blobs = BlobFiles(lambda: self._db, clock_ns)
        self._index = Index(lambda: self._db)
        self._tmp = self.directory / "tmp" / f"{os.getpid()}-{secrets.token_hex(4)}"

    @property
    def memory_evictions(self) -> int:
        """Entries the memory tier dropped for room (metrics)."""
        return self._memory.evictions

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)
        self._index.reset(await self.keys())

    def _open_sync(self) -> None:
        sweep_temporary(self.directory / "tmp")
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(
            str(self.directory / "db"),
            size_limit=self.max_size_bytes,
            # Not least-recently-used: that policy writes the access time on every read,
            # a write transaction per hit. Hot entries live in the memory tier instead.
            eviction_policy="least-recently-stored",
        )

    async def close(self) -> None:
        self._blobs.close_files()
        if self._cache is not None:
            await asyncio.to_thread(self._cache.close)
            self._cache = None

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def _db(self) -> diskcache.Cache:
        if self._cache is None:
            raise StoreError(f"the store at {self.directory} is not open")
        return self._cache

    # reads

    async def get(self, key: str) -> Entry | None:
        """The entry for ``key``, verified; None on a miss or a damaged entry."""
        hot = self._memory.get(key)  # fast: a dict lookup
        if hot is not None:
            return Entry(self, hot[0], hot[1])
        if not self._index.may_hold(key):  # fast: a set lookup
            return None
        manifest = self._index.known_manifest(key)
        if manifest is not None and manifest.size <= self.memory_entry_max_bytes:
            body = self._blobs.read_nowait(manifest)  # no thread hop when in the page cache
            if body is not None:
                self._index.touch(key)
                self._memory.remember(key, manifest, body)
                return Entry(self, manifest, body)
        found = await asyncio.to_thread(self._get_sync, key)
        if found is None:
            self._index.forget(key)
            return None
        manifest, body = found
        self._index.keep(manifest)
        if body is not None:
            self._memory.remember(key, manifest, body)
        return Entry(self, manifest, body)

    def current_manifest(self, key: str) -> Manifest | None:
        """The manifest this process holds for ``key`` (memory tier, else the manifest
        cache), or None. Fast: dict lookups, no I/O; a purge, refresh or eviction known
        to this process replaces or drops it."""
        hot = self._memory.peek(key)
        if hot is not None:
            return hot[0]
        return self._index.known_manifest(key)

    def read_now(self, manifest: Manifest) -> bytes | None:
        """The verified body of ``manifest`` if it can be had without waiting: from the
        memory tier, or a small file in the page cache (:meth:`BlobFiles.read_nowait`);
        else None.
        """
        hot = self._memory.peek(manifest.key)
        if hot is not None and hot[0] is manifest:
            return hot[1]
        if manifest.size > self.memory_entry_max_bytes:
            return None
        return self._blobs.read_nowait(manifest)

    def _get_sync(self, key: str) -> tuple[Manifest, bytes | None] | None:
        raw = self._index.raw_sync(key)
        if raw is None:
            return None
        try:
            manifest = manifests.decode(raw)
        except StoreError as exc:
            log.warning("cache entry %s dropped: %s", key, exc)
            self._index.delete_sync(key)
            return None
        try:
            if manifest.size <= self.memory_entry_max_bytes:
                return manifest, self._blobs.read_small(manifest)
            self._blobs.open_verified(manifest)[0].close()
        except DamagedBlob as exc:
            log.error("cache entry %s dropped: %s", key, exc)
            self._drop_sync(manifest)
            return None
        except StoreError as exc:  # evicted: not a fault
            log.info("cache entry %s dropped: %s", key, exc)
            self._index.delete_sync(key)
            return None
        return manifest, None

    def _drop_sync(self, manifest: Manifest) -> None:
        """Remove a damaged blob and the manifest that named it (others miss later)."""
        self._blobs.drop_sync(manifest.blob)
        self._index.delete_sync(manifest.key)

    async def _drop(self, manifest: Manifest, exc: Exception) -> None:
        log.error("cache entry %s dropped: %s", manifest.key, exc)
        self._forget(manifest.key)
        self._index.forget(manifest.key)
        await asyncio.to_thread(self._drop_sync, manifest)

    async def stream(
        self, manifest: Manifest, chunk_bytes: int, start: int, end: int
    ) -> AsyncGenerator[bytes, None]:
        """The blob of ``manifest`` from ``start`` to ``end``, proven (see Entry.body)."""
        try:
            opened = await open_owned(self._blobs, manifest)
        except DamagedBlob as exc:
            await self._drop(manifest, exc)
            raise
        except StoreError:
            self._index.forget(manifest.key)
            await asyncio.to_thread(self._index.delete_sync, manifest.key)
            raise

        async def on_damaged(damaged: DamagedBlob) -> None:
            await self._drop(manifest, damaged)

        body = stream_blob(self._blobs, manifest, opened, chunk_bytes, start, end, on_damaged)
        async with contextlib.aclosing(body):
            async for chunk in body:
                yield chunk

    # writes

    async def begin(self, key: str) -> BlobWriter:
        """A writer for the body of ``key``; bodies over a tenth of the bound are dropped."""
        return BlobWriter(self, key, max_bytes=max(1, self.max_size_bytes // 10))

    def temp_file(self) -> IO[bytes]:
        """A temporary file for a body too big to buffer (:class:`BlobWriter`)."""
        return tempfile.NamedTemporaryFile(dir=self._tmp, prefix="body-", delete=False)

    async def commit_blob(self, manifest: Manifest, body: bytes | None, path: str | None) -> None:
        """Store the blob (``body``, or the file at ``path``), then ``manifest`` naming it."""
        await asyncio.to_thread(self._commit_sync, manifest, body, path)
        self._index.keep(manifest)
        if body is not None:
            self._memory.remember(manifest.key, manifest, body)
        else:
            self._forget(manifest.key)

    def _commit_sync(self, manifest: Manifest, body: bytes | None, path: str | None) -> None:
        self._blobs.put_sync(manifest, body, path)  # the blob first, then the manifest
        self._index.write_sync(manifest)

    async def put(self, manifest: Manifest, body: bytes) -> Manifest:
        """Store ``body`` under ``manifest.key`` at once (small bodies, tests)."""
        writer = await self.begin(manifest.key)
        await writer.write(body)
        stored = await writer.commit(manifest)
        if stored is None:
            raise StoreError(f"{manifest.key}: body of {len(body)} bytes is over the bound")
        return stored

    async def update_manifest(self, key: str, manifest: Manifest) -> None:
        """Replace the manifest of ``key`` (a 304's headers, a soft purge)."""
        await asyncio.to_thread(self._index.replace_sync, key, manifest)
        self._index.keep(manifest)
        self._memory.update(key, manifest)

    async def alias(self, manifest: Manifest) -> None:
        """Store ``manifest`` under its own key, naming a blob that is stored already (one
        variant of a response under its secondary key, RFC 9111 §4.1)."""
        await asyncio.to_thread(self._commit_sync, manifest, None, None)
        self._forget(manifest.key)
        self._index.keep(manifest)

    def _forget(self, key: str) -> None:
        self._memory.forget(key)

    # purge

    async def delete(self, key: str) -> bool:
        self._forget(key)
        self._index.forget(key)
        return await asyncio.to_thread(self._index.delete_sync, key)

    async def keys(self) -> list[str]:
        return await asyncio.to_thread(self._index.keys_sync)

    async def purge_keys(self, keys: Iterable[str], *, soft: bool = False) -> int:
        count = 0
        for key in keys:
            count += await (self._soften(key) if soft else self.delete(key))
        return count

    async def purge_tags(self, tags: Iterable[str], *, soft: bool = False) -> int:
        keys: set[str] = set()
        for tag in tags:
            keys.update(await asyncio.to_thread(self._index.tagged_sync, tag, drop=not soft))
        return await self.purge_keys(sorted(keys), soft=soft)

    async def _soften(self, key: str) -> bool:
        raw = await asyncio.to_thread(self._index.raw_sync, key)
        if raw is None:
            return False
        try:
            manifest = manifests.replace(manifests.decode(raw), is_soft_purged=True)
        except StoreError:  # unreadable: it cannot be revalidated, so it goes
            return await self.delete(key)
        await self.update_manifest(key, manifest)
        return True

    # housekeeping

    async def usage(self) -> StoreUsage:
        """Sizes for metrics: the disk (shared by the node's workers) and this memory tier."""
        disk_bytes, disk_items = await asyncio.to_thread(
            lambda: (int(self._db.volume()), len(self._db))
        )
        return StoreUsage(
            disk_bytes=disk_bytes,
            disk_items=disk_items,
            memory_bytes=self._memory.bytes,
            memory_entries=len(self._memory),
            memory_evictions=self._memory.evictions,
        )

    async def check(self) -> list[str]:
        """Every problem of the store: manifests naming missing or damaged blobs."""
        return await asyncio.to_thread(
            lambda: check_entries(self._db, self._index.keys_sync(), self._blobs)
        )

    # compressed variants (weaver.cache.variants)

    @functools.cached_property
    def _variants(self) -> Variants:
        # A quarter of the memory tier's bound: variants are smaller than their bodies.
        return Variants(
            lambda: self._db,
            self._blobs,
            memory_max_bytes=self.memory_max_bytes // 4,
            entry_max_bytes=self.memory_entry_max_bytes,
            on_damaged=self.delete,
        )

    @property
    def variants_made(self) -> int:
        """How many variants this process has compressed (not found stored)."""
        return self._variants.made

    async def get_variant(self, digest: str, encoding: str) -> bytes | None:
        """:meth:`Variants.get`: the stored variant, verified; None if none."""
        return await self._variants.get(digest, encoding)

    async def put_variant(self, digest: str, encoding: str, data: bytes) -> None:
        await self._variants.put(digest, encoding, data)

    async def make_variant(
        self,
        manifest: Manifest,
        encoding: str,
        make: Callable[[bytes], bytes],
        *,
        identity: bytes | None = None,
    ) -> bytes:
        """:meth:`Variants.make`: the stored variant, else ``make`` of the body, once."""
        return await self._variants.make(manifest, encoding, make, identity=identity)

    async def check_variants(self) -> list[str]:
        """Every problem of the stored variants: rows naming missing or damaged blobs."""
        return await self._variants.check()
