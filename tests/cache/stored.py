"""What the cache's tests store and read back: a plain manifest, a body whole."""

from __future__ import annotations

from weaver.cache.freshness import Freshness
from weaver.cache.manifest import Manifest
from weaver.cache.store import Store


def manifest(key: str, *, tags: tuple[str, ...] = ()) -> Manifest:
    return Manifest(
        key=key,
        status=200,
        headers=(("Content-Type", "text/html"),),
        blob="",
        size=0,
        freshness=Freshness(stored_at=1.0, initial_age_s=0.0, lifetime_s=60.0),
        tags=tags,
    )


async def read(store: Store, key: str) -> bytes | None:
    entry = await store.get(key)
    if entry is None:
        return None
    return b"".join([chunk async for chunk in entry.body()])
