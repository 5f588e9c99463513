"""Reading a large blob from disk as a stream whose every byte is proven.

The file is opened and verified in a thread (:meth:`BlobFiles.open_verified`), read in
chunks in threads, and checked again after the last byte (:meth:`BlobFiles.still_same`):
the last chunk is held back until then, so a reader never gets a whole body that changed
under it. Whatever the thread opens is owned: a caller cancelled while a thread is
opening or reading still gets the file closed, never left to the garbage collector.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import IO

from weaver.cache.blobs import BlobFiles, Fingerprint
from weaver.cache.errors import DamagedBlob
from weaver.cache.manifest import Manifest

Opened = tuple[IO[bytes], Fingerprint | None]


async def open_owned(blobs: BlobFiles, manifest: Manifest) -> Opened:
    """:meth:`BlobFiles.open_verified` in a thread; if the caller is cancelled meanwhile
    (the thread cannot be stopped), the file is closed once the thread has opened it."""
    opening = asyncio.get_running_loop().run_in_executor(None, blobs.open_verified, manifest)
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)
        raise


def _close_opened(opening: asyncio.Future[Opened]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result()[0].close()


async def stream_blob(
    blobs: BlobFiles,
    manifest: Manifest,
    opened: Opened,
    chunk_bytes: int,
    start: int,
    end: int,
    on_damaged: Callable[[DamagedBlob], Awaitable[None]],
) -> AsyncGenerator[bytes, None]:
    """``opened`` (from :func:`open_owned`) from ``start`` to ``end``; closes it.

    Raises:
        DamagedBlob: the file changed while it was read (after ``on_damaged`` ran),
            instead of the last chunk.
    """
    handle, seen = opened
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
            seen is None or await asyncio.to_thread(blobs.still_same, manifest, handle, seen)
        )
        if not is_whole:
            damaged = DamagedBlob(manifest.blob, "other bytes (it changed while it was read)")
            await on_damaged(damaged)
            raise damaged
        if held is not None:
            yield held
    finally:
        await asyncio.shield(asyncio.to_thread(handle.close))
