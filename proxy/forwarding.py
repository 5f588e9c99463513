"""What Weaver sends to an origin on a visitor's behalf (pure; DESIGN.md, "Request headers").

Weaver is a transparent proxy first: a request to an origin carries the visitor's
end-to-end headers as sent, minus hop-by-hop ones and those named in ``Connection``
(RFC 9110 §7.6.1), minus Weaver's own ``weaver_session`` cookie. Weaver then sets the
forwarding headers itself, replacing whatever the client sent: ``X-Forwarded-Proto``,
``X-Forwarded-Host`` and RFC 7239 ``Forwarded``; ``X-Forwarded-For`` is the peer, appended
to the client's list only when the peer is a trusted proxy.

A ``shared`` route's shell and blocking fragments are the exception: they are fetched with
the *canonical request*, built from the cache key alone (the normalised URL, the route's
``vary`` headers) and Weaver's forwarding headers without the peer's address: the peer is
not in the key, so an origin that reflects it would otherwise make one visitor's address
part of everyone's paint. No cookie, credential or other visitor header goes with it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from multidict import CIMultiDict, CIMultiDictProxy

from weaver.session.auth import strip_session_cookie

# RFC 9110 §7.6.1: hop-by-hop headers never cross a proxy.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

# Set by Weaver; a client's own values are never passed on as if Weaver had said them.
_FORWARDING = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded")

# Weaver fetches a whole, identity-encoded representation to weave and store: the
# visitor's own conditionals and ranges are answered by Weaver from what it holds.
ASKED_BY_WEAVER = (
    "accept-encoding",
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
)

# What visitor_headers leaves out of what the visitor sent (it sets some of them itself).
_DROPPED = HOP_BY_HOP | {"host", "expect", *_FORWARDING}
_DROPPED_FOR_FILL = _DROPPED | set(ASKED_BY_WEAVER)

# Never part of a canonical (shared) request, even when a route names them in ``vary``.
CREDENTIALS = frozenset({"cookie", "authorization", "proxy-authorization"})

Headers = Mapping[str, str] | CIMultiDict[str] | CIMultiDictProxy[str]


@dataclass(frozen=True, slots=True)
class Peer:
    """Who Weaver is talking to: the TCP peer and what it asked for (scheme, Host)."""

    address: str
    scheme: str
    host: str
    is_trusted: bool = False


def strip_hop_by_hop(headers: Headers) -> CIMultiDict[str]:
    """Copy ``headers`` without hop-by-hop ones and without any named in ``Connection``."""
    named: frozenset[str] | set[str] = HOP_BY_HOP
    for connection in _getall(headers, "connection"):
        named = set(named)
        named.update(token.strip().lower() for token in connection.split(","))
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in named:
            out.add(name, value)
    return out


def is_trusted(address: str, trusted: Iterable[str]) -> bool:
    """Whether ``address`` lies in one of the ``trusted`` networks (config strings)."""
    networks = _networks(tuple(trusted))
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@lru_cache(maxsize=16)
def _networks(
    trusted: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(text, strict=False) for text in trusted)


def visitor_headers(headers: Headers, peer: Peer, *, for_fill: bool) -> CIMultiDict[str]:
    """The visitor's request as Weaver forwards it (a route that is not ``shared``).

    Args:
        for_fill: Weaver fetches the whole identity body (to weave, store or both), so the
            visitor's conditionals, ranges and Accept-Encoding stay with Weaver.
    """
    dropped = _DROPPED_FOR_FILL if for_fill else _DROPPED
    for connection in _getall(headers, "connection"):  # and what it names (RFC 9110 §7.6.1)
        dropped = dropped | {token.strip().lower() for token in connection.split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    cookies: list[str] = []
    for name, value in headers.items():  # one pass, not a copy and a popall per name
        lower = name.lower()
        if lower in dropped:
            continue
        if lower == "cookie":
            cookie = strip_session_cookie(value)
            if cookie:
                cookies.append(cookie)
            continue
        out.add(name, value)
    for cookie in cookies:  # after the others, as they always went
        out.add("Cookie", cookie)
    if for_fill:
        out["Accept-Encoding"] = "identity"
    add_forwarding(out, headers, peer, include_peer=True)
    return out


def canonical_headers(headers: Headers, peer: Peer, vary: Iterable[str]) -> CIMultiDict[str]:
    """The canonical request of a ``shared`` route: the key's headers and Weaver's own."""
    out: CIMultiDict[str] = CIMultiDict()
    for name in sorted({n.lower() for n in vary} - CREDENTIALS):
        for value in _getall(headers, name):
            out.add(name, value)
    out["Accept-Encoding"] = "identity"
    add_forwarding(out, headers, peer, include_peer=False)
    return out


def add_forwarding(
    out: CIMultiDict[str], received: Headers, peer: Peer, *, include_peer: bool
) -> None:
    """Set X-Forwarded-* and ``Forwarded`` (RFC 7239) on ``out``, replacing any there."""
    for name in _FORWARDING:
        out.popall(name, None)
    out["X-Forwarded-Proto"] = peer.scheme
    out["X-Forwarded-Host"] = peer.host
    host = _quoted(peer.host)
    if not include_peer:
        out["Forwarded"] = f"proto={peer.scheme};host={host}"
        return
    node = _node(peer.address)
    prior_for = ", ".join(_getall(received, "x-forwarded-for")) if peer.is_trusted else ""
    prior = ", ".join(_getall(received, "forwarded")) if peer.is_trusted else ""
    out["X-Forwarded-For"] = f"{prior_for}, {peer.address}" if prior_for else peer.address
    element = f"for={node};proto={peer.scheme};host={host}"
    out["Forwarded"] = f"{prior}, {element}" if prior else element


def _node(address: str) -> str:
    """RFC 7239 §6: an IPv6 node is bracketed and quoted; unknown peers are "unknown"."""
    if not address:
        return "unknown"
    if ":" in address:
        return f'"[{address}]"'
    return address


@lru_cache(maxsize=1024)  # the Host values seen are few: each is checked once
def _quoted(value: str) -> str:
    """A token, or a quoted-string when it holds characters a token cannot (RFC 7239 §4)."""
    if value and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in value):
        return value
    escaped = "".join(c for c in value if c.isprintable()).replace("\\", "\\\\")
    return '"' + escaped.replace('"', '\\"') + '"'


def _getall(headers: Headers, name: str) -> list[str]:
    if isinstance(headers, CIMultiDict | CIMultiDictProxy):
        return headers.getall(name, [])
    return [value for key, value in headers.items() if key.lower() == name]
