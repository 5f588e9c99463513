"""Blobs: bodies named by their hash, written while they stream and verified on read.

A blob is named by the BLAKE2b-256 of its bytes and stored once however many manifests
name it. :class:`BlobWriter` hashes a body while it streams (spilling to a temporary
file past ``SPILL_BYTES``); :class:`BlobFiles` opens stored blobs and proves their bytes
before any is served.

Integrity: a damaged blob is never served as a whole body. How it is found depends on
the size:

- Bodies up to the store's ``memory_entry_max_bytes`` are read whole and hashed on every
  read from disk (a 20 KiB hash is ~20 µs of a ~150 µs disk hit); the memory tier then
  holds those verified bytes and serves them without touching the disk. A blob damaged
  on disk under a memory-tier entry is therefore not served (the verified copy is), but
  it is found only when the entry next comes from disk (memory eviction, another worker,
  a restart) or by the store's ``check()``.
- Larger bodies are files, hashed in full once per process, then checked on every open by
  their fingerprint (path, device, inode, size, mtime, ctime from ``fstat`` of the open
  file): the same fingerprint skips the hash, another one hashes the file again before
  a byte is sent. Restoring mtime (``os.utime``) does not hide a change: utime sets
  ctime, which user space cannot set back. The fingerprint is taken again before the
  last chunk of every read, so a file changed while it streamed gives no whole body.
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

Hits of small verified blobs read on the loop (:meth:`BlobFiles.read_nowait`) from
files kept open (``MAX_OPEN_FILES``): ``bench_hit``, 20 KiB disk-tier hit, server CPU per
request 49-52 → 38-45 µs (memory tier 28-40 µs; load 3-8, 2 cores): the open and close
per hit were about a fifth of it; fstat, the read and two copies of the body remain.
The open descriptor is checked by ``fstat`` on every read, as above.

Everything here blocks except :meth:`BlobWriter.write` (threads) and the calls named
"fast"; the store calls the rest through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import diskcache

from weaver.cache import manifest as manifests
from weaver.cache.errors import DamagedBlob, StoreError
from weaver.cache.manifest import Manifest

CHUNK_BYTES = 64 * 1024
# A writer keeps this much in memory before it spills to a temporary file.
SPILL_BYTES = 1024 * 1024
# Blob files whose bytes this process hashed, with their fingerprint; bounded, oldest dropped.
MAX_VERIFIED = 4096
# Small verified blob files kept open for hits (no open and close per hit); least recently
# read closed first. Each holds a file descriptor, and a deleted file's space until closed.
MAX_OPEN_FILES = 128
# Linux 4.14+: a read that fails instead of waiting for the disk.
HAS_NOWAIT = hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")
# A fingerprint is trusted only if the file's ctime is older than this when it is taken:
# ctime comes from the kernel's coarse clock (a tick of 1-10 ms), so a write in the same
# tick as the verified one would leave ctime unchanged ("racy git" has the same rule).
RACY_NS = 1_000_000_000


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


def fingerprint(handle: IO[bytes]) -> Fingerprint | None:
    """The open file's fingerprint; None for a blob held in the database (no file)."""
    if isinstance(handle, io.BytesIO):
        return None
    stat = os.fstat(handle.fileno())
    return Fingerprint(
        handle.name, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns
    )


def check_hash(handle: IO[bytes], manifest: Manifest) -> None:
    """Raises DamagedBlob unless the rest of ``handle`` is the manifest's body."""
    hasher = hashlib.blake2b(digest_size=32)
    size = 0
    while chunk := handle.read(CHUNK_BYTES * 16):
        hasher.update(chunk)
        size += len(chunk)
    if hasher.hexdigest() != manifest.blob or size != manifest.size:
        raise DamagedBlob(manifest.blob, hasher.hexdigest())


class BlobSink(Protocol):
    """Where a :class:`BlobWriter` spills and commits (the store)."""

    def temp_file(self) -> IO[bytes]: ...

    async def commit_blob(self, manifest: Manifest, body: bytes | None, path: str | None) -> None:
        """Store the blob (``body``, or the file at ``path``), then ``manifest``."""
        ...


