"""The weave's rules as transcripts: feed events, assert the exact commands (no sockets).

Each test reads as a playbook (mitmproxy's ``tutils.Playbook``): ``>> event`` is a fact the
driver saw, ``<< command`` an order the weave must answer with, in that order and nothing
else; ``tick(s)`` moves the weave's clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from weaver.config.load import build_config
from weaver.config.schema import Config
from weaver.proxy.scanner import Drop, DropReason
from weaver.proxy.slots import cut_marker, placeholder, slot_id
from weaver.proxy.weave import Weave
from weaver.proxy.weave_events import (
    ALT,
    ROOT,
    Command,
    Commit,
    Cut,
    DeadlineReached,
    Emit,
    EmitBootstrap,
    EndPart,
    Event,
    Failure,
    FetchFragment,
    FragmentChunk,
    FragmentEnd,
    FragmentFailed,
    FragmentHead,
    FragmentMissed,
    FragmentRecord,
    Outcome,
    SetHead,
    ShellChunk,
    ShellEnd,
    ShellFailed,
    StartSuspense,
    StopFetch,
)
from weaver.proxy.weave_parts import State, WeaveError

SHOP = "http://127.0.0.1:9000"
PAGE = SHOP + "/page"


class _Any:
    """Equal to anything: a field the transcript does not care about."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


@dataclass(slots=True)
class _Tick:
    seconds: float


@dataclass
class Playbook:
    """``Playbook(weave) >> event << command ...``; ``assert`` runs it."""

    weave: Weave
    steps: list[tuple[str, Any]] = field(default_factory=list)
    now_s: float = 100.0

    def __rshift__(self, event: Event | _Tick) -> Playbook:
        self.steps.append((">>", event))
        return self

    def __lshift__(self, command: Command) -> Playbook:
        self.steps.append(("<<", command))
        return self

    def __bool__(self) -> bool:
        transcript: list[str] = []
        expected: list[Command] = []
        got: list[Command] = []

        def check() -> None:
            if got != expected:
                lines = "\n".join(transcript)
                raise AssertionError(
                    f"{lines}\nexpected:\n  "
                    + "\n  ".join(map(repr, expected))
                    + "\ngot:\n  "
                    + "\n  ".join(map(repr, got))
                )

        for kind, item in self.steps:
            if kind == "<<":
                expected.append(item)
                transcript.append(f"<< {item!r}")
                continue
            check()
            expected, got = [], []
            if isinstance(item, _Tick):
                self.now_s += item.seconds
                transcript.append(f"   tick {item.seconds}")
                continue
            transcript.append(f">> {item!r}")
            got = self.weave.handle(item, self.now_s)
        check()
        self.steps.clear()
        return True


def tick(seconds: float) -> _Tick:
    return _Tick(seconds)


def config(server: Mapping[str, object] | None = None, **route: object) -> Config:
    table: dict[str, object] = {"path": "/", "origin": "shop", "fragment_timeout": "500ms"}
    table.update(route)
    return build_config(
        {
            "server": dict(server or {}),
            "origin": [{"name": "shop", "url": SHOP}],
            "route": [table],
        },
        "<test>",
    )


def weave(cfg: Config | None = None, **kwargs: Any) -> Weave:
    cfg = cfg or config()
    kwargs.setdefault("base_url", PAGE)
    return Weave(config=cfg, route=cfg.routes[0], origin=cfg.origins[0], **kwargs)


def headers(content_type: str = "text/html", **more: str) -> CIMultiDictProxy[str]:
    values = CIMultiDict({"Content-Type": content_type})
    for name, value in more.items():
        values.add(name.replace("_", "-"), value)
    return CIMultiDictProxy(values)


def html_head(part: int, url: str, status: int = 200, **more: str) -> FragmentHead:
    return FragmentHead(part, status, headers(**more), url)


def fetch(part: int, src: str, parent: int = ROOT, **kwargs: Any) -> FetchFragment:
    return FetchFragment(part, parent, SHOP + src, ANY, **kwargs)


def cut(part: int, src: str, outcome: Outcome, fallback: bytes = b"") -> Cut:
    return Cut(part, src, outcome, cut_marker(src, outcome) + fallback)


