"""TLS for the listeners: an :class:`ssl.SSLContext` from the configured PEM files."""

from __future__ import annotations

import ssl

from weaver.proxy.errors import ProxyError


class TlsError(ProxyError):
    """A certificate or key that cannot be used; the message names the config keys."""


def server_context(cert: str, key: str, *, where: str) -> ssl.SSLContext | None:
    """A server context for ``cert``/``key`` (``where`` names the config section), or None
    when neither is set. TLS 1.2 or later; HTTP/1.1 only (ALPN), see README, "Operating"."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(
            f"{where}.tls_cert / {where}.tls_key: cannot load {cert!r} with {key!r}: "
            f"{getattr(exc, 'reason', None) or exc.strerror or exc} "
            "(PEM certificate chain and an unencrypted PEM private key)"
        ) from None
    return context
