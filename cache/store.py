"""The content-addressed store on diskcache: the only module that touches the disk.

Layout, in one ``diskcache.Cache`` (SQLite index, large values as files, eviction of the
least recently stored under ``max_size_bytes``):

- ``("blob", digest)``: a body, named by the BLAKE2b-256 of its bytes, stored once however
  many manifests name it. Blobs are not reference-counted: purging a manifest leaves its
  blob to the size-bound eviction, which drops the least recently stored first.
- ``("manifest", key)``: the encoded :class:`~weaver.cache.manifest.Manifest`.
- ``("tag", tag)``: the keys stored with a purge tag.

Writes follow diskcache's own order (file first, row committed after) and ours: blob
before manifest, manifest only once the whole body and its hash are known. A process
killed at any point leaves at most an orphan temporary file (swept by :meth:`Store.open`)
or an unreferenced blob (evicted in time), never a manifest naming a partial body.

Integrity: a damaged blob is never served as a whole body; it is a miss, logged, and
removed with the manifest that named it (other manifests naming it miss on their next
read). How it is found depends on the size:

- Bodies up to ``memory_entry_max_bytes`` are read whole and hashed on every read from
  disk (a 20 KiB hash is ~20 µs of a ~150 µs disk hit); the memory tier then holds those
  verified bytes and serves them without touching the disk. A blob damaged on disk under
  a memory-tier entry is therefore not served (the verified copy is), but it is found
  only when the entry next comes from disk (memory eviction, another worker, a restart)
  or by :meth:`Store.check`.
- Larger bodies are files, hashed in full once per process, then checked on every open by
  their fingerprint (path, device, inode, size, mtime, ctime from ``fstat`` of the open
  file): the same fingerprint skips the hash, another one hashes the file again before
  a byte is sent. Restoring mtime (``os.utime``) does not hide a change: utime sets
  ctime, which user space cannot set back. The fingerprint is taken again before the
  last chunk of every read, so a file changed while it streamed gives no whole body
  (:class:`DamagedBlob` instead of the last chunk; the caller aborts the response).
  A fingerprint is trusted only once the file's ctime is older than ``RACY_NS`` (1 s):
  ctime ticks with the kernel's coarse clock, and a write in the verified tick would not
  change it; until then every open hashes. Limits: a change that bypasses the file
  system's write path (bits rotting on the medium, writes to the block device, a clock
  set back so that ctime repeats) keeps the fingerprint and is found by ``check()`` or
  after a restart; and the fingerprints live in this process only.

Measured (``python -m loadtests.bench_store``, median µs per hit: get and the whole
body, 2-core machine shared with other builds, load 5-8, so ±30%): 20 KiB from memory
2 → 2, from disk ~150 → ~150 (unchanged: hashed every read, before and after); 2 MiB
whole ~4500 → ~2300 (it was hashed on every whole read, after its bytes were sent; now
two blob lookups and opens and three fstat calls, ~40-70 µs per open); a 64 KiB Range
of it ~400-750 → ~500-700 (it was not checked at all; now the same fingerprint check).
Hashing 2 MiB costs ~2.6 ms here, which every first read after a fill or a change pays.

Blocking calls run in ``asyncio.to_thread``; the calls made on the loop are named
"fast" where they are: memory-tier lookups and unlinking a temporary file.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import io
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import diskcache

from weaver.cache import manifest as manifests
from weaver.cache.errors import DamagedBlob, StoreError
from weaver.cache.manifest import Manifest

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
# A writer keeps this much in memory before it spills to a temporary file.
SPILL_BYTES = 1024 * 1024
# Blob files whose bytes this process hashed, with their fingerprint; bounded, oldest dropped.
MAX_VERIFIED = 4096
# Manifests kept in memory (a disk-tier hit reads no database row).
MAX_MANIFESTS = 16384
# Linux 4.14+: a read that fails instead of waiting for the disk.
_HAS_NOWAIT = hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")
# A fingerprint is trusted only if the file's ctime is older than this when it is taken:
# ctime comes from the kernel's coarse clock (a tick of 1-10 ms), so a write in the same
# tick as the verified one would leave ctime unchanged ("racy git" has the same rule).
RACY_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class StoreUsage:
    disk_bytes: int  # diskcache's volume: its database and value files
    disk_items: int  # rows: manifests and blobs
    memory_bytes: int
    memory_entries: int
    memory_evictions: int  # since this process opened the store


def digest_of(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What the file system says of an open blob file; a write changes ``ctime_ns``."""

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def _fingerprint(handle: IO[bytes]) -> Fingerprint | None:
    """The open file's fingerprint; None for a blob held in the database (no file)."""
    if isinstance(handle, io.BytesIO):
        return None
    stat = os.fstat(handle.fileno())
    return Fingerprint(
        handle.name, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns
    )


