"""Which sessions this node keeps: the held ones expire, the longest-detached make room.

A session without a consumer is held ``session_hold_s`` then dropped (its fetches and
event delivery cancelled, its channel subscriptions on this node forgotten); past
``max_sessions`` the longest-detached session is dropped first. Both take the front of
a queue ordered by detach time (session/housekeeping.py), so a janitor tick costs
O(expired) and an eviction O(1), never a scan of every session. The janitor also pushes
back the expiry of attached sessions' keys in the shared log (session/consumers.py).
A dropped session stays in the shared log: a consumer arriving later loads it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from weaver.session.channels import Channels
from weaver.session.consumers import Consumers
from weaver.session.live import Session
from weaver.session.stats import report_sent


class Retention:
    """Drops this node's copies of sessions: expired, or to make room.

    Args:
        sessions: the hub's sessions by id, as it holds them now (entries are removed
            here).
        hold_s: how long a session without a consumer is kept.
        clock: monotonic seconds (detach times; tests inject one).
    """

    def __init__(
        self,
        sessions: Callable[[], dict[str, Session]],
        consumers: Consumers,
        channels: Channels,
        *,
        hold_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._sessions = sessions
        self._consumers = consumers
        self._channels = channels
        self.hold_s = hold_s
        self._clock = clock

    async def run(self, shared_ttl_s: float) -> None:
        """The janitor: every ``min(1 s, hold_s / 4)``, drop what expired and push back
        the shared keys of attached sessions (``shared_ttl_s``) that are due."""
        interval = min(1.0, self.hold_s / 4)
        while True:
            await asyncio.sleep(interval)
            now = self._clock()
            report_sent()  # messages written outside a fan-out (session/stats.py)
            await self._consumers.touch_attached(now, shared_ttl_s)
            self.expire(now)

    def expire(self, now: float) -> int:
        """Drop the sessions detached longer than ``hold_s`` at ``now``: the front of the
        detach-ordered queue only. Returns how many were dropped."""
        expired = self._consumers.detached.expired(now, self.hold_s)
        for session_id in expired:
            self.drop(session_id)
        return len(expired)

    def make_room(self) -> None:
        """Drop the longest-detached session (O(1)); if every session has a consumer,
        none is dropped (``max_connections`` bounds those)."""
        session_id = self._consumers.detached.longest()
        if session_id is not None:
            self.drop(session_id)

    def drop(self, session_id: str) -> None:
        """Forget this node's copy of ``session_id``: its tasks stop, its state says
        DROPPED (an attach in flight then loads it again, see SessionHub.load)."""
        self._consumers.detached.discard(session_id)
        self._consumers.touch.discard(session_id)
        sessions = self._sessions()
        session = sessions.get(session_id)
        if session is None:
            return
        session.state.dropped()
        for task in list(session.tasks):
            task.cancel()  # its suspense fetches and event delivery stop
        self._channels.forget(session)
        del sessions[session_id]
