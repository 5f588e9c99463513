"""The hub's housekeeping queues (session/housekeeping.py, pure): detach order and the
touch queue of attached sessions' shared keys."""

from __future__ import annotations

from weaver.session.housekeeping import DetachedSessions, TouchQueue


def test_detached_queue_keeps_detach_order_when_the_clock_steps_back() -> None:
    detached = DetachedSessions()
    detached.detach("a", 10.0)
    detached.detach("b", 5.0)  # an injected clock went back: b counts from 10
    assert detached.longest() == "a"
    assert detached.expired(70.5, 60.0) == ["a", "b"]
    detached.discard("a")
    assert detached.longest() == "b" and len(detached) == 1
    detached.detach("b", 20.0)  # detached again: to the back, with its new time
    assert detached.expired(70.5, 60.0) == []


def test_touch_queue_yields_only_sessions_due_and_new_attaches_first() -> None:
    touch = TouchQueue()
    for name in ("a", "b", "c"):
        touch.add(name)
    assert touch.due(0.0, 200.0) == ["c", "b", "a"]
    touch.touched(["c", "b", "a"], 0.0)
    assert touch.due(100.0, 200.0) == []
    touch.add("d")  # attaches: its keys are refreshed on the next tick
    touch.discard("b")
    assert touch.due(100.0, 200.0) == ["d"]
    touch.touched(["d"], 100.0)
    assert touch.due(250.0, 200.0) == ["c", "a"]
