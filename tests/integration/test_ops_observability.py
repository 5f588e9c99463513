"""Metrics, the access log, health and readiness, as an operator sees them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import html
from tests.integration.ops_harness import free_port, weaver_serve
from tests.servers import serve_app


def _config(tmp_path: Path, origin_url: str, access_log: str) -> Path:
    config = tmp_path / "weaver.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\naccess_log = "{access_log}"\n'
        '[session]\nlisten = "127.0.0.1:0"\n'
        f'[cache]\ndir = "{tmp_path / "cache"}"\n'
        f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n'
        '[[route]]\npath = "/"\norigin = "o"\n'
    )
    return config


def _origin() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return html('shell <esi:include src="/frag"/> end', **{"Cache-Control": "max-age=600"})

    async def frag(request: web.Request) -> web.Response:
        return html("fragment", **{"Cache-Control": "max-age=600"})

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/frag", frag)
    return app


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_metrics_count_requests_by_cache_status_and_fragments_by_outcome(
    tmp_path: Path,
) -> None:
    async with (
        serve_app(_origin()) as origin_url,
        weaver_serve(_config(tmp_path, origin_url, "json")) as weaver,
        aiohttp.ClientSession() as client,
    ):
        for expected in ("MISS", "HIT", "HIT"):
            async with client.get(weaver.url + "/page") as resp:
                assert await resp.read() == b"shell fragment end"
                assert resp.headers["X-Weaver-Cache"] == expected
        async with client.get(weaver.url + "/_weaver/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        requests = _samples(text, "weaver_requests_total")
        route = (("cache", "HIT"), ("route", "/"), ("status", "2xx"))
        assert requests[route] == 2
        assert requests[(("cache", "MISS"), ("route", "/"), ("status", "2xx"))] == 1
        assert _samples(text, "weaver_fragments_total") == {(("outcome", "ok"),): 1}
        assert _samples(text, "weaver_origin_seconds_count") == {(): 1}
        assert _samples(text, "weaver_cache_disk_items")[()] > 0

        # One JSON object per line on stdout, one per request.
        lines = [json.loads(line) for line in weaver.out.seen if line.startswith("{")]
        pages = [entry for entry in lines if entry.get("path") == "/page"]
        assert [p["cache"] for p in pages] == ["MISS", "HIT", "HIT"]
        assert {p["status"] for p in pages} == {200}
        # Head and body: the second hit comes from the hit lane, whose Server-Timing has
        # no lookup time, so the two heads differ by a few bytes.
        assert min(pages[1]["bytes"], pages[2]["bytes"]) > len(b"shell fragment end") + 100
        assert all(p["method"] == "GET" and p["session"] == "-" for p in pages)
        [woven] = [entry for entry in lines if "woven" in entry]
        assert woven["woven"].endswith("/page") and '/frag ok"' in woven["timing"]


async def test_the_text_access_log_has_one_line_per_request(tmp_path: Path) -> None:
    async with (
        serve_app(_origin()) as origin_url,
        weaver_serve(_config(tmp_path, origin_url, "text")) as weaver,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(weaver.url + "/page?x=1") as resp:
            await resp.read()
        line = await weaver.out.wait_for(lambda s: '"GET /page?x=1 HTTP/1.1"' in s)
        assert re.search(
            r'^127\.0\.0\.1 \[[^]]+\] "GET /page\?x=1 HTTP/1\.1" 200 [0-9]+ cache=MISS '
            r"dur=[0-9.]+ms fragments=[01] session=-$",
            line,
        ), line


async def test_health_is_200_and_ready_is_503_while_the_origin_is_down(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with (
        weaver_serve(_config(tmp_path, down, "off")) as weaver,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(weaver.url + "/_weaver/health") as resp:
            assert resp.status == 200
        async with client.get(weaver.url + "/_weaver/ready") as resp:
            assert resp.status == 503
            body = await resp.json()
            assert body["origins"] == {"o": False} and body["store"] is True
        assert not [line for line in weaver.out.seen if "GET" in line]  # access_log = off


async def test_ready_is_200_when_the_origin_answers(tmp_path: Path) -> None:
    async with (
        serve_app(_origin()) as origin_url,
        weaver_serve(_config(tmp_path, origin_url, "off")) as weaver,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(weaver.url + "/_weaver/ready") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ready"
