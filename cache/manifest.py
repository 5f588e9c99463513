"""The manifest of a stored response (pure): what to replay and how long it is good for.

A manifest names its body by content hash (``blob``); the body is stored once however
many manifests name it. Manifests are JSON (msgspec), versioned, and a manifest that does
not decode is a miss, never an error for the client.
"""

from __future__ import annotations

from typing import Any

import msgspec

from weaver.cache.errors import StoreError
from weaver.cache.freshness import Freshness

VERSION = 1


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """A stored response. Times are seconds since the epoch; ``*_s`` are durations.

    Attributes:
        key: the cache key it is stored under.
        variant: the request's values of the origin's ``Vary`` headers at store time; a
            request with other values is a miss.
        slots: the page's suspense slots (slot id, fragment URL, timeout), started per
            visitor on every hit.
        channels: channels the page subscribes its visitors to.
        fragments: the blocking fragments' srcs it was assembled from.
        is_soft_purged: purged softly: the next request revalidates it.
    """

    key: str
    status: int
    headers: tuple[tuple[str, str], ...]
    blob: str
    size: int
    stored_at: float
    initial_age_s: float
    lifetime_s: float
    stale_while_revalidate_s: float = 0.0
    stale_if_error_s: float = 0.0
    must_revalidate: bool = False
    no_cache: bool = False
    etag: str | None = None
    last_modified: str | None = None
    tags: tuple[str, ...] = ()
    slots: tuple[tuple[str, str, float], ...] = ()
    channels: tuple[str, ...] = ()
    fragments: tuple[str, ...] = ()
    variant: str = ""
    is_soft_purged: bool = False
    version: int = VERSION


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Manifest)


def encode(manifest: Manifest) -> bytes:
    return _encoder.encode(manifest)


def decode(data: bytes) -> Manifest:
    """Raises:
    StoreError: the bytes are not a manifest of this version.
    """
    try:
        manifest = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StoreError(f"unreadable manifest: {exc}") from None
    if manifest.version != VERSION:
        raise StoreError(f"manifest version {manifest.version}, expected {VERSION}")
    return manifest


def replace(manifest: Manifest, **changes: object) -> Manifest:
    return msgspec.structs.replace(manifest, **changes)


def freshness_of(manifest: Manifest) -> Freshness:
    """The stored freshness of ``manifest`` (RFC 9111 §4.2), to ask for its state."""
    return Freshness(
        stored_at=manifest.stored_at,
        initial_age_s=manifest.initial_age_s,
        lifetime_s=manifest.lifetime_s,
        stale_while_revalidate_s=manifest.stale_while_revalidate_s,
        stale_if_error_s=manifest.stale_if_error_s,
        must_revalidate=manifest.must_revalidate,
        no_cache=manifest.no_cache,
    )


def new_manifest(
    key: str,
    status: int,
    headers: tuple[tuple[str, str], ...],
    freshness: Freshness,
    **more: Any,
) -> Manifest:
    """A manifest for a response about to be committed (the store fills blob and size)."""
    return Manifest(
        key=key,
        status=status,
        headers=headers,
        blob="",
        size=0,
        stored_at=freshness.stored_at,
        initial_age_s=freshness.initial_age_s,
        lifetime_s=freshness.lifetime_s,
        stale_while_revalidate_s=freshness.stale_while_revalidate_s,
        stale_if_error_s=freshness.stale_if_error_s,
        must_revalidate=freshness.must_revalidate,
        no_cache=freshness.no_cache,
        **more,
    )
