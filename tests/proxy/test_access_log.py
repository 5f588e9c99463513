"""The access log and request counting middleware (proxy/access_log.py), on a real server.

Each test serves a small app wrapped in :func:`middleware` on 127.0.0.1 and reads the
lines the ``weaver.access`` logger wrote, as an operator would read them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from tests.servers import serve_app
from weaver.config.load import build_config
from weaver.config.schema import AccessLogFormat, Config
from weaver.proxy.access_log import configure, middleware, woven

TIMEOUT_S = 10


def _config(fmt: str) -> Config:
    return build_config(
        {
            "server": {"access_log": fmt},
            "cache": {"dir": ""},
            "origin": [{"name": "o", "url": "http://127.0.0.1:9"}],
            "route": [{"path": "/shop", "origin": "o"}],
        },
        "<test>",
    )


class Lines(logging.Handler):
    """Every ``weaver.access`` line, as written."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    logger = logging.getLogger("weaver.access")
    configure(AccessLogFormat.OFF)  # whatever an earlier test set up in this process
    lines = Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)
        configure(AccessLogFormat.OFF)


async def _page(request: web.Request) -> web.Response:
    return web.Response(
        text="hello",
        headers={"X-Weaver-Cache": "HIT", "Server-Timing": 'f0;desc="/a ok", f1, shell;dur=1'},
    )


async def _broken(request: web.Request) -> web.Response:
    raise RuntimeError("boom")


@asynccontextmanager
async def _serving(fmt: str) -> AsyncIterator[str]:
    app = web.Application(middlewares=[middleware(_config(fmt))])
    app.router.add_get("/shop/item", _page)
    app.router.add_get("/broken", _broken)
    async with serve_app(app) as url:
        yield url


async def _get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as client, client.get(url) as resp:
        return resp.status, await resp.read()


def _requests_total(route: str, cache: str, status: str) -> float:
    labels = {"route": route, "cache": cache, "status": status}
    return REGISTRY.get_sample_value("weaver_requests_total", labels) or 0.0


async def test_the_text_line_has_peer_request_status_bytes_cache_time_and_fragments(
    access_lines: Lines,
) -> None:
    async with _serving("text") as url:
        assert await _get(url + "/shop/item?x=1") == (200, b"hello")
    [line] = access_lines.lines
    match = re.fullmatch(
        r'127\.0\.0\.1 \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /shop/item\?x=1 '
        r'HTTP/1\.1" 200 (\d+) cache=HIT dur=\d+\.\dms fragments=2 session=-',
        line,
    )
    assert match, line
    assert int(match.group(1)) > len(b"hello") + 50  # the head and the body as sent


async def test_the_json_line_is_one_object_with_every_field(access_lines: Lines) -> None:
    async with _serving("json") as url:
        await _get(url + "/shop/item?x=1")
    [line] = access_lines.lines
    entry = json.loads(line)
    assert set(entry) == {
        "time",
        "method",
        "path",
        "status",
        "bytes",
        "cache",
        "duration_ms",
        "fragments",
        "session",
        "remote",
    }
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/shop/item?x=1", 200)
    assert (entry["cache"], entry["fragments"], entry["session"]) == ("HIT", 2, "-")
    assert entry["remote"] == "127.0.0.1" and entry["bytes"] > len(b"hello")
    assert entry["time"].endswith("+00:00") and entry["duration_ms"] >= 0


async def test_unknown_paths_and_failures_are_logged_with_the_status_the_client_got(
    access_lines: Lines,
) -> None:
    async with _serving("json") as url:
        assert (await _get(url + "/nowhere"))[0] == 404
        assert (await _get(url + "/broken"))[0] == 500
    got = [(e["path"], e["status"], e["cache"]) for e in map(json.loads, access_lines.lines)]
    assert got == [("/nowhere", 404, "-"), ("/broken", 500, "-")]


async def test_off_writes_no_line_but_still_counts_by_route_cache_and_status_class(
    access_lines: Lines,
) -> None:
    hits = _requests_total("/shop", "HIT", "2xx")
    misses = _requests_total("-", "-", "4xx")
    async with _serving("off") as url:
        await _get(url + "/shop/item")
        await _get(url + "/shop/item")
        await _get(url + "/nowhere")
    assert access_lines.lines == []
    assert _requests_total("/shop", "HIT", "2xx") == hits + 2
    assert _requests_total("-", "-", "4xx") == misses + 1  # no route: "-"


def test_the_woven_line_makes_its_timing_only_when_it_is_written(access_lines: Lines) -> None:
    made: list[str] = []

    def timing() -> str:
        made.append("made")
        return 'shell;dur=1.0, f0;desc="/a ok"'

    woven(_config("text"), "http://o/page", 200, timing)
    assert access_lines.lines == ['woven http://o/page status=200 shell;dur=1.0, f0;desc="/a ok"']
    configure(AccessLogFormat.OFF)  # off: no line, and the timing is never built
    woven(_config("off"), "http://o/page", 200, timing)
    assert made == ["made"]


def test_configure_sends_bare_lines_to_stdout_and_off_silences_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("weaver.access")
    try:
        configure(AccessLogFormat.TEXT)
        configure(AccessLogFormat.JSON)  # again (a reload): still one handler
        logger.info("%s", "one line")
        configure(AccessLogFormat.OFF)
        logger.info("%s", "dropped")
    finally:
        configure(AccessLogFormat.OFF)
    assert capsys.readouterr().out == "one line\n"
