"""The proxy's errors (proxy/errors.py): each carries what the client is answered."""

from __future__ import annotations

from weaver.config.errors import WeaverError
from weaver.proxy.errors import OriginError, ProxyError


def test_proxy_errors_carry_the_status_the_client_gets() -> None:
    assert ProxyError.status == 500
    assert issubclass(ProxyError, WeaverError)
    refused = OriginError("http://o/", "connection refused")
    late = OriginError("http://o/", "timed out", status=504)
    assert (refused.status, late.status) == (502, 504)
    assert (late.url, late.reason) == ("http://o/", "timed out")
    assert str(late) == "origin http://o/: timed out"
