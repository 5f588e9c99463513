"""Who may use a session (pure): signed tokens, the session cookie, the Origin check.

A token is ``<session id>.<issued at>.<HMAC-SHA256>``, base64url, signed with the
configured secret; it is the value of the session cookie (HttpOnly, SameSite=Lax,
Path=/) and may be sent in the first hello by non-browser clients. Forged, expired,
future or foreign (another secret) tokens are refused with close code 1008 (401 over
HTTP).

The cookie is ``weaver_session``, or ``__Host-weaver_session`` when the page was served
over TLS: a ``__Host-`` cookie must be Secure, Path=/ and carry no Domain (RFC 6265bis
§4.1.3.2), so a sibling subdomain cannot plant one. Both names are read; ``__Host-``
wins when both are sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Collection
from urllib.parse import urlsplit

from weaver.session.errors import TokenError

COOKIE = "weaver_session"
HOST_COOKIE = "__Host-weaver_session"
SESSION_COOKIES = (HOST_COOKIE, COOKIE)  # in order of preference
MAX_AGE_S = 7 * 24 * 3600
MAX_CLOCK_SKEW_S = 60  # a token issued later than now + this is refused


def _sign(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def issue(secret: str, session_id: str, now: float) -> str:
    payload = f"{session_id}.{int(now)}"
    return f"{payload}.{_sign(secret, payload)}"


def verify(secret: str, token: str, now: float, max_age_s: float = MAX_AGE_S) -> str:
    """The session id of a valid token.

    Raises:
        TokenError: (1008, 401) for a malformed, forged, foreign, expired or future token.
    """
    parts = token.split(".")
    if (
        not token.isascii()  # hmac.compare_digest refuses non-ASCII str
        or len(parts) != 3
        or not parts[0]
        or not parts[1].isdecimal()
    ):
        raise TokenError("malformed session token")
    session_id, issued, signature = parts
    if not hmac.compare_digest(signature, _sign(secret, f"{session_id}.{issued}")):
        raise TokenError("session token signature does not match")
    age_s = now - int(issued)
    if age_s > max_age_s:
        raise TokenError("session token expired")
    if age_s < -MAX_CLOCK_SKEW_S:
        raise TokenError("session token is from the future")
    return session_id


def cookie_header_value(token: str, *, secure: bool = False, max_age_s: int = MAX_AGE_S) -> str:
    """The ``Set-Cookie`` value for ``token``: ``__Host-weaver_session`` (Secure, no
    Domain) when the page is served over TLS, else ``weaver_session``."""
    if secure:
        return f"{HOST_COOKIE}={token}; Path=/; Max-Age={max_age_s}; Secure; HttpOnly; SameSite=Lax"
    return f"{COOKIE}={token}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Lax"


def _cookie_name(pair: str) -> str:
    return pair.partition("=")[0].strip()


def token_from_cookie_header(cookie_header: str | None) -> str | None:
    """The session token in a ``Cookie`` header: ``__Host-weaver_session`` if sent, else
    ``weaver_session``; the first of each name (a browser sends the most specific first).
    """
    if not cookie_header:
        return None
    found: dict[str, str] = {}
    for pair in cookie_header.split(";"):  # RFC 6265 §4.2.1: cookie-pair *( "; " cookie-pair )
        name, sep, value = pair.partition("=")
        name = name.strip()
        if sep and name in SESSION_COOKIES and name not in found:
            found[name] = value.strip().strip('"')
    for name in SESSION_COOKIES:
        if found.get(name):
            return found[name]
    return None


def strip_session_cookie(cookie_header: str | None) -> str | None:
    """``cookie_header`` without the session cookies (both names), the other cookies kept
    byte for byte, or None if nothing is left. Weaver's own cookie never reaches an origin.
    """
    if cookie_header is None:
        return None
    kept = [pair for pair in cookie_header.split(";") if _cookie_name(pair) not in SESSION_COOKIES]
    rest = ";".join(kept).strip()
    return rest or None


def _origin_parts(origin: str) -> tuple[str, str, int] | None:
    """(scheme, hostname, port) of a serialized origin (RFC 6454 §6.2), or None."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port if port is not None else default


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lowercased, the default port dropped; None if ``origin``
    is not an http(s) origin (``null``, a path, garbage)."""
    parts = _origin_parts(origin)
    if parts is None:
        return None
    scheme, host, port = parts
    if ":" in host:
        host = f"[{host}]"  # IPv6
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port == default else f"{scheme}://{host}:{port}"


def _hostname(host_header: str) -> str | None:
    try:
        return urlsplit("//" + host_header.strip()).hostname
    except ValueError:
        return None


def is_origin_allowed(
    origin: str | None, host_header: str | None, allowed_origins: Collection[str]
) -> bool:
    """Whether a request with this ``Origin`` may use the session (cross-site WebSocket
    hijacking defence: a browser sends the visitor's cookie to us from any site).

    No Origin (a non-browser client with a token): allowed. Otherwise the origin must be
    in ``allowed_origins`` (normalized, see :func:`normalize_origin`) or have the
    request's ``Host`` hostname; ports are ignored since cookies are scoped to a host,
    not a port (the session listens on its own port).
    """
    if origin is None:
        return True
    normalized = normalize_origin(origin)
    if normalized is None:
        return False  # "null" (sandboxed, file:) or not an origin
    if normalized in allowed_origins:
        return True
    host = _hostname(host_header) if host_header else None
    parts = _origin_parts(origin)
    return host is not None and parts is not None and parts[1] == host
