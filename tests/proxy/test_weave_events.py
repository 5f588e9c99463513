"""The weave's vocabulary: which outcomes are fallbacks, when a record is done."""

from __future__ import annotations

from weaver.config.schema import IncludeMode
from weaver.proxy.weave_events import FragmentRecord, Outcome


def test_only_failures_count_as_fallbacks() -> None:
    fallbacks = {o for o in Outcome if o.is_fallback}
    assert fallbacks == {
        Outcome.TIMEOUT,
        Outcome.ERROR,
        Outcome.REFUSED,
        Outcome.DEPTH,
        Outcome.LOOP,
        Outcome.LIMIT,
    }


def test_a_record_is_done_once_it_has_an_outcome() -> None:
    pending = FragmentRecord("/f", IncludeMode.BLOCKING, 0.0)
    assert not pending.is_done
    assert FragmentRecord("/f", IncludeMode.BLOCKING, 0.0, outcome=Outcome.SUSPENSE).is_done
