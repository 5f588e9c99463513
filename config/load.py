"""TOML to :class:`~weaver.config.schema.Config`, reporting every problem with its location.

The loader never stops at the first problem: it walks the whole document, collects a
:class:`ConfigProblem` for each unknown key, wrong type or bad value, and raises one
:class:`ConfigError` naming the file and every key path, so an operator fixes a file in one
pass.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from weaver.config.errors import ConfigError, ConfigProblem
from weaver.config.schema import (
    AccessLogFormat,
    BusConfig,
    CacheConfig,
    Config,
    HostPort,
    IncludeMode,
    IncludeRule,
    OriginConfig,
    RouteConfig,
    ServerConfig,
    SessionConfig,
    SuspenseDelivery,
)
from weaver.config.units import parse_duration, parse_size

T = TypeVar("T")

# Keys that were renamed: old key path suffix -> new name. A file using an old name gets an
# error naming the new one instead of a bare "unknown key".
RENAMED_KEYS: Mapping[str, str] = {
    "route.mode": "include_mode",
    "route.timeout": "fragment_timeout",
    "cache.path": "dir",
    "cache.size": "max_size",
}

_MODES = ", ".join(m.value for m in IncludeMode)


class _Reader:
    """Reads typed values out of one TOML table, recording problems instead of raising."""

    def __init__(
        self, problems: list[ConfigProblem], table: Mapping[str, object], path: str, kind: str
    ) -> None:
        self._problems = problems
        self._table = table
        self._path = path
        self._kind = kind
        self._seen: set[str] = set()

    def _key_path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def problem(self, key: str, message: str) -> None:
        self._problems.append(ConfigProblem(self._key_path(key), message))

    def get(self, key: str, kind: type[T], default: T) -> T:
        self._seen.add(key)
        if key not in self._table:
            return default
        value = self._table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # type: ignore[return-value]  # int is accepted for float
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(key, f"expected {_type_name(kind)}; got {_show(value)}")
            return default
        return value

    def required(self, key: str, kind: type[T], default: T) -> T:
        if key not in self._table:
            self._seen.add(key)
            self.problem(key, "is required")
            return default
        return self.get(key, kind, default)

    def parsed(self, key: str, parse: Callable[[str], T], default: T) -> T:
        text = self.get(key, str, None)  # None marks "absent"
        if text is None:
            return default
        try:
            return parse(text)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        out: list[str] = []
        for index, value in enumerate(values):
            if isinstance(value, str):
                out.append(value)
            else:
                self.problem(f"{key}[{index}]", f"expected a string; got {_show(value)}")
        return tuple(out)

    def tables(self, key: str) -> list[tuple[str, Mapping[str, object]]]:
        values = self.get(key, list, [])
        out: list[tuple[str, Mapping[str, object]]] = []
        for index, value in enumerate(values):
            if isinstance(value, dict):
                out.append((f"{self._key_path(key)}[{index}]", value))
            else:
                self.problem(f"{key}[{index}]", f"expected a table; got {_show(value)}")
        return out

    def table(self, key: str) -> Mapping[str, object]:
        return self.get(key, dict, {})

    def finish(self) -> None:
        """Record every key of the table that nobody read as unknown."""
        for key in self._table:
            if key in self._seen:
                continue
            renamed = RENAMED_KEYS.get(f"{self._kind}.{key}")
            if renamed is not None:
                self.problem(key, f'was renamed to "{renamed}"; use {renamed} = …')
            else:
                known = ", ".join(sorted(self._seen))
                self.problem(key, f"unknown key (known keys here: {known})")


def _type_name(kind: type[object]) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "an array",
        dict: "a table",
    }.get(kind, kind.__name__)


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def parse_host_port(text: str) -> HostPort:
    """Parse ``"127.0.0.1:8080"`` (or ``"[::1]:8080"``) into a :class:`HostPort`."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f'"{text}" is not host:port (try "127.0.0.1:8080")')
    return HostPort(host.strip("[]"), int(port_text))


def _secret(reader: _Reader, key: str, env: Mapping[str, str]) -> str:
    value = reader.get(key, str, "")
    if value.startswith("env:"):
        name = value[4:]
        if name not in env:
            reader.problem(key, f"environment variable {name} is not set (export {name}=…)")
            return ""
        return env[name]
    return value


