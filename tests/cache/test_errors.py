"""The cache's errors: one tree under WeaverError, messages that name the thing and value."""

from __future__ import annotations

import pytest

from weaver.cache.errors import (
    BadAuthority,
    BadPurge,
    CacheError,
    DamagedBlob,
    FillFailed,
    FollowerLagged,
    StoreError,
)
from weaver.config.errors import WeaverError


@pytest.mark.parametrize(
    "error",
    [
        DamagedBlob("ab", "cd"),
        FollowerLagged("behind"),
        FillFailed("broke"),
        StoreError("disk"),
        BadPurge("field"),
        BadAuthority("h:x"),
    ],
)
def test_every_cache_error_is_a_cache_error_and_a_weaver_error(error: CacheError) -> None:
    assert isinstance(error, CacheError)
    assert isinstance(error, WeaverError)
    with pytest.raises(CacheError):
        raise error


def test_a_damaged_blob_names_its_digest_and_what_its_bytes_hash_to() -> None:
    error = DamagedBlob("a" * 64, "b" * 64)
    assert (error.digest, error.actual) == ("a" * 64, "b" * 64)
    assert str(error) == f"blob {'a' * 64} is damaged (its bytes hash to {'b' * 64})"


def test_a_bad_authority_quotes_what_the_client_sent() -> None:
    error = BadAuthority("shop.example:99x")
    assert error.authority == "shop.example:99x"
    assert str(error) == "'shop.example:99x' is not a valid host[:port]"


def test_a_bad_authority_shows_control_characters_escaped() -> None:
    assert str(BadAuthority("a\r\nb")) == "'a\\r\\nb' is not a valid host[:port]"


def test_the_other_cache_errors_carry_their_message() -> None:
    assert str(BadPurge('"urls" must be a list')) == '"urls" must be a list'
    assert str(StoreError("manifest version 1, expected 2")) == "manifest version 1, expected 2"
