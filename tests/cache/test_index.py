"""The index on a real diskcache: manifest rows, tag rows, and the keys this process knows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import diskcache
import pytest

from weaver.cache import manifest as manifests
from weaver.cache.freshness import Freshness
from weaver.cache.index import MAX_MANIFESTS, Index
from weaver.cache.manifest import Manifest


def manifest(key: str, *tags: str) -> Manifest:
    freshness = Freshness(stored_at=1.0, initial_age_s=0.0, lifetime_s=60.0)
    return Manifest(
        key=key, status=200, headers=(), blob="b", size=1, freshness=freshness, tags=tags
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[diskcache.Cache]:
    with diskcache.Cache(str(tmp_path)) as cache:
        yield cache


def test_a_written_manifest_is_read_back_and_listed(db: diskcache.Cache) -> None:
    index = Index(lambda: db)
    index.write_sync(manifest("GET h/b"))
    index.write_sync(manifest("GET h/a"))
    db.set(("blob", "b"), b"x")  # other rows are not keys
    assert index.keys_sync() == ["GET h/a", "GET h/b"]
    raw = index.raw_sync("GET h/a")
    assert raw is not None and manifests.decode(raw) == manifest("GET h/a")
    assert index.raw_sync("GET h/missing") is None


def test_tags_collect_their_keys_once_and_a_hard_purge_drops_the_row(db: diskcache.Cache) -> None:
    index = Index(lambda: db)
    index.write_sync(manifest("GET h/b", "shop"))
    index.write_sync(manifest("GET h/a", "shop", "home"))
    index.write_sync(manifest("GET h/a", "shop"))  # written again: listed once
    assert index.tagged_sync("shop", drop=False) == ["GET h/a", "GET h/b"]
    assert index.tagged_sync("shop", drop=True) == ["GET h/a", "GET h/b"]
    assert index.tagged_sync("shop", drop=False) == []
    assert index.tagged_sync("home", drop=False) == ["GET h/a"]


def test_replace_and_delete_touch_only_the_manifest_row(db: diskcache.Cache) -> None:
    index = Index(lambda: db)
    index.write_sync(manifest("GET h/a", "shop"))
    soft = manifests.replace(manifest("GET h/a"), is_soft_purged=True)
    index.replace_sync("GET h/a", soft)
    raw = index.raw_sync("GET h/a")
    assert raw is not None and manifests.decode(raw).is_soft_purged
    assert index.delete_sync("GET h/a") is True
    assert index.delete_sync("GET h/a") is False
    assert index.tagged_sync("shop", drop=False) == ["GET h/a"]  # a later purge misses


def test_what_this_process_knows_follows_keep_forget_and_reset(db: diskcache.Cache) -> None:
    index = Index(lambda: db)
    assert not index.may_hold("GET h/a")
    index.keep(manifest("GET h/a"))
    assert index.may_hold("GET h/a") and index.known_manifest("GET h/a") == manifest("GET h/a")
    index.forget("GET h/a")
    assert not index.may_hold("GET h/a") and index.known_manifest("GET h/a") is None
    index.reset(["GET h/b"])
    assert index.may_hold("GET h/b") and index.known_manifest("GET h/b") is None


def test_the_manifests_kept_in_memory_are_bounded_oldest_out(db: diskcache.Cache) -> None:
    index = Index(lambda: db)
    for i in range(MAX_MANIFESTS + 1):
        index.keep(manifest(f"GET h/{i}"))
        if i == 1:
            index.touch("GET h/0")  # used: kept over h/1
    assert index.known_manifest("GET h/0") is not None
    assert index.known_manifest("GET h/1") is None
    assert index.may_hold("GET h/1")  # still stored: only its manifest left memory
