"""Addresses and URLs in config values: parsed as a browser or a client would, or refused
with a hint (and a password never shown)."""

from __future__ import annotations

import pytest

from weaver.config.addresses import parse_host_port, parse_origin, redact_url, redis_url_problem
from weaver.config.schema import HostPort


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", HostPort("127.0.0.1", 8080)),
        ("[::1]:443", HostPort("::1", 443)),
        ("cdn.local:0", HostPort("cdn.local", 0)),
    ],
)
def test_host_port_is_parsed(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["8080", ":80", "host:", "host:http", "host:65536", "h:-1"])
def test_a_bad_host_port_is_refused_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match=f'^"{text}" is not host:port \\(try "127.0.0.1:8080"\\)'):
        parse_host_port(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://Shop.example:443/", "https://shop.example"),
        ("http://shop.example:80", "http://shop.example"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:80", "http://[::1]"),
        ("https://[::1]:8443", "https://[::1]:8443"),
        (" https://a.example ", "https://a.example"),
    ],
)
def test_an_origin_is_normalized_as_a_browser_sends_it(text: str, expected: str) -> None:
    assert parse_origin(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "shop.example",
        "ftp://shop.example",
        "https://shop.example/path",
        "https://shop.example?q",
        "https://shop.example#f",
        "https://user@shop.example",
        "https://shop.example:99999",
        "https://",
    ],
)
def test_what_is_not_an_origin_is_refused_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        parse_origin(text)


def test_a_url_password_is_redacted_and_other_urls_are_unchanged() -> None:
    assert redact_url("redis://:hunter2@db:6379/0") == "redis://:***@db:6379/0"
    assert redact_url("redis://me:hunter2@db/0") == "redis://me:***@db/0"
    assert redact_url("redis://db:6379/0") == "redis://db:6379/0"


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@host:6380/2", "redis://host"]
)
def test_a_good_redis_url_has_no_problem(url: str) -> None:
    assert redis_url_problem(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "redis://:secret@host:port/0",
        "redis://:secret@host/db",
        "redis://:secret@/0",
        "redis://:secret@host/0?x=1",
    ],
)
def test_a_bad_redis_url_is_described_without_its_password(url: str) -> None:
    problem = redis_url_problem(url)
    assert problem is not None
    assert "is not a Redis URL (try" in problem
    assert "secret" not in problem and ":***@" in problem