def _load_server(r: _Reader) -> ServerConfig:
    d = ServerConfig()
    server = ServerConfig(
        listen=r.parsed("listen", parse_host_port, d.listen),
        workers=r.get("workers", int, d.workers),
        max_include_depth=r.get("max_include_depth", int, d.max_include_depth),
        fragment_buffer_bytes=r.parsed("fragment_buffer", parse_size, d.fragment_buffer_bytes),
        connect_timeout_s=r.parsed("connect_timeout", parse_duration, d.connect_timeout_s),
        read_timeout_s=r.parsed("read_timeout", parse_duration, d.read_timeout_s),
        trusted_proxies=_networks(r, "trusted_proxies"),
        max_includes=r.get("max_includes", int, d.max_includes),
        max_fragment_requests=r.get("max_fragment_requests", int, d.max_fragment_requests),
        max_origin_connections=r.get("max_origin_connections", int, d.max_origin_connections),
        max_connections_per_origin=r.get(
            "max_connections_per_origin", int, d.max_connections_per_origin
        ),
        header_timeout_s=r.parsed("header_timeout", parse_duration, d.header_timeout_s),
        keepalive_timeout_s=r.parsed("keepalive_timeout", parse_duration, d.keepalive_timeout_s),
        max_request_line_bytes=r.parsed("max_request_line", parse_size, d.max_request_line_bytes),
        max_header_bytes=r.parsed("max_header", parse_size, d.max_header_bytes),
        drain_timeout_s=r.parsed("drain_timeout", parse_duration, d.drain_timeout_s),
        access_log=_access_log(r, d.access_log),
        tls_cert=_readable(r, "tls_cert"),
        tls_key=_readable(r, "tls_key"),
    )
    _tls_pair(r, server.tls_cert, server.tls_key)
    if not 1 <= server.workers <= MAX_WORKERS:
        r.problem("workers", f"must be 1..{MAX_WORKERS}; got {server.workers} (try 1 per core)")
    for key, value in (
        ("max_includes", server.max_includes),
        ("max_fragment_requests", server.max_fragment_requests),
        ("max_origin_connections", server.max_origin_connections),
        ("max_connections_per_origin", server.max_connections_per_origin),
    ):
        if not 1 <= value <= 100_000:
            r.problem(key, f"must be 1..100000; got {value}")
    if not 0 <= server.max_include_depth <= 16:
        r.problem("max_include_depth", f"must be 0..16; got {server.max_include_depth}")
    return server


MAX_WORKERS = 64
_ACCESS_LOG = ", ".join(f.value for f in AccessLogFormat)


def _access_log(r: _Reader, default: AccessLogFormat) -> AccessLogFormat:
    text = r.get("access_log", str, None)  # None marks "absent"
    if text is None:
        return default
    try:
        return AccessLogFormat(text)
    except ValueError:
        r.problem("access_log", f'expected one of {_ACCESS_LOG}; got "{text}"')
        return default


def _readable(r: _Reader, key: str) -> str:
    """A file path that must be readable now (a TLS certificate or key)."""
    path = r.get(key, str, "")
    if path:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            r.problem(key, f'cannot read "{path}": {exc.strerror}')
    return path


def _tls_pair(r: _Reader, cert: str, key: str) -> None:
    if bool(cert) != bool(key):
        missing = "tls_key" if cert else "tls_cert"
        r.problem(missing, "is required with tls_cert and tls_key: set both or neither")


def _networks(r: _Reader, key: str) -> tuple[str, ...]:
    out: list[str] = []
    for index, text in enumerate(r.strings(key)):
        try:
            out.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            r.problem(f"{key}[{index}]", f'"{text}" is not an IP address or network')
    return tuple(out)


