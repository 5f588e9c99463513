"""The proxy's errors: each says what the client gets (an HTTP status)."""

from __future__ import annotations

from weaver.config.errors import WeaverError


class ProxyError(WeaverError):
    """An error that ends a request; ``status`` is what the client is answered."""

    status = 500


class OriginError(ProxyError):
    """The origin could not be reached or did not answer in time (502/504)."""

    status = 502

    def __init__(self, url: str, reason: str, *, status: int = 502) -> None:
        self.url = url
        self.reason = reason
        self.status = status
        super().__init__(f"origin {url}: {reason}")


class FragmentError(WeaverError):
    """A fragment failed (status, connection, refused URL); the page gets its fallback."""

    def __init__(self, src: str, reason: str) -> None:
        self.src = src
        self.reason = reason
        super().__init__(f"fragment {src}: {reason}")


class SequencerClosed(ProxyError):
    """Something was pushed onto a sequencer after it was ended or closed (a bug)."""


class FragmentLimit(FragmentError):
    """A page view reached ``server.max_fragment_requests``: the rest get their fallback."""
