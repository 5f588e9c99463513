"""What the session layer counts, reported to one listener (the proxy's metrics).

The session package imports nothing from the proxy: the proxy installs a listener with
:func:`set_listener`; without one, counting costs a call that does nothing.

A fan-out writes one message per recipient: those are tallied here (:func:`sent`, an
integer added to) and reported as one count (:func:`report_sent`) at the end of the
fan-out, when a consumer closes and on each janitor tick, because the proxy's listener
(a Prometheus counter: a lock, or a file write with several workers) cost ~1.4 µs per
call, a tenth of a recipient's cost (loadtests/README.md, session fan-out).
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


Listener = Callable[[SessionEvent, int], None]  # (event, how many times)


def _ignore(event: SessionEvent, times: int) -> None:
    pass


_listener: Listener = _ignore


def set_listener(listener: Listener | None) -> None:
    """Report every :class:`SessionEvent` of this process to ``listener`` (None: nobody)."""
    global _listener
    _listener = listener or _ignore


_unreported_sent = 0  # messages written by :func:`sent` since the last report


def count(event: SessionEvent, times: int = 1) -> None:
    _listener(event, times)


def sent() -> None:
    """A message written to a socket (MESSAGE_OUT), reported by :func:`report_sent`."""
    global _unreported_sent
    _unreported_sent += 1


def report_sent() -> None:
    """Report the messages :func:`sent` tallied since the last report, as one count."""
    global _unreported_sent
    times = _unreported_sent
    if times:
        _unreported_sent = 0
        _listener(SessionEvent.MESSAGE_OUT, times)
