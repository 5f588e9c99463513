"""Purge requests: a body parsed (or refused, naming the field), matched against keys, and
applied to a real store in batches."""

from __future__ import annotations

import orjson
import pytest

from tests.cache.stored import manifest, read
from weaver.cache.errors import BadPurge
from weaver.cache.keys import cache_key
from weaver.cache.purge import (
    PURGE_BATCH,
    PurgeRequest,
    UrlTarget,
    apply,
    apply_broadcast,
    matches,
    parse_purge_body,
    parse_url,
)
from weaver.cache.store import Store


def body(value: object) -> bytes:
    return orjson.dumps(value)


# Parsing: every refusal names the field.


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "the body is not JSON"),
        (b"[]", "the body must be a JSON object"),
        (b'{"tag": ["a"]}', 'unknown field "tag" \\(expected urls, prefix, tags, keys, soft\\)'),
        (body({"url": ["/p"]}), 'unknown field "url"'),
        (b'{"tags": "a"}', '"tags" must be a list of non-empty strings'),
        (body({"keys": [1]}), '"keys" must be a list of non-empty strings'),
        (body({"urls": "/p"}), '"urls" must be a list of non-empty strings'),
        (body({"urls": ["/p", ""]}), '"urls" must be a list of non-empty strings'),
        (body({"urls": ["ftp://h/p"]}), "\"urls\"\\[0\\]: 'ftp://h/p' is neither"),
        (body({"urls": ["/p", "http://h:8080:80/p"]}), '"urls"\\[1\\]'),
        (body({"urls": ["p/42"]}), '"urls"\\[0\\]'),
        (body({"urls": ["//h/p"]}), '"urls"\\[0\\]'),  # scheme-relative is not a path
        (b'{"prefix": "shop"}', '"prefix" must be a path starting with "/"'),
        (body({"prefix": 3}), '"prefix" must be a path'),
        (body({"prefix": "/shop?q=1"}), "without a query"),
        (b'{"keys": [], "soft": 1}', '"soft" must be true or false'),
        (b"{}", 'nothing to purge: give "urls", "prefix", "tags" or "keys"'),
        (body({"soft": True}), "nothing to purge"),
    ],
)
def test_a_bad_purge_body_is_refused_naming_the_field(data: bytes, message: str) -> None:
    with pytest.raises(BadPurge, match=message):
        parse_purge_body(data)


def test_a_good_purge_body() -> None:
    assert parse_purge_body(b'{"tags": ["a"], "prefix": "/p", "soft": true}') == PurgeRequest(
        tags=("a",), prefix="/p", is_soft=True
    )
    assert parse_purge_body(b'{"keys": ["GET h/a"]}') == PurgeRequest(keys=("GET h/a",))


def test_purge_urls_are_normalised_as_requests_are() -> None:
    assert parse_purge_body(
        b'{"urls": ["https://Shop.Example:443/p/%7e?b=2&a=1#top", "/q/./r?x"]}'
    ) == PurgeRequest(urls=(UrlTarget("shop.example", "/p/~?b=2&a=1"), UrlTarget(None, "/q/r?x")))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://A.example:80/p/%34%32", UrlTarget("a.example", "/p/42")),  # unreserved
        ("/p/42#frag", UrlTarget(None, "/p/42")),
        ("/p%2Fq", UrlTarget(None, "/p%2Fq")),  # an escaped slash stays escaped
        ("ftp://h/p", None),
        ("p/42", None),
    ],
)
def test_a_url_to_purge_is_normalised_or_refused(url: str, expected: UrlTarget | None) -> None:
    assert parse_url(url) == expected


# Matching: which keys a request names.


def key(target: str, host: str = "h.example", vary: tuple[tuple[str, str], ...] = ()) -> str:
    return cache_key("GET", host, target, vary)


def test_a_url_with_a_host_names_every_variant_on_that_host_only() -> None:
    request = parse_purge_body(body({"urls": ["http://A.example:80/p/%34%32"]}))
    assert matches(request, key("/p/42", "a.example", (("accept-language", "fr"),)))
    assert matches(request, key("/p/42", "a.example"))
    assert not matches(request, key("/p/42", "b.example"))
    assert not matches(request, key("/p/42?x=1", "a.example"))  # the query is the URL's
    assert not matches(request, key("/p/43", "a.example"))


