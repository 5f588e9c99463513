"""A stored response found in the store: its manifest, and its body from memory or disk."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

from weaver.cache.blobs import CHUNK_BYTES
from weaver.cache.manifest import Manifest


class Bodies(Protocol):
    """Where an entry's body comes from (the store)."""

    def stream(
        self, manifest: Manifest, chunk_bytes: int, start: int, end: int
    ) -> AsyncGenerator[bytes, None]: ...

    async def make_variant(
        self,
        manifest: Manifest,
        encoding: str,
        make: Callable[[bytes], bytes],
        *,
        identity: bytes | None = None,
    ) -> bytes: ...


class Entry:
    """A stored response found by :meth:`Store.get`: its manifest and its body."""

    def __init__(self, store: Bodies, manifest: Manifest, body: bytes | None) -> None:
        self.manifest = manifest
        self._store = store
        self._body = body

    @property
    def whole(self) -> bytes | None:
        """The verified body when it is in memory (small bodies), else None: stream it."""
        return self._body

    async def body(
        self, chunk_bytes: int = CHUNK_BYTES, *, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The body (or ``[start:end]``) in chunks; small bodies were verified already.

        Raises:
            DamagedBlob: a large blob is damaged; the entry is removed. Raised before the
                first chunk when the damage was there when the file was opened; raised
                instead of the last chunk when the file changed while it was read, so a
                client never gets a whole body that was not verified: the caller aborts
                the response.
            StoreError: the blob was evicted since it was found; before any chunk.
        """
        end = self.manifest.size if end is None else end
        if self._body is not None:
            for offset in range(start, end, chunk_bytes):
                yield self._body[offset : min(end, offset + chunk_bytes)]
            return
        stream = self._store.stream(self.manifest, chunk_bytes, start, end)
        async with contextlib.aclosing(stream):  # its file closes when this body does
            async for chunk in stream:
                yield chunk


async def variant_of_entry(entry: Entry, encoding: str, make: Callable[[bytes], bytes]) -> bytes:
    """:meth:`Bodies.make_variant` of a found entry, with its body when it is in memory."""
    return await entry._store.make_variant(entry.manifest, encoding, make, identity=entry.whole)