def head(status: int | None = None, location: str | None = None, *links: str) -> SetHead:
    return SetHead(status, location, tuple(links), ANY)


def outcomes(w: Weave) -> list[Outcome]:
    return [r.outcome for r in w.record().fragments]


# text, head and end


def test_shell_text_goes_out_the_head_after_the_first_chunk_and_the_bootstrap_last() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b"<p>hello ")
        << Emit(ROOT, b"<p>hello ")
        << head()
        >> ShellChunk(b"world</p>")
        << Emit(ROOT, b"world</p>")
        >> ShellEnd()
        << EmitBootstrap(ROOT)
        << EndPart(ROOT)
    )
    assert not w.needs_bootstrap
    assert w.is_head_sent


def test_text_held_back_at_a_chunk_end_goes_out_when_the_shell_or_fragment_ends() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/a"/>')
        << fetch(1, "/a")
        << head()
        >> html_head(1, SHOP + "/a")
        >> FragmentChunk(1, b"x<es")
        << Emit(1, b"x")
        >> FragmentEnd(1)
        << Emit(1, b"<es")
        << Commit(1, 0)
        << EndPart(1)
        >> ShellChunk(b"y<weaver-inc")
        << Emit(ROOT, b"y")
        >> ShellEnd()
        << Emit(ROOT, b"<")  # malformed weaver markup passes through as text
        << Emit(ROOT, b"weaver-inc")
        << EmitBootstrap(ROOT)
        << EndPart(ROOT)
    )
    assert w.record().fragments[0].streamed_bytes == 4


def test_what_is_not_an_event_is_refused() -> None:
    with pytest.raises(WeaveError, match="not a weave event"):
        weave().handle(Emit(ROOT, b"x"), 0.0)  # type: ignore[arg-type]  # on purpose


def test_a_shell_that_ends_empty_still_sends_the_head() -> None:
    assert Playbook(weave()) >> ShellEnd() << head() << EmitBootstrap(ROOT) << EndPart(ROOT)


def test_a_shell_that_breaks_off_sends_the_head_and_ends_its_part_without_bootstrap() -> None:
    w = weave()
    assert Playbook(w) >> ShellFailed() << head() << EndPart(ROOT)
    with pytest.raises(WeaveError, match="already ended"):
        w.handle(ShellChunk(b"more"), 0.0)


def test_a_woven_streams_includes_nest_under_its_own_url() -> None:
    # A slot stream is already one level deep: its own src is a loop, and with
    # max_include_depth = 1 its includes are past the limit.
    w = weave(chain=(PAGE,), is_page=False)
    assert (
        Playbook(w) >> ShellChunk(b'<esi:include src="/page"/>') << cut(ROOT, "/page", Outcome.LOOP)
    )
    w = weave(config({"max_include_depth": 1}), chain=(PAGE,), is_page=False)
    assert Playbook(w) >> ShellChunk(b'<esi:include src="/f"/>') << cut(ROOT, "/f", Outcome.DEPTH)


def test_a_woven_stream_sets_no_head_and_has_no_bootstrap() -> None:
    w = weave(chain=(PAGE,), is_page=False)
    assert (
        Playbook(w)
        >> ShellChunk(b"<p>a</p>")
        << Emit(ROOT, b"<p>a</p>")
        >> ShellEnd()
        << EndPart(ROOT)
    )


# blocking fragments


def test_a_fragment_is_fetched_into_its_own_part_scanned_committed_and_ended() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<a><esi:include src="/f"/></a>')
        << Emit(ROOT, b"<a>")
        << fetch(1, "/f")
        << Emit(ROOT, b"</a>")
        << head()
        >> tick(0.25)
        >> FragmentMissed(1)
        >> html_head(1, SHOP + "/f")
        >> FragmentChunk(1, b"<b>f</b>")
        << Emit(1, b"<b>f</b>")
        >> FragmentEnd(1, ttl_left_s=60.0)
        << Commit(1, 0)
        << EndPart(1)
    )
    [record] = w.record().fragments
    assert record == FragmentRecord(
        src="/f",
        mode=record.mode,
        started_s=100.0,
        duration_s=0.25,
        outcome=Outcome.OK,
        status=200,
        streamed_bytes=8,
        headers=record.headers,
        ttl_left_s=60.0,
    )
    assert record.is_done
    assert w.requests_made == 1


