"""Network addresses and URLs in config values: parsed or checked, never connected to.

Pure ``str`` in, value out; a bad value raises :class:`ValueError` (or, for a Redis URL, is
described) with a message that quotes it, password redacted, and suggests a form that works.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from weaver.config.schema import HostPort


def parse_host_port(text: str) -> HostPort:
    """Parse ``"127.0.0.1:8080"`` (or ``"[::1]:8080"``) into a :class:`HostPort`."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f'"{text}" is not host:port (try "127.0.0.1:8080")')
    return HostPort(host.strip("[]"), int(port_text))


def parse_origin(text: str) -> str:
    """``"https://Shop.example:443/"`` -> ``"https://shop.example"``: an origin as a browser
    sends it in ``Origin`` (RFC 6454 §6.2): scheme, host, and the port unless default."""
    hint = f'"{text}" is not an origin (try "https://shop.example" or "http://127.0.0.1:8080")'
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError(hint) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise ValueError(hint)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 443 if parts.scheme == "https" else 80
    if port is None or port == default:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def redis_url_problem(url: str) -> str | None:
    hint = '(try "redis://127.0.0.1:6379/0", or rediss://:PASSWORD@host:6380/0 for TLS)'
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises on a bad port
    except ValueError:
        return f'"{redact_url(url)}" is not a Redis URL {hint}'
    db = parts.path.lstrip("/")
    if not parts.hostname or (db and not db.isdigit()) or parts.query or parts.fragment:
        return f'"{redact_url(url)}" is not a Redis URL {hint}'
    return None