def test_a_path_names_that_url_on_every_host() -> None:
    request = parse_purge_body(body({"urls": ["/p/42"]}))
    for host in ("a.example", "b.example:8080"):
        assert matches(request, key("/p/42", host, (("accept-language", "en"),)))
    assert not matches(request, key("/p/42?x=1"))


def test_an_escaped_slash_is_another_url_for_purge() -> None:
    assert not matches(parse_purge_body(body({"urls": ["/p%2Fq"]})), key("/p/q"))
    assert matches(parse_purge_body(body({"urls": ["/p%2Fq"]})), key("/p%2Fq"))


@pytest.mark.parametrize(
    ("target", "expected"),
    [("/shop", True), ("/shop/x", True), ("/shop?q=1", True), ("/shopping", False)],
)
def test_a_prefix_names_keys_by_path_segments(target: str, expected: bool) -> None:
    request = parse_purge_body(body({"prefix": "/shop"}))
    assert matches(request, key(target)) is expected
    assert matches(request, key(target, "other.example")) is expected


def test_tags_and_keys_alone_match_no_key_by_url() -> None:
    assert not matches(PurgeRequest(tags=("t",), keys=("GET h/a",)), "GET h/a")


# Applying to a store.


async def test_purge_by_key_prefix_and_tag(store: Store) -> None:
    await store.put(manifest("GET h/shop/1", tags=("product",)), b"1")
    await store.put(manifest("GET h/shop/2", tags=("product", "sale")), b"2")
    await store.put(manifest("GET h/blog/1", tags=("post",)), b"3")
    await store.put(manifest("GET other/shop/3"), b"4")
    assert await apply(store, PurgeRequest(tags=("sale",))) == 1
    assert await store.keys() == ["GET h/blog/1", "GET h/shop/1", "GET other/shop/3"]
    assert await apply(store, PurgeRequest(prefix="/shop")) == 2  # on every host
    assert await apply(store, PurgeRequest(keys=("GET h/blog/1", "GET nope"))) == 1
    assert await store.keys() == []


async def test_soft_purge_marks_stale_and_keeps_the_body(store: Store) -> None:
    await store.put(manifest("GET h/a", tags=("t",)), b"body")
    assert await apply(store, PurgeRequest(tags=("t",), is_soft=True)) == 1
    entry = await store.get("GET h/a")
    assert entry is not None and entry.manifest.is_soft_purged
    assert await read(store, "GET h/a") == b"body"


async def test_purge_by_url_and_prefix_on_keys(store: Store) -> None:
    for name in ("GET h/p|a=1", "GET h/p|a=2", "GET h:8080/p", "GET h/p?x", "GET h/shopping"):
        await store.put(manifest(name), name.encode())
    assert await apply(store, PurgeRequest(urls=(UrlTarget("h", "/p"),))) == 2
    assert await apply(store, PurgeRequest(prefix="/shop")) == 0
    assert await apply(store, PurgeRequest(urls=(UrlTarget(None, "/p"),), prefix="/p")) == 2
    assert await store.keys() == ["GET h/shopping"]
    assert await store.check() == []


async def test_a_purge_reports_progress_after_each_batch(store: Store) -> None:
    await store.put(manifest("GET h/k0"), b"x")
    names = tuple(f"GET h/k{i}" for i in range(2 * PURGE_BATCH + 1))
    reports: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        reports.append((done, total))

    assert await apply(store, PurgeRequest(keys=names), progress=progress) == 1
    total = len(names)
    assert reports == [(PURGE_BATCH, total), (2 * PURGE_BATCH, total), (total, total)]


async def test_a_broadcast_purge_applies_here_and_a_bad_one_purges_nothing(store: Store) -> None:
    await store.put(manifest("GET h/a"), b"a")
    assert await apply_broadcast(store, b"not json") == 0
    assert await store.keys() == ["GET h/a"]
    assert await apply_broadcast(store, body({"urls": ["/a"]})) == 1
    assert await store.keys() == []
