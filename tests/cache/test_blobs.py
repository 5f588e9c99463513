"""Blobs on a real diskcache: written while streaming, proven before they are served."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import diskcache
import pytest

from weaver.cache import blobs as blob_module
from weaver.cache.blobs import RACY_NS, BlobFiles, BlobWriter, check_hash, digest_of, fingerprint
from weaver.cache.errors import DamagedBlob, StoreError
from weaver.cache.freshness import Freshness
from weaver.cache.manifest import Manifest


def manifest(body: bytes, key: str = "GET h/a") -> Manifest:
    freshness = Freshness(stored_at=1.0, initial_age_s=0.0, lifetime_s=60.0)
    return Manifest(
        key=key, status=200, headers=(), blob=digest_of(body), size=len(body), freshness=freshness
    )


class Sink:
    """Records what a writer commits, spilling into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.committed: list[tuple[Manifest, bytes]] = []

    def temp_file(self) -> IO[bytes]:
        return tempfile.NamedTemporaryFile(dir=self.folder, delete=False)

    async def commit_blob(self, manifest: Manifest, body: bytes | None, path: str | None) -> None:
        if body is None:
            assert path is not None
            with open(path, "rb") as handle:  # noqa: ASYNC230  (a test's small file)
                body = handle.read()
        self.committed.append((manifest, body))


async def test_a_writer_names_the_body_by_its_hash_and_commits_it(tmp_path: Path) -> None:
    sink = Sink(tmp_path)
    writer = BlobWriter(sink, "GET h/a", max_bytes=100)
    for chunk in (b"hello ", b"world"):
        await writer.write(chunk)
    stored = await writer.commit(manifest(b""))
    assert stored is not None and (stored.blob, stored.size) == (digest_of(b"hello world"), 11)
    assert sink.committed == [(stored, b"hello world")]
    assert await writer.commit(manifest(b"")) is None  # once


async def test_a_writer_spills_past_its_buffer_and_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_module, "SPILL_BYTES", 8)
    sink = Sink(tmp_path)
    writer = BlobWriter(sink, "GET h/a", max_bytes=100)
    for chunk in (b"01234", b"56789", b"abc"):
        await writer.write(chunk)
    assert len(os.listdir(tmp_path)) == 1  # spilled
    stored = await writer.commit(manifest(b""))
    assert stored is not None and sink.committed == [(stored, b"0123456789abc")]
    assert os.listdir(tmp_path) == []


async def test_a_body_over_the_bound_or_aborted_is_never_committed(tmp_path: Path) -> None:
    sink = Sink(tmp_path)
    too_big = BlobWriter(sink, "GET h/a", max_bytes=4)
    await too_big.write(b"12345")
    await too_big.write(b"6")
    assert too_big.is_too_big and await too_big.commit(manifest(b"")) is None
    aborted = BlobWriter(sink, "GET h/b", max_bytes=100)
    await aborted.write(b"x")
    aborted.abort()
    await aborted.write(b"y")
    assert await aborted.commit(manifest(b"")) is None
    assert sink.committed == []


@pytest.fixture
def db(tmp_path: Path) -> Iterator[diskcache.Cache]:
    with diskcache.Cache(str(tmp_path / "db")) as cache:
        yield cache


def test_a_stored_blob_is_opened_proven_and_trusted_once_its_ctime_is_old(
    db: diskcache.Cache,
) -> None:
    body = os.urandom(5000)
    now = [0]
    blobs = BlobFiles(lambda: db, lambda: now[0])
    entry = manifest(body)
    blobs.put_sync(entry, body, None)
    blobs.put_sync(entry, b"ignored: stored once", None)
    handle, seen = blobs.open_verified(entry)  # clock at 0: the file is "racy", not trusted
    with handle:
        assert seen is not None and handle.read() == body
    assert blobs.read_nowait(entry) is None
    now[0] = seen.ctime_ns + RACY_NS + 1
    blobs.open_verified(entry)[0].close()
    assert blobs.read_small(entry) == body
    if blobs.can_read_nowait:
        assert blobs.read_nowait(entry) == body
    blobs.distrust(entry.blob)
    assert blobs.read_nowait(entry) is None


def test_a_damaged_or_missing_blob_is_refused(db: diskcache.Cache, tmp_path: Path) -> None:
    blobs = BlobFiles(lambda: db, lambda: 0)
    with pytest.raises(StoreError, match="gone"):
        blobs.open_verified(manifest(b"never stored"))
    with pytest.raises(StoreError, match="gone"):
        blobs.read_verified(digest_of(b"x"), 1)
    body = b"the real body"
    entry = manifest(body)
    path = tmp_path / "spilled"
    path.write_bytes(b"another body!")
    blobs.put_sync(entry, None, str(path))  # the bytes do not match the name
    with pytest.raises(DamagedBlob):
        blobs.read_small(entry)
    with pytest.raises(DamagedBlob):
        blobs.read_verified(entry.blob, entry.size)
    assert blobs.open(entry.blob) is None  # read_verified deleted it
    with pytest.raises(StoreError, match="not stored"):
        blobs.put_sync(entry, None, None)


