"""Housekeeping of a store directory: sweeping dead writes, checking every entry.

Both block (file system and database walks); the store runs them in a thread.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import diskcache

from weaver.cache import manifest as manifests
from weaver.cache.blobs import BlobFiles, check_hash
from weaver.cache.errors import DamagedBlob, StoreError


def is_alive(pid_text: str) -> bool:
    """Whether the process ``pid_text`` names still runs (its temporary writes too)."""
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temporary(tmp: Path) -> None:
    """Remove the temporary bodies of writes a crash cut short.

    Each process writes in its own folder (``<pid>-<random>``), and only the folders (and
    loose files) of processes gone are swept, so a worker that restarts never deletes
    another worker's write in progress.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    for leftover in tmp.iterdir():
        if leftover.is_dir() and is_alive(leftover.name.partition("-")[0]):
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def check_entries(db: diskcache.Cache, keys: Iterable[str], blobs: BlobFiles) -> list[str]:
    """Every problem of the entries ``keys``: unreadable manifests, missing or damaged
    blobs. Always hashes: fingerprints are not trusted here."""
    problems = []
    for key in keys:
        raw = db.get(("manifest", key))
        try:
            manifest = manifests.decode(raw)
        except StoreError as exc:
            problems.append(f"{key}: {exc}")
            continue
        handle = blobs.open(manifest.blob)
        if handle is None:
            problems.append(f"{key}: blob {manifest.blob} missing")
            continue
        with handle:
            try:
                check_hash(handle, manifest)
            except DamagedBlob:
                problems.append(f"{key}: blob {manifest.blob} damaged")
    return problems
