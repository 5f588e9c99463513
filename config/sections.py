"""One loader per config section: its keys read, defaulted and bounded.

Each ``load_*`` takes a :class:`~weaver.config.reader.Reader` over its table and returns the
section's frozen config, recording a problem per bad key (never raising). Rules that span
sections (workers need a shared bus, a Redis bus needs a secret) are in
:mod:`weaver.config.load`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from weaver.config.addresses import parse_host_port, parse_origin, redact_url, redis_url_problem
from weaver.config.reader import Reader
from weaver.config.schema import (
    AccessLogFormat,
    BusConfig,
    CacheConfig,
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

MAX_WORKERS = 64
_MODES = ", ".join(m.value for m in IncludeMode)
_ACCESS_LOG = ", ".join(f.value for f in AccessLogFormat)


def _secret(reader: Reader, key: str, env: Mapping[str, str]) -> str:
    value = reader.get(key, str, "")
    if value.startswith("env:"):
        name = value[4:]
        if name not in env:
            reader.problem(key, f"environment variable {name} is not set (export {name}=…)")
            return ""
        return env[name]
    return value


def load_server(r: Reader) -> ServerConfig:
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


def _access_log(r: Reader, default: AccessLogFormat) -> AccessLogFormat:
    text = r.get("access_log", str, None)  # None marks "absent"
    if text is None:
        return default
    try:
        return AccessLogFormat(text)
    except ValueError:
        r.problem("access_log", f'expected one of {_ACCESS_LOG}; got "{text}"')
        return default


def _readable(r: Reader, key: str) -> str:
    """A file path that must be readable now (a TLS certificate or key)."""
    path = r.get(key, str, "")
    if path:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            r.problem(key, f'cannot read "{path}": {exc.strerror}')
    return path


def _tls_pair(r: Reader, cert: str, key: str) -> None:
    if bool(cert) != bool(key):
        missing = "tls_key" if cert else "tls_cert"
        r.problem(missing, "is required with tls_cert and tls_key: set both or neither")


def _networks(r: Reader, key: str) -> tuple[str, ...]:
    out: list[str] = []
    for index, text in enumerate(r.strings(key)):
        try:
            out.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            r.problem(f"{key}[{index}]", f'"{text}" is not an IP address or network')
    return tuple(out)


def load_session(r: Reader, env: Mapping[str, str]) -> SessionConfig:
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


def load_origin(r: Reader) -> OriginConfig:
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


def _mode(r: Reader, key: str, default: IncludeMode | None) -> IncludeMode | None:
    text = r.get(key, str, None)  # None marks "absent"
    if text is None:
        return default
    try:
        return IncludeMode(text)
    except ValueError:
        r.problem(key, f'expected one of {_MODES}; got "{text}"')
        return default


def load_route(r: Reader) -> RouteConfig:
    path = r.required("path", str, "/")
    if not path.startswith("/"):
        r.problem("path", f'"{path}" must start with "/"')
    rules: list[IncludeRule] = []
    for rule_path, table in r.tables("include"):
        rr = r.nested(table, rule_path, "include")
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


def load_cache(r: Reader) -> CacheConfig:
    d = CacheConfig()
    return CacheConfig(
        dir=r.get("dir", str, d.dir),
        max_size_bytes=r.parsed("max_size", parse_size, d.max_size_bytes),
        memory_size_bytes=r.parsed("memory_size", parse_size, d.memory_size_bytes),
    )


def load_bus(r: Reader, d: BusConfig) -> BusConfig:
    bus = BusConfig(
        url=r.get("url", str, d.url),
        timeout_s=r.parsed("timeout", parse_duration, d.timeout_s),
        session_log=r.get("session_log", int, d.session_log),
        channel_history=r.get("channel_history", int, d.channel_history),
        session_ttl_s=r.parsed("session_ttl", parse_duration, d.session_ttl_s),
    )
    if bus.is_redis:
        problem = redis_url_problem(bus.url)
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


def _delivery(r: Reader, default: SuspenseDelivery) -> SuspenseDelivery:
    text = r.get("suspense_delivery", str, None)
    if text is None:
        return default
    try:
        return SuspenseDelivery(text)
    except ValueError:
        choices = ", ".join(f'"{d.value}"' for d in SuspenseDelivery)
        r.problem("suspense_delivery", f'expected one of {choices}; got "{text}"')
        return default
