"""The section loaders: each section's keys read, defaulted and bounded, problems named."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from weaver.config.errors import ConfigProblem
from weaver.config.reader import Reader
from weaver.config.schema import BusConfig
from weaver.config.sections import (
    load_bus,
    load_cache,
    load_origin,
    load_route,
    load_server,
    load_session,
)

T = TypeVar("T")


def read(load: Callable[[Reader], T], table: dict[str, object], path: str) -> tuple[T, list[str]]:
    """Load ``table`` as the section at ``path``; the value and each problem as rendered."""
    problems: list[ConfigProblem] = []
    reader = Reader(problems, table, path, path.partition("[")[0])
    value = load(reader)
    reader.finish()
    return value, [p.render("w.toml") for p in problems]


def test_session_bounds_and_allowed_origins_have_defaults() -> None:
    value, problems = read(lambda r: load_session(r, {}), {}, "session")
    assert problems == []
    assert value.allowed_origins == ()
    assert (value.max_subscriptions, value.max_channel_bytes) == (64, 256)
    assert (value.listen_backlog, value.handshake_timeout_s) == (4096, 30.0)


def test_session_listen_backlog_and_handshake_timeout_are_read_and_bounded() -> None:
    value, problems = read(
        lambda r: load_session(r, {}),
        {"listen_backlog": 16384, "handshake_timeout": "1m"},
        "session",
    )
    assert problems == []
    assert (value.listen_backlog, value.handshake_timeout_s) == (16384, 60.0)
    _, problems = read(
        lambda r: load_session(r, {}), {"listen_backlog": 0, "handshake_timeout": "0s"}, "session"
    )
    assert problems == [
        "w.toml: session.listen_backlog: must be 1..65535; got 0 (try 4096)",
        "w.toml: session.handshake_timeout: must be more than 0s and at most 10m; got 0.0s "
        '(try "30s")',
    ]


def test_session_allowed_origins_are_normalized_as_a_browser_sends_them() -> None:
    value, problems = read(
        lambda r: load_session(r, {}),
        {
            "allowed_origins": [
                "https://Shop.example:443/",
                "http://127.0.0.1:8080",
                "http://[::1]:80",
            ],
            "max_subscriptions": 8,
            "max_channel_bytes": 100,
        },
        "session",
    )
    assert problems == []
    assert value.allowed_origins == (
        "https://shop.example",
        "http://127.0.0.1:8080",
        "http://[::1]",
    )
    assert (value.max_subscriptions, value.max_channel_bytes) == (8, 100)


def test_bad_session_origins_and_bounds_are_each_named() -> None:
    _, problems = read(
        lambda r: load_session(r, {}),
        {
            "allowed_origins": ["shop.example", "https://shop.example/path", 3],
            "max_subscriptions": 0,
            "max_channel_bytes": "big",
        },
        "session",
    )
    assert problems == [
        "w.toml: session.allowed_origins[2]: expected a string; got 3",
        'w.toml: session.allowed_origins[0]: "shop.example" is not an origin '
        '(try "https://shop.example" or "http://127.0.0.1:8080")',
        'w.toml: session.allowed_origins[1]: "https://shop.example/path" is not an origin '
        '(try "https://shop.example" or "http://127.0.0.1:8080")',
        'w.toml: session.max_channel_bytes: expected an integer; got "big"',
        "w.toml: session.max_subscriptions: must be 1..100000; got 0 (try 64)",
    ]


def test_session_secrets_are_read_from_the_environment_when_asked() -> None:
    value, problems = read(
        lambda r: load_session(r, {"S": "from-env"}),
        {"secret": "env:S", "publish_token": "plain"},
        "session",
    )
    assert problems == []
    assert (value.secret, value.publish_token) == ("from-env", "plain")


def test_routes_proxy_upgrade_requests_unless_told_not_to() -> None:
    default, _ = read(load_route, {"path": "/", "origin": "o"}, "route[0]")
    refused, _ = read(load_route, {"path": "/x", "origin": "o", "websocket": False}, "route[1]")
    assert (default.is_upgrade_allowed, refused.is_upgrade_allowed) == (True, False)


def test_a_route_names_problems_in_its_include_rules_by_index() -> None:
    _, problems = read(
        load_route,
        {
            "path": "x",
            "origin": "o",
            "suspense_delivery": "telegram",
            "include": [{"src": "/a", "mode": "lazy"}, {"mode": "suspense"}, 3],
        },
        "route[0]",
    )
    assert problems == [
        'w.toml: route[0].path: "x" must start with "/"',
        "w.toml: route[0].include[2]: expected a table; got 3",
        'w.toml: route[0].include[0].mode: expected one of blocking, suspense; got "lazy"',
        "w.toml: route[0].include[1].src: is required",
        'w.toml: route[0].suspense_delivery: expected one of "session", "inline"; got "telegram"',
    ]


def test_origin_connection_bounds_have_defaults_and_are_checked() -> None:
    server, problems = read(load_server, {}, "server")
    assert problems == []
    assert (server.max_origin_connections, server.max_connections_per_origin) == (4096, 1024)
    _, problems = read(load_server, {"max_connections_per_origin": 0}, "server")
    assert problems == ["w.toml: server.max_connections_per_origin: must be 1..100000; got 0"]


def test_server_bounds_and_tls_pairs_are_each_named() -> None:
    _, problems = read(
        load_server,
        {
            "workers": 0,
            "max_include_depth": 17,
            "tls_cert": "/nonexistent/cert.pem",
            "trusted_proxies": ["10.0.0.0/8", "not-a-net"],
            "access_log": "xml",
        },
        "server",
    )
    assert problems == [
        'w.toml: server.trusted_proxies[1]: "not-a-net" is not an IP address or network',
        'w.toml: server.access_log: expected one of text, json, off; got "xml"',
        'w.toml: server.tls_cert: cannot read "/nonexistent/cert.pem": No such file or directory',
        "w.toml: server.tls_key: is required with tls_cert and tls_key: set both or neither",
        "w.toml: server.workers: must be 1..64; got 0 (try 1 per core)",
        "w.toml: server.max_include_depth: must be 0..16; got 17",
    ]


def test_an_origin_url_gives_scheme_host_and_default_port() -> None:
    origin, problems = read(
        load_origin,
        {"name": "o", "url": "https://shop.example/", "allow_hosts": ["cdn:1", "nope"]},
        "origin[0]",
    )
    assert (origin.url, origin.scheme, origin.host, origin.port) == (
        "https://shop.example",
        "https",
        "shop.example",
        443,
    )
    assert problems == [
        'w.toml: origin[0].allow_hosts[1]: "nope" is not host:port (try "127.0.0.1:8080")'
    ]


def test_an_origin_url_with_a_bad_port_is_named() -> None:
    _, problems = read(load_origin, {"name": "o", "url": "http://a:99999"}, "origin[0]")
    assert problems == [
        'w.toml: origin[0].url: "http://a:99999" is not an http(s) URL '
        '(try "http://127.0.0.1:9000")'
    ]


def test_cache_sizes_are_parsed() -> None:
    cache, problems = read(load_cache, {"max_size": "1GiB", "memory_size": "1MiB"}, "cache")
    assert problems == []
    assert (cache.max_size_bytes, cache.memory_size_bytes) == (1024**3, 1024**2)


def test_bus_timeout_and_ttl_are_bounded() -> None:
    _, problems = read(
        lambda r: load_bus(r, BusConfig()),
        {"timeout": "2m", "session_ttl": "0s", "session_log": 0},
        "bus",
    )
    assert problems == [
        "w.toml: bus.session_log: must be 1..1000000; got 0",
        'w.toml: bus.timeout: must be over 0 and at most 60s; got 120.0s (try "1s")',
        'w.toml: bus.session_ttl: must be at least 1s; got 0.0s (try "10m")',
    ]