class BlobWriter:
    """Writes one body while it streams; :meth:`commit` stores it, :meth:`abort` drops it."""

    def __init__(self, sink: BlobSink, key: str, max_bytes: int) -> None:
        self.key = key
        self.size = 0
        self.is_too_big = False
        self._sink = sink
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
            self._file = await asyncio.to_thread(self._sink.temp_file)
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
                await self._sink.commit_blob(stored, bytes(self._buffer), None)
            else:
                await asyncio.to_thread(self._file.flush)
                await self._sink.commit_blob(stored, None, self._file.name)
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


class BlobFiles:
    """Stored blobs, opened and proven: the fingerprints this process has verified.

    Args:
        db: the store's open diskcache (raises StoreError when it is closed).
        clock_ns: the real wall clock, for the racy-fingerprint rule (compared with the
            kernel's ctime, so never a test's manual clock; tests move it on).
    """

    def __init__(self, db: Callable[[], diskcache.Cache], clock_ns: Callable[[], int]) -> None:
        self._db = db
        self._clock_ns = clock_ns
        self._verified: OrderedDict[str, Fingerprint] = OrderedDict()  # under _lock
        # Open descriptors of verified small blobs, with the fingerprint they were opened
        # for (under _lock, which is also held while one is read, so that no other thread
        # closes a descriptor in use).
        self._files: OrderedDict[str, tuple[int, Fingerprint]] = OrderedDict()
        self._lock = threading.Lock()
        self.can_read_nowait = HAS_NOWAIT

    def open(self, digest: str) -> IO[bytes] | None:
        """A reader of the blob; diskcache gives small (in-database) values as bytes."""
        value = self._db().get(("blob", digest), read=True)
        if value is None:
            return None
        if isinstance(value, bytes):
            return io.BytesIO(value)
        handle: IO[bytes] = value
        return handle

    def open_verified(self, manifest: Manifest) -> tuple[IO[bytes], Fingerprint | None]:
        """The blob, open at its start, its bytes known to hash to its name, and the
        open file's fingerprint (None for a blob held in the database).

        Hashes the whole blob unless this open file has the fingerprint it had when this
        process last hashed it (see the module docstring).

        Raises:
            DamagedBlob: the bytes do not hash to the blob's name (or the size differs).
            StoreError: the blob is gone (evicted).
        """
        now_ns = self._clock_ns()
        handle = self.open(manifest.blob)
        if handle is None:
            raise StoreError(f"blob {manifest.blob} is gone (evicted)")
        try:
            seen = fingerprint(handle)
            with self._lock:
                is_known = seen is not None and self._verified.get(manifest.blob) == seen
            if is_known:
                return handle, seen
            if seen is not None and seen.size != manifest.size:
                raise DamagedBlob(manifest.blob, f"a file of {seen.size} bytes")
            check_hash(handle, manifest)
            handle.seek(0)
            if seen is not None and now_ns - seen.ctime_ns > RACY_NS:
                self.trust(manifest.blob, seen)
        except Exception:
            handle.close()
            raise
        return handle, seen

    def read_small(self, manifest: Manifest) -> bytes:
        """A small body whole, verified as :meth:`open_verified` does (hashed once per
        process and fingerprint for a file; every time for a blob inside the database)."""
        handle, _ = self.open_verified(manifest)
        with handle:
            data = handle.read()
        if len(data) != manifest.size:
            raise DamagedBlob(manifest.blob, f"{len(data)} bytes")
        return data

    def read_nowait(self, manifest: Manifest) -> bytes | None:
        """The body of a small blob this process verified, read on the loop without
        blocking, else None (then the caller reads in a thread, hashing if needed).

        The file stays open between hits (at most ``MAX_OPEN_FILES``); every read first
        compares ``fstat`` of the open descriptor with the verified fingerprint (a write
        changes ctime; a deleted or replaced file has no link left), then reads with
        ``RWF_NOWAIT``, so that bytes not in the page cache give None instead of a wait.
        Fast: one ``fstat`` and one non-blocking read (an ``open`` the first time)."""
        if not self.can_read_nowait:
            return None
        with self._lock:
            seen = self._verified.get(manifest.blob)
            if seen is None or seen.size != manifest.size:
                return None
            try:
                fd = self._open_file(manifest.blob, seen)
                stat = os.fstat(fd)
                if stat.st_nlink == 0 or (
                    stat.st_dev,
                    stat.st_ino,
                    stat.st_size,
                    stat.st_mtime_ns,
                    stat.st_ctime_ns,
                ) != (seen.device, seen.inode, seen.size, seen.mtime_ns, seen.ctime_ns):
                    self._close_file(manifest.blob)  # the thread path hashes it again
                    return None
                buffer = bytearray(manifest.size)
                if os.preadv(fd, [buffer], 0, os.RWF_NOWAIT) != manifest.size:
                    return None
            except OSError as exc:  # EAGAIN: not in the page cache; the thread path reads it
                if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                    self.can_read_nowait = False  # this file system cannot: stop trying
                if exc.errno != errno.EAGAIN:
                    self._close_file(manifest.blob)
                return None
        return bytes(buffer)

    def _open_file(self, digest: str, seen: Fingerprint) -> int:
        """The open descriptor of ``digest``'s file as verified (``seen``); under _lock."""
        held = self._files.get(digest)
        if held is not None:
            if held[1] == seen:
                self._files.move_to_end(digest)
                return held[0]
            self._close_file(digest)  # verified again since: another file, maybe
        fd = os.open(seen.path, os.O_RDONLY | os.O_CLOEXEC)
        self._files[digest] = (fd, seen)
        while len(self._files) > MAX_OPEN_FILES:
            os.close(self._files.popitem(last=False)[1][0])
        return fd

    def _close_file(self, digest: str) -> None:
        """Close ``digest``'s descriptor if one is open; under _lock."""
        held = self._files.pop(digest, None)
        if held is not None:
            os.close(held[0])

    def close_files(self) -> None:
        """Close every descriptor kept open for hits (the store closes)."""
        with self._lock:
            while self._files:
                os.close(self._files.popitem()[1][0])

    def read_verified(self, digest: str, size: int) -> bytes:
        """A blob's bytes whole, hashed now; a damaged blob is deleted.

        Raises:
            DamagedBlob: its bytes do not hash to ``digest`` (or are not ``size`` long).
            StoreError: it is gone (evicted).
        """
        db = self._db()
        value = db.get(("blob", digest))
        if value is None:
            raise StoreError(f"blob {digest} is gone (evicted)")
        data = bytes(value)
        actual = digest_of(data)
        if actual != digest or len(data) != size:
            db.delete(("blob", digest))
            raise DamagedBlob(digest, actual)
        return data

    def still_same(self, manifest: Manifest, handle: IO[bytes], seen: Fingerprint) -> bool:
        """After a stream: True if the file did not change, or changed but hashes right."""
        if fingerprint(handle) == seen:
            return True
        handle.seek(0)
        try:
            check_hash(handle, manifest)
        except DamagedBlob:
            return False
        self.distrust(manifest.blob)  # re-hashed on its next open
        return True

    def trust(self, digest: str, seen: Fingerprint) -> None:
        with self._lock:
            self._verified[digest] = seen
            self._verified.move_to_end(digest)
            while len(self._verified) > MAX_VERIFIED:
                self._close_file(self._verified.popitem(last=False)[0])

    def put_sync(self, manifest: Manifest, body: bytes | None, path: str | None) -> None:
        """Store the blob ``manifest`` names, from ``body`` or the file at ``path``, unless
        it is stored already (bodies are stored once however many manifests name them)."""
        db = self._db()
        blob_key = ("blob", manifest.blob)
        if blob_key in db:
            return
        if body is not None:
            # A file of its own, however small (read=True): a hit reads it by its
            # verified fingerprint without a database row (read_nowait).
            db.set(blob_key, io.BytesIO(body), read=True)
            return
        if path is None:
            raise StoreError(f"{manifest.key}: blob {manifest.blob} is not stored")
        with open(path, "rb") as handle:
            db.set(blob_key, handle, read=True)

    def drop_sync(self, digest: str) -> None:
        """Delete a damaged blob (every manifest naming it misses on its next read)."""
        self.distrust(digest)
        self._db().delete(("blob", digest))

    def distrust(self, digest: str) -> None:
        """Hash ``digest`` again on its next open."""
        with self._lock:
            self._verified.pop(digest, None)
            self._close_file(digest)