def test_a_fragment_read_from_the_cache_keeps_its_ttl_and_makes_no_request() -> None:
    w = weave()
    cached = FragmentHead(1, 200, headers(), SHOP + "/f", is_cached=True, ttl_left_s=9.0)
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/f"/>')
        << fetch(1, "/f")
        << head()
        >> cached
        >> FragmentEnd(1)
        << EndPart(1)  # nothing to commit
    )
    [record] = w.record().fragments
    assert (record.is_cached, record.ttl_left_s, w.requests_made) == (True, 9.0, 0)


def test_a_non_html_fragment_passes_through_unscanned() -> None:
    w = weave()
    markup = b'<esi:include src="/never"/>'
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/f.txt"/>')
        << fetch(1, "/f.txt")
        << head()
        >> FragmentHead(1, 200, headers("text/plain; charset=utf-8"), SHOP + "/f.txt")
        >> FragmentChunk(1, markup)
        << Emit(1, markup)
        >> FragmentEnd(1)
        << Commit(1, 0)
        << EndPart(1)
    )
    assert w.record().fragments[0].streamed_bytes == len(markup)


def test_nested_includes_resolve_against_the_fragment_and_stream_into_its_part() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/dir/a"/>')
        << fetch(1, "/dir/a")
        << head()
        >> html_head(1, SHOP + "/dir/a")
        >> FragmentChunk(1, b'<i><esi:include src="b"/></i>')
        << Emit(1, b"<i>")
        << fetch(2, "/dir/b", parent=1)
        << Emit(1, b"</i>")
        >> FragmentEnd(1)
        << Commit(1, 0)
        << EndPart(1)
    )


def test_a_fragment_including_itself_is_cut_as_a_loop() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/a"/>')
        << fetch(1, "/a")
        << head()
        >> html_head(1, SHOP + "/a")
        >> FragmentChunk(1, b'<esi:include src="/a"/>')
        << cut(1, "/a", Outcome.LOOP)
    )
    assert outcomes(w) == [Outcome.PENDING, Outcome.LOOP]
    assert w.record().has_fallback


def test_nesting_stops_at_the_depth_limit() -> None:
    w = weave(config({"max_include_depth": 1}))
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/a"/>')
        << fetch(1, "/a")
        << head()
        >> html_head(1, SHOP + "/a")
        >> FragmentChunk(1, b'<weaver-include src="/b">fb</weaver-include>')
        << cut(1, "/b", Outcome.DEPTH, b"fb")
    )


def test_includes_past_max_includes_are_cut_never_fetched() -> None:
    w = weave(config({"max_includes": 1}))
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/a"/><esi:include src="/b"/>')
        << fetch(1, "/a")
        << cut(ROOT, "/b", Outcome.LIMIT)
        << head()
    )


def test_requests_past_max_fragment_requests_are_cut() -> None:
    w = weave(config({"max_fragment_requests": 1}))
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/a"/><weaver-include src="/b">fb</weaver-include>')
        << fetch(1, "/a")
        << fetch(2, "/b")
        << head()
        >> FragmentMissed(1)
        >> FragmentMissed(2)
        << StopFetch(2, 0)
        << cut(2, "/b", Outcome.LIMIT, b"fb")
        << EndPart(2)
    )
    assert outcomes(w) == [Outcome.PENDING, Outcome.LIMIT]


def test_a_refused_src_gets_its_fallback_and_onerror_continue_only_the_marker() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<weaver-include src="http://evil.example/">fb</weaver-include>')
        << Cut(ROOT, "http://evil.example/", Outcome.REFUSED, ANY)
        << head()
        >> ShellChunk(b'<esi:include src="http://evil.example/x" onerror="continue"/>')
        << cut(ROOT, "http://evil.example/x", Outcome.REFUSED)
    )


def test_a_refused_include_carries_its_fallback_after_the_marker() -> None:
    w = weave()
    [cut_, _] = w.handle(
        ShellChunk(b'<weaver-include src="http://evil.example/">fb</weaver-include>'), 0.0
    )
    assert cut_ == cut(ROOT, "http://evil.example/", Outcome.REFUSED, b"fb")


