"""Include policy: mode and timeout precedence, URL resolution, the SSRF guard."""

from __future__ import annotations

import unicodedata

import pytest

from weaver.config.load import build_config
from weaver.config.schema import Config, IncludeMode
from weaver.proxy.includes import (
    MAX_SHOWN_SRC_CHARS,
    MAX_SRC_CHARS,
    IncludePlan,
    plan_include,
)
from weaver.proxy.scanner import Include, Scanner
from weaver.proxy.slots import cut_marker, placeholder, slot_id

SHOP = "http://127.0.0.1:9000"


def config(**route: object) -> Config:
    table: dict[str, object] = {"path": "/", "origin": "shop", "fragment_timeout": "500ms"}
    table.update(route)
    return build_config(
        {
            "origin": [
                {"name": "shop", "url": SHOP, "allow_hosts": ["cdn.example:8443"]},
                {"name": "secure", "url": "https://api.example"},
            ],
            "route": [table],
        },
        "<test>",
    )


def include(tag: bytes) -> Include:
    scanner = Scanner()
    [found] = [e for e in scanner.feed(tag) + scanner.close() if isinstance(e, Include)]
    return found


def plan(tag: bytes, cfg: Config | None = None, base_url: str = SHOP + "/p/1") -> IncludePlan:
    cfg = cfg or config()
    return plan_include(
        include(tag), base_url=base_url, route=cfg.routes[0], origin=cfg.origins[0], config=cfg
    )


RULES: list[dict[str, object]] = [
    {"src": "/recs*", "mode": "suspense", "timeout": "2s"},
    {"src": "/slow", "timeout": "3s"},
]


@pytest.mark.parametrize(
    ("tag", "mode", "timeout_s"),
    [
        (b'<esi:include src="/header"/>', IncludeMode.BLOCKING, 0.5),  # the route default
        (b'<esi:include src="/recs/1"/>', IncludeMode.SUSPENSE, 2.0),  # the rule
        (b'<weaver-include src="/recs/1" mode="blocking"/>', IncludeMode.BLOCKING, 2.0),
        (b'<weaver-include src="/recs/1" timeout="300ms"/>', IncludeMode.SUSPENSE, 0.3),
        (b'<weaver-include src="/slow" timeout="1.5"/>', IncludeMode.BLOCKING, 1.5),
        (b'<weaver-include src="/slow"/>', IncludeMode.BLOCKING, 3.0),
        (b'<weaver-include src="/x" mode="blokking" timeout="soon"/>', IncludeMode.BLOCKING, 0.5),
    ],
)
def test_mode_and_timeout_come_from_tag_then_rule_then_route(
    tag: bytes, mode: IncludeMode, timeout_s: float
) -> None:
    got = plan(tag, config(include=RULES))
    assert (got.mode, got.timeout_s) == (mode, timeout_s)


def test_the_route_default_mode_applies_to_includes_without_one() -> None:
    assert plan(b'<esi:include src="/a"/>', config(include_mode="suspense")).mode is (
        IncludeMode.SUSPENSE
    )


@pytest.mark.parametrize(
    ("src", "url"),
    [
        ("/frag", SHOP + "/frag"),
        ("frag", SHOP + "/p/frag"),
        ("../x?y=1", SHOP + "/x?y=1"),
        (SHOP + "/abs", SHOP + "/abs"),
        ("http://127.0.0.1:9000/abs", SHOP + "/abs"),
        ("http://cdn.example:8443/lib", "http://cdn.example:8443/lib"),
        ("https://api.example/v1", "https://api.example/v1"),
        ("https://api.example:443/v1", "https://api.example:443/v1"),
    ],
)
def test_allowed_sources_resolve_against_the_document(src: str, url: str) -> None:
    got = plan(f'<esi:include src="{src}"/>'.encode())
    assert (got.url, got.refused) == (url, None)


@pytest.mark.parametrize(
    "src",
    [
        "http://127.0.0.1:9001/admin",  # same host, another port: another service
        "http://127.0.0.1/x",  # port 80 is not 9000
        "http://169.254.169.254/latest/meta-data",
        "https://127.0.0.1:9000/x",  # another scheme
        "http://cdn.example:80/lib",  # allowed host, other port
        "http://api.example/v1",  # the secure origin over http (port 80)
        "file:///etc/passwd",
        "gopher://127.0.0.1:9000/",
        "//evil.example/x",
        "http://[::1",
    ],
)
def test_other_sources_are_refused(src: str) -> None:
    got = plan(f'<esi:include src="{src}"/>'.encode())
    assert got.refused is not None
    assert got.url == ""


def test_a_reloaded_config_decides_again_for_a_source_already_resolved() -> None:
    tag = b'<esi:include src="http://cdn.example:8443/x"/>'
    assert plan(tag).refused is None
    reloaded = build_config(
        {"origin": [{"name": "shop", "url": SHOP}], "route": [{"path": "/", "origin": "shop"}]},
        "<test>",
    )
    assert plan(tag, reloaded).refused is not None  # allow_hosts is gone: refused now
    assert plan(tag).refused is None


