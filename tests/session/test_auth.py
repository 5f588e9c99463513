"""Tokens, the session cookie and the Origin check (pure)."""

from __future__ import annotations

import pytest

from weaver.session import auth
from weaver.session.errors import SessionError, TokenError


def test_a_token_from_the_future_is_refused_beyond_the_clock_skew() -> None:
    token = auth.issue("secret", "sid", now=10_000.0)
    assert auth.verify("secret", token, now=10_000.0 - auth.MAX_CLOCK_SKEW_S) == "sid"
    with pytest.raises(TokenError) as caught:
        auth.verify("secret", token, now=10_000.0 - auth.MAX_CLOCK_SKEW_S - 1)
    assert (caught.value.close_code, caught.value.status) == (1008, 401)
    assert caught.value.reason == "session token is from the future"


@pytest.mark.parametrize("token", ["sid.١٢٣.sig", "sid.123.sïg", "sid.²³.x", "s\u00efd.1.x"])
def test_a_non_ascii_token_is_malformed_not_a_crash(token: str) -> None:
    with pytest.raises(TokenError, match="malformed"):
        auth.verify("secret", token, now=1.0)


def test_over_tls_the_cookie_is_host_prefixed_secure_and_has_no_domain() -> None:
    assert auth.cookie_header_value("tok", secure=True) == (
        "__Host-weaver_session=tok; Path=/; Max-Age=604800; Secure; HttpOnly; SameSite=Lax"
    )
    assert auth.cookie_header_value("tok") == (
        "weaver_session=tok; Path=/; Max-Age=604800; HttpOnly; SameSite=Lax"
    )


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("weaver_session=plain", "plain"),
        ("__Host-weaver_session=host", "host"),
        ("weaver_session=plain; __Host-weaver_session=host", "host"),  # __Host- wins
        ("a=1; weaver_session=first; weaver_session=second", "first"),
        ('weaver_session="quoted"', "quoted"),
        ("a=1;b=2", None),
        ("weaver_session=", None),
        ("garbage without equals; weaver_session=t", "t"),
        ("", None),
        (None, None),
    ],
)
def test_the_token_is_read_from_either_cookie_name(header: str | None, token: str | None) -> None:
    assert auth.token_from_cookie_header(header) == token


@pytest.mark.parametrize(
    ("header", "stripped"),
    [
        ("a=1; weaver_session=t; b=2", "a=1; b=2"),
        ("weaver_session=t; a=1", "a=1"),
        ("a=1; __Host-weaver_session=t", "a=1"),
        ("__Host-weaver_session=t; weaver_session=u", None),
        ("weaver_session=t", None),
        ('a="x y";  B=%20;c', 'a="x y";  B=%20;c'),  # other cookies kept byte for byte
        ("x_weaver_session=1; weaver_sessions=2", "x_weaver_session=1; weaver_sessions=2"),
        ("", None),
        (None, None),
    ],
)
def test_strip_session_cookie_keeps_every_other_cookie_byte_for_byte(
    header: str | None, stripped: str | None
) -> None:
    assert auth.strip_session_cookie(header) == stripped


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "shop.example:8081", True),  # a non-browser client
        ("http://shop.example:8080", "shop.example:8081", True),  # same host, any port
        ("https://SHOP.example", "shop.example", True),
        ("http://127.0.0.1:8080", "127.0.0.1:8081", True),
        ("http://[::1]:8080", "[::1]:8081", True),
        ("https://partner.example", "shop.example:8081", True),  # in allowed_origins
        ("https://partner.example:443", "shop.example:8081", True),
        ("https://partner.example:8443", "shop.example:8081", False),
        ("http://partner.example", "shop.example:8081", False),  # scheme differs
        ("https://evil.example", "shop.example:8081", False),
        ("https://shop.example.evil.example", "shop.example", False),
        ("null", "shop.example", False),
        ("https://shop.example", None, False),
        ("https://shop.example", "", False),
        ("not an origin", "shop.example", False),
        ("https://shop.example:99999", "shop.example", False),
    ],
)
def test_the_origin_must_be_the_session_host_or_allowed(
    origin: str | None, host: str | None, allowed: bool
) -> None:
    assert auth.is_origin_allowed(origin, host, ("https://partner.example",)) is allowed


def test_a_close_reason_always_fits_a_control_frame() -> None:
    error = SessionError(1008, "é" * 200)
    assert len(error.reason.encode()) <= 123 and error.reason == "é" * 61
    assert SessionError(1008, "\ud800 lone").reason == "? lone"
