"""The typed, frozen shape of a Weaver config (the contract in DESIGN.md, "Config").

Values here are already parsed: durations are seconds (``*_s``), sizes are bytes
(``*_bytes``), secrets are resolved from the environment. :mod:`weaver.config.load` builds
them from TOML and reports every problem with its key path.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from enum import StrEnum


class IncludeMode(StrEnum):
    BLOCKING = "blocking"
    SUSPENSE = "suspense"


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


@dataclass(frozen=True, slots=True)
class SessionConfig:
    listen: HostPort = HostPort("127.0.0.1", 8081)
    public_url: str = ""
    secret: str = ""
    publish_token: str = ""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    dir: str = ".weaver/cache"
    max_size_bytes: int = 1024**3
    memory_size_bytes: int = 64 * 1024**2  # the hot tier; 0 turns it off


@dataclass(frozen=True, slots=True)
class BusConfig:
    url: str = "memory://"


@dataclass(frozen=True, slots=True)
class OriginConfig:
    name: str
    url: str
    scheme: str
    host: str
    port: int
    events: str = ""
    allow_hosts: tuple[HostPort, ...] = ()


@dataclass(frozen=True, slots=True)
class IncludeRule:
    """A per-fragment rule, matched on the include's ``src`` with shell-style wildcards."""

    src: str
    mode: IncludeMode | None = None
    timeout_s: float | None = None

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
    # Proxy the app's own Upgrade requests (its WebSockets) to the origin as a byte stream;
    # false refuses them with 403.
    is_upgrade_allowed: bool = True

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
