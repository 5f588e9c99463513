"""The cache's policy: stored or why not, the lifetime and the tags, of pages and fragments."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from weaver.cache.freshness import Freshness
from weaver.cache.policy import Answer, Part, Policy, Refusal, Rules, Why, entry_policy
from weaver.config.load import build_config
from weaver.config.schema import RouteConfig

T = 1_700_000_000.0
PAGE = Rules(ttl_s=None)


def answer(status: int = 200, /, **headers: str) -> Answer:
    return Answer(status, {k.replace("_", "-"): v for k, v in headers.items()}, T, T)


def cached(cache_control: str, **more: str) -> Answer:
    return answer(Cache_Control=cache_control, **more)


def ok(src: str, cache_control: str = "max-age=60", **more: str) -> Part:
    headers = {"Cache-Control": cache_control}
    headers.update((k.replace("_", "-"), v) for k, v in more.items())
    return Part(src, "ok", is_answered=True, status=200, headers=headers)


def policy(
    shell: Answer,
    fragments: tuple[Part, ...] = (),
    *,
    rules: Rules = PAGE,
    request_headers: Mapping[str, str] | None = None,
    key: str = "GET http://h/",
    has_fallback: bool = False,
) -> Policy:
    return entry_policy(
        shell,
        fragments,
        rules=rules,
        request_headers=request_headers or {},
        key=key,
        has_fallback=has_fallback,
    )


def route(**table: object) -> RouteConfig:
    config = build_config(
        {
            "cache": {"dir": "/tmp/unused"},
            "origin": [{"name": "o", "url": "http://127.0.0.1:1"}],
            "route": [{"path": "/", "origin": "o", **table}],
        },
        "<test>",
    )
    return config.routes[0]


# the shell alone


def test_a_page_with_max_age_is_stored_for_that_long() -> None:
    verdict = policy(cached("max-age=60"))
    assert verdict.is_stored and verdict.refusal is None
    assert verdict.freshness == Freshness(stored_at=T, initial_age_s=0.0, lifetime_s=60.0)
    assert (verdict.tags, verdict.fragments) == ((), ())


def test_a_private_fill_without_a_key_is_never_stored() -> None:
    verdict = policy(cached("max-age=60"), key="")
    assert verdict.refusal == Refusal(Why.NO_KEY)
    assert str(verdict.refusal) == "not cacheable"
    assert not verdict.is_stored


@pytest.mark.parametrize(
    ("shell", "request_headers", "reason"),
    [
        (cached("no-store"), {}, "no-store"),
        (cached("private, max-age=60"), {}, "private"),
        (cached("max-age=60", Set_Cookie="a=1"), {}, "set-cookie"),
        (cached("max-age=60"), {"Authorization": "Bearer x"}, "authorization"),
        (cached("max-age=60"), {"Cache-Control": "no-store"}, "no-store"),
        (answer(), {}, "no freshness information"),
        (cached("max-age=60", Vary="*"), {}, "vary *"),
        (answer(206, Cache_Control="max-age=60"), {}, "status 206 not cacheable"),
    ],
)
def test_what_rfc_9111_forbids_is_refused_with_its_rule(
    shell: Answer, request_headers: dict[str, str], reason: str
) -> None:
    verdict = policy(shell, request_headers=request_headers)
    assert verdict.refusal == Refusal(Why.UNSTORABLE, reason)
    assert str(verdict.refusal) == reason


def test_a_route_ttl_gives_a_page_without_freshness_its_lifetime() -> None:
    verdict = policy(answer(), rules=Rules(ttl_s=30.0))
    assert verdict.is_stored
    assert verdict.freshness.lifetime_s == 30.0


def test_a_route_that_stores_set_cookie_stores_the_page() -> None:
    shell = cached("max-age=60", Set_Cookie="a=1")
    assert policy(shell, rules=Rules(store_set_cookie=True)).is_stored


def test_the_route_tags_come_first_then_the_shells_without_duplicates() -> None:
    shell = cached("max-age=60", Surrogate_Key="shop cart", Cache_Tag="cart, home")
    verdict = policy(shell, rules=Rules(tags=("shop", "all")))
    assert verdict.tags == ("shop", "all", "cart", "home")


def test_freshness_is_computed_even_when_the_entry_is_refused() -> None:
    verdict = policy(cached("no-store, max-age=5, stale-if-error=9"))
    assert not verdict.is_stored
    assert (verdict.freshness.lifetime_s, verdict.freshness.stale_if_error_s) == (5.0, 9.0)


def test_the_age_the_origin_reports_is_the_initial_age() -> None:
    verdict = policy(cached("max-age=60", Age="10"))
    assert verdict.freshness.initial_age_s == 10.0


# a fragment's own entry


def test_a_fragment_entry_is_stored_only_when_it_succeeded() -> None:
    rules = Rules(is_success_only=True)
    assert policy(cached("max-age=60"), rules=rules).is_stored
    refused = policy(answer(404, Cache_Control="max-age=60"), rules=rules)
    assert refused.refusal == Refusal(Why.NOT_SUCCESS, "status 404")
    assert str(refused.refusal) == "status 404"
    # A page may store a 404 with explicit freshness.
    assert policy(answer(404, Cache_Control="max-age=60")).is_stored


def test_rules_of_a_route_for_its_pages_and_its_fragments() -> None:
    config_route = route(ttl="30s", tags=["shop"], store_set_cookie=True)
    assert Rules.page(config_route) == Rules(30.0, ("shop",), True, is_success_only=False)
    assert Rules.fragment(config_route) == Rules(30.0, (), True, is_success_only=True)


# a woven page


def test_a_page_lives_no_longer_than_its_shortest_fragment() -> None:
    verdict = policy(cached("max-age=600"), (ok("/a", "max-age=60"), ok("/b", "max-age=5")))
    assert verdict.is_stored
    assert verdict.freshness.lifetime_s == 5.0
    assert verdict.fragments == ("/a", "/b")


def test_a_longer_lived_fragment_does_not_lengthen_the_page() -> None:
    verdict = policy(cached("max-age=10"), (ok("/a", "max-age=600"),))
    assert verdict.freshness.lifetime_s == 10.0


def test_what_is_left_of_a_cached_fragment_counts_from_the_shells_age() -> None:
    headers = {"Cache-Control": "max-age=60"}
    part = Part("/a", "ok", is_answered=True, status=200, headers=headers, ttl_left_s=7.0)
    verdict = policy(cached("max-age=600", Age="3"), (part,))
    assert verdict.freshness.lifetime_s == 3.0 + 7.0  # fresh for 7 s more from now


def test_a_fragment_without_freshness_takes_the_route_ttl() -> None:
    part = Part("/a", "ok", is_answered=True, status=200, headers={"Content-Type": "text/html"})
    verdict = policy(cached("max-age=600"), (part,), rules=Rules(ttl_s=20.0))
    assert verdict.freshness.lifetime_s == 20.0


def test_the_tags_of_a_page_are_the_union_of_its_parts() -> None:
    fragments = (ok("/a", Surrogate_Key="price home"), ok("/b", Cache_Tag="cart"))
    verdict = policy(cached("max-age=60", Surrogate_Key="home"), fragments)
    assert verdict.tags == ("home", "price", "cart")


def test_a_page_assembled_with_a_fallback_is_not_stored() -> None:
    verdict = policy(cached("max-age=60"), (ok("/a"),), has_fallback=True)
    assert verdict.refusal == Refusal(Why.FALLBACK)
    assert str(verdict.refusal) == "assembled with a fallback"


def test_a_fragment_that_fell_back_names_itself_and_how_it_ended() -> None:
    failed = Part("/slow", "timeout", is_answered=False)
    verdict = policy(cached("max-age=60"), (ok("/a"), failed, ok("/b")))
    assert verdict.refusal == Refusal(Why.FRAGMENT, "/slow ended timeout")
    assert str(verdict.refusal) == "fragment /slow ended timeout"


def test_an_answered_fragment_without_its_head_counts_as_not_answered() -> None:
    headless = Part("/a", "ok", is_answered=True, status=None, headers=None)
    verdict = policy(cached("max-age=60"), (headless,))
    assert str(verdict.refusal) == "fragment /a ended ok"


def test_a_fragment_that_may_not_be_stored_keeps_the_page_out() -> None:
    verdict = policy(cached("max-age=60"), (ok("/me", "private, max-age=60"),))
    assert verdict.refusal == Refusal(Why.FRAGMENT, "/me private")


def test_the_first_refusal_is_the_one_reported() -> None:
    fragments = (Part("/x", "error", is_answered=False), ok("/me", "no-store"))
    assert str(policy(cached("no-store"), fragments).refusal) == "no-store"
    assert str(policy(cached("max-age=9"), fragments).refusal) == "fragment /x ended error"
    verdict = policy(cached("max-age=9"), fragments, has_fallback=True)
    assert verdict.refusal == Refusal(Why.FALLBACK)


def test_a_fragment_is_judged_without_the_pages_request_headers() -> None:
    # The shell's check saw the request (Authorization allowed by s-maxage there); the
    # fragment is not refused for the visitor's credentials a second time.
    shell = cached("s-maxage=60")
    verdict = policy(shell, (ok("/a"),), request_headers={"Authorization": "Bearer x"})
    assert verdict.is_stored
