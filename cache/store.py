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

Every read verifies the hash; a damaged blob is removed with its manifest and is a miss.
Blocking calls run in ``asyncio.to_thread``; the calls made on the loop are named
"fast" where they are: memory-tier lookups and unlinking a temporary file.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
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
# Digests whose (large) blobs were verified in this process; bounded, oldest dropped.
MAX_VERIFIED = 4096


def digest_of(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


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
            DamagedBlob: a large blob changed on disk since it was verified; the entry
                is removed. Bytes already yielded cannot be taken back: the caller
                aborts the response so the client sees a broken body, not a whole one.
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
        memory_entry_max_bytes: bodies up to this size are verified whole before they
            are served, and may live in the memory tier.
    """

    def __init__(
        self,
        directory: str,
        *,
        max_size_bytes: int,
        memory_max_bytes: int = 64 * 1024 * 1024,
        memory_entry_max_bytes: int = 256 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.max_size_bytes = max_size_bytes
        self.memory_max_bytes = memory_max_bytes
        self.memory_entry_max_bytes = memory_entry_max_bytes
        self._cache: diskcache.Cache | None = None
        self._memory: OrderedDict[str, tuple[Manifest, bytes]] = OrderedDict()
        self._memory_bytes = 0
        self._verified: OrderedDict[str, None] = OrderedDict()  # under _verified_lock
        self._verified_lock = threading.Lock()
        # Keys this process knows are stored: a key not here is a miss without a disk
        # lookup. Entries other worker processes store are not here (they are refilled
        # by this one); keys purged elsewhere are, and their lookup then misses.
        self._known: set[str] = set()

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)
        self._known = set(await self.keys())

    def _open_sync(self) -> None:
        tmp = self.directory / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        for leftover in tmp.iterdir():  # temporary bodies of writes a crash cut short
            leftover.unlink(missing_ok=True)
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
        found = await asyncio.to_thread(self._get_sync, key)
        if found is None:
            self._known.discard(key)
            return None
        manifest, body = found
        if body is not None:
            self._remember(key, manifest, body)
        return Entry(self, manifest, body)

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
            self._verify_large(manifest)
        except (DamagedBlob, StoreError) as exc:
            log.error("cache entry %s dropped: %s", key, exc)
            self._db.delete(("blob", manifest.blob))
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
        body = self._db.get(("blob", manifest.blob))
        if body is None:
            raise StoreError(f"blob {manifest.blob} is gone (evicted)")
        data = bytes(body)
        actual = digest_of(data)
        if actual != manifest.blob or len(data) != manifest.size:
            raise DamagedBlob(manifest.blob, actual)
        return data

    def _verify_large(self, manifest: Manifest) -> None:
        with self._verified_lock:
            if manifest.blob in self._verified:
                return
        handle = self._open_blob(manifest.blob)
        if handle is None:
            raise StoreError(f"blob {manifest.blob} is gone (evicted)")
        hasher = hashlib.blake2b(digest_size=32)
        size = 0
        with handle:
            while chunk := handle.read(CHUNK_BYTES * 16):
                hasher.update(chunk)
                size += len(chunk)
        if hasher.hexdigest() != manifest.blob or size != manifest.size:
            raise DamagedBlob(manifest.blob, hasher.hexdigest())
        with self._verified_lock:
            self._verified[manifest.blob] = None
            while len(self._verified) > MAX_VERIFIED:
                self._verified.popitem(last=False)

    async def _stream(
        self, manifest: Manifest, chunk_bytes: int, start: int, end: int
    ) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(self._open_blob, manifest.blob)
        if handle is None:
            raise StoreError(f"blob {manifest.blob} is gone (evicted)")
        is_whole = start == 0 and end == manifest.size
        hasher = hashlib.blake2b(digest_size=32) if is_whole else None
        try:
            if start:
                await asyncio.to_thread(handle.seek, start)
            position = start
            while position < end:
                chunk = await asyncio.to_thread(handle.read, min(chunk_bytes, end - position))
                if not chunk:
                    break
                position += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)
        if hasher is not None and hasher.hexdigest() != manifest.blob:
            await self.delete(manifest.key)
            with self._verified_lock:
                self._verified.pop(manifest.blob, None)
            raise DamagedBlob(manifest.blob, hasher.hexdigest())

    # writes

    async def begin(self, key: str) -> BlobWriter:
        """A writer for the body of ``key``; bodies over a tenth of the bound are dropped."""
        return BlobWriter(self, key, max_bytes=max(1, self.max_size_bytes // 10))

    def _temp_file(self) -> IO[bytes]:
        return tempfile.NamedTemporaryFile(dir=self.directory / "tmp", prefix="body-", delete=False)

    async def _commit(self, manifest: Manifest, body: bytes | None, path: str | None) -> None:
        await asyncio.to_thread(self._commit_sync, manifest, body, path)
        self._known.add(manifest.key)
        if body is not None:
            self._remember(manifest.key, manifest, body)
        else:
            self._forget(manifest.key)

    def _commit_sync(self, manifest: Manifest, body: bytes | None, path: str | None) -> None:
        db = self._db
        blob_key = ("blob", manifest.blob)
        if blob_key not in db:
            if body is not None:
                db.set(blob_key, body)
            else:
                assert path is not None
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
        hot = self._memory.get(key)
        if hot is not None:
            self._memory[key] = (manifest, hot[1])

    # purge

    async def delete(self, key: str) -> bool:
        self._forget(key)
        self._known.discard(key)
        deleted: bool = await asyncio.to_thread(self._db.delete, ("manifest", key))
        return deleted

    async def keys(self) -> list[str]:
        return await asyncio.to_thread(self._keys_sync)

    def _keys_sync(self) -> list[str]:
        return sorted(
            k[1] for k in self._db.iterkeys() if isinstance(k, tuple) and k[0] == "manifest"
        )

    async def purge_keys(self, keys: Iterable[str], *, soft: bool = False) -> int:
        count = 0
        for key in keys:
            count += await (self._soften(key) if soft else self.delete(key))
        return count

    async def purge_prefix(self, predicate_prefix: str, *, soft: bool = False) -> int:
        """Purge every key starting with ``predicate_prefix``."""
        keys = [k for k in await self.keys() if k.startswith(predicate_prefix)]
        return await self.purge_keys(keys, soft=soft)

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
        manifest = manifests.replace(manifests.decode(raw), is_soft_purged=True)
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
                data = handle.read()
            if digest_of(data) != manifest.blob or len(data) != manifest.size:
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

    def _forget(self, key: str) -> None:
        hot = self._memory.pop(key, None)
        if hot is not None:
            self._memory_bytes -= len(hot[1])

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
