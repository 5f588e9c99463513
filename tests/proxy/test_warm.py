"""``weaver warm`` (proxy/warm.py): its pure parts (sitemaps, URL lists, targets, outcomes,
the report), then the command as operators run it: a real ``weaver serve``, a real
origin, the CLI."""

from __future__ import annotations

import asyncio
import gzip
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.integration.harness import html
from tests.integration.ops_harness import weaver_serve
from tests.servers import serve_app
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


SITEMAP = """<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>{base}/a</loc><lastmod>2025-01-01</lastmod></url>
  <url><loc>{base}/d?page=2</loc></url>
</urlset>
"""


def origin_app(unstick: asyncio.Event | None = None) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return html(f"<p>{request.path_qs}</p>", **{"Cache-Control": "max-age=600"})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="down")

    async def private(request: web.Request) -> web.Response:
        return html("<p>yours</p>", **{"Cache-Control": "private"})

    async def stuck(request: web.Request) -> web.Response:
        await (unstick or asyncio.Event()).wait()  # until the test is done with it
        return html("<p>late</p>")

    async def sitemap(request: web.Request) -> web.Response:
        # The sitemap names the pages as visitors see them: on Weaver's host.
        base = request.query["base"]
        return web.Response(text=SITEMAP.format(base=base), content_type="application/xml")

    app = web.Application()
    for path in ("/a", "/b", "/c", "/d"):
        app.router.add_get(path, page)
    app.router.add_get("/broken", broken)
    app.router.add_get("/private", private)
    app.router.add_get("/stuck", stuck)
    app.router.add_get("/sitemap.xml", sitemap)
    return app


async def warm(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "weaver.proxy.cli",
        "warm",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def cache_status(url: str, host: str | None = None) -> str:
    headers = {"Host": host} if host else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        await resp.read()
        return resp.headers["X-Weaver-Cache"]


def config_file(tmp_path: Path, origin_url: str) -> Path:
    config = tmp_path / "weaver.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n'
        f'[cache]\ndir = "{tmp_path / "cache"}"\n'
        f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n'
        '[[route]]\npath = "/"\norigin = "o"\n'
    )
    return config


async def test_warm_fills_the_cache_prints_progress_and_names_each_failure(
    tmp_path: Path,
) -> None:
    unstick = asyncio.Event()
    async with asyncio.timeout(90), serve_app(origin_app(unstick)) as origin_url:
        async with weaver_serve(config_file(tmp_path, origin_url)) as served:
            urls = tmp_path / "urls.txt"
            urls.write_text(
                "# pages to warm\n/a\n\n/b\nhttp://shop.example/c\n/broken\n/private\n/stuck\n"
            )
            code, out, err = await warm(
                "--endpoint", served.url, "--urls", str(urls), "--timeout", "500ms"
            )
            assert await cache_status(served.url + "/a") == "HIT"
            assert await cache_status(served.url + "/b") == "HIT"
            assert await cache_status(served.url + "/c", host="shop.example") == "HIT"
            again, out_again, _ = await warm(
                "--endpoint", served.url, "--urls", str(urls), "--timeout", "500ms"
            )
            unstick.set()  # Weaver's fill of /stuck ends; it would hold the shutdown
    assert code == 1, err  # some pages failed
    lines = out.splitlines()
    assert "warm: 6/6 (100%)" in out  # stdout is not a terminal: plain progress lines
    assert any(line.startswith("warm: 6 pages in ") for line in lines)
    assert "3 stored (MISS), 0 already cached (HIT), 3 failed" in out
    assert "  /broken: HTTP 500" in lines
    assert "  /private: not storable (X-Weaver-Cache: BYPASS)" in lines
    assert "  /stuck: timeout after 0.5s" in lines
    assert again == 1
    assert "0 stored (MISS), 3 already cached (HIT), 3 failed" in out_again


async def test_warm_reads_a_sitemap(tmp_path: Path) -> None:
    async with asyncio.timeout(90), serve_app(origin_app()) as origin_url:
        async with weaver_serve(config_file(tmp_path, origin_url)) as served:
            assert await cache_status(served.url + "/a") == "MISS"
            sitemap = f"{origin_url}/sitemap.xml?base={served.url}"
            code, out, err = await warm("--endpoint", served.url, "--sitemap", sitemap)
            assert await cache_status(served.url + "/d?page=2") == "HIT"
    assert code == 0, err
    assert "warm: 2/2 (100%)" in out
    assert "1 stored (MISS), 1 already cached (HIT), 0 failed" in out


async def test_warm_refuses_a_sitemap_that_is_not_one(tmp_path: Path) -> None:
    async with asyncio.timeout(60), serve_app(origin_app()) as origin_url:
        code, _, err = await warm("--endpoint", origin_url, "--sitemap", origin_url + "/a")
        missing = tmp_path / "x"
        code_args, _, err_args = await warm("--endpoint", origin_url, "--urls", str(missing))
    assert code == 1
    assert f"weaver warm: {origin_url}/a: expected <urlset> or <sitemapindex>, got <p>" in err
    assert code_args == 2 and "No such file" in err_args


async def test_purge_by_prefix_says_how_many_entries_it_removed_and_how_long_it_took(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(90), serve_app(origin_app()) as origin_url:
        config = config_file(tmp_path, origin_url)
        config.write_text(config.read_text() + '[session]\npublish_token = "t0ken"\n')
        async with weaver_serve(config) as served:
            urls = tmp_path / "urls.txt"
            urls.write_text("/a\n/b\n/c\n")
            assert (await warm("--endpoint", served.url, "--urls", str(urls)))[0] == 0
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "weaver.proxy.cli",
                "purge",
                "--config",
                str(config),
                "--endpoint",
                served.url + "/_weaver/purge",
                "--prefix",
                "/",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert await cache_status(served.url + "/a") == "MISS"
    lines = out.decode().splitlines()
    assert proc.returncode == 0
    assert lines[0].replace(" ", "") == '{"purged":3}'  # the server's answer, as before
    assert lines[1].startswith("weaver purge: 3 entries removed in ")
    assert lines[1].endswith("s")
