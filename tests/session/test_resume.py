"""The bounded session log (session/resume.py): what a reconnecting client missed, or
None (``reset``) when the log no longer reaches back."""

from __future__ import annotations

from weaver.session.resume import SessionLog


def logged(count: int, **limits: int) -> SessionLog:
    log = SessionLog(**limits)
    for _ in range(count):
        seq = log.next_seq()
        log.append(seq, b"m%d" % seq)
    return log


def test_an_empty_log_gives_nothing_missed_from_zero_and_starts_after_its_last_seq() -> None:
    log = SessionLog()
    assert log.since(0) == [] and log.since_oldest() == [] and log.first_seq == 1


def test_a_client_gets_exactly_the_messages_after_its_last_seq() -> None:
    log = logged(5)
    assert log.since(2) == [(3, b"m3"), (4, b"m4"), (5, b"m5")]
    assert log.since(5) == []
    assert log.since(0) == [(i, b"m%d" % i) for i in range(1, 6)]


def test_a_seq_from_the_future_gets_reset() -> None:
    assert logged(3).since(4) is None


def test_past_max_messages_the_oldest_go_and_an_older_resume_gets_reset() -> None:
    log = logged(10, max_messages=4)
    assert log.first_seq == 7 and [seq for seq, _ in log.since_oldest()] == [7, 8, 9, 10]
    assert log.since(6) == [(7, b"m7"), (8, b"m8"), (9, b"m9"), (10, b"m10")]
    assert log.since(5) is None


def test_past_max_bytes_the_oldest_go() -> None:
    log = logged(10, max_bytes=6)  # b"m9" and b"m10" are 2 + 3 bytes; b"m8" would pass 6
    assert [seq for seq, _ in log.since_oldest()] == [9, 10]
    assert log.since(7) is None and log.since(8) == [(9, b"m9"), (10, b"m10")]


def test_a_message_larger_than_max_bytes_leaves_the_log_empty_but_numbered() -> None:
    log = SessionLog(max_bytes=2)
    log.append(log.next_seq(), b"too big")
    assert log.since_oldest() == [] and log.last_seq == 1 and log.first_seq == 2
    assert log.since(1) == [] and log.since(0) is None
