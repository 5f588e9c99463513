"""Cache keys: one normal form per resource, and the key holds the origin's exact target."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from weaver.cache.errors import BadAuthority
from weaver.cache.keys import (
    cache_key,
    key_path,
    key_prefix,
    key_target,
    normalise_authority,
    normalise_target,
    normalise_url,
    parse_key,
    parse_vary,
    remove_dot_segments,
    request_vary_values,
)

# Pieces that collide often: raw and escaped spellings of the same and of different bytes.
PIECES = [
    "/", "/", ".", "..", "a", "A", "%61", "%41", "~", "%7e", "%7E", "%2F", "%2f", "?", "&",
    "%26", "=", "+", "%2B", "%20", " ", "%", "%zz", "%25", "%E9", "%e9", "%C3%A9", "é",
    "\udce9", "#", "|", "[", "%2E", "%2e", ";", ":", "%3A", "\x00", "\x7f", '"',
]  # fmt: skip
targets = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)
small_targets = st.lists(
    st.sampled_from(["/", ".", "a", "%61", "%2F", "?", "&", "%26"]), max_size=5
)

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_RESERVED_RAW = frozenset("!$&'()*+,;=:@/?")


def meaning(target: str) -> tuple[object, ...]:
    """What a target names, built another way than the code: RFC 3986 tokens.

    A raw reserved character is a delimiter ``(True, c)``; an unreserved character,
    raw or escaped, and any escaped byte are data ``(False, byte)``; a character not
    allowed raw (space, ``#``, non-ASCII…) or a ``%`` that starts no escape is data too.
    The path is split on raw ``/`` and its dot-segments removed (§5.2.4).
    """

    def tokens(text: str, raw_ok: frozenset[str]) -> list[tuple[bool, int]]:
        out: list[tuple[bool, int]] = []
        i = 0
        while i < len(text):
            c = text[i]
            escape = text[i + 1 : i + 3]
            if c == "%" and len(escape) == 2 and all(h in "0123456789abcdefABCDEF" for h in escape):
                out.append((False, unquote_to_bytes(c + escape)[0]))
                i += 3
                continue
            if c in raw_ok and c not in _UNRESERVED and c != "%":
                out.append((True, ord(c)))
            else:
                for byte in c.encode("utf-8", "surrogateescape"):
                    out.append((False, byte))
            i += 1
        return out

    path, _, query = target.partition("?")
    if not path.startswith("/"):
        path = "/" + path
    segments: list[list[tuple[bool, int]]] = [[]]
    for token in tokens(path, _RESERVED_RAW - {"?"}):
        if token == (True, ord("/")):
            segments.append([])
        else:
            segments[-1].append(token)
    dots = {(): None, ((False, 46),): ".", ((False, 46), (False, 46)): ".."}
    out: list[tuple[tuple[bool, int], ...]] = []
    rest = segments[1:]
    for index, segment in enumerate(rest):
        kind = dots.get(tuple(segment)) if segment else None
        if kind is not None:
            if kind == ".." and out:
                out.pop()
            if index == len(rest) - 1:
                out.append(())
            continue
        out.append(tuple(segment))
    return (tuple(out), tuple(tokens(query, _RESERVED_RAW)))


@given(targets)
def test_normalising_is_idempotent_and_gives_a_plain_ascii_target(target: str) -> None:
    normal = normalise_target(target)
    assert normalise_target(normal) == normal
    assert normal.startswith("/") and normal.isascii()
    assert not any(c in normal for c in ' |#"[]\x00\x7f')


@given(targets)
def test_normalising_keeps_what_the_target_names(target: str) -> None:
    assert meaning(normalise_target(target)) == meaning(target)


@given(targets, targets)
def test_two_targets_normalise_alike_iff_they_name_the_same_resource(a: str, b: str) -> None:
    assert (normalise_target(a) == normalise_target(b)) == (meaning(a) == meaning(b))


@given(small_targets, small_targets)
def test_same_resource_iff_same_form_on_colliding_pieces(a: list[str], b: list[str]) -> None:
    ta, tb = "".join(a), "".join(b)
    assert (normalise_target(ta) == normalise_target(tb)) == (meaning(ta) == meaning(tb))


@given(st.lists(st.sampled_from([*sorted(_UNRESERVED), "/", "%2F", "?", "&"]), max_size=12))
def test_decoding_unreserved_escapes_changes_nothing(pieces: list[str]) -> None:
    spelled = "".join(f"%{ord(p):02x}" if p in _UNRESERVED else p for p in pieces)
    assert normalise_target(spelled) == normalise_target("".join(pieces))


@given(st.text("abc=&+~", max_size=6), st.text("abc=&+~/", max_size=6))
def test_an_escaped_slash_is_never_a_slash(a: str, b: str) -> None:
    assert normalise_target(f"/{a}%2F{b}") != normalise_target(f"/{a}/{b}")
    assert normalise_target(f"/p?{a}%2F{b}") != normalise_target(f"/p?{a}/{b}")


@given(targets)
def test_yarl_sends_the_normal_form_unchanged_when_told_it_is_encoded(target: str) -> None:
    normal = normalise_target(target)
    assert URL("http://origin:8080" + normal, encoded=True).raw_path_qs == normal


@pytest.mark.parametrize(
    ("target", "normal"),
    [
        ("/p%2Fq", "/p%2Fq"),
        ("/p/q", "/p/q"),
        ("/caf%e9", "/caf%E9"),
        ("/caf%E8", "/caf%E8"),
        ("/a%7eb", "/a~b"),
        ("/a/%2E%2E/b", "/b"),
        ("/a/./b/../c/.", "/a/c/"),
        ("/..", "/"),
        ("//x//y", "//x//y"),
        ("/.well-known/x", "/.well-known/x"),
        ("/p?", "/p"),
        ("/p?b=2&a=1", "/p?b=2&a=1"),
        ("/p?q=a+b", "/p?q=a+b"),
        ("/p?q=a%20b", "/p?q=a%20b"),
        ("/p?x=%2f&y=%41", "/p?x=%2F&y=A"),
        ("/p?x=/./..", "/p?x=/./.."),
        ("/a b|c", "/a%20b%7Cc"),
        ("/é", "/%C3%A9"),
        ("/caf\udce9", "/caf%E9"),
        ("/100%", "/100%25"),
        ("/a%zz", "/a%25zz"),
        ("/a#b", "/a%23b"),
        ("", "/"),
        ("x", "/x"),
    ],
)
def test_targets_normalise_as_rfc_3986_says(target: str, normal: str) -> None:
    assert normalise_target(target) == normal


def test_dot_segments_are_removed_as_rfc_3986_5_2_4_shows() -> None:
    assert remove_dot_segments("/a/b/c/./../../g") == "/a/g"
    assert remove_dot_segments("/mid/content=5/../6") == "/mid/6"
    assert remove_dot_segments("/a//../b") == "/a/b"


@pytest.mark.parametrize(
    ("host", "scheme", "normal"),
    [
        ("Shop.Example", None, "shop.example"),
        ("shop.example:80", "http", "shop.example"),
        ("shop.example:80", "https", "shop.example:80"),
        ("shop.example:80", None, "shop.example:80"),
        ("shop.example:443", "https", "shop.example"),
        ("shop.example:0443", "https", "shop.example"),
        ("shop.example:8080", "http", "shop.example:8080"),
        ("shop.example:", "http", "shop.example"),
        ("[0:0::1]:080", "http", "[::1]"),
        ("[::FFFF:1.2.3.4]:8443", "https", "[::ffff:102:304]:8443"),
        ("127.0.0.1:9", None, "127.0.0.1:9"),
        ("h:8080:80", "http", None),
        ("h:abc", "http", None),
        ("h:0", "http", None),
        ("h:65536", "http", None),
        ("h:+80", "http", None),
        ("h:-1", "http", None),
        ("h: 80", "http", None),
        ("", "http", None),
        ("user@h", "http", None),
        ("h/x", "http", None),
        ("h\x00", "http", None),
        ("h x", "http", None),
        ("hé", "http", None),
        ("[::1", "http", None),
        ("[::1]x", "http", None),
        ("[fe80::1%25eth0]", "http", None),
        ("[v1.x]", "http", None),
        ("[1.2.3.4]", "http", None),
    ],
)
def test_authorities_normalise_or_are_refused(host: str, scheme: str | None, normal: str) -> None:
    assert normalise_authority(host, scheme) == normal


def test_urls_give_their_authority_and_target() -> None:
    assert normalise_url("https://Shop.Example:443/p/%7e42?x#frag") == ("shop.example", "/p/~42?x")
    assert normalise_url("http://h:8080") == ("h:8080", "/")
    assert normalise_url("http://h?q") == ("h", "/?q")
    assert normalise_url("ftp://h/p") is None
    assert normalise_url("/p") is None
    assert normalise_url("http://h:8080:80/p") is None


def test_keys() -> None:
    assert cache_key("GET", "Shop.Example:80", "/p/42?b=2&a=1", (), scheme="http") == (
        "GET shop.example/p/42?b=2&a=1"
    )
    assert cache_key("HEAD", "h", "/p", ()) == cache_key("GET", "h", "/p", ())
    assert cache_key("GET", "h", "/a%7eb", ()) == cache_key("GET", "h", "/a~b", ())
    assert cache_key("GET", "h", "/p%2Fq", ()) != cache_key("GET", "h", "/p/q", ())
    assert cache_key("GET", "h", "/caf%E9", ()) != cache_key("GET", "h", "/caf%E8", ())
    assert cache_key("GET", "h", "/p", (("accept-language", " fr  ca "),)) == (
        "GET h/p|accept-language=fr ca"
    )
    with pytest.raises(BadAuthority, match="h:8080:80"):
        cache_key("GET", "h:8080:80", "/p", ())


hosts = st.sampled_from(["h", "H:80", "h:8080", "[::1]", "shop.example:443"])
varies = st.lists(st.tuples(st.sampled_from(["accept", "x|y"]), st.text(max_size=4)), max_size=2)


@given(st.sampled_from(["GET", "HEAD"]), hosts, targets, varies)
def test_a_key_gives_back_the_target_the_origin_is_sent(
    method: str, host: str, target: str, vary: list[tuple[str, str]]
) -> None:
    key = cache_key(method, host, target, vary, scheme="https")
    parts = parse_key(key)
    assert parts.target == key_target(key) == normalise_target(target)
    assert parts.authority == normalise_authority(host, "https")
    assert cache_key("GET", parts.authority, parts.target, vary) == key


@given(targets, targets)
def test_two_requests_share_a_key_only_if_the_origin_sees_one_target(a: str, b: str) -> None:
    same_key = cache_key("GET", "h", a, ()) == cache_key("GET", "h", b, ())
    assert same_key == (normalise_target(a) == normalise_target(b))


def test_prefix_and_path_of_a_key() -> None:
    key = cache_key("GET", "h:8080", "/shop/p/1?x=1", (("accept-language", "fr"),))
    assert key.startswith(key_prefix("h:8080", "/shop/"))
    assert key_path(key) == "/shop/p/1"
    assert key_target(key) == "/shop/p/1?x=1"


def test_vary() -> None:
    assert parse_vary("Accept-Language, accept-encoding") == ("accept-language", "accept-encoding")
    assert parse_vary(None) == ()
    assert parse_vary("Accept, *") is None
    values = request_vary_values(["Accept-Language"], ["X-Device"], {"accept-language": "fr"})
    assert values == (("accept-language", "fr"), ("x-device", ""))
    assert request_vary_values([], [], {"accept-language": "fr"}) == ()
