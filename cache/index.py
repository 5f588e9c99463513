"""The index of a store: which keys are stored, their manifests, and the keys of each tag.

Rows in the store's diskcache: ``("manifest", key)`` (the encoded manifest) and
``("tag", tag)`` (the sorted keys stored with it). This process also remembers which
keys it knows are stored (a key not among them is a miss without a disk lookup) and the
last ``MAX_MANIFESTS`` manifests it read or wrote (a disk-tier hit reads no row).

Methods ending in ``_sync`` block (the store runs them in a thread); the others are
"fast": set and dict operations on the loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import diskcache

from weaver.cache import manifest as manifests
from weaver.cache.manifest import Manifest

# Manifests kept in memory (a disk-tier hit reads no database row).
MAX_MANIFESTS = 16384


class Index:
    """Manifest and tag rows, with what this process knows of them.

    Entries other worker processes store are not among the known keys (this one refills
    them); keys purged elsewhere are, and their lookup then misses.
    """

    def __init__(self, db: Callable[[], diskcache.Cache]) -> None:
        self._db = db
        self._known: set[str] = set()
        self._manifests: OrderedDict[str, Manifest] = OrderedDict()

    # fast: this process's knowledge

    def may_hold(self, key: str) -> bool:
        """False: ``key`` is not stored (a miss without a disk lookup)."""
        return key in self._known

    def known_manifest(self, key: str) -> Manifest | None:
        return self._manifests.get(key)

    def touch(self, key: str) -> None:
        self._manifests.move_to_end(key)

    def keep(self, manifest: Manifest) -> None:
        """``manifest`` is stored (written or read): remember it, newest last."""
        self._known.add(manifest.key)
        self._manifests[manifest.key] = manifest
        self._manifests.move_to_end(manifest.key)
        while len(self._manifests) > MAX_MANIFESTS:
            self._manifests.popitem(last=False)

    def forget(self, key: str) -> None:
        """``key`` is no longer stored (deleted, damaged, evicted)."""
        self._known.discard(key)
        self._manifests.pop(key, None)

    def reset(self, keys: list[str]) -> None:
        """What is stored, as read from the disk when the store opens."""
        self._known = set(keys)

    # rows (blocking)

    def keys_sync(self) -> list[str]:
        return sorted(
            k[1] for k in self._db().iterkeys() if isinstance(k, tuple) and k[0] == "manifest"
        )

    def raw_sync(self, key: str) -> bytes | None:
        raw: bytes | None = self._db().get(("manifest", key))
        return raw

    def write_sync(self, manifest: Manifest) -> None:
        """The manifest row and its tags, in one transaction (after its blob)."""
        db = self._db()
        with db.transact():
            db.set(("manifest", manifest.key), manifests.encode(manifest))
            for tag in manifest.tags:
                keys = set(db.get(("tag", tag), ()))
                if manifest.key not in keys:
                    keys.add(manifest.key)
                    db.set(("tag", tag), tuple(sorted(keys)))

    def replace_sync(self, key: str, manifest: Manifest) -> None:
        """Replace the manifest row of ``key`` (its tags stay)."""
        self._db().set(("manifest", key), manifests.encode(manifest))

    def delete_sync(self, key: str) -> bool:
        deleted: bool = self._db().delete(("manifest", key))
        return deleted

    def tagged_sync(self, tag: str, *, drop: bool) -> list[str]:
        """The keys stored with ``tag``; with ``drop`` the tag row goes too."""
        db = self._db()
        keys = list(db.get(("tag", tag), ()))
        if drop:
            db.delete(("tag", tag))
        return keys
