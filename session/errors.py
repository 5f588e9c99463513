"""The session weaver's errors: each carries the WebSocket close code the client gets."""

from __future__ import annotations

from weaver.config.errors import WeaverError

# RFC 6455 §7.4.1 codes the session uses.
GOING_AWAY = 1001
INVALID_PAYLOAD = 1007  # not JSON
POLICY = 1008  # a message or token the protocol refuses
TOO_BIG = 1009
INTERNAL = 1011
TRY_AGAIN = 1013  # overloaded, or a client fell behind: resume from the log


class SessionError(WeaverError):
    """A client did something the session protocol refuses; the reason is sent to it."""

    def __init__(self, close_code: int, reason: str) -> None:
        self.close_code = close_code
        self.reason = reason[:120]  # a close reason must fit in a control frame
        super().__init__(f"{close_code}: {reason}")
