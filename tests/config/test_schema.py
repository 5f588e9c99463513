"""The typed config (config/schema.py): routing by path prefix, include rules, flags."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weaver.config.schema import (
    BusConfig,
    Config,
    HostPort,
    IncludeMode,
    IncludeRule,
    OriginConfig,
    RouteConfig,
    ServerConfig,
    path_has_prefix,
)


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        ("/anything", "/", True),
        ("/shop", "/shop", True),
        ("/shop/x", "/shop", True),
        ("/shopping", "/shop", False),
        ("/shop", "/shop/", False),
        ("/shop/", "/shop/", True),
        ("/shop/x/y", "/shop/", True),
        ("/sho", "/shop", False),
    ],
)
def test_a_route_names_a_part_of_the_tree_not_a_spelling(
    path: str, prefix: str, expected: bool
) -> None:
    assert path_has_prefix(path, prefix) is expected


def _routes(*paths: str) -> Config:
    return Config(routes=tuple(RouteConfig(path=path, origin="o") for path in paths))


def test_the_longest_matching_route_wins_whatever_the_order() -> None:
    for config in (_routes("/", "/shop", "/shop/cart"), _routes("/shop/cart", "/shop", "/")):
        assert [
            route.path if (route := config.route_for(path)) else None
            for path in ("/", "/shop", "/shop/cart/1", "/shopping", "/about")
        ] == ["/", "/shop", "/shop/cart", "/", "/"]


def test_a_path_no_route_covers_has_no_route() -> None:
    assert _routes("/shop").route_for("/about") is None
    assert Config().route_for("/") is None


@given(st.lists(st.sampled_from(["/", "/a", "/a/b", "/b", "/a/"]), unique=True), st.text())
def test_the_chosen_route_is_a_prefix_and_no_longer_one_matches(
    paths: list[str], tail: str
) -> None:
    config = _routes(*paths)
    path = "/" + tail
    route = config.route_for(path)
    matching = [p for p in paths if path_has_prefix(path, p)]
    if route is None:
        assert matching == []
    else:
        assert len(route.path) == max(map(len, matching))


def test_an_origin_is_found_by_name_and_an_unknown_name_is_a_key_error() -> None:
    shop = OriginConfig(name="shop", url="http://s", scheme="http", host="s", port=80)
    config = Config(origins=(shop,))
    assert config.origin("shop") is shop
    with pytest.raises(KeyError):
        config.origin("other")


def test_the_first_include_rule_that_matches_wins_with_shell_wildcards() -> None:
    route = RouteConfig(
        path="/",
        origin="o",
        includes=(
            IncludeRule(src="/frag/cart*", mode=IncludeMode.SUSPENSE),
            IncludeRule(src="/frag/*", timeout_s=2.0),
            IncludeRule(src="/[ab]/?", is_stream=True),
        ),
    )
    assert route.rule_for("/frag/cart?x=1") == route.includes[0]
    assert route.rule_for("/frag/nav") == route.includes[1]
    assert route.rule_for("/a/1") == route.includes[2]
    assert route.rule_for("/c/1") is None
    assert route.rule_for("/FRAG/nav") is None  # case matters: paths are case-sensitive


def test_flags_read_from_what_is_configured() -> None:
    assert not ServerConfig().is_tls
    assert ServerConfig(tls_cert="c.pem", tls_key="k.pem").is_tls
    assert not BusConfig().is_redis
    assert BusConfig(url="redis://r:6379/0").is_redis
    assert BusConfig(url="rediss://r:6380/0").is_redis
    assert str(HostPort("127.0.0.1", 8080)) == "127.0.0.1:8080"


def test_config_values_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServerConfig().workers = 2  # type: ignore[misc]  # the point: it refuses
