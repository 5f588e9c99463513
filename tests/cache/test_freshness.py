"""RFC 9111 / 5861 / 9213 freshness as tables: each row one rule a shared cache must keep."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weaver.cache import freshness as f
from weaver.cache.freshness import CacheState, Freshness

NOW = 1_700_000_000.0


def date(offset_s: float) -> str:
    return formatdate(NOW + offset_s, usegmt=True)


@pytest.mark.parametrize(
    ("request_headers", "status", "response_headers", "ttl_s", "reason"),
    [
        ({}, 200, {"Cache-Control": "max-age=60"}, None, None),
        ({}, 200, {"Cache-Control": "s-maxage=60"}, None, None),
        ({}, 200, {"Expires": date(60)}, None, None),
        ({}, 200, {}, None, "no freshness information"),  # heuristics are off…
        ({}, 200, {}, 30.0, None),  # …unless the route has a ttl
        ({}, 200, {"Cache-Control": "no-store, max-age=60"}, None, "no-store"),
        ({"Cache-Control": "no-store"}, 200, {"Cache-Control": "max-age=60"}, None, "no-store"),
        ({}, 200, {"Cache-Control": "private, max-age=60"}, None, "private"),
        ({}, 200, {"Cache-Control": "max-age=60", "Set-Cookie": "a=1"}, None, "set-cookie"),
        (
            {"Authorization": "Bearer x"},
            200,
            {"Cache-Control": "max-age=60"},
            None,
            "authorization",
        ),
        ({"Authorization": "Bearer x"}, 200, {"Cache-Control": "public, max-age=60"}, None, None),
        ({"Authorization": "Bearer x"}, 200, {"Cache-Control": "s-maxage=60"}, None, None),
        ({}, 200, {"Cache-Control": "max-age=60", "Vary": "*"}, None, "vary *"),
        ({}, 206, {"Cache-Control": "max-age=60"}, None, "status 206 not cacheable"),
        ({}, 100, {"Cache-Control": "max-age=60"}, None, "1xx"),
        ({}, 500, {}, 30.0, "status 500 not cacheable"),
        ({}, 500, {"Cache-Control": "max-age=5"}, None, None),  # explicit freshness
        ({}, 404, {}, 30.0, None),  # heuristically cacheable status
        (
            {},
            200,
            {"CDN-Cache-Control": "no-store", "Cache-Control": "max-age=60"},
            None,
            "no-store",
        ),
        ({}, 200, {"Weaver-Cache-Control": "max-age=60", "Cache-Control": "no-store"}, None, None),
    ],
)
def test_storable(
    request_headers: dict[str, str],
    status: int,
    response_headers: dict[str, str],
    ttl_s: float | None,
    reason: str | None,
) -> None:
    got = f.storable(
        method="GET",
        status=status,
        request_headers=request_headers,
        response_headers=response_headers,
        route_allows_private=False,
        route_ttl_s=ttl_s,
    )
    assert got == reason


def test_unsafe_methods_are_never_stored() -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "PURGE"):
        assert (
            f.storable(
                method=method,
                status=200,
                request_headers={},
                response_headers={"Cache-Control": "max-age=60"},
                route_allows_private=False,
                route_ttl_s=60,
            )
            == f"method {method}"
        )


def test_a_route_may_opt_in_to_private_and_cookies() -> None:
    assert (
        f.storable(
            method="GET",
            status=200,
            request_headers={"Authorization": "x"},
            response_headers={"Cache-Control": "private, max-age=9", "Set-Cookie": "a=1"},
            route_allows_private=True,
            route_ttl_s=None,
        )
        is None
    )


@pytest.mark.parametrize(
    ("headers", "ttl_s", "lifetime_s"),
    [
        ({"Cache-Control": "max-age=60, s-maxage=10"}, None, 10.0),  # s-maxage wins
        ({"Cache-Control": "max-age=60", "Expires": date(600)}, None, 60.0),
        ({"Expires": date(600), "Date": date(0)}, None, 600.0),
        ({"Expires": date(600), "Date": date(100)}, None, 500.0),  # Expires - Date
        ({"Expires": "0"}, 30.0, 0.0),  # invalid Expires: already expired
        ({"Expires": date(-10), "Date": date(0)}, None, 0.0),
        ({}, 30.0, 30.0),
        ({}, None, 0.0),
        ({"Cache-Control": "max-age=abc"}, 30.0, 0.0),  # invalid max-age: stale
        ({"Cache-Control": 'max-age="60"'}, None, 60.0),  # tolerated quoted form
        ({"Cache-Control": "max-age=60, max-age=5"}, None, 60.0),  # first wins
        ({"CDN-Cache-Control": "max-age=300", "Cache-Control": "max-age=5"}, None, 300.0),
        ({"Weaver-Cache-Control": "max-age=7", "CDN-Cache-Control": "max-age=300"}, None, 7.0),
    ],
)
def test_freshness_lifetime(
    headers: dict[str, str], ttl_s: float | None, lifetime_s: float
) -> None:
    assert f.freshness_lifetime(headers, route_ttl_s=ttl_s, response_time=NOW) == lifetime_s


@pytest.mark.parametrize(
    ("headers", "request_time", "response_time", "now", "age_s"),
    [
        ({}, NOW, NOW, NOW, 0.0),
        ({}, NOW, NOW, NOW + 5, 5.0),  # resident time
        ({"Age": "100"}, NOW, NOW, NOW, 100.0),  # the origin's (or a cache's) Age counts
        ({"Age": "100"}, NOW - 2, NOW, NOW, 102.0),  # plus the response delay
        ({"Date": date(-30)}, NOW, NOW, NOW, 30.0),  # apparent age
        ({"Date": date(-30), "Age": "10"}, NOW, NOW, NOW + 1, 31.0),  # the larger one
        ({"Date": date(60)}, NOW, NOW, NOW, 0.0),  # a clock ahead never makes age < 0
    ],
)
def test_current_age(
    headers: dict[str, str], request_time: float, response_time: float, now: float, age_s: float
) -> None:
    got = f.current_age(
        response_headers=headers, request_time=request_time, response_time=response_time, now=now
    )
    assert got == pytest.approx(age_s)


def stored(cache_control: str, **headers: str) -> Freshness:
    return f.freshness_from_response(
        request_time=NOW,
        response_time=NOW,
        response_headers={"Cache-Control": cache_control, **headers},
        route_ttl_s=None,
    )


@pytest.mark.parametrize(
    ("cache_control", "elapsed_s", "origin_failed", "state"),
    [
        ("max-age=60", 59, False, CacheState.FRESH),
        ("max-age=60", 61, False, CacheState.MUST_REVALIDATE),
        ("max-age=60, stale-while-revalidate=30", 80, False, CacheState.STALE_WHILE_REVALIDATE),
        ("max-age=60, stale-while-revalidate=30", 91, False, CacheState.MUST_REVALIDATE),
        ("max-age=60, stale-if-error=300", 100, False, CacheState.MUST_REVALIDATE),
        ("max-age=60, stale-if-error=300", 100, True, CacheState.STALE_IF_ERROR),
        ("max-age=60, stale-if-error=300", 400, True, CacheState.MUST_REVALIDATE),
        (
            "max-age=60, must-revalidate, stale-while-revalidate=30",
            80,
            False,
            CacheState.MUST_REVALIDATE,
        ),
        ("max-age=60, proxy-revalidate, stale-if-error=300", 100, True, CacheState.MUST_REVALIDATE),
        ("s-maxage=60, stale-if-error=300", 100, True, CacheState.MUST_REVALIDATE),
        ("no-cache, max-age=60", 1, False, CacheState.MUST_REVALIDATE),
        ('no-cache="Set-Cookie", max-age=60', 1, False, CacheState.FRESH),  # field-scoped
    ],
)
def test_state(
    cache_control: str, elapsed_s: float, origin_failed: bool, state: CacheState
) -> None:
    assert stored(cache_control).state(NOW + elapsed_s, origin_failed=origin_failed) is state


def test_the_origins_age_counts_against_the_lifetime_and_the_age_header_says_so() -> None:
    entry = stored("max-age=60", Age="50")
    assert entry.is_fresh(NOW + 9)
    assert not entry.is_fresh(NOW + 11)
    assert entry.age_header(NOW + 5) == "55"


@pytest.mark.parametrize(
    ("headers", "wants"),
    [
        ({}, f.RequestDirectives()),
        ({"Cache-Control": "no-cache"}, f.RequestDirectives(no_cache=True)),
        ({"Pragma": "no-cache"}, f.RequestDirectives(no_cache=True)),
        ({"Pragma": "no-cache", "Cache-Control": "max-age=5"}, f.RequestDirectives(max_age_s=5)),
        (
            {"Cache-Control": "min-fresh=10, only-if-cached"},
            f.RequestDirectives(min_fresh_s=10, only_if_cached=True),
        ),
    ],
)
def test_request_directives(headers: dict[str, str], wants: f.RequestDirectives) -> None:
    assert f.request_wants(headers) == wants


def test_request_directives_limit_what_a_fresh_entry_may_answer() -> None:
    entry = stored("max-age=60")
    now = NOW + 20
    assert f.satisfies(entry, f.RequestDirectives(), now)
    assert not f.satisfies(entry, f.RequestDirectives(no_cache=True), now)
    assert not f.satisfies(entry, f.RequestDirectives(max_age_s=10), now)
    assert f.satisfies(entry, f.RequestDirectives(max_age_s=30), now)
    assert not f.satisfies(entry, f.RequestDirectives(min_fresh_s=50), now)


def test_conditional_headers_use_the_stored_validators() -> None:
    assert f.conditional_headers({"ETag": '"v1"', "Last-Modified": date(-100)}) == {
        "If-None-Match": '"v1"',
        "If-Modified-Since": date(-100),
    }
    assert f.conditional_headers({}) == {}


def test_a_304_updates_stored_headers_but_not_the_body_framing() -> None:
    merged = f.merge_304(
        [
            ("Content-Type", "text/html"),
            ("Content-Length", "10"),
            ("Cache-Control", "max-age=1"),
            ("X-Old", "kept"),
        ],
        {"Cache-Control": "max-age=60", "Content-Length": "0", "X-New": "1", "Connection": "x"},
    )
    assert dict(merged) == {
        "Content-Type": "text/html",
        "Content-Length": "10",
        "Cache-Control": "max-age=60",
        "X-Old": "kept",
        "X-New": "1",
    }


def test_stored_headers_drop_hop_by_hop_connection_named_and_per_response_fields() -> None:
    kept = f.filter_stored_headers(
        [
            ("Content-Type", "text/html"),
            ("Connection", "close, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Set-Cookie", "sid=1"),
            ("Age", "5"),
            ("X-Weaver-Cache", "MISS"),
            ("Server-Timing", "shell;dur=1"),
            ("ETag", '"a"'),
        ]
    )
    assert kept == [("Content-Type", "text/html"), ("ETag", '"a"')]


@pytest.mark.parametrize(
    ("method", "status", "headers", "targets"),
    [
        ("POST", 201, {"Location": "/p/2"}, ["http://a.example/p/1", "http://a.example/p/2"]),
        (
            "PUT",
            204,
            {"Content-Location": "http://a.example/p/3"},
            ["http://a.example/p/1", "http://a.example/p/3"],
        ),
        ("DELETE", 200, {"Location": "http://other.example/p/2"}, ["http://a.example/p/1"]),
        ("POST", 500, {}, []),  # an error invalidates nothing
        ("GET", 200, {}, []),
        ("OPTIONS", 200, {}, []),
    ],
)
def test_invalidation_targets(
    method: str, status: int, headers: dict[str, str], targets: list[str]
) -> None:
    assert f.invalidation_targets(method, status, "http://a.example/p/1", headers) == targets


def test_tags_from_surrogate_key_and_cache_tag() -> None:
    headers = {"Surrogate-Key": "product-1  price", "Cache-Tag": "price, shop ,"}
    assert f.tags_from_headers(headers) == ("product-1", "price", "shop")


@given(
    st.dictionaries(
        st.sampled_from(["Cache-Control", "Expires", "Date", "Age", "CDN-Cache-Control"]),
        st.text(max_size=40),
    ),
    st.floats(min_value=0, max_value=1e6),
)
def test_lifetime_and_age_are_never_negative(headers: dict[str, str], elapsed_s: float) -> None:
    entry = f.freshness_from_response(
        request_time=NOW, response_time=NOW, response_headers=headers, route_ttl_s=None
    )
    assert entry.lifetime_s >= 0
    assert entry.age(NOW + elapsed_s) >= 0
    assert int(entry.age_header(NOW + elapsed_s)) >= 0


def test_an_http_date_reads_the_same_every_time_and_a_bad_one_never() -> None:
    # Parsed once per distinct text (the fragments of one second share their Date).
    for _ in range(2):
        assert f.http_date("Tue, 14 Nov 2023 22:13:20 GMT") == 1_700_000_000.0
        assert f.http_date("Tue, 14 Nov 2023 22:13:21 GMT") == 1_700_000_001.0
        assert f.http_date("yesterday") is None
    assert f.http_date("") is None
    assert f.http_date(None) is None
