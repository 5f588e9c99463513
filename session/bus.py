"""The bus: how a channel message reaches the sessions of every node.

An interface with an in-process implementation; the scale-out work puts Redis pub/sub
behind the same three calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Handler = Callable[[str, bytes], None]


class Bus(Protocol):
    async def start(self, handler: Handler) -> None:
        """Deliver every message published on any node to ``handler(channel, payload)``."""

    async def publish(self, channel: str, payload: bytes) -> None: ...

    async def stop(self) -> None: ...


class MemoryBus:
    """One process: a publish is delivered at once, in the publisher's call."""

    def __init__(self) -> None:
        self._handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self._handler = handler

    async def publish(self, channel: str, payload: bytes) -> None:
        if self._handler is not None:
            self._handler(channel, payload)

    async def stop(self) -> None:
        self._handler = None
