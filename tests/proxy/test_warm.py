"""The pure parts of ``weaver warm``: sitemaps, URL lists, targets, outcomes, the report."""

from __future__ import annotations

import gzip

import pytest

from weaver.proxy.warm import (
    MAX_SITEMAP_BYTES,
    Outcome,
    Report,
    Result,
    WarmError,
    classify,
    parse_sitemap,
    read_url_list,
    request_of,
)

URLSET = b"""<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc> https://shop.example/a </loc><changefreq>daily</changefreq></url>
  <url><loc>https://shop.example/b?x=1&amp;y=2</loc></url>
</urlset>"""

INDEX = b"""<?xml version="1.0" encoding="UTF-8"?>
<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <sitemap><loc>https://shop.example/s1.xml.gz</loc></sitemap>
</sitemapindex>"""

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<urlset><url><loc>&lol2;</loc></url></urlset>"""


def test_a_urlset_gives_its_locations_trimmed_and_unescaped() -> None:
    sitemap = parse_sitemap(URLSET)
    assert sitemap.urls == ("https://shop.example/a", "https://shop.example/b?x=1&y=2")
    assert sitemap.sitemaps == ()


def test_a_gzipped_sitemap_index_names_its_sitemaps() -> None:
    assert parse_sitemap(gzip.compress(INDEX)).sitemaps == ("https://shop.example/s1.xml.gz",)


def test_a_doctype_is_refused_before_any_entity_is_expanded() -> None:
    with pytest.raises(WarmError, match="a DOCTYPE is not allowed"):
        parse_sitemap(BOMB, "bomb.xml")


def test_a_gzip_bomb_stops_at_the_size_limit() -> None:
    with pytest.raises(WarmError, match="larger than"):
        parse_sitemap(gzip.compress(b" " * (MAX_SITEMAP_BYTES + 1)))


def test_html_is_not_a_sitemap() -> None:
    with pytest.raises(WarmError, match="expected <urlset> or <sitemapindex>, got <html>"):
        parse_sitemap(b"<html><body>hi</body></html>")
    with pytest.raises(WarmError, match="not XML"):
        parse_sitemap(b"<urlset><url>")


def test_a_url_list_skips_blank_lines_and_comments() -> None:
    assert read_url_list("# warm these\n/a\n\n  /b  \n#/c\n") == ["/a", "/b"]


def test_a_url_is_asked_of_the_endpoint_with_its_own_host() -> None:
    assert request_of("https://shop.example/p/1?x=2", "http://127.0.0.1:8080/") == (
        "http://127.0.0.1:8080/p/1?x=2",
        "shop.example",
    )
    assert request_of("/p/1", "http://127.0.0.1:8080") == ("http://127.0.0.1:8080/p/1", None)
    assert request_of("https://shop.example", "http://e") == ("http://e/", "shop.example")


def test_the_cache_status_says_what_warming_did() -> None:
    assert classify("/a", 200, "MISS").outcome is Outcome.STORED
    for status in ("HIT", "STALE", "REVALIDATED", "COALESCED"):
        assert classify("/a", 200, status).outcome is Outcome.CACHED
    assert classify("/a", 404, "MISS") == Result("/a", Outcome.FAILED, "HTTP 404")
    assert classify("/a", 200, "BYPASS").reason == "not storable (X-Weaver-Cache: BYPASS)"
    assert classify("/a", 200, None).outcome is Outcome.FAILED


def test_the_report_line_has_done_total_rate_eta_and_failures() -> None:
    report = Report(total=4, started=100.0)
    report.add(Result("/a", Outcome.STORED))
    report.add(Result("/b", Outcome.FAILED, "HTTP 500"))
    assert report.line(now=102.0) == "warm: 2/4 (50%) 1.0/s ETA 2.0s, 1 failed"
    assert report.summary(now=102.0).splitlines() == [
        "warm: 2 pages in 2.0s: 1 stored (MISS), 0 already cached (HIT), 1 failed",
        "  1 failed: HTTP 500",
        "  /b: HTTP 500",
    ]