def test_check_hash_and_fingerprint_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    with path.open("rb") as handle:
        check_hash(handle, manifest(b"abc"))
        seen = fingerprint(handle)
        assert seen is not None and (seen.path, seen.size) == (str(path), 3)
    with path.open("rb") as handle, pytest.raises(DamagedBlob):
        check_hash(handle, manifest(b"abd"))


def test_a_file_changed_while_read_is_still_the_same_only_if_it_hashes_right(
    db: diskcache.Cache,
) -> None:
    body = os.urandom(5000)
    blobs = BlobFiles(lambda: db, lambda: 0)
    entry = manifest(body)
    blobs.put_sync(entry, body, None)
    handle, seen = blobs.open_verified(entry)
    with handle:
        assert seen is not None and blobs.still_same(entry, handle, seen)
        os.utime(handle.name)  # touched: another fingerprint, same bytes
        assert blobs.still_same(entry, handle, seen)
        with open(handle.name, "r+b") as writer:
            writer.write(b"\0")
        assert not blobs.still_same(entry, handle, seen)
    blobs.drop_sync(entry.blob)
    assert blobs.open(entry.blob) is None


def _trusted(db: diskcache.Cache, bodies: list[bytes]) -> tuple[BlobFiles, list[Manifest]]:
    """A BlobFiles holding ``bodies``, each verified and trusted (its ctime old enough)."""
    now = [0]
    blobs = BlobFiles(lambda: db, lambda: now[0])
    entries = [manifest(body, key=f"GET h/{index}") for index, body in enumerate(bodies)]
    for entry, body in zip(entries, bodies, strict=True):
        blobs.put_sync(entry, body, None)
        handle, seen = blobs.open_verified(entry)
        handle.close()
        assert seen is not None
        now[0] = seen.ctime_ns + RACY_NS + 1
        blobs.open_verified(entry)[0].close()
    return blobs, entries


def _open_fds() -> set[str]:
    """What this process has open (the listing's own descriptor is gone when read)."""
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.add(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            continue
    return names


def _path_of(blobs: BlobFiles, entry: Manifest) -> str:
    handle = blobs.open(entry.blob)
    assert handle is not None
    with handle:
        return str(handle.name)


def _assert_thread_path_only(
    blobs: BlobFiles, entries: list[Manifest], bodies: list[bytes]
) -> None:
    """On a file system without RWF_NOWAIT reads no blob is read on the loop (no file is
    kept open for it); every one is read, verified, by the thread path instead."""
    assert [blobs.read_nowait(entry) for entry in entries] == [None] * len(entries)
    assert not {_path_of(blobs, entry) for entry in entries} & _open_fds()
    assert [blobs.read_small(entry) for entry in entries] == bodies


def test_a_hot_blob_file_is_read_from_its_open_file_until_it_is_deleted(
    db: diskcache.Cache,
) -> None:
    body = os.urandom(3000)
    blobs, (entry,) = _trusted(db, [body])
    if not blobs.can_read_nowait:
        _assert_thread_path_only(blobs, [entry], [body])
        return
    path = _path_of(blobs, entry)
    assert blobs.read_nowait(entry) == body
    assert blobs.read_nowait(entry) == body
    assert path in _open_fds()  # kept open between hits
    os.remove(path)  # deleted behind the store's back (another worker evicted it)
    assert blobs.read_nowait(entry) is None
    assert path + " (deleted)" not in _open_fds()  # and closed: its space is freed


def test_a_hot_blob_file_rewritten_or_replaced_in_place_is_never_read_again(
    db: diskcache.Cache,
) -> None:
    first, second = os.urandom(3000), os.urandom(3000)
    blobs, entries = _trusted(db, [first, second])
    if not blobs.can_read_nowait:
        _assert_thread_path_only(blobs, entries, [first, second])
        return
    paths = [_path_of(blobs, entry) for entry in entries]
    assert [blobs.read_nowait(entry) for entry in entries] == [first, second]
    with open(paths[0], "r+b") as handle:  # same size, other bytes, mtime put back
        handle.write(b"\0" * 10)
    stat = os.stat(paths[1])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replacement = paths[1] + ".new"
    Path(replacement).write_bytes(os.urandom(3000))
    os.replace(replacement, paths[1])  # another file under the same name
    assert [blobs.read_nowait(entry) for entry in entries] == [None, None]
    with pytest.raises(DamagedBlob):
        blobs.read_small(entries[0])  # the thread path hashes it and refuses it


def test_at_most_max_open_files_stay_open_and_every_blob_still_reads(
    db: diskcache.Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_module, "MAX_OPEN_FILES", 2)
    bodies = [os.urandom(2000) for _ in range(4)]
    blobs, entries = _trusted(db, bodies)
    if not blobs.can_read_nowait:
        _assert_thread_path_only(blobs, entries, bodies)
        return
    paths = {_path_of(blobs, entry) for entry in entries}
    for _ in range(2):
        assert [blobs.read_nowait(entry) for entry in entries] == bodies
        assert len(paths & _open_fds()) == 2
    blobs.distrust(entries[3].blob)  # the last read: open until distrusted
    assert len(paths & _open_fds()) == 1
    blobs.close_files()
    assert not paths & _open_fds()
