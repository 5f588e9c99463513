"""The one commit path and every read of Manifest/Freshness the weave and the fill make."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from weaver.cache.freshness import Freshness
from weaver.cache.manifest import replace as msgspec_replace
from weaver.cache.policy import Answer, Refusal, Why
from weaver.cache.store import Store
from weaver.config.load import build_config
from weaver.config.schema import IncludeMode, RouteConfig
from weaver.proxy import entries
from weaver.proxy.entries import EntryFacts
from weaver.proxy.errors import FragmentError
from weaver.proxy.weave_events import FragmentRecord, Outcome, WeaveRecord

URL = "http://127.0.0.1:9000/f?a=1"
NOW = 1e12  # the clock's reading: what a fresh test entry was stored at


def route(**table: object) -> RouteConfig:
    values: dict[str, object] = {"path": "/", "origin": "shop"}
    values.update(table)
    cfg = build_config(
        {"origin": [{"name": "shop", "url": "http://127.0.0.1:9000"}], "route": [values]},
        "<test>",
    )
    return cfg.routes[0]


def received(**headers: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}))


def facts(
    key: str, lifetime_s: float = 60.0, *, tags: tuple[str, ...] = (), variant: str = ""
) -> EntryFacts:
    fresh = Freshness(stored_at=1e12, initial_age_s=0.0, lifetime_s=lifetime_s)
    headers = (("Content-Type", "text/html"),)
    return EntryFacts(key, 200, headers, fresh, tags=tags, variant=variant)


def record(outcome: Outcome, ttl_left_s: float | None = None, **headers: str) -> FragmentRecord:
    return FragmentRecord(
        "/f",
        IncludeMode.BLOCKING,
        0.0,
        outcome=outcome,
        status=200,
        headers=received(**headers) if outcome is not Outcome.SUSPENSE else None,
        ttl_left_s=ttl_left_s,
    )


def test_request_url_is_the_normal_form_and_refuses_what_is_not_http() -> None:
    assert entries.request_url("/f", "HTTP://127.0.0.1:9000/%7ef") == "http://127.0.0.1:9000/~f"
    with pytest.raises(FragmentError, match="not a valid http"):
        entries.request_url("/f", "ftp://x/")


def test_a_url_normalised_or_refused_once_is_so_every_time() -> None:
    # Both are remembered per distinct URL (a page's fragments come back on every miss).
    for _ in range(2):
        assert entries.request_url("/f", "http://127.0.0.1:9000/%7ef") == (
            "http://127.0.0.1:9000/~f"
        )
        with pytest.raises(FragmentError, match="not a valid http"):
            entries.request_url("/f", "http://bad host/")
        assert entries.fragment_key(URL, {}, ()) == entries.fragment_key(URL, {"X": "1"}, ())


def test_fragment_keys_differ_by_the_routes_vary_headers_as_sent() -> None:
    en = entries.fragment_key(URL, {"Accept-Language": "en"}, ("Accept-Language",))
    de = entries.fragment_key(URL, {"Accept-Language": "de"}, ("Accept-Language",))
    assert en != de
    assert entries.fragment_key(URL, {"Cookie": "x"}, ()) == entries.fragment_key(URL, {}, ())


def test_a_variant_is_a_hash_of_the_sent_values_the_vary_names() -> None:
    assert entries.variant_of({"Accept": "a"}, None) == ""
    one = entries.variant_of({"Accept": "text/html", "Cookie": "secret"}, "Accept")
    assert one == entries.variant_of({"accept": "text/html"}, "accept")
    assert "secret" not in one and len(one) == 24
    assert entries.variant_key("k", one) == f"k|variant={one}"


def answer(status: int = 200, **headers: str) -> Answer:
    return Answer(status, received(**headers), 1e12, 1e12)


def test_storability_is_one_rule_for_pages_and_fragments() -> None:
    assert entries.shell_refusal(route(ttl="60s"), answer(), {}, "p") is None
    assert entries.fragment_policy(route(ttl="60s"), answer(), {}, "f").is_stored
    no_store = answer(Cache_Control="no-store")
    page = entries.shell_refusal(route(), no_store, {}, "p")
    fragment = entries.fragment_policy(route(), no_store, {}, "f").refusal
    assert page is not None and fragment is not None
    assert page.why is fragment.why is Why.UNSTORABLE


def test_only_a_fragments_own_success_is_stored_and_a_private_fill_never() -> None:
    refusal = entries.fragment_policy(route(ttl="60s"), answer(404), {}, "f").refusal
    assert refusal is not None and refusal.why is Why.NOT_SUCCESS
    assert entries.shell_refusal(route(ttl="60s"), answer(404), {}, "p") is None
    private = entries.shell_refusal(route(ttl="60s"), answer(), {}, "")
    assert private is not None and private.why is Why.NO_KEY


@pytest.mark.parametrize(
    ("status", "cache_control", "key"),
    [(200, "max-age=60", "f"), (200, "no-store", "f"), (404, "max-age=60", "f"), (200, "", "")],
)
def test_a_fragment_s_refusal_and_lifetime_are_its_policy_s(
    status: int, cache_control: str, key: str
) -> None:
    # The conductor asks for the refusal alone when a head arrives, and for the freshness
    # alone when a fragment that is not stored ends: the same verdicts as the policy's.
    got = answer(status, Cache_Control=cache_control, Date="Tue, 14 Nov 2023 22:13:20 GMT")
    policy = entries.fragment_policy(route(ttl="30s"), got, {}, key)
    assert entries.fragment_refusal(route(ttl="30s"), got, {}, key) == policy.refusal
    freshness = entries.response_freshness(
        route(ttl="30s"), got.headers, got.request_time, got.response_time
    )
    assert freshness == policy.freshness


def test_a_received_responses_ttl_is_its_lifetime_less_its_age() -> None:
    got = entries.response_freshness(
        route(), received(Cache_Control="max-age=60", Age="10"), 5.0, 5.0
    )
    assert entries.ttl_left_s(got) == 50.0


def test_a_pages_facts_take_the_shortest_lifetime_and_every_tag() -> None:
    page = facts("p", 600.0, tags=("shell",))
    woven = WeaveRecord(
        fragments=(
            record(Outcome.OK, 30.0, Surrogate_Key="frag", Cache_Control="max-age=60"),
            record(Outcome.OK, Cache_Control="max-age=90"),
            record(Outcome.SUSPENSE),
        )
    )
    shell = answer(Cache_Control="max-age=600", Surrogate_Key="shell")
    folded = entries.page_facts(page, route(tags=["route"]), woven, shell, {})
    assert isinstance(folded, EntryFacts)
    assert folded.freshness.lifetime_s == 30.0
    assert folded.tags == ("route", "shell", "frag")
    assert folded.fragments == ("/f", "/f")


def test_a_page_without_a_weave_keeps_its_lifetime_and_gains_the_routes_tags() -> None:
    shell = answer(Cache_Control="max-age=60", Surrogate_Key="a")
    folded = entries.page_facts(facts("p", tags=("a",)), route(tags=["r", "a"]), None, shell, {})
    assert isinstance(folded, EntryFacts)
    assert (folded.tags, folded.freshness.lifetime_s) == (("r", "a"), 60.0)


def test_a_page_with_a_fallback_or_an_unstorable_fragment_is_not_stored() -> None:
    shell = answer(Cache_Control="max-age=60")

    def verdict(weave: WeaveRecord) -> str:
        folded = entries.page_facts(facts("p"), route(), weave, shell, {})
        assert isinstance(folded, Refusal)
        return str(folded)

    assert verdict(WeaveRecord(has_fallback=True)) == "assembled with a fallback"
    assert verdict(WeaveRecord(fragments=(record(Outcome.TIMEOUT),))) == (
        "fragment /f ended timeout"
    )
    private = WeaveRecord(fragments=(record(Outcome.OK, Cache_Control="private"),))
    assert verdict(private).startswith("fragment /f ")


async def test_a_committed_fragment_is_found_fresh_and_for_its_variant_only(
    tmp_path: Path,
) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**8) as store:
        assert await entries.begin(None, "k", None) is None
        assert await entries.begin(store, "k", Refusal(Why.UNSTORABLE, "no-store")) is None
        writer = await entries.begin(store, "k", None)
        assert writer is not None
        await writer.write(b"<b>f</b>")
        variant = entries.variant_of({"Accept": "a"}, "Accept")
        headers = (("Content-Type", "text/html"), ("Vary", "Accept"), ("Connection", "x"))
        fresh = Freshness(stored_at=1e12, initial_age_s=0.0, lifetime_s=60.0)
        await entries.commit(store, writer, EntryFacts("k", 200, headers, fresh, variant=variant))
        cached = await entries.lookup_fragment(store, "k", {"Accept": "a"}, NOW)
        assert cached is not None
        assert b"".join([c async for c in cached.body]) == b"<b>f</b>"
        assert "Connection" not in cached.headers  # hop-by-hop headers are not stored
        assert cached.ttl_left_s == 60.0
        assert await entries.lookup_fragment(store, "k", {"Accept": "b"}, NOW) is None
        assert await entries.lookup_fragment(store, "other", {}, NOW) is None
        assert await store.get(entries.variant_key("k", variant)) is None  # not aliased


async def test_a_page_variant_is_also_stored_under_its_variant_key(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**8) as store:
        writer = await entries.begin(store, "p", None)
        assert writer is not None
        await writer.write(b"page")
        await entries.commit(store, writer, facts("p", variant="v1"), alias_variant=True)
        aliased = await store.get(entries.variant_key("p", "v1"))
        assert aliased is not None and aliased.manifest.variant == "v1"


async def test_a_stale_fragment_is_not_served(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**8) as store:
        writer = await entries.begin(store, "k", None)
        assert writer is not None
        await writer.write(b"old")
        stale = Freshness(stored_at=0.0, initial_age_s=0.0, lifetime_s=1.0)
        await entries.commit(store, writer, EntryFacts("k", 200, (), stale))
        assert await entries.lookup_fragment(store, "k", {}, NOW) is None


async def test_a_304_refreshes_the_stored_headers_and_freshness(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**8) as store:
        writer = await entries.begin(store, "p", None)
        assert writer is not None
        await writer.write(b"page")
        old = Freshness(stored_at=0.0, initial_age_s=0.0, lifetime_s=1.0)
        headers = (("Content-Type", "text/html"), ("ETag", '"v1"'))
        await entries.commit(store, writer, EntryFacts("p", 200, headers, old))
        stale = await store.get("p")
        assert stale is not None
        assert entries.conditional_headers(stale.manifest) == {"If-None-Match": '"v1"'}
        woven = msgspec_replace(stale.manifest, fragments=("/f",))
        assert entries.conditional_headers(woven) == {}
        answered = received(Cache_Control="max-age=60")
        entry = await entries.refresh(store, "p", stale.manifest, route(), answered, 5.0, 5.0)
    assert entry.manifest.freshness.lifetime_s == 60.0
    assert ("Cache-Control", "max-age=60") in entry.manifest.headers
    assert b"".join([c async for c in entry.body()]) == b"page"


async def test_a_refresh_of_an_entry_that_vanished_says_so(tmp_path: Path) -> None:
    async with Store(str(tmp_path), max_size_bytes=10**8) as store:
        writer = await entries.begin(store, "p", None)
        assert writer is not None
        await writer.write(b"page")
        fresh = Freshness(stored_at=1e12, initial_age_s=0.0, lifetime_s=60.0)
        await entries.commit(store, writer, EntryFacts("p", 200, (), fresh))
        stale = await store.get("p")
        assert stale is not None
        with pytest.raises(RuntimeError, match="gone vanished"):
            await entries.refresh(store, "gone", stale.manifest, route(), {}, 5.0, 5.0)
