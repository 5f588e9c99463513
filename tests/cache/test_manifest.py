"""Manifests: encoded and decoded whole, versioned, and an old or garbled one refused with
an error that says which."""

from __future__ import annotations

import orjson
import pytest

from weaver.cache import manifest as manifests
from weaver.cache.errors import CacheError, StoreError
from weaver.cache.freshness import Freshness
from weaver.cache.manifest import VERSION, Manifest, new_manifest

FRESHNESS = Freshness(
    stored_at=1.5,
    initial_age_s=2.0,
    lifetime_s=60.0,
    stale_while_revalidate_s=30.0,
    stale_if_error_s=600.0,
    must_revalidate=True,
)

FULL = Manifest(
    key="GET h.example/p?x=1|accept-language=fr",
    status=203,
    headers=(("Content-Type", "text/html; charset=utf-8"), ("Set-Cookie", "a=1")),
    blob="ab" * 32,
    size=1234,
    freshness=FRESHNESS,
    etag='"v1"',
    last_modified="Tue, 01 Jul 2025 10:00:00 GMT",
    tags=("shop", "sale"),
    slots=(("w1", "/recs", 2.0),),
    channels=("deals",),
    fragments=("/header", "/footer"),
    variant="accept-language=fr",
    is_soft_purged=True,
)


def test_every_field_survives_encoding_and_decoding() -> None:
    decoded = manifests.decode(manifests.encode(FULL))
    assert decoded == FULL
    assert decoded.freshness == FRESHNESS
    assert decoded.version == VERSION == 2


def test_a_manifest_is_json_with_freshness_embedded_whole() -> None:
    document = orjson.loads(manifests.encode(FULL))
    assert document["version"] == VERSION
    assert document["freshness"]["lifetime_s"] == 60.0
    assert "lifetime_s" not in document  # version 1 copied it to the top level


def test_encoding_is_deterministic() -> None:
    assert manifests.encode(FULL) == manifests.encode(manifests.replace(FULL))


def test_a_new_manifest_waits_for_the_store_to_name_its_body() -> None:
    made = new_manifest("GET h/a", 200, (("A", "b"),), FRESHNESS, tags=("t",), etag='"e"')
    assert (made.blob, made.size, made.tags, made.etag) == ("", 0, ("t",), '"e"')
    assert (made.variant, made.is_soft_purged, made.version) == ("", False, VERSION)


def test_replace_changes_only_what_it_names_and_leaves_the_original() -> None:
    softened = manifests.replace(FULL, is_soft_purged=False, size=1)
    assert (softened.is_soft_purged, softened.size) == (False, 1)
    assert manifests.replace(softened, is_soft_purged=True, size=1234) == FULL
    assert FULL.is_soft_purged is True


def test_replace_refuses_a_field_a_manifest_does_not_have() -> None:
    with pytest.raises(TypeError):
        manifests.replace(FULL, colour="red")


def test_an_old_format_manifest_is_refused_naming_its_version() -> None:
    # Version 1 copied the seven freshness fields into the manifest; version 2 embeds them.
    old = (
        b'{"key":"GET h/a","status":200,"headers":[],"blob":"00","size":4,"stored_at":1.0,'
        b'"initial_age_s":0.0,"lifetime_s":60.0,"version":1}'
    )
    with pytest.raises(StoreError, match=r"^manifest version 1, expected 2$"):
        manifests.decode(old)
    with pytest.raises(StoreError, match=r"^manifest version 1, expected 2$"):
        manifests.decode(b'{"key":"k","stored_at":1.0,"version":1}')


def test_a_manifest_without_a_version_is_refused_as_version_0() -> None:
    with pytest.raises(StoreError, match=r"^manifest version 0, expected 2$"):
        manifests.decode(b'{"key":"k"}')


def test_a_current_format_manifest_claiming_another_version_is_refused() -> None:
    document = orjson.loads(manifests.encode(FULL))
    document["version"] = 3
    with pytest.raises(StoreError, match=r"^manifest version 3, expected 2$"):
        manifests.decode(orjson.dumps(document))


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"key": 1, "version": 2}',
        orjson.dumps({**orjson.loads(manifests.encode(FULL)), "status": "200"}),
    ],
)
def test_a_garbled_manifest_is_refused_as_unreadable(data: bytes) -> None:
    with pytest.raises(StoreError, match=r"^unreadable manifest: ") as info:
        manifests.decode(data)
    assert isinstance(info.value, CacheError)
