"""Compressed variants of stored bodies: made once, stored by their own hash.

A stored body keeps its identity blob; its variant in a content coding (made by
weaver.proxy.compressors, which this layer does not import: the maker is passed in) is a
blob of its own, named by its own hash, and the row ``("variant", digest, encoding)``
names it. Rows and blobs are evicted like the rest; a row whose blob is gone is a miss.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import diskcache

from weaver.cache.blobs import BlobFiles, digest_of
from weaver.cache.errors import DamagedBlob, StoreError
from weaver.cache.manifest import Manifest

log = logging.getLogger(__name__)

# A variant is stored up to this size; larger bodies are compressed as they stream.
VARIANT_MAX_BYTES = 8 * 1024 * 1024


class _Memory:
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


class Variants:
    """The variants of one store.

    Args:
        db: the store's open diskcache.
        blobs: reads identity bodies, verified.
        memory_max_bytes, entry_max_bytes: the bound of the variants kept in memory.
        on_damaged: called with the key of an entry whose body is damaged or gone.
    """

    def __init__(
        self,
        db: Callable[[], diskcache.Cache],
        blobs: BlobFiles,
        *,
        memory_max_bytes: int,
        entry_max_bytes: int,
        on_damaged: Callable[[str], Awaitable[object]],
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._on_damaged = on_damaged
        self._memory = _Memory(memory_max_bytes, entry_max_bytes)

    @property
    def made(self) -> int:
        """How many variants this process has compressed (not found stored)."""
        return self._memory.made

    async def get(self, digest: str, encoding: str) -> bytes | None:
        """The stored variant of blob ``digest`` in ``encoding``, verified; None if none.

        A variant whose bytes do not hash to the name it was stored under is removed and
        is a miss, like a damaged blob.
        """
        encoding = str(encoding)  # a str enum would be stored as its class
        key = (digest, encoding)
        hot = self._memory.recall(key)  # fast: a dict lookup
        if hot is not None:
            return hot
        data = await asyncio.to_thread(self._get_sync, digest, encoding)
        if data is not None:
            self._memory.remember(key, data)
        return data

    async def put(self, digest: str, encoding: str, data: bytes) -> None:
        """Store ``data`` as blob ``digest`` in ``encoding``; over VARIANT_MAX_BYTES it is not."""
        if len(data) > VARIANT_MAX_BYTES:
            return
        encoding = str(encoding)
        await asyncio.to_thread(self._put_sync, digest, encoding, data)
        self._memory.remember((digest, encoding), data)

    async def make(
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
        found = await self.get(manifest.blob, encoding)
        if found is not None:
            return found
        flight = self._memory.flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().run_in_executor(
                None, self._make_sync, manifest, encoding, make, identity
            )
            self._memory.flights[key] = flight
            flight.add_done_callback(functools.partial(self._memory.landed, key))
        try:
            return await asyncio.shield(flight)
        except (DamagedBlob, StoreError):
            await self._on_damaged(manifest.key)
            raise

    def _make_sync(
        self,
        manifest: Manifest,
        encoding: str,
        make: Callable[[bytes], bytes],
        identity: bytes | None,
    ) -> bytes:
        stored = self._get_sync(manifest.blob, encoding)
        if stored is not None:  # made by another process, or just before this flight
            return stored
        if identity is None:
            identity = self._blobs.read_verified(manifest.blob, manifest.size)
        data = make(identity)
        with self._memory.lock:
            self._memory.made += 1
        if len(data) <= VARIANT_MAX_BYTES:
            self._put_sync(manifest.blob, encoding, data)
        return data

    def _get_sync(self, digest: str, encoding: str) -> bytes | None:
        db = self._db()
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

    def _put_sync(self, digest: str, encoding: str, data: bytes) -> None:
        # Like a manifest: the blob (named by its own hash) first, then the row naming it.
        name = digest_of(data)
        db = self._db()
        if ("blob", name) not in db:
            db.set(("blob", name), data)
        db.set(("variant", digest, encoding), name)

    async def check(self) -> list[str]:
        """Every problem of the stored variants: rows naming missing or damaged blobs."""
        return await asyncio.to_thread(self._check_sync)

    def _check_sync(self) -> list[str]:
        db = self._db()
        problems = []
        for key in list(db.iterkeys()):
            if not (isinstance(key, tuple) and len(key) == 3 and key[0] == "variant"):
                continue
            name = db.get(key)
            value = db.get(("blob", name)) if name is not None else None
            if value is None:
                problems.append(f"variant {key[2]} of {key[1]}: blob {name} missing")
            elif digest_of(bytes(value)) != name:
                problems.append(f"variant {key[2]} of {key[1]}: blob {name} damaged")
        return problems
