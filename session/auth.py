"""Signed session tokens and the session cookie (pure).

A token is ``<session id>.<issued at>.<HMAC-SHA256>``, base64url, signed with the
configured secret; it is the value of the ``weaver_session`` cookie (HttpOnly,
SameSite=Lax, Path=/) and may be sent in the first hello by non-browser clients.
Forged, expired or foreign (another secret) tokens are refused with close code 1008.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from http.cookies import CookieError, SimpleCookie

from weaver.session.errors import POLICY, SessionError

COOKIE = "weaver_session"
MAX_AGE_S = 7 * 24 * 3600


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
        SessionError: 1008 for a malformed, forged, foreign or expired token.
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        raise SessionError(POLICY, "malformed session token")
    session_id, issued, signature = parts
    if not hmac.compare_digest(signature, _sign(secret, f"{session_id}.{issued}")):
        raise SessionError(POLICY, "session token signature does not match")
    if now - int(issued) > max_age_s:
        raise SessionError(POLICY, "session token expired")
    return session_id


def cookie_header_value(token: str, *, max_age_s: int = MAX_AGE_S) -> str:
    """The ``Set-Cookie`` value for ``token``."""
    return f"{COOKIE}={token}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Lax"


def token_from_cookie_header(cookie_header: str | None) -> str | None:
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def strip_session_cookie(cookie_header: str | None) -> str | None:
    """``cookie_header`` without Weaver's session cookie; None when nothing is left."""
    if not cookie_header:
        return None
    kept = [
        part
        for part in cookie_header.split(";")
        if part.strip().partition("=")[0].strip() not in (COOKIE, f"__Host-{COOKIE}")
    ]
    text = ";".join(kept).strip()
    return text or None