def parse_origin(text: str) -> str:
    """``"https://Shop.example:443/"`` -> ``"https://shop.example"``: an origin as a browser
    sends it in ``Origin`` (RFC 6454 §6.2): scheme, host, and the port unless default."""
    hint = f'"{text}" is not an origin (try "https://shop.example" or "http://127.0.0.1:8080")'
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError(hint) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise ValueError(hint)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 443 if parts.scheme == "https" else 80
    if port is None or port == default:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _load_session(r: _Reader, env: Mapping[str, str]) -> SessionConfig:
    d = SessionConfig()
    origins: list[str] = []
    for index, text in enumerate(r.strings("allowed_origins")):
        try:
            origins.append(parse_origin(text))
        except ValueError as exc:
            r.problem(f"allowed_origins[{index}]", str(exc))
    session = SessionConfig(
        listen=r.parsed("listen", parse_host_port, d.listen),
        public_url=r.get("public_url", str, d.public_url),
        secret=_secret(r, "secret", env),
        publish_token=_secret(r, "publish_token", env),
        allowed_origins=tuple(origins),
        max_subscriptions=r.get("max_subscriptions", int, d.max_subscriptions),
        max_channel_bytes=r.get("max_channel_bytes", int, d.max_channel_bytes),
        listen_backlog=r.get("listen_backlog", int, d.listen_backlog),
        handshake_timeout_s=r.parsed("handshake_timeout", parse_duration, d.handshake_timeout_s),
        tls_cert=_readable(r, "tls_cert"),
        tls_key=_readable(r, "tls_key"),
    )
    _tls_pair(r, session.tls_cert, session.tls_key)
    if not 1 <= session.max_subscriptions <= 100_000:
        r.problem(
            "max_subscriptions", f"must be 1..100000; got {session.max_subscriptions} (try 64)"
        )
    if not 1 <= session.max_channel_bytes <= 4096:
        r.problem(
            "max_channel_bytes", f"must be 1..4096; got {session.max_channel_bytes} (try 256)"
        )
    if not 1 <= session.listen_backlog <= 65535:
        r.problem("listen_backlog", f"must be 1..65535; got {session.listen_backlog} (try 4096)")
    if not 0 < session.handshake_timeout_s <= 600:
        r.problem(
            "handshake_timeout",
            f'must be more than 0s and at most 10m; got {session.handshake_timeout_s}s (try "30s")',
        )
    return session


def _load_origin(r: _Reader) -> OriginConfig:
    name = r.required("name", str, "")
    url = r.required("url", str, "").rstrip("/")
    parts = urlsplit(url)
    scheme, host, port = parts.scheme, parts.hostname or "", 0
    if url:
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            port = -1
        if scheme not in ("http", "https") or not host or port < 0:
            r.problem("url", f'"{url}" is not an http(s) URL (try "http://127.0.0.1:9000")')
    allow: list[HostPort] = []
    for index, text in enumerate(r.strings("allow_hosts")):
        try:
            allow.append(parse_host_port(text))
        except ValueError as exc:
            r.problem(f"allow_hosts[{index}]", str(exc))
    return OriginConfig(
        name=name,
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        events=r.get("events", str, ""),
        allow_hosts=tuple(allow),
        preserve_host=r.get("preserve_host", bool, False),
    )


def _mode(r: _Reader, key: str, default: IncludeMode | None) -> IncludeMode | None:
    text = r.get(key, str, None)  # None marks "absent"
    if text is None:
        return default
    try:
        return IncludeMode(text)
    except ValueError:
        r.problem(key, f'expected one of {_MODES}; got "{text}"')
        return default


def _load_route(r: _Reader, problems: list[ConfigProblem]) -> RouteConfig:
    path = r.required("path", str, "/")
    if not path.startswith("/"):
        r.problem("path", f'"{path}" must start with "/"')
    rules: list[IncludeRule] = []
    for rule_path, table in r.tables("include"):
        rr = _Reader(problems, table, rule_path, "include")
        rules.append(
            IncludeRule(
                src=rr.required("src", str, ""),
                mode=_mode(rr, "mode", None),
                timeout_s=rr.parsed("timeout", parse_duration, None),
                is_stream=rr.get("stream", bool, False),
            )
        )
        rr.finish()
    d = RouteConfig(path="/", origin="")
    ttl = r.parsed("ttl", parse_duration, None)
    return RouteConfig(
        path=path,
        origin=r.required("origin", str, ""),
        ttl_s=ttl,
        include_mode=_mode(r, "include_mode", d.include_mode) or d.include_mode,
        fragment_timeout_s=r.parsed("fragment_timeout", parse_duration, d.fragment_timeout_s),
        vary=tuple(h.lower() for h in r.strings("vary")),
        tags=r.strings("tags"),
        includes=tuple(rules),
        shared=r.get("shared", bool, d.shared),
        store_set_cookie=r.get("store_set_cookie", bool, d.store_set_cookie),
        is_upgrade_allowed=r.get("websocket", bool, d.is_upgrade_allowed),
        suspense_delivery=_delivery(r, d.suspense_delivery),
    )


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _redis_url_problem(url: str) -> str | None:
    hint = '(try "redis://127.0.0.1:6379/0", or rediss://:PASSWORD@host:6380/0 for TLS)'
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises on a bad port
    except ValueError:
        return f'"{redact_url(url)}" is not a Redis URL {hint}'
    db = parts.path.lstrip("/")
    if not parts.hostname or (db and not db.isdigit()) or parts.query or parts.fragment:
        return f'"{redact_url(url)}" is not a Redis URL {hint}'
    return None


