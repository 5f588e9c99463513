"""Include policy: what to fetch for an include, how, and whether it may be fetched (pure).

- Mode: the tag's ``mode``, else the route's rule for the src, else the route default.
- Timeout: the tag's ``timeout``, else the rule's, else the route's ``fragment_timeout``.
- ``src`` resolves against the URL of the document holding the include. An absolute URL
  is fetched only when its scheme, host and port are a configured origin's, or its host
  and port an ``allow_hosts`` entry of the route's origin: page content must not make
  Weaver a request forgery tool, and another port on the same host is another service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from weaver.config.schema import Config, IncludeMode, OriginConfig, RouteConfig
from weaver.config.units import parse_duration
from weaver.proxy.scanner import Include

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class IncludePlan:
    """How to fetch one include; ``refused`` says why it must not be fetched at all."""

    src: str
    url: str
    mode: IncludeMode
    timeout_s: float
    alt_url: str | None
    continue_on_error: bool
    fallback: bytes
    is_primary: bool
    refused: str | None = None


def plan_include(
    include: Include,
    *,
    base_url: str,
    route: RouteConfig,
    origin: OriginConfig,
    config: Config,
) -> IncludePlan:
    """Decide mode, timeout and URLs for ``include`` found in the document at ``base_url``."""
    src = (include.get("src") or "").strip()
    rule = route.rule_for(src)
    mode = _mode(include, src) or (rule.mode if rule else None) or route.include_mode
    timeout_s = _timeout(include, src)
    if timeout_s is None:
        timeout_s = (
            rule.timeout_s if rule and rule.timeout_s is not None else (route.fragment_timeout_s)
        )
    primary = include.get("primary")
    url, refused = _resolve(src, base_url, origin, config)
    alt = include.get("alt")
    alt_url = None
    if alt:
        alt_url, alt_refused = _resolve(alt.strip(), base_url, origin, config)
        if alt_refused is not None:
            log.warning("include alt %s refused: %s", alt, alt_refused)
            alt_url = None
    return IncludePlan(
        src=src,
        url=url,
        mode=mode,
        timeout_s=timeout_s,
        alt_url=alt_url,
        continue_on_error=(include.get("onerror") or "").strip().lower() == "continue",
        fallback=include.fallback,
        is_primary=primary is not None and primary.strip().lower() != "false",
        refused=refused,
    )


def _mode(include: Include, src: str) -> IncludeMode | None:
    text = include.get("mode")
    if text is None:
        return None
    try:
        return IncludeMode(text.strip().lower())
    except ValueError:
        log.warning('include %s: mode "%s" is not blocking or suspense; ignored', src, text)
        return None


def _timeout(include: Include, src: str) -> float | None:
    text = include.get("timeout")
    if text is None:
        return None
    text = text.strip()
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError:
        log.warning('include %s: timeout "%s" is not a duration; ignored', src, text)
        return None


def _resolve(
    src: str, base_url: str, origin: OriginConfig, config: Config
) -> tuple[str, str | None]:
    """The absolute URL for ``src`` and, if it must not be fetched, why."""
    if not src:
        return "", "no src"
    try:
        url = urljoin(base_url, src)
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return "", f"{src!r} is not a valid URL"
    host = (parts.hostname or "").lower()
    if parts.scheme not in _DEFAULT_PORTS or not host or port is None:
        return "", f"{src!r} is not an http(s) URL"
    for known in config.origins:
        if (known.scheme, known.host.lower(), known.port) == (parts.scheme, host, port):
            return url, None
    for allowed in origin.allow_hosts:
        if (allowed.host.lower(), allowed.port) == (host, port):
            return url, None
    return "", f"{parts.scheme}://{host}:{port} is not a configured origin or allow_hosts entry"
