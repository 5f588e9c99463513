"""Cache keys: normalised, readable, the same for requests a cache must treat alike."""

from __future__ import annotations

import pytest

from weaver.cache.keys import (
    cache_key,
    key_path,
    key_prefix,
    normalise_query,
    parse_vary,
    request_vary_values,
)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("b=2&a=1", "a=1&b=2"),
        ("a=%7e", "a=~"),
        ("a=1&a=2", "a=1&a=2"),
        ("q=a+b", "q=a%20b"),
        ("flag", "flag="),
    ],
)
def test_equivalent_queries_normalise_alike(a: str, b: str) -> None:
    assert normalise_query(a) == normalise_query(b)


def test_repeated_parameters_keep_their_order() -> None:
    assert normalise_query("a=2&a=1") != normalise_query("a=1&a=2")


def test_keys() -> None:
    assert cache_key("GET", "Shop.Example:80", "/p/42", "b=2&a=1", ()) == (
        "GET shop.example/p/42?a=1&b=2"
    )
    assert cache_key("HEAD", "h", "/p", "", ()) == cache_key("GET", "h", "/p", "", ())
    assert cache_key("GET", "h", "/a%7eb", "", ()) == cache_key("GET", "h", "/a~b", "", ())
    assert cache_key("GET", "h", "/p", "", (("accept-language", " fr  ca "),)) == (
        "GET h/p|accept-language=fr ca"
    )


def test_prefix_and_path_of_a_key() -> None:
    key = cache_key("GET", "h:8080", "/shop/p/1", "x=1", (("accept-language", "fr"),))
    assert key.startswith(key_prefix("h:8080", "/shop/"))
    assert key_path(key) == "/shop/p/1"


def test_vary() -> None:
    assert parse_vary("Accept-Language, accept-encoding") == ("accept-language", "accept-encoding")
    assert parse_vary(None) == ()
    assert parse_vary("Accept, *") is None
    values = request_vary_values(["Accept-Language"], ["X-Device"], {"accept-language": "fr"})
    assert values == (("accept-language", "fr"), ("x-device", ""))
    assert request_vary_values([], [], {"accept-language": "fr"}) == ()
