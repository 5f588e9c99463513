"""What the session layer counts, reported to one listener (the proxy's metrics).

The session package imports nothing from the proxy: the proxy installs a listener with
:func:`set_listener`; without one, counting costs a call that does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum


class SessionEvent(Enum):
    SOCKET_OPENED = "socket_opened"  # a WebSocket consumer attached to its session
    SOCKET_CLOSED = "socket_closed"
    MESSAGE_IN = "message_in"  # a client message read
    MESSAGE_OUT = "message_out"  # a server message written to a socket
    OUTBOX_OVERFLOW = "outbox_overflow"  # a consumer fell behind (DISCONNECT_1013)
    CLOSE_1013 = "close_1013"  # a socket closed with 1013 (fell behind, or node full)


Listener = Callable[[SessionEvent], None]


def _ignore(event: SessionEvent) -> None:
    pass


_listener: Listener = _ignore


def set_listener(listener: Listener | None) -> None:
    """Report every :class:`SessionEvent` of this process to ``listener`` (None: nobody)."""
    global _listener
    _listener = listener or _ignore


def count(event: SessionEvent) -> None:
    _listener(event)