def test_a_refused_alt_is_dropped_and_the_include_kept() -> None:
    got = plan(b'<esi:include src="/a" alt="http://127.0.0.1:22/"/>')
    assert (got.url, got.alt_url, got.refused) == (SHOP + "/a", None, None)


def has_control_character(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


@pytest.mark.parametrize(
    ("src", "shown", "code"),
    [
        # Before: the fetch ran (urlsplit drops CR and LF) but the src went into the page's
        # Server-Timing header and aiohttp refused it: the whole page became a 500.
        ("/f\r\nX-Evil: 1", "/f%0D%0AX-Evil: 1", "U+000D"),
        ("/f&#13;&#10;X-Evil: 1", "/f%0D%0AX-Evil: 1", "U+000D"),  # an entity is the character
        ("/f\nx", "/f%0Ax", "U+000A"),
        ("/f\tx", "/f%09x", "U+0009"),
        ("/f\x00x", "/f%00x", "U+0000"),
        ("/f\x0bx", "/f%0Bx", "U+000B"),
        ("/f\x7fx", "/f%7Fx", "U+007F"),
        ("/f\u0085x", "/f%C2%85x", "U+0085"),  # C1 controls too
    ],
)
def test_a_src_holding_a_control_character_is_refused_and_shown_percent_encoded(
    src: str, shown: str, code: str
) -> None:
    got = plan(f'<esi:include src="{src}" alt="/alt"/>'.encode())
    assert got.refused is not None
    assert got.refused.startswith(f"src holds the control character {code} at character 2")
    assert (got.url, got.src) == ("", shown)
    assert not has_control_character(got.refused + got.src)


def test_percent_encoded_control_characters_are_just_bytes_of_the_url() -> None:
    got = plan(b'<esi:include src="/f%0d%0aX"/>')
    assert (got.url, got.refused) == (SHOP + "/f%0d%0aX", None)


def test_whitespace_around_a_src_is_not_part_of_it() -> None:
    got = plan(b'<esi:include src="\n\t/frag \r\n"/>')
    assert (got.src, got.url, got.refused) == ("/frag", SHOP + "/frag", None)


def test_an_alt_holding_a_control_character_is_dropped_and_the_include_kept() -> None:
    got = plan(b'<esi:include src="/a" alt="/b&#10;c"/>')
    assert (got.url, got.alt_url, got.refused) == (SHOP + "/a", None, None)


def test_an_absurdly_long_src_is_refused_and_shown_cut() -> None:
    longest = "/" + "a" * (MAX_SRC_CHARS - 1)
    assert plan(f'<esi:include src="{longest}"/>'.encode()).refused is None
    got = plan(f'<esi:include src="{longest}b"/>'.encode())
    assert got.refused == f"src is {MAX_SRC_CHARS + 1} characters long, more than {MAX_SRC_CHARS}"
    assert got.url == ""
    assert got.src == longest[: MAX_SHOWN_SRC_CHARS - 3] + "..."


def test_an_absurdly_long_alt_is_dropped_and_the_include_kept() -> None:
    alt = "/" + "a" * MAX_SRC_CHARS
    got = plan(f'<esi:include src="/a" alt="{alt}"/>'.encode())
    assert (got.url, got.alt_url, got.refused) == (SHOP + "/a", None, None)


def test_flags_and_fallback() -> None:
    got = plan(b'<weaver-include src="/p" primary onerror="continue">fb</weaver-include>')
    assert (got.is_primary, got.continue_on_error, got.fallback) == (True, True, b"fb")
    assert not plan(b'<weaver-include src="/p" primary="false"/>').is_primary


def test_slot_ids_are_deterministic_and_distinct() -> None:
    first = slot_id((0, 2), "/recs")
    assert first == slot_id((0, 2), "/recs")
    assert first.startswith("w") and len(first) == 13
    assert len({first, slot_id((0, 3), "/recs"), slot_id((0, 2), "/cart")}) == 3
    assert placeholder(first, b"soon") == f'<weaver-slot id="{first}">soon</weaver-slot>'.encode()
    assert placeholder(first, b"", '/r?a=1&b="2"') == (
        f'<weaver-slot id="{first}" data-src="/r?a=1&amp;b=&quot;2&quot;"></weaver-slot>'.encode()
    )


@pytest.mark.parametrize("src", ["/a-->b", "/a--->b", "/x>", "/--!>"])
def test_a_cut_marker_cannot_be_closed_early_by_its_src(src: str) -> None:
    marker = cut_marker(src, "timeout")
    assert marker.startswith(b"<!--") and marker.endswith(b"-->")
    inner = marker[4:-3]
    assert b"--" not in inner and b">" not in inner
