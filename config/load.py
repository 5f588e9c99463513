"""TOML to :class:`~weaver.config.schema.Config`, reporting every problem with its location.

The loader never stops at the first problem: it walks the whole document, collects a
:class:`ConfigProblem` for each unknown key, wrong type or bad value, and raises one
:class:`ConfigError` naming the file and every key path, so an operator fixes a file in one
pass. This module reads the file and checks the rules that span sections; each section is
read by :mod:`weaver.config.sections`, each table by :class:`~weaver.config.reader.Reader`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from weaver.config.addresses import parse_host_port, redact_url
from weaver.config.errors import ConfigError, ConfigProblem
from weaver.config.reader import Reader
from weaver.config.schema import BusConfig, Config, OriginConfig, RouteConfig
from weaver.config.sections import (
    load_bus,
    load_cache,
    load_origin,
    load_route,
    load_server,
    load_session,
)

# parse_host_port stays importable here (the CLI imports it from this module).
__all__ = ["build_config", "load_config", "parse_host_port"]


def build_config(
    document: Mapping[str, object], source: str, env: Mapping[str, str] | None = None
) -> Config:
    """Validate a parsed TOML document into a :class:`Config`.

    Raises:
        ConfigError: listing every problem, each with its key path.
    """
    env = os.environ if env is None else env
    problems: list[ConfigProblem] = []
    top = Reader(problems, document, "", "")

    def section(key: str) -> Reader:
        return top.nested(top.table(key), key, key)

    server_r, session_r, cache_r, bus_r = (
        section("server"),
        section("session"),
        section("cache"),
        section("bus"),
    )
    server = load_server(server_r)
    session = load_session(session_r, env)
    cache = load_cache(cache_r)
    bus = load_bus(bus_r, BusConfig())
    if bus.is_redis and not session.secret:
        session_r.problem(
            "secret",
            f'is required when bus.url is Redis ("{redact_url(bus.url)}"): every node signs and '
            'verifies session cookies with it; set secret = "env:WEAVER_SECRET" (the same '
            "value on every node)",
        )
    if server.workers > 1 and not bus.is_redis:
        server_r.problem(
            "workers",
            f'{server.workers} workers cannot share the in-process bus (bus.url = "{bus.url}"): '
            "purges and channel messages would reach one worker only; set bus.url = "
            '"redis://127.0.0.1:6379" (every worker joins it) or workers = 1',
        )
    if not session.secret and server.workers > 1:
        session_r.problem(
            "secret",
            f"is required with server.workers = {server.workers}: every worker must sign "
            'session cookies with the same key; set secret = "env:WEAVER_SECRET"',
        )
    for reader in (server_r, session_r, cache_r, bus_r):
        reader.finish()

    origins: list[OriginConfig] = []
    for path, table in top.tables("origin"):
        reader = top.nested(table, path, "origin")
        origin = load_origin(reader)
        if origin.name and any(o.name == origin.name for o in origins):
            reader.problem("name", f'"{origin.name}" names an earlier origin too; names are unique')
        origins.append(origin)
        reader.finish()

    routes: list[RouteConfig] = []
    names = {o.name for o in origins}
    for path, table in top.tables("route"):
        reader = top.nested(table, path, "route")
        route = load_route(reader)
        if route.origin and route.origin not in names:
            known = ", ".join(sorted(names)) or "none are defined"
            reader.problem("origin", f'"{route.origin}" is not an origin name (known: {known})')
        routes.append(route)
        reader.finish()
    top.finish()

    if problems:
        raise ConfigError(source, problems)
    return Config(
        server=server,
        session=session,
        cache=cache,
        bus=bus,
        origins=tuple(origins),
        routes=tuple(routes),
        source=source,
    )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file.

    Raises:
        ConfigError: the file is missing, is not TOML, or has problems (all listed).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [ConfigProblem("", f"cannot read: {exc.strerror}")]) from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("", f"not valid TOML: {exc}")]) from exc
    return build_config(document, source, env)
