"""The typed, frozen shape of a Weaver config (the contract in DESIGN.md, "Config").

Values here are already parsed: durations are seconds (``*_s``), sizes are bytes
(``*_bytes``), secrets are resolved from the environment. :mod:`weaver.config.load` builds
them from TOML and reports every problem with its key path.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from enum import StrEnum


class AccessLogFormat(StrEnum):
    """``server.access_log``: one line per request, as text or JSON lines, or none."""

    TEXT = "text"
    JSON = "json"
    OFF = "off"


class IncludeMode(StrEnum):
    BLOCKING = "blocking"
    SUSPENSE = "suspense"


class SuspenseDelivery(StrEnum):
    """How a first view's suspense slots reach the visitor."""

    SESSION = "session"  # over the session (WebSocket or SSE)
    INLINE = "inline"  # after the paint, in the same HTTP response


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: HostPort = HostPort("127.0.0.1", 8080)
    workers: int = 1
    max_include_depth: int = 3
    fragment_buffer_bytes: int = 256 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    # Peers (addresses or networks) whose X-Forwarded-For/Forwarded Weaver appends to;
    # any other peer's are replaced, never trusted.
    trusted_proxies: tuple[str, ...] = ()
    # Work one page view may cause: includes found in it (the rest get their fallback)
    # and fragment requests made for it, nested ones included.
    max_includes: int = 256
    max_fragment_requests: int = 512
    # Pooled connections to origins: in all, and to one origin. A streaming suspense
    # slot holds one for as long as it streams.
    max_origin_connections: int = 4096
    max_connections_per_origin: int = 1024
    # A client must send a whole request head within this (slowloris); an idle
    # keep-alive connection is closed after keepalive_timeout.
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 75.0
    max_request_line_bytes: int = 8190
    max_header_bytes: int = 8190  # one header field
    # After SIGTERM: in-flight requests get this long, then are cancelled and logged.
    drain_timeout_s: float = 10.0
    access_log: AccessLogFormat = AccessLogFormat.OFF
    # Both set: the HTTP listener speaks TLS (PEM files; the key unencrypted).
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def is_tls(self) -> bool:
        return bool(self.tls_cert)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    listen: HostPort = HostPort("127.0.0.1", 8081)
    public_url: str = ""
    secret: str = ""
    publish_token: str = ""
    # Origins (``scheme://host[:port]``, normalized) whose pages may open a session, besides
    # pages on the session's own hostname. A browser handshake from any other is refused.
    allowed_origins: tuple[str, ...] = ()
    max_subscriptions: int = 64  # channels per session (pages and client subscribes)
    max_channel_bytes: int = 256  # a channel name's length in UTF-8 bytes
    # A reconnect storm (every socket of a node at once, after a deploy): connections
    # not yet accepted wait in the kernel's queue of this length (capped by the kernel
    # at net.core.somaxconn) instead of having their SYN dropped and retried seconds later.
    listen_backlog: int = 4096
    # An accepted connection's HTTP upgrade must be done within this (websockets'
    # open_timeout); in a storm the last of 10,000 handshakes waits its turn.
    handshake_timeout_s: float = 30.0
    # Both set: the session listener speaks TLS (wss://).
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    dir: str = ".weaver/cache"
    max_size_bytes: int = 1024**3
    memory_size_bytes: int = 64 * 1024**2  # the hot tier; 0 turns it off


@dataclass(frozen=True, slots=True)
class BusConfig:
    """``[bus]``: how sessions, channels and purges reach every node.

    ``memory://`` is one process. ``redis://`` / ``rediss://`` (a password as
    ``redis://:PASSWORD@host:port/db``) shares them through Redis; the limits below
    bound what each session and channel keeps there.
    """

    url: str = "memory://"
    timeout_s: float = 1.0  # every Redis call; past it the node delivers locally
    session_log: int = 256  # messages a session's stream keeps (MAXLEN ~, DROP_OLDEST)
    channel_history: int = 100  # messages a channel's stream keeps (MAXLEN ~, DROP_OLDEST)
    session_ttl_s: float = 600.0  # a detached session's keys expire after this

    @property
    def is_redis(self) -> bool:
        return self.url.startswith(("redis://", "rediss://"))


@dataclass(frozen=True, slots=True)
class OriginConfig:
    name: str
    url: str
    scheme: str
    host: str
    port: int
    events: str = ""
    allow_hosts: tuple[HostPort, ...] = ()
    preserve_host: bool = False  # send the visitor's Host instead of the origin's


@dataclass(frozen=True, slots=True)
class IncludeRule:
    """A per-fragment rule, matched on the include's ``src`` with shell-style wildcards."""

    src: str
    mode: IncludeMode | None = None
    timeout_s: float | None = None
    # True: a suspense fragment is delivered as it streams (slot-append messages).
    is_stream: bool = False

    def matches(self, src: str) -> bool:
        return fnmatch.fnmatchcase(src, self.src)


@dataclass(frozen=True, slots=True)
class RouteConfig:
    path: str
    origin: str
    ttl_s: float | None = None
    include_mode: IncludeMode = IncludeMode.BLOCKING
    fragment_timeout_s: float = 0.5
    vary: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    includes: tuple[IncludeRule, ...] = ()
    # True: one paint for everyone, fetched with the canonical request built from the
    # cache key alone (DESIGN.md, "Request headers and credentials").
    shared: bool = False
    # True: a response with Set-Cookie may be stored (without its Set-Cookie).
    store_set_cookie: bool = False
    # Proxy the app's own Upgrade requests (its WebSockets) to the origin as a byte stream;
    # false refuses them with 403.
    is_upgrade_allowed: bool = True
    suspense_delivery: SuspenseDelivery = SuspenseDelivery.SESSION

    def rule_for(self, src: str) -> IncludeRule | None:
        """The first include rule whose pattern matches ``src``, if any."""
        for rule in self.includes:
            if rule.matches(src):
                return rule
        return None


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = ServerConfig()
    session: SessionConfig = SessionConfig()
    cache: CacheConfig = CacheConfig()
    bus: BusConfig = BusConfig()
    origins: tuple[OriginConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    source: str = "<defaults>"

    def origin(self, name: str) -> OriginConfig:
        for origin in self.origins:
            if origin.name == name:
                return origin
        raise KeyError(name)

    def route_for(self, path: str) -> RouteConfig | None:
        """The route whose ``path`` is the longest prefix of ``path``, if any."""
        best: RouteConfig | None = None
        for route in self.routes:
            if path_has_prefix(path, route.path) and (
                best is None or len(route.path) > len(best.path)
            ):
                best = route
        return best


def path_has_prefix(path: str, prefix: str) -> bool:
    """Prefix match on path segments' text: ``/shop`` matches ``/shop`` and ``/shop/x``.

    A prefix ending in ``/`` matches everything below it; ``/shop`` does not match
    ``/shopping``, since a route names a part of the tree, not a spelling.
    """
    if prefix == "/" or path == prefix:
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path.startswith(prefix + "/")