# failures, timeouts, alt


def test_a_timeout_cuts_with_the_fallback_and_records_the_duration() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<weaver-include src="/slow">fb</weaver-include>')
        << fetch(1, "/slow")
        << head()
        >> FragmentMissed(1)
        >> tick(0.5)
        >> DeadlineReached(1)
        << StopFetch(1, 0)
        << cut(1, "/slow", Outcome.TIMEOUT, b"fb")
        << EndPart(1)
    )
    assert w.record().fragments[0].duration_s == 0.5


def test_a_fragment_that_streamed_before_failing_keeps_its_bytes_and_gets_only_the_marker() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<weaver-include src="/f" alt="/alt">fb</weaver-include>')
        << fetch(1, "/f")
        << head()
        >> html_head(1, SHOP + "/f")
        >> FragmentChunk(1, b"part")
        << Emit(1, b"part")
        >> FragmentFailed(1, Failure.TIMEOUT)
        << StopFetch(1, 0)
        << cut(1, "/f", Outcome.TIMEOUT)
        << EndPart(1)
    )


def test_an_error_status_tries_the_alt_which_answers_instead() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<weaver-include src="/f" alt="/alt">fb</weaver-include>')
        << fetch(1, "/f")
        << head()
        >> html_head(1, SHOP + "/f", status=500)
        << StopFetch(1, 0)
        << FetchFragment(1, 1, SHOP + "/alt", ANY, attempt=ALT)
        >> FragmentMissed(1, ALT)
        >> FragmentHead(1, 200, headers(), SHOP + "/alt", ALT)
        >> FragmentChunk(1, b"alt", ALT)
        << Emit(1, b"alt")
        >> FragmentEnd(1, ALT)
        << Commit(1, ALT)
        << EndPart(1)
    )
    assert outcomes(w) == [Outcome.ALT]
    assert not w.record().has_fallback
    assert w.requests_made == 1


def test_an_alt_that_fails_leaves_the_error_and_the_fallback() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<weaver-include src="/f" alt="/alt">fb</weaver-include>')
        << fetch(1, "/f")
        << head()
        >> FragmentFailed(1, Failure.ERROR)
        << StopFetch(1, 0)
        << FetchFragment(1, 1, SHOP + "/alt", ANY, attempt=ALT)
        >> DeadlineReached(1, ALT)
        << StopFetch(1, ALT)
        << cut(1, "/f", Outcome.ERROR, b"fb")
        << EndPart(1)
    )
    assert outcomes(w) == [Outcome.ERROR]


def test_an_error_without_alt_cuts_and_a_late_event_of_the_given_up_fetch_is_refused() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<weaver-include src="/f">fb</weaver-include>')
        << fetch(1, "/f")
        << head()
        >> html_head(1, SHOP + "/f", status=404)
        << StopFetch(1, 0)
        << cut(1, "/f", Outcome.ERROR, b"fb")
        << EndPart(1)
    )
    with pytest.raises(WeaveError, match="not fetching"):
        w.handle(FragmentChunk(1, b"late"), 0.0)


# primary, Link


def test_the_primary_fragment_decides_the_status_and_location_of_the_head() -> None:
    w = weave(shell_links=("</s.css>; rel=preload",))
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/p" primary="true"/>')
        << fetch(1, "/p", is_urgent=True)
        >> html_head(1, SHOP + "/p", status=301, Location="/moved", Link="</p.js>; rel=preload")
        << head(301, "/moved", "</s.css>; rel=preload", "</p.js>; rel=preload")
    )


def test_a_primary_answering_5xx_decides_its_status_and_is_cut() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<weaver-include src="/p" primary>fb</weaver-include>')
        << fetch(1, "/p", is_urgent=True)
        >> html_head(1, SHOP + "/p", status=503)
        << head(503)
        << StopFetch(1, 0)
        << cut(1, "/p", Outcome.ERROR, b"fb")
        << EndPart(1)
    )


def test_a_primary_that_fails_makes_the_page_502() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/p" primary="true"/>')
        << fetch(1, "/p", is_urgent=True)
        >> FragmentMissed(1)
        >> DeadlineReached(1)
        << StopFetch(1, 0)
        << cut(1, "/p", Outcome.TIMEOUT)
        << head(502)
        << EndPart(1)
    )


