"""The loader: a whole file to Config, every problem listed with the file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from weaver.config.errors import ConfigError
from weaver.config.load import build_config, load_config
from weaver.config.schema import IncludeMode

GOOD = """
[server]
listen = "127.0.0.1:8080"
workers = 1

[session]
listen = "127.0.0.1:8081"
secret = "env:WEAVER_SECRET"
publish_token = "env:WEAVER_PUBLISH_TOKEN"

[cache]
dir = ".weaver/cache"
max_size = "512MiB"
memory_size = "16MiB"

[bus]
url = "memory://"

[[origin]]
name = "shop"
url = "http://127.0.0.1:9000"
events = "/_events"
allow_hosts = ["cdn.local:8443"]

[[route]]
path = "/"
origin = "shop"
ttl = "60s"
include_mode = "blocking"
fragment_timeout = "500ms"
vary = ["Accept-Language"]
tags = ["shop"]
websocket = false

[[route.include]]
src = "/recommendations*"
mode = "suspense"
timeout = "2s"
"""

ENV = {"WEAVER_SECRET": "s3cret", "WEAVER_PUBLISH_TOKEN": "tok"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "weaver.toml"
    path.write_text(text)
    return path


def test_every_design_key_loads_into_typed_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env=ENV)
    assert config.server.listen.port == 8080
    assert config.session.secret == "s3cret"
    assert config.session.publish_token == "tok"
    assert config.cache.max_size_bytes == 512 * 1024**2
    assert config.cache.memory_size_bytes == 16 * 1024**2
    assert config.bus.url == "memory://"
    origin = config.origin("shop")
    assert (origin.scheme, origin.host, origin.port, origin.events) == (
        "http",
        "127.0.0.1",
        9000,
        "/_events",
    )
    assert str(origin.allow_hosts[0]) == "cdn.local:8443"
    route = config.routes[0]
    assert route.ttl_s == 60.0
    assert route.fragment_timeout_s == 0.5
    assert route.vary == ("accept-language",)
    assert route.tags == ("shop",)
    assert route.is_upgrade_allowed is False
    rule = route.rule_for("/recommendations/42")
    assert rule is not None and rule.mode is IncludeMode.SUSPENSE and rule.timeout_s == 2.0
    assert route.rule_for("/header") is None


def test_wrong_config_lists_every_problem_with_file_and_key_path(tmp_path: Path) -> None:
    bad = (
        GOOD.replace('mode = "suspense"', 'mode = "blokking"')
        .replace('ttl = "60s"', 'ttl = "5 min"')
        .replace("workers = 1", 'workers = "two"')
    )
    bad += '\n[[route]]\npath = "/x"\norigin = "nope"\ncolour = "red"\n'
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV)
    lines = str(info.value).splitlines()
    assert (
        f'{path}: route[0].include[0].mode: expected one of blocking, suspense; got "blokking"'
        in lines
    )
    assert (
        f'{path}: route[0].ttl: "5 min" is not a duration (try "300ms", "60s", "5m" or "1h")'
        in lines
    )
    assert f'{path}: server.workers: expected an integer; got "two"' in lines
    assert f'{path}: route[1].origin: "nope" is not an origin name (known: shop)' in lines
    assert any(line.startswith(f"{path}: route[1].colour: unknown key") for line in lines)
    assert len(lines) == 5


def test_missing_secret_names_the_environment_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GOOD), env={"WEAVER_SECRET": "x"})
    assert str(info.value) == (
        f"{tmp_path / 'weaver.toml'}: session.publish_token: environment variable "
        "WEAVER_PUBLISH_TOKEN is not set (export WEAVER_PUBLISH_TOKEN=…)"
    )


def test_renamed_key_names_its_new_name() -> None:
    with pytest.raises(ConfigError) as info:
        build_config(
            {
                "route": [{"path": "/", "origin": "o", "mode": "suspense"}],
                "origin": [{"name": "o", "url": "http://127.0.0.1:1"}],
            },
            "w.toml",
        )
    assert (
        str(info.value)
        == 'w.toml: route[0].mode: was renamed to "include_mode"; use include_mode = …'
    )


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("[[origin]]\nname='a'\nurl='ftp://x'", 'origin[0].url: "ftp://x" is not an http(s) URL'),
        ("[[origin]]\nurl='http://a:1'", "origin[0].name: is required"),
        ("[server]\nlisten='8080'", 'server.listen: "8080" is not host:port'),
        ("[cache]\nmax_size='lots'", 'cache.max_size: "lots" is not a size'),
        ("[bus]\nurl='amqp://x'", 'bus.url: "amqp://x" is not a bus URL'),
        ("route = 3", "route: expected an array; got 3"),
        (
            "[[origin]]\nname='a'\nurl='http://a:1'\n[[route]]\npath='/'\norigin='a'\n"
            "websocket='no'",
            'route[0].websocket: expected true or false; got "no"',
        ),
        (
            "[[origin]]\nname='a'\nurl='http://a:1'\n[[origin]]\nname='a'\nurl='http://b:1'",
            'origin[1].name: "a" names an earlier origin too',
        ),
    ],
)
def test_each_bad_value_gets_a_message_naming_its_key(snippet: str, expected: str) -> None:
    import tomllib

    with pytest.raises(ConfigError) as info:
        build_config(tomllib.loads(snippet), "f.toml", env={})
    assert any(line.startswith(f"f.toml: {expected}") for line in str(info.value).splitlines())


def test_not_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"weaver.toml: not valid TOML"):
        load_config(write(tmp_path, "[server\n"))
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read"):
        load_config(tmp_path / "nope.toml")


def test_longest_route_prefix_wins() -> None:
    config = build_config(
        {
            "origin": [{"name": "o", "url": "http://127.0.0.1:1"}],
            "route": [{"path": "/", "origin": "o"}, {"path": "/shop", "origin": "o", "ttl": "1s"}],
        },
        "f.toml",
    )
    shop = config.route_for("/shop/42")
    assert shop is not None and shop.path == "/shop"
    root = config.route_for("/shopping")
    assert root is not None and root.path == "/"
