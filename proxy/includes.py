"""Include policy: what to fetch for an include, how, and whether it may be fetched (pure).

- Mode: the tag's ``mode``, else the route's rule for the src, else the route default.
- Timeout: the tag's ``timeout``, else the rule's, else the route's ``fragment_timeout``.
- ``src`` resolves against the URL of the document holding the include. An absolute URL
  is fetched only when its scheme, host and port are a configured origin's, or its host
  and port an ``allow_hosts`` entry of the route's origin: page content must not make
  Weaver a request forgery tool, and another port on the same host is another service.
- A ``src`` or ``alt`` holding a raw control character (CR, LF, NUL, DEL, C1…, also when
  written as an entity like ``&#10;``) or longer than ``MAX_SRC_CHARS`` is refused: page
  content must not reach a request line, a header or a log line. Percent-encoded ones
  (``%0d%0a``) are just bytes of the URL and are fetched. ``IncludePlan.src`` never holds a
  control character (they show percent-encoded) and is cut to ``MAX_SHOWN_SRC_CHARS``, since
  it goes into logs, ``Server-Timing`` and the page's cut markers.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from weaver.config.schema import Config, IncludeMode, OriginConfig, RouteConfig
from weaver.config.units import parse_duration
from weaver.proxy.scanner import Include

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}

MAX_SRC_CHARS = 2048  # as long as URLs that browsers and CDNs handle everywhere
MAX_SHOWN_SRC_CHARS = 200
# Resolved (src, base URL) pairs remembered: a page's includes are the same on every
# request, and urljoin plus urlsplit are most of an include's planning.
MAX_RESOLVED = 4096


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
    # A suspense fragment delivered as it streams: the tag's ``stream`` attribute, else
    # the rule's ``stream`` (a ``text/event-stream`` answer streams whatever this says).
    is_stream: bool = False


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
    refused = _problem("src", src)
    if refused is not None:
        src = shown(src)  # never fetched; safe for the logs and headers it goes to
    rule = route.rule_for(src)
    mode = _mode(include, src) or (rule.mode if rule else None) or route.include_mode
    timeout_s = _timeout(include, src)
    if timeout_s is None:
        timeout_s = (
            rule.timeout_s if rule and rule.timeout_s is not None else (route.fragment_timeout_s)
        )
    primary = include.get("primary")
    url = ""
    if refused is None:
        url, refused = _resolve(src, base_url, origin, config)
    alt = (include.get("alt") or "").strip()
    alt_url = None
    if alt:
        alt_refused = _problem("alt", alt)
        if alt_refused is None:
            alt_url, alt_refused = _resolve(alt, base_url, origin, config)
        if alt_refused is not None:
            log.warning("include %s: alt %s refused: %s", src, shown(alt), alt_refused)
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
        is_stream=_flag(include.get("stream"), rule.is_stream if rule else False),
    )


def _flag(text: str | None, default: bool) -> bool:
    """A boolean attribute: present (``stream``, ``stream="true"``) is true, except
    ``"false"``; absent is ``default``."""
    if text is None:
        return default
    return text.strip().lower() != "false"


def shown(src: str) -> str:
    """``src`` safe for a log line or a header: control characters percent-encoded (as
    UTF-8), cut to ``MAX_SHOWN_SRC_CHARS`` with ``...``."""
    text = "".join(
        "".join(f"%{byte:02X}" for byte in char.encode()) if _is_control(char) else char
        for char in src[: MAX_SHOWN_SRC_CHARS + 1]
    )
    if len(text) > MAX_SHOWN_SRC_CHARS:
        return text[: MAX_SHOWN_SRC_CHARS - 3] + "..."
    return text


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"  # C0, DEL and C1


def _problem(name: str, value: str) -> str | None:
    """Why ``value`` (the attribute ``name``) cannot be a URL to fetch, if it cannot."""
    if len(value) > MAX_SRC_CHARS:
        return f"{name} is {len(value)} characters long, more than {MAX_SRC_CHARS}"
    if value.isascii() and value.isprintable():
        return None  # printable ASCII holds no control character
    for index, char in enumerate(value):
        if _is_control(char):
            return (
                f"{name} holds the control character U+{ord(char):04X} at character {index}"
                " (percent-encode it if it belongs in the URL)"
            )
    return None


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


_resolved: dict[tuple[str, str], tuple[OriginConfig, Config, tuple[str, str | None]]] = {}


def _resolve(
    src: str, base_url: str, origin: OriginConfig, config: Config
) -> tuple[str, str | None]:
    """The absolute URL for ``src`` and, if it must not be fetched, why (remembered for
    the same ``origin`` and ``config`` objects, at most ``MAX_RESOLVED``, oldest dropped)."""
    held = _resolved.get((src, base_url))
    if held is not None and held[0] is origin and held[1] is config:
        return held[2]
    resolved = _resolve_now(src, base_url, origin, config)
    if len(_resolved) >= MAX_RESOLVED:
        del _resolved[next(iter(_resolved))]
    _resolved[(src, base_url)] = (origin, config, resolved)
    return resolved


def _resolve_now(
    src: str, base_url: str, origin: OriginConfig, config: Config
) -> tuple[str, str | None]:
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
