"""``[bus]``: the memory bus by default, Redis by URL, with its limits and its needs."""

from __future__ import annotations

import pytest

from weaver.config.errors import ConfigError
from weaver.config.load import build_config

SECRET = {"session": {"secret": "s"}}


def test_a_redis_url_with_a_password_and_limits_is_accepted() -> None:
    config = build_config(
        {
            **SECRET,
            "bus": {
                "url": "rediss://:pa55@redis.internal:6380/2",
                "timeout": "300ms",
                "session_log": 1000,
                "channel_history": 50,
                "session_ttl": "30m",
            },
        },
        "w.toml",
    )
    assert config.bus.is_redis and config.bus.url == "rediss://:pa55@redis.internal:6380/2"
    assert (config.bus.timeout_s, config.bus.session_log) == (0.3, 1000)
    assert (config.bus.channel_history, config.bus.session_ttl_s) == (50, 1800.0)


def test_a_redis_bus_without_a_session_secret_names_the_key_to_set() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"bus": {"url": "redis://:hunter2@127.0.0.1:6379/0"}}, "w.toml")
    message = str(info.value)
    assert "w.toml: session.secret: is required when bus.url is Redis" in message
    assert 'secret = "env:WEAVER_SECRET"' in message
    assert "hunter2" not in message and "redis://:***@127.0.0.1:6379/0" in message


@pytest.mark.parametrize(
    ("bus", "expected"),
    [
        ({"url": "redis://127.0.0.1:6379/zero"}, 'bus.url: "redis://127.0.0.1:6379/zero" is not'),
        ({"url": "redis://:pw@h:notaport/0"}, 'bus.url: "redis://:***@h:notaport/0" is not'),
        ({"url": "memory://x"}, 'bus.url: "memory://x" is not a bus URL'),
        ({"url": "redis://h/0", "session_log": 0}, "bus.session_log: must be 1..1000000; got 0"),
        ({"url": "redis://h/0", "timeout": "0s"}, "bus.timeout: must be over 0"),
        ({"url": "redis://h/0", "session_ttl": "10ms"}, "bus.session_ttl: must be at least 1s"),
        ({"url": "redis://h/0", "size": 3}, "bus.size: unknown key"),
    ],
)
def test_bad_bus_settings_are_named(bus: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({**SECRET, "bus": bus}, "w.toml")
    assert expected in str(info.value)