def _load_bus(r: _Reader, d: BusConfig) -> BusConfig:
    bus = BusConfig(
        url=r.get("url", str, d.url),
        timeout_s=r.parsed("timeout", parse_duration, d.timeout_s),
        session_log=r.get("session_log", int, d.session_log),
        channel_history=r.get("channel_history", int, d.channel_history),
        session_ttl_s=r.parsed("session_ttl", parse_duration, d.session_ttl_s),
    )
    if bus.is_redis:
        problem = _redis_url_problem(bus.url)
        if problem is not None:
            r.problem("url", problem)
    elif bus.url != "memory://":
        r.problem(
            "url",
            f'"{redact_url(bus.url)}" is not a bus URL '
            '(try "memory://" or "redis://127.0.0.1:6379/0")',
        )
    for key, value in (("session_log", bus.session_log), ("channel_history", bus.channel_history)):
        if not 1 <= value <= 1_000_000:
            r.problem(key, f"must be 1..1000000; got {value}")
    if not 0 < bus.timeout_s <= 60:
        r.problem("timeout", f'must be over 0 and at most 60s; got {bus.timeout_s}s (try "1s")')
    if bus.session_ttl_s < 1:
        r.problem("session_ttl", f'must be at least 1s; got {bus.session_ttl_s}s (try "10m")')
    return bus


def _delivery(r: _Reader, default: SuspenseDelivery) -> SuspenseDelivery:
    text = r.get("suspense_delivery", str, None)
    if text is None:
        return default
    try:
        return SuspenseDelivery(text)
    except ValueError:
        choices = ", ".join(f'"{d.value}"' for d in SuspenseDelivery)
        r.problem("suspense_delivery", f'expected one of {choices}; got "{text}"')
        return default


def build_config(
    document: Mapping[str, object], source: str, env: Mapping[str, str] | None = None
) -> Config:
    """Validate a parsed TOML document into a :class:`Config`.

    Raises:
        ConfigError: listing every problem, each with its key path.
    """
    env = os.environ if env is None else env
    problems: list[ConfigProblem] = []
    top = _Reader(problems, document, "", "")

    def section(key: str) -> _Reader:
        return _Reader(problems, top.table(key), key, key)

    server_r, session_r, cache_r, bus_r = (
        section("server"),
        section("session"),
        section("cache"),
        section("bus"),
    )
    server = _load_server(server_r)
    session = _load_session(session_r, env)
    cache_d, bus_d = CacheConfig(), BusConfig()
    cache = CacheConfig(
        dir=cache_r.get("dir", str, cache_d.dir),
        max_size_bytes=cache_r.parsed("max_size", parse_size, cache_d.max_size_bytes),
        memory_size_bytes=cache_r.parsed("memory_size", parse_size, cache_d.memory_size_bytes),
    )
    bus = _load_bus(bus_r, bus_d)
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
        reader = _Reader(problems, table, path, "origin")
        origin = _load_origin(reader)
        if origin.name and any(o.name == origin.name for o in origins):
            reader.problem("name", f'"{origin.name}" names an earlier origin too; names are unique')
        origins.append(origin)
        reader.finish()

    routes: list[RouteConfig] = []
    names = {o.name for o in origins}
    for path, table in top.tables("route"):
        reader = _Reader(problems, table, path, "route")
        route = _load_route(reader, problems)
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
