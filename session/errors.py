"""The session weaver's errors: each carries the WebSocket close code the client gets,
and the HTTP status the same refusal gets on the HTTP endpoints (SSE, POST events)."""

from __future__ import annotations

from weaver.config.errors import WeaverError

# RFC 6455 §7.4.1 codes the session uses.
GOING_AWAY = 1001
INVALID_PAYLOAD = 1007  # not JSON
POLICY = 1008  # a message or token the protocol refuses
TOO_BIG = 1009
INTERNAL = 1011
TRY_AGAIN = 1013  # overloaded, or a client fell behind: resume from the log

# RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of them the code.
MAX_REASON_BYTES = 123


def _fit_reason(reason: str) -> str:
    """``reason`` cut to fit a close frame in UTF-8, never mid-character."""
    encoded = reason.encode("utf-8", "replace")  # a lone surrogate becomes "?"
    return encoded[:MAX_REASON_BYTES].decode("utf-8", "ignore")


class SessionError(WeaverError):
    """A client did something the session protocol refuses; the reason is sent to it.

    ``status`` is the HTTP status for the same refusal over HTTP (400: the request's fault).
    """

    status = 400

    def __init__(self, close_code: int, reason: str) -> None:
        self.close_code = close_code
        self.reason = _fit_reason(reason)
        super().__init__(f"{close_code}: {reason}")


class TokenError(SessionError):
    """The session token is missing, malformed, forged, foreign, expired or from the
    future: 1008 on a socket, 401 over HTTP."""

    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__(POLICY, reason)


class TryAgain(SessionError):
    """This node cannot serve the request now (full, or its copy of the session was
    dropped while it was loaded); nothing is wrong with the client: 1013, 503 over HTTP."""

    status = 503

    def __init__(self, reason: str) -> None:
        super().__init__(TRY_AGAIN, reason)
