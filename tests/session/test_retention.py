"""Which sessions a node keeps (session/retention.py): expiry and the session cap take
the front of a queue, never a scan of every session.

The hub runs on an injected clock; its ``sessions`` dict counts every full iteration, so
a test sees how much work a janitor tick or a new session did.
"""

from __future__ import annotations

from typing import Any

from weaver.config.schema import HostPort, SessionConfig
from weaver.session.hub import Outbox, Session, SessionHub


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingDict(dict[str, Session]):
    """The hub's sessions, counting every walk over all of them."""

    walks = 0

    def values(self) -> Any:
        CountingDict.walks += 1
        return super().values()

    def items(self) -> Any:
        CountingDict.walks += 1
        return super().items()

    def __iter__(self) -> Any:
        CountingDict.walks += 1
        return super().__iter__()


def hub_on(clock: Clock, **options: Any) -> SessionHub:
    config = SessionConfig(listen=HostPort("127.0.0.1", 0), secret="s", publish_token="t")
    hub = SessionHub(config, clock=clock, session_hold_s=60.0, **options)
    hub.sessions = CountingDict()
    CountingDict.walks = 0
    return hub


def attach(hub: SessionHub, session_id: str) -> Outbox:
    outbox, _, _ = hub.consumers._attach_local(hub.session(session_id), 0)
    return outbox


def test_janitor_drops_expired_detached_sessions_without_walking_the_live_ones() -> None:
    clock = Clock()
    hub = hub_on(clock)
    outboxes = {f"live-{i}": attach(hub, f"live-{i}") for i in range(1000)}
    for name in ("gone-1", "gone-2", "recent"):
        hub.session(name)
        clock.now += 10
    # A live session that loses its consumer now is not yet due either.
    hub.detach(hub.sessions["live-7"], outboxes["live-7"])
    clock.now = 1000.0 + 10 + 60.5  # gone-1 and gone-2 held past 60 s; "recent" is not

    dropped = hub.expire_detached(clock())

    assert dropped == 2
    assert "gone-1" not in hub.sessions and "gone-2" not in hub.sessions
    assert "recent" in hub.sessions and "live-7" in hub.sessions
    assert len(hub.sessions) == 1000 + 1
    assert CountingDict.walks == 0  # no pass over the 1,001 sessions kept


def test_janitor_tick_with_nothing_expired_costs_nothing_per_session() -> None:
    clock = Clock()
    hub = hub_on(clock)
    for i in range(5000):
        hub.session(f"s-{i}")
    assert hub.expire_detached(clock() + 59.0) == 0
    assert CountingDict.walks == 0
    assert hub.expire_detached(clock() + 61.0) == 5000
    assert hub.sessions == {}


def test_a_session_that_reattaches_is_not_expired_by_its_old_detach_time() -> None:
    clock = Clock()
    hub = hub_on(clock)
    outbox = attach(hub, "a")
    hub.detach(hub.sessions["a"], outbox)
    clock.now += 30
    outbox = attach(hub, "a")  # back within the hold
    clock.now += 100
    assert hub.expire_detached(clock()) == 0
    hub.detach(hub.sessions["a"], outbox)
    clock.now += 59
    assert hub.expire_detached(clock()) == 0
    clock.now += 2
    assert hub.expire_detached(clock()) == 1
    assert hub.sessions == {}


def test_session_cap_evicts_the_longest_detached_without_walking_every_session() -> None:
    clock = Clock()
    hub = hub_on(clock, max_sessions=1000)
    for i in range(999):
        attach(hub, f"live-{i}")
    hub.session("first-detached")
    clock.now += 1

    hub.session("new-1")  # over the cap: first-detached goes

    assert "first-detached" not in hub.sessions and "new-1" in hub.sessions
    hub.detach(hub.sessions["live-3"], next(iter(hub.sessions["live-3"].outboxes)))
    clock.now += 1
    hub.session("new-2")  # new-1 (detached since it was created) is now the longest

    assert "new-1" not in hub.sessions
    assert {"live-3", "new-2"} <= hub.sessions.keys()
    assert len(hub.sessions) == 1000
    assert CountingDict.walks == 0


def test_session_cap_with_every_session_attached_drops_none() -> None:
    clock = Clock()
    hub = hub_on(clock, max_sessions=2)
    attach(hub, "a")
    attach(hub, "b")
    hub.session("c")
    assert hub.sessions.keys() == {"a", "b", "c"}  # max_connections bounds attached ones