def test_a_primary_whose_alt_answers_takes_the_alts_status() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/p" alt="/alt" primary="true"/>')
        << fetch(1, "/p", is_urgent=True)
        >> FragmentFailed(1, Failure.ERROR)
        << StopFetch(1, 0)
        << FetchFragment(1, 1, SHOP + "/alt", ANY, attempt=ALT)
        >> FragmentHead(1, 203, headers(), SHOP + "/alt", ALT)
        << head(203)
    )


def test_only_the_first_primary_of_the_shell_before_the_head_decides() -> None:
    w = weave()
    assert (
        Playbook(w)
        >> ShellChunk(b'<esi:include src="/p" primary="true"/><esi:include src="/q" primary/>')
        << fetch(1, "/p", is_urgent=True)
        << fetch(2, "/q")
        >> html_head(2, SHOP + "/q", status=302)
        << StopFetch(2, 0)
        << cut(2, "/q", Outcome.ERROR)
        << EndPart(2)
        >> html_head(1, SHOP + "/p")
        << head(200)
        >> ShellChunk(b'<esi:include src="/r" primary="true"/>')
        << fetch(3, "/r")
    )


def test_a_primary_decided_before_the_head_could_go_is_used_at_once() -> None:
    w = weave()
    w.handle(ShellChunk(b'<esi:include src="/p" primary="true"/>'), 0.0)
    assert w.handle(html_head(1, SHOP + "/p", status=410), 0.0) == [head(410)]
    assert w.is_head_sent


def test_links_are_merged_from_the_shell_and_answered_fragments_once_each() -> None:
    w = weave(shell_links=("<a>", "<b>"))
    w.handle(ShellChunk(b'<esi:include src="/p" primary="true"/><esi:include src="/q"/>'), 0)
    w.handle(FragmentHead(2, 200, headers(Link="<b>"), SHOP + "/q"), 0.0)
    links = CIMultiDict({"Link": "<c>"})
    links.add("Link", "<a>")
    [set_head] = w.handle(FragmentHead(1, 200, CIMultiDictProxy(links), SHOP + "/p"), 0.0)
    assert isinstance(set_head, SetHead)
    assert set_head.links == ("<a>", "<b>", "<c>")
    assert [r.outcome for r in set_head.record.fragments] == [Outcome.PENDING] * 2


# suspense, channels, dropped markup


def test_a_suspense_include_leaves_a_placeholder_and_asks_for_the_bootstrap() -> None:
    w = weave()
    slot = slot_id((0,), "/s")
    text = placeholder(slot, b"wait", "/s")
    assert (
        Playbook(w)
        >> ShellChunk(b'<weaver-include src="/s" mode="suspense">wait</weaver-include>')
        << StartSuspense(ROOT, slot, ANY, text)
        << head()
    )
    assert w.needs_bootstrap
    assert outcomes(w) == [Outcome.SUSPENSE]
    [suspense] = w.record().suspense
    assert (suspense.slot, suspense.plan.src) == (slot, "/s")
    assert w.suspense == w.record().suspense  # the cheap query agrees with the record


def test_a_nested_suspense_include_is_placed_by_its_position_in_the_tree() -> None:
    w = weave()
    w.handle(ShellChunk(b'<esi:include src="/a"/>'), 0.0)
    w.handle(html_head(1, SHOP + "/a"), 0.0)
    [command] = w.handle(
        FragmentChunk(1, b'<esi:include src="/s" mode="suspense" stream="true"/>'), 0.0
    )
    slot = slot_id((0, 0), "/s", is_stream=True)
    assert command == StartSuspense(1, slot, ANY, placeholder(slot, b"", "/s"))


def test_a_subscription_asks_for_the_bootstrap_and_is_recorded_once() -> None:
    w = weave()
    tag = b'<weaver-subscribe channel="news"/>'
    assert Playbook(w) >> ShellChunk(tag + tag) << head()
    assert w.record().channels == w.channels == ("news",)
    assert w.needs_bootstrap


