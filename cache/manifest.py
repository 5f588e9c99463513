"""The manifest of a stored response (pure): what to replay and how long it is good for.

A manifest names its body by content hash (``blob``); the body is stored once however
many manifests name it. Manifests are JSON (msgspec), versioned, and a manifest that does
not decode is a miss, never an error for the client.

Version 2 embeds :class:`~weaver.cache.freshness.Freshness` whole (version 1 copied its
seven fields); a version 1 manifest on disk does not decode and is a miss.
"""

from __future__ import annotations

from typing import Any

import msgspec

from weaver.cache.errors import StoreError
from weaver.cache.freshness import Freshness

VERSION = 2


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """A stored response.

    Attributes:
        key: the cache key it is stored under.
        freshness: how long it is good for (RFC 9111 §4.2), fixed when it was stored.
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
    freshness: Freshness
    etag: str | None = None
    last_modified: str | None = None
    tags: tuple[str, ...] = ()
    slots: tuple[tuple[str, str, float], ...] = ()
    channels: tuple[str, ...] = ()
    fragments: tuple[str, ...] = ()
    variant: str = ""
    is_soft_purged: bool = False
    version: int = VERSION


class _Versioned(msgspec.Struct):
    version: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Manifest)
_version_decoder = msgspec.json.Decoder(_Versioned)


def encode(manifest: Manifest) -> bytes:
    return _encoder.encode(manifest)


def decode(data: bytes) -> Manifest:
    """Raises:
    StoreError: the bytes are not a manifest of this version.
    """
    try:
        manifest = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        try:  # an older format says so (not which of its fields failed)
            version = _version_decoder.decode(data).version
        except (msgspec.DecodeError, msgspec.ValidationError):
            version = VERSION
        if version != VERSION:
            raise StoreError(f"manifest version {version}, expected {VERSION}") from None
        raise StoreError(f"unreadable manifest: {exc}") from None
    if manifest.version != VERSION:
        raise StoreError(f"manifest version {manifest.version}, expected {VERSION}")
    return manifest


def replace(manifest: Manifest, **changes: object) -> Manifest:
    return msgspec.structs.replace(manifest, **changes)


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
        freshness=freshness,
        **more,
    )
