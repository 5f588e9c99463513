"""The error tree's root and the config errors (config/errors.py): what operators read."""

from __future__ import annotations

from weaver.config.errors import ConfigError, ConfigProblem, WeaverError


def test_a_config_error_lists_every_problem_with_file_and_key_path() -> None:
    error = ConfigError(
        "weaver.toml",
        [
            ConfigProblem("route[2].ttl", '"5 min" is not a duration (try "300s")'),
            ConfigProblem("", "not TOML: line 3"),
        ],
    )
    assert str(error) == (
        'weaver.toml: route[2].ttl: "5 min" is not a duration (try "300s")\n'
        "weaver.toml: not TOML: line 3"
    )
    assert error.file == "weaver.toml"
    assert len(error.problems) == 2
    assert issubclass(ConfigError, WeaverError)
