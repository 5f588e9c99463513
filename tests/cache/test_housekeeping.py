"""Housekeeping on real directories: dead writes swept, every entry checked."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import diskcache
import pytest

from weaver.cache import manifest as manifests
from weaver.cache.blobs import BlobFiles, digest_of
from weaver.cache.freshness import Freshness
from weaver.cache.housekeeping import check_entries, is_alive, sweep_temporary
from weaver.cache.manifest import Manifest


def test_only_live_processes_count_as_alive() -> None:
    assert is_alive(str(os.getpid()))
    assert is_alive("1")  # init: alive, whoever may signal it
    assert not is_alive("not-a-pid")
    assert not is_alive(str(2**22 + 1))  # above Linux's pid_max


def test_the_sweep_keeps_live_writers_folders_and_removes_the_rest(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    live = tmp / f"{os.getpid()}-abcd"
    dead = tmp / f"{2**22 + 1}-abcd"
    for folder in (live, dead):
        folder.mkdir(parents=True)
        (folder / "body-1").write_bytes(b"partial")
    (tmp / "loose").write_bytes(b"partial")
    sweep_temporary(tmp)
    assert sorted(p.name for p in tmp.iterdir()) == [live.name]
    sweep_temporary(tmp_path / "new")  # a new store: the folder is made
    assert (tmp_path / "new").is_dir()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[diskcache.Cache]:
    with diskcache.Cache(str(tmp_path / "db")) as cache:
        yield cache


def manifest(key: str, body: bytes) -> Manifest:
    freshness = Freshness(stored_at=1.0, initial_age_s=0.0, lifetime_s=60.0)
    return Manifest(
        key=key, status=200, headers=(), blob=digest_of(body), size=len(body), freshness=freshness
    )


def test_check_names_each_unreadable_missing_or_damaged_entry(db: diskcache.Cache) -> None:
    blobs = BlobFiles(lambda: db, lambda: 0)
    good, damaged, missing = manifest("good", b"a"), manifest("damaged", b"b"), manifest("m", b"c")
    for entry in (good, damaged, missing):
        db.set(("manifest", entry.key), manifests.encode(entry))
    db.set(("blob", good.blob), b"a")
    db.set(("blob", damaged.blob), b"B")
    db.set(("manifest", "garbled"), b"{")
    problems = check_entries(db, ["damaged", "garbled", "good", "m"], blobs)
    assert problems[0] == f"damaged: blob {damaged.blob} damaged"
    assert problems[1].startswith("garbled: unreadable manifest")
    assert problems[2:] == [f"m: blob {missing.blob} missing"]