def _is_alive(pid_text: str) -> bool:
    """Whether the process ``pid_text`` names still runs (its temporary writes too)."""
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_hash(handle: IO[bytes], manifest: Manifest) -> None:
    """Raises DamagedBlob unless the rest of ``handle`` is the manifest's body."""
    hasher = hashlib.blake2b(digest_size=32)
    size = 0
    while chunk := handle.read(CHUNK_BYTES * 16):
        hasher.update(chunk)
        size += len(chunk)
    if hasher.hexdigest() != manifest.blob or size != manifest.size:
        raise DamagedBlob(manifest.blob, hasher.hexdigest())


class Entry:
    """A stored response found by :meth:`Store.get`: its manifest and its body."""

    def __init__(self, store: Store, manifest: Manifest, body: bytes | None) -> None:
        self.manifest = manifest
        self._store = store
        self._body = body

    @property
    def whole(self) -> bytes | None:
        """The verified body when it is in memory (small bodies), else None: stream it."""
        return self._body

    async def body(
        self, chunk_bytes: int = CHUNK_BYTES, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The body (or ``[start:end]``) in chunks; small bodies were verified already.

        Raises:
            DamagedBlob: a large blob is damaged; the entry is removed. Raised before the
                first chunk when the damage was there when the file was opened; raised
                instead of the last chunk when the file changed while it was read, so a
                client never gets a whole body that was not verified: the caller aborts
                the response.
            StoreError: the blob was evicted since :meth:`Store.get`; before any chunk.
        """
        end = self.manifest.size if end is None else end
        if self._body is not None:
            for offset in range(start, end, chunk_bytes):
                yield self._body[offset : min(end, offset + chunk_bytes)]
            return
        async for chunk in self._store._stream(self.manifest, chunk_bytes, start, end):
            yield chunk


class BlobWriter:
    """Writes one body while it streams; :meth:`commit` stores it, :meth:`abort` drops it."""

    def __init__(self, store: Store, key: str, max_bytes: int) -> None:
        self.key = key
        self.size = 0
        self.is_too_big = False
        self._store = store
        self._max_bytes = max_bytes
        self._hasher = hashlib.blake2b(digest_size=32)
        self._buffer = bytearray()
        self._file: IO[bytes] | None = None
        self._is_done = False

    async def write(self, chunk: bytes) -> None:
        """Add ``chunk``; past ``max_bytes`` the body is dropped and commit does nothing."""
        if self._is_done or self.is_too_big:
            return
        self.size += len(chunk)
        if self.size > self._max_bytes:
            self.is_too_big = True
            self.abort()
            return
        self._hasher.update(chunk)
        if self._file is None and len(self._buffer) + len(chunk) <= SPILL_BYTES:
            self._buffer += chunk
            return
        if self._file is None:
            self._file = await asyncio.to_thread(self._store._temp_file)
            pending, self._buffer = bytes(self._buffer), bytearray()
            await asyncio.to_thread(self._file.write, pending)
        await asyncio.to_thread(self._file.write, chunk)

    async def commit(self, manifest: Manifest) -> Manifest | None:
        """Store the body, then ``manifest`` naming it; None if the body was dropped."""
        if self._is_done or self.is_too_big:
            return None
        self._is_done = True
        stored = manifests.replace(manifest, blob=self._hasher.hexdigest(), size=self.size)
        try:
            if self._file is None:
                await self._store._commit(stored, bytes(self._buffer), None)
            else:
                await asyncio.to_thread(self._file.flush)
                await self._store._commit(stored, None, self._file.name)
        finally:
            self._discard()
        return stored

    def abort(self) -> None:
        """Leave nothing behind. Fast: closes and unlinks one temporary file at most."""
        self._is_done = True
        self._discard()

    def _discard(self) -> None:
        self._buffer = bytearray()
        if self._file is not None:
            self._file.close()
            Path(self._file.name).unlink(missing_ok=True)
            self._file = None


class Store:
    """Manifests and content-addressed blobs under ``directory``, with a memory tier.

    Args:
        max_size_bytes: the disk bound; least recently used entries are evicted past it.
        memory_max_bytes: the memory tier's bound (0 turns it off).
        memory_entry_max_bytes: bodies up to this size are read and hashed whole on
            every read from disk, and may live in the memory tier.
        clock_ns: the wall clock, for the racy-fingerprint rule (tests move it on).
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
        self._memory: OrderedDict[str, tuple[Manifest, bytes]] = OrderedDict()
        self._memory_bytes = 0
        self._clock_ns = clock_ns
        self._verified: OrderedDict[str, Fingerprint] = OrderedDict()  # under _verified_lock
        self._verified_lock = threading.Lock()
        # Keys this process knows are stored: a key not here is a miss without a disk
        # lookup. Entries other worker processes store are not here (they are refilled
        # by this one); keys purged elsewhere are, and their lookup then misses.
        self._known: set[str] = set()
        # Manifests are small and read on every hit: the last MAX_MANIFESTS read or
        # written by this process stay in memory, bodies on disk (the disk-tier hit).
        self._manifests: OrderedDict[str, Manifest] = OrderedDict()
        self._can_read_nowait = _HAS_NOWAIT
        self.memory_evictions = 0  # entries the memory tier dropped for room (metrics)
        self._tmp = self.directory / "tmp" / f"{os.getpid()}-{secrets.token_hex(4)}"

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)
        self._known = set(await self.keys())

    def _open_sync(self) -> None:
        tmp = self.directory / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        # Temporary bodies of writes a crash cut short: each process writes in its own
        # folder, and only the folders (and loose files) of processes gone are swept, so
        # a worker that restarts never deletes another worker's write in progress.
        for leftover in tmp.iterdir():
            if leftover.is_dir() and _is_alive(leftover.name.partition("-")[0]):
                continue
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(
            str(self.directory / "db"),
            size_limit=self.max_size_bytes,
            # Not least-recently-used: that policy writes the access time on every read,
            # a write transaction per hit. Hot entries live in the memory tier instead.
            eviction_policy="least-recently-stored",
        )

    async def close(self) -> None:
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
            self._memory.move_to_end(key)
            return Entry(self, hot[0], hot[1])
        if key not in self._known:  # fast: a set lookup
            return None
        manifest = self._manifests.get(key)
        if manifest is not None and manifest.size <= self.memory_entry_max_bytes:
            body = self._read_nowait(manifest)  # no thread hop when the page cache has it
            if body is not None:
                self._manifests.move_to_end(key)
                self._remember(key, manifest, body)
                return Entry(self, manifest, body)
        found = await asyncio.to_thread(self._get_sync, key)
        if found is None:
            self._known.discard(key)
            self._manifests.pop(key, None)
            return None
        manifest, body = found
        self._keep_manifest(manifest)
        if body is not None:
            self._remember(key, manifest, body)
        return Entry(self, manifest, body)

    def _keep_manifest(self, manifest: Manifest) -> None:
        self._manifests[manifest.key] = manifest
        self._manifests.move_to_end(manifest.key)
        while len(self._manifests) > MAX_MANIFESTS:
            self._manifests.popitem(last=False)

    def _read_nowait(self, manifest: Manifest) -> bytes | None:
        """The body of a small blob this process verified, read on the loop without
        blocking: opened by its path, its fingerprint compared (a change means None:
        the caller re-hashes in a thread), read with ``RWF_NOWAIT`` so that bytes not in
        the page cache give None (then the caller reads in a thread) instead of a wait.
        Fast: a few metadata syscalls and one non-blocking read."""
        with self._verified_lock:
            seen = self._verified.get(manifest.blob)
        if seen is None or seen.size != manifest.size or not self._can_read_nowait:
            return None
        try:
            fd = os.open(seen.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            stat = os.fstat(fd)
            if (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns) != (
                seen.device,
                seen.inode,
                seen.size,
                seen.mtime_ns,
                seen.ctime_ns,
            ):
                return None
            buffer = bytearray(manifest.size)
            if os.preadv(fd, [buffer], 0, os.RWF_NOWAIT) != manifest.size:
                return None
            return bytes(buffer)
        except OSError as exc:  # EAGAIN: not in the page cache; the thread path reads it
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._can_read_nowait = False  # this file system cannot: stop trying
            return None
        finally:
            os.close(fd)

    def current_manifest(self, key: str) -> Manifest | None:
        """The manifest this process holds for ``key`` (memory tier, else the manifest
        cache), or None. Fast: dict lookups, no I/O; a purge, refresh or eviction known
        to this process replaces or drops it."""
        hot = self._memory.get(key)
        if hot is not None:
            return hot[0]
        return self._manifests.get(key)

    def read_now(self, manifest: Manifest) -> bytes | None:
        """The verified body of ``manifest`` if it can be had without waiting: from the
        memory tier, or a small file in the page cache (:meth:`_read_nowait`); else None.
        """
        hot = self._memory.get(manifest.key)
        if hot is not None and hot[0] is manifest:
            return hot[1]
        if manifest.size > self.memory_entry_max_bytes:
            return None
        return self._read_nowait(manifest)

    def _get_sync(self, key: str) -> tuple[Manifest, bytes | None] | None:
        raw = self._db.get(("manifest", key))
        if raw is None:
            return None
        try:
            manifest = manifests.decode(raw)
        except StoreError as exc:
            log.warning("cache entry %s dropped: %s", key, exc)
            self._db.delete(("manifest", key))
            return None
        try:
            if manifest.size <= self.memory_entry_max_bytes:
                return manifest, self._read_small(manifest)
            self._open_verified(manifest)[0].close()
        except DamagedBlob as exc:
            log.error("cache entry %s dropped: %s", key, exc)
            self._drop_sync(manifest)
            return None
        except StoreError as exc:  # evicted: not a fault
            log.info("cache entry %s dropped: %s", key, exc)
            self._db.delete(("manifest", key))
            return None
        return manifest, None

    def _open_blob(self, digest: str) -> IO[bytes] | None:
        """A reader of the blob; diskcache gives small (in-database) values as bytes."""
        value = self._db.get(("blob", digest), read=True)
        if value is None:
            return None
        if isinstance(value, bytes):
            return io.BytesIO(value)
        handle: IO[bytes] = value
        return handle

    def _read_small(self, manifest: Manifest) -> bytes:
        """A small body whole, verified as :meth:`_open_verified` does (hashed once per
        process and fingerprint for a file; every time for a blob inside the database)."""
        handle, _ = self._open_verified(manifest)
        with handle:
            data = handle.read()
        if len(data) != manifest.size:
            raise DamagedBlob(manifest.blob, f"{len(data)} bytes")
        return data

    def _open_verified(self, manifest: Manifest) -> tuple[IO[bytes], Fingerprint | None]:
        """The blob, open at its start, its bytes known to hash to its name, and the
        open file's fingerprint (None for a blob held in the database).

        Hashes the whole blob unless this open file has the fingerprint it had when this
        process last hashed it (see the module docstring).

        Raises:
            DamagedBlob: the bytes do not hash to the blob's name (or the size differs).
            StoreError: the blob is gone (evicted).
        """
        now_ns = self._clock_ns()
        handle = self._open_blob(manifest.blob)
        if handle is None:
            raise StoreError(f"blob {manifest.blob} is gone (evicted)")
        try:
            seen = _fingerprint(handle)
            with self._verified_lock:
                is_known = seen is not None and self._verified.get(manifest.blob) == seen
            if is_known:
                return handle, seen
            if seen is not None and seen.size != manifest.size:
                raise DamagedBlob(manifest.blob, f"a file of {seen.size} bytes")
            _check_hash(handle, manifest)
            handle.seek(0)
            if seen is not None and now_ns - seen.ctime_ns > RACY_NS:
                self._trust(manifest.blob, seen)
        except Exception:
            handle.close()
            raise
        return handle, seen

    def _trust(self, digest: str, seen: Fingerprint) -> None:
        with self._verified_lock:
            self._verified[digest] = seen
            self._verified.move_to_end(digest)
            while len(self._verified) > MAX_VERIFIED:
                self._verified.popitem(last=False)

    def _still_same(self, manifest: Manifest, handle: IO[bytes], seen: Fingerprint) -> bool:
        """After a stream: True if the file did not change, or changed but hashes right."""
        if _fingerprint(handle) == seen:
            return True
        handle.seek(0)
        try:
            _check_hash(handle, manifest)
        except DamagedBlob:
            return False
        with self._verified_lock:
            self._verified.pop(manifest.blob, None)  # re-hashed on its next open
        return True

    def _drop_sync(self, manifest: Manifest) -> None:
        """Remove a damaged blob and the manifest that named it (others miss later)."""
        with self._verified_lock:
            self._verified.pop(manifest.blob, None)
        self._db.delete(("blob", manifest.blob))
        self._db.delete(("manifest", manifest.key))

    async def _drop(self, manifest: Manifest, exc: Exception) -> None:
        log.error("cache entry %s dropped: %s", manifest.key, exc)
        self._forget(manifest.key)
        self._manifests.pop(manifest.key, None)
        self._known.discard(manifest.key)
        await asyncio.to_thread(self._drop_sync, manifest)

    async def _stream(
        self, manifest: Manifest, chunk_bytes: int, start: int, end: int
    ) -> AsyncIterator[bytes]:
        try:
            handle, seen = await asyncio.to_thread(self._open_verified, manifest)
        except DamagedBlob as exc:
            await self._drop(manifest, exc)
            raise
        except StoreError:
            self._known.discard(manifest.key)
            self._manifests.pop(manifest.key, None)
            await asyncio.to_thread(self._db.delete, ("manifest", manifest.key))
            raise
        try:
            if start:
                await asyncio.to_thread(handle.seek, start)
            position = start
            held: bytes | None = None  # the last chunk waits for the final check
            while position < end:
                chunk = await asyncio.to_thread(handle.read, min(chunk_bytes, end - position))
                if not chunk:
                    break
                position += len(chunk)
                if held is not None:
                    yield held
                held = chunk
            is_whole = position == end and (
                seen is None or await asyncio.to_thread(self._still_same, manifest, handle, seen)
            )
            if not is_whole:
                damaged = DamagedBlob(manifest.blob, "other bytes (it changed while it was read)")
                await self._drop(manifest, damaged)
                raise damaged
            if held is not None:
                yield held
        finally:
            await asyncio.to_thread(handle.close)

    # writes

    async def begin(self, key: str) -> BlobWriter:
        """A writer for the body of ``key``; bodies over a tenth of the bound are dropped."""
        return BlobWriter(self, key, max_bytes=max(1, self.max_size_bytes // 10))

    def _temp_file(self) -> IO[bytes]:
        return tempfile.NamedTemporaryFile(dir=self._tmp, prefix="body-", delete=False)

    async def _commit(self, manifest: Manifest, body: bytes | None, path: str | None) -> None:
        await asyncio.to_thread(self._commit_sync, manifest, body, path)
        self._known.add(manifest.key)
        self._keep_manifest(manifest)
        if body is not None:
            self._remember(manifest.key, manifest, body)
        else:
            self._forget(manifest.key)

    def _commit_sync(self, manifest: Manifest, body: bytes | None, path: str | None) -> None:
        db = self._db
        blob_key = ("blob", manifest.blob)
        if blob_key not in db:
            if body is not None:
                # A file of its own, however small (read=True): a hit reads it by its
                # verified fingerprint without a database row (Store.get, _read_nowait).
                db.set(blob_key, io.BytesIO(body), read=True)
            else:
                if path is None:
                    raise StoreError(f"{manifest.key}: blob {manifest.blob} is not stored")
                with open(path, "rb") as handle:
                    db.set(blob_key, handle, read=True)
        with db.transact():
            db.set(("manifest", manifest.key), manifests.encode(manifest))
            for tag in manifest.tags:
                keys = set(db.get(("tag", tag), ()))
                if manifest.key not in keys:
                    keys.add(manifest.key)
                    db.set(("tag", tag), tuple(sorted(keys)))

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
        await asyncio.to_thread(self._db.set, ("manifest", key), manifests.encode(manifest))
        self._keep_manifest(manifest)
        hot = self._memory.get(key)
        if hot is not None:
            self._memory[key] = (manifest, hot[1])

    # purge

    async def delete(self, key: str) -> bool:
        self._forget(key)
        self._manifests.pop(key, None)
        self._known.discard(key)
        deleted: bool = await asyncio.to_thread(self._db.delete, ("manifest", key))
        return deleted

    async def keys(self) -> list[str]:
        return await asyncio.to_thread(self._keys_sync)

    async def usage(self) -> StoreUsage:
        """Sizes for metrics: the disk (shared by the node's workers) and this memory tier."""
        disk_bytes, disk_items = await asyncio.to_thread(
            lambda: (int(self._db.volume()), len(self._db))
        )
        return StoreUsage(
            disk_bytes=disk_bytes,
            disk_items=disk_items,
            memory_bytes=self._memory_bytes,
            memory_entries=len(self._memory),
            memory_evictions=self.memory_evictions,
        )

    def _keys_sync(self) -> list[str]:
        return sorted(
            k[1] for k in self._db.iterkeys() if isinstance(k, tuple) and k[0] == "manifest"
        )

    async def purge_keys(self, keys: Iterable[str], *, soft: bool = False) -> int:
        count = 0
        for key in keys:
            count += await (self._soften(key) if soft else self.delete(key))
        return count

    async def purge_tags(self, tags: Iterable[str], *, soft: bool = False) -> int:
        keys: set[str] = set()
        for tag in tags:
            keys.update(await asyncio.to_thread(self._db.get, ("tag", tag), ()))
            if not soft:
                await asyncio.to_thread(self._db.delete, ("tag", tag))
        return await self.purge_keys(sorted(keys), soft=soft)

    async def _soften(self, key: str) -> bool:
        raw = await asyncio.to_thread(self._db.get, ("manifest", key))
        if raw is None:
            return False
        try:
            manifest = manifests.replace(manifests.decode(raw), is_soft_purged=True)
        except StoreError:  # unreadable: it cannot be revalidated, so it goes
            return await self.delete(key)
        await self.update_manifest(key, manifest)
        return True

    async def check(self) -> list[str]:
        """Every problem of the store: manifests naming missing or damaged blobs."""
        return await asyncio.to_thread(self._check_sync)

    def _check_sync(self) -> list[str]:
        problems = []
        for key in self._keys_sync():
            raw = self._db.get(("manifest", key))
            try:
                manifest = manifests.decode(raw)
            except StoreError as exc:
                problems.append(f"{key}: {exc}")
                continue
            handle = self._open_blob(manifest.blob)
            if handle is None:
                problems.append(f"{key}: blob {manifest.blob} missing")
                continue
            with handle:
                try:
                    _check_hash(handle, manifest)  # always hashes: fingerprints not trusted
                except DamagedBlob:
                    problems.append(f"{key}: blob {manifest.blob} damaged")
        return problems

    # memory tier

    def _remember(self, key: str, manifest: Manifest, body: bytes) -> None:
        if len(body) > self.memory_entry_max_bytes or len(body) > self.memory_max_bytes:
            return
        self._forget(key)
        self._memory[key] = (manifest, body)
        self._memory_bytes += len(body)
        while self._memory_bytes > self.memory_max_bytes:
            _, (_, evicted) = self._memory.popitem(last=False)
            self._memory_bytes -= len(evicted)
            self.memory_evictions += 1

    def _forget(self, key: str) -> None:
        hot = self._memory.pop(key, None)
        if hot is not None:
            self._memory_bytes -= len(hot[1])

    async def alias(self, manifest: Manifest) -> None:
        """Store ``manifest`` under its own key, naming a blob that is stored already (one
        variant of a response under its secondary key, RFC 9111 §4.1)."""
        await asyncio.to_thread(self._commit_sync, manifest, None, None)
        self._known.add(manifest.key)
        self._forget(manifest.key)
        self._keep_manifest(manifest)

    # compressed variants (see _Variants below)

    @functools.cached_property
    def _variants(self) -> _Variants:
        # A quarter of the memory tier's bound: variants are smaller than their bodies.
        return _Variants(self.memory_max_bytes // 4, self.memory_entry_max_bytes)

    @property
    def variants_made(self) -> int:
        """How many variants this process has compressed (not found stored)."""
        return self._variants.made

    async def get_variant(self, digest: str, encoding: str) -> bytes | None:
        """The stored variant of blob ``digest`` in ``encoding``, verified; None if none.

        A variant whose bytes do not hash to the name it was stored under is removed and
        is a miss, like a damaged blob.
        """
        encoding = str(encoding)  # a str enum would be stored as its class
        key = (digest, encoding)
        hot = self._variants.recall(key)  # fast: a dict lookup
        if hot is not None:
            return hot
        data = await asyncio.to_thread(self._get_variant_sync, digest, encoding)
        if data is not None:
            self._variants.remember(key, data)
        return data

    async def put_variant(self, digest: str, encoding: str, data: bytes) -> None:
        """Store ``data`` as blob ``digest`` in ``encoding``; over VARIANT_MAX_BYTES it is not."""
        if len(data) > VARIANT_MAX_BYTES:
            return
        encoding = str(encoding)
        await asyncio.to_thread(self._put_variant_sync, digest, encoding, data)
        self._variants.remember((digest, encoding), data)

    async def make_variant(
        self,
        manifest: Manifest,
        encoding: str,
        make: Callable[[bytes], bytes],
        *,
        identity: bytes | None = None,
    ) -> bytes:
        """The body of ``manifest`` in ``encoding``: the stored variant, else ``make`` of it.

        Compress once: concurrent callers for one (blob, encoding) share one ``make``,
        which runs in a thread (br at its best level costs about 1 ms per KiB; a thread
        hop costs far less than that, and it happens once per variant), reads the body
        when ``identity`` is not given, and stores the result before anyone gets it.
        Cancel-safe: a caller that leaves does not stop the work, which others await.

        Args:
            identity: the verified body when the caller has it in memory.

        Raises:
            DamagedBlob, StoreError: the body is damaged or gone; its entry is removed.
            ValueError: the body is over VARIANT_MAX_BYTES (compress it as it streams).
        """
        if manifest.size > VARIANT_MAX_BYTES:
            raise ValueError(
                f"a body of {manifest.size} bytes is over the variant bound "
                f"of {VARIANT_MAX_BYTES} bytes: compress it as it streams"
            )
        encoding = str(encoding)
        key = (manifest.blob, encoding)
        found = await self.get_variant(manifest.blob, encoding)
        if found is not None:
            return found
        flight = self._variants.flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().run_in_executor(
                None, self._make_variant_sync, manifest, encoding, make, identity
            )
            self._variants.flights[key] = flight
            flight.add_done_callback(functools.partial(self._variants.landed, key))
        try:
            return await asyncio.shield(flight)
        except (DamagedBlob, StoreError):
            await self.delete(manifest.key)
            raise

    def _make_variant_sync(
        self,
        manifest: Manifest,
        encoding: str,
        make: Callable[[bytes], bytes],
        identity: bytes | None,
    ) -> bytes:
        stored = self._get_variant_sync(manifest.blob, encoding)
        if stored is not None:  # made by another process, or just before this flight
            return stored
        if identity is None:
            identity = self._read_verified(manifest.blob, manifest.size)
        data = make(identity)
        with self._variants.lock:
            self._variants.made += 1
        if len(data) <= VARIANT_MAX_BYTES:
            self._put_variant_sync(manifest.blob, encoding, data)
        return data

    def _read_verified(self, digest: str, size: int) -> bytes:
        value = self._db.get(("blob", digest))
        if value is None:
            raise StoreError(f"blob {digest} is gone (evicted)")
        data = bytes(value)
        actual = digest_of(data)
        if actual != digest or len(data) != size:
            self._db.delete(("blob", digest))
            raise DamagedBlob(digest, actual)
        return data

    def _get_variant_sync(self, digest: str, encoding: str) -> bytes | None:
        db = self._db
        name = db.get(("variant", digest, encoding))
        if name is None:
            return None
        value = db.get(("blob", name))
        if value is None:  # its blob was evicted first
            db.delete(("variant", digest, encoding))
            return None
        data = bytes(value)
        if digest_of(data) != name:
            log.error("variant %s of blob %s dropped: damaged", encoding, digest)
            db.delete(("blob", name))
            db.delete(("variant", digest, encoding))
            return None
        return data

    def _put_variant_sync(self, digest: str, encoding: str, data: bytes) -> None:
        # Like a manifest: the blob (named by its own hash) first, then the row naming it.
        name = digest_of(data)
        db = self._db
        if ("blob", name) not in db:
            db.set(("blob", name), data)
        db.set(("variant", digest, encoding), name)

    async def check_variants(self) -> list[str]:
        """Every problem of the stored variants: rows naming missing or damaged blobs."""
        return await asyncio.to_thread(self._check_variants_sync)

    def _check_variants_sync(self) -> list[str]:
        problems = []
        for key in list(self._db.iterkeys()):
            if not (isinstance(key, tuple) and len(key) == 3 and key[0] == "variant"):
                continue
            name = self._db.get(key)
            value = self._db.get(("blob", name)) if name is not None else None
            if value is None:
                problems.append(f"variant {key[2]} of {key[1]}: blob {name} missing")
            elif digest_of(bytes(value)) != name:
                problems.append(f"variant {key[2]} of {key[1]}: blob {name} damaged")
        return problems


# Compressed variants. A stored body keeps its identity blob; its variant in a content
# coding (made by weaver.proxy.compress, which this layer does not import) is a blob of
# its own, named by its own hash, and the row ``("variant", digest, encoding)`` names it.
# Rows and blobs are evicted like the rest; a row whose blob is gone is a miss.

# A variant is stored up to this size; larger bodies are compressed as they stream.
VARIANT_MAX_BYTES = 8 * 1024 * 1024


class _Variants:
    """Variants in memory (bounded, least recently used out), and the makes in flight."""

    def __init__(self, max_bytes: int, entry_max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entry_max_bytes = entry_max_bytes
        self.memory: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self.memory_bytes = 0
        self.flights: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self.made = 0  # under lock: counted in the worker thread
        self.lock = threading.Lock()

    def recall(self, key: tuple[str, str]) -> bytes | None:
        data = self.memory.get(key)
        if data is not None:
            self.memory.move_to_end(key)
        return data

    def remember(self, key: tuple[str, str], data: bytes) -> None:
        if len(data) > self.entry_max_bytes or len(data) > self.max_bytes:
            return
        old = self.memory.pop(key, None)
        if old is not None:
            self.memory_bytes -= len(old)
        self.memory[key] = data
        self.memory_bytes += len(data)
        while self.memory_bytes > self.max_bytes:
            _, evicted = self.memory.popitem(last=False)
            self.memory_bytes -= len(evicted)

    def landed(self, key: tuple[str, str], flight: asyncio.Future[bytes]) -> None:
        """A make ended: keep its result at hand, and let the next miss start another."""
        if self.flights.get(key) is flight:
            del self.flights[key]
        if flight.cancelled():
            return
        if flight.exception() is None:  # its awaiters get the exception, if any
            self.remember(key, flight.result())


async def variant_of_entry(entry: Entry, encoding: str, make: Callable[[bytes], bytes]) -> bytes:
    """:meth:`Store.make_variant` of a found entry, with its body when it is in memory."""
    return await entry._store.make_variant(entry.manifest, encoding, make, identity=entry.whole)