def test_esi_markup_weaver_drops_is_counted_for_shell_and_fragments() -> None:
    w = weave()
    w.handle(ShellChunk(b'<esi:vars>x</esi:vars><esi:include src="/a"/>'), 0.0)
    w.handle(html_head(1, SHOP + "/a"), 0.0)
    w.handle(FragmentChunk(1, b"<esi:try>y</esi:try>"), 0.0)
    w.handle(FragmentEnd(1), 0.0)
    w.handle(ShellEnd(), 0.0)
    not_implemented = DropReason.NOT_IMPLEMENTED
    assert dict(w.record().dropped) == {
        Drop(name, not_implemented): 1 for name in ("esi:vars", "/esi:vars", "esi:try", "/esi:try")
    }
    assert w.dropped == w.record().dropped  # the cheap query agrees with the record


def test_markup_dropped_by_a_fragment_that_failed_is_still_counted() -> None:
    w = weave()
    w.handle(ShellChunk(b'<esi:include src="/a"/>'), 0.0)
    w.handle(html_head(1, SHOP + "/a"), 0.0)
    w.handle(FragmentChunk(1, b"<esi:try>y"), 0.0)
    w.handle(FragmentFailed(1, Failure.ERROR), 0.0)
    assert sum(dict(w.record().dropped).values()) == 1


def test_each_include_is_taken_once_as_it_ends_or_is_cut_for_the_driver_to_count() -> None:
    w = weave(config({"max_includes": 3}))
    w.handle(ShellChunk(b"<p>no include yet</p>"), 0.0)
    assert (w.has_fragments, w.take_ended()) == (False, [])
    shell = (
        b'<esi:include src="/a"/><esi:include src="/s" mode="suspense"/>'
        b'<esi:include src="/b"/><esi:include src="/c"/>'
    )
    w.handle(ShellChunk(shell), 1.0)
    assert w.has_fragments
    # the suspense placeholder and the include past max_includes end as they are found
    assert [(r.src, r.outcome) for r in w.take_ended()] == [
        ("/s", Outcome.SUSPENSE),
        ("/c", Outcome.LIMIT),
    ]
    w.handle(html_head(3, SHOP + "/b"), 1.5)
    w.handle(FragmentEnd(3), 2.0)
    w.handle(FragmentFailed(1, Failure.TIMEOUT), 3.0)
    assert [(r.src, r.outcome, r.duration_s) for r in w.take_ended()] == [
        ("/b", Outcome.OK, 1.0),
        ("/a", Outcome.TIMEOUT, 2.0),
    ]
    w.handle(ShellEnd(), 3.0)
    assert w.take_ended() == []
    assert all(r.is_done for r in w.record().fragments)


# the state machine's guards


def test_events_the_state_does_not_allow_are_driver_bugs() -> None:
    w = weave()
    w.handle(ShellChunk(b'<esi:include src="/a"/>'), 0.0)
    with pytest.raises(WeaveError, match="no fragment part 2"):
        w.handle(FragmentMissed(2), 0.0)
    with pytest.raises(WeaveError, match="is ordered, not streaming"):
        w.handle(FragmentChunk(1, b"x"), 0.0)
    with pytest.raises(WeaveError, match="attempt 1 is not fetching"):
        w.handle(FragmentMissed(1, ALT), 0.0)
    w.handle(html_head(1, SHOP + "/a"), 0.0)
    with pytest.raises(WeaveError, match="is streaming, not ordered"):
        w.handle(html_head(1, SHOP + "/a"), 0.0)
    w.handle(ShellEnd(), 0.0)
    with pytest.raises(WeaveError, match="already ended"):
        w.handle(ShellEnd(), 0.0)
    with pytest.raises(WeaveError, match="already ended"):
        w.handle(ShellFailed(), 0.0)


def test_a_part_that_ended_cannot_change_state_again() -> None:
    w = weave()
    w.handle(ShellChunk(b'<esi:include src="/a"/>'), 0.0)
    w.handle(html_head(1, SHOP + "/a"), 0.0)
    w.handle(FragmentEnd(1), 0.0)
    part = w._parts.get(1)
    assert part.state is State.ENDED
    with pytest.raises(WeaveError, match="from ended to streaming"):
        part.move_to(State.STREAMING)
