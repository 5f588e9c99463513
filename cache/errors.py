"""The cache's errors. A cache problem is never the client's: it becomes a miss."""

from __future__ import annotations

from weaver.config.errors import WeaverError


class CacheError(WeaverError):
    """Something in the cache layer went wrong."""


class DamagedBlob(CacheError):
    """A stored body does not hash to its name: it is removed and never served."""

    def __init__(self, digest: str, actual: str) -> None:
        self.digest = digest
        self.actual = actual
        super().__init__(f"blob {digest} is damaged (its bytes hash to {actual})")


class FollowerLagged(CacheError):
    """A follower fell too far behind a fill that other clients keep up with."""


class FillFailed(CacheError):
    """The fill broke off after its head was sent; the follower's response is aborted."""


class StoreError(CacheError):
    """The store could not read or write an entry (disk full, bad manifest…)."""


class BadPurge(CacheError):
    """A purge request is malformed; the message names the field."""


class BadAuthority(CacheError):
    """A ``Host`` header (or URL authority) that names no one host: the client's 400."""

    def __init__(self, authority: str) -> None:
        self.authority = authority
        super().__init__(f"{authority!r} is not a valid host[:port]")
