"""``weaver purge``, ``publish`` and ``warm`` as functions (proxy/remote.py), against a real
server on 127.0.0.1 that records what it was sent: the exit code and what the operator
reads on stdout and stderr."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from tests.servers import serve_app
from weaver.config.schema import Config
from weaver.proxy.remote import publish_command, purge_command, warm_cli

TOKEN = "t0ken"


@asynccontextmanager
async def admin(seen: list[tuple[str, str, object]]) -> AsyncIterator[str]:
    """A stand-in for Weaver's operator endpoints: records the path, the Authorization
    header and the JSON body; answers 401 to a wrong token."""

    async def publish(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers["Authorization"], await request.json()))
        if request.headers["Authorization"] != f"Bearer {TOKEN}":
            return web.Response(status=401, text="bad token")
        return web.json_response({"delivered": 2})

    async def purge(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.headers["Accept"], await request.json()))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for done in (2, 3):
            await response.write(json.dumps({"done": done, "of": 3}).encode() + b"\n")
        await response.write(b'{"purged": 3}\n')
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/_weaver/publish", publish)
    app.router.add_post("/_weaver/purge", purge)
    async with serve_app(app) as url:
        yield url


def _args(**values: object) -> argparse.Namespace:
    defaults: dict[str, object] = {
        "url": [],
        "endpoint": None,
        "token": TOKEN,
        "channel": None,
        "session": None,
        "tag": [],
        "prefix": None,
        "key": [],
        "soft": False,
    }
    return argparse.Namespace(**{**defaults, **values})


async def test_publish_posts_the_message_with_the_token_and_prints_the_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[tuple[str, str, object]] = []
    async with asyncio.timeout(10), admin(seen) as url:
        args = _args(url=url + "/_weaver/publish", channel="deals", data='{"html": "<b>-50%</b>"}')
        assert await asyncio.to_thread(publish_command, Config(), args) == 0
        assert capsys.readouterr().out == '{"delivered": 2}\n'
        wrong = _args(url=url + "/_weaver/publish", session="s1", data="1", token="nope")
        assert await asyncio.to_thread(publish_command, Config(), wrong) == 1
        assert capsys.readouterr().err == f"{url}/_weaver/publish: 401 bad token\n"
    assert seen == [
        (
            "/_weaver/publish",
            f"Bearer {TOKEN}",
            {"channel": "deals", "data": {"html": "<b>-50%</b>"}},
        ),
        ("/_weaver/publish", "Bearer nope", {"session": "s1", "data": 1}),
    ]


def test_publish_without_json_data_or_a_target_is_exit_2_saying_what_to_give(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert publish_command(Config(), _args(data="{oops", channel="c")) == 2
    assert capsys.readouterr().err.startswith("weaver publish: --data is not JSON: ")
    assert publish_command(Config(), _args(data="1")) == 2
    assert capsys.readouterr().err == "weaver publish: give --channel or --session\n"


async def test_purge_reports_each_batch_then_how_many_entries_it_removed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[tuple[str, str, object]] = []
    async with asyncio.timeout(10), admin(seen) as url:
        args = _args(endpoint=url + "/_weaver/purge", prefix="/shop", soft=True)
        assert await asyncio.to_thread(purge_command, Config(), args) == 0
    out, err = capsys.readouterr()
    assert err == "\rweaver purge: 2/3 entries\n\rweaver purge: 3/3 entries\n"
    assert out.startswith('{"purged": 3}\nweaver purge: 3 entries removed in ')
    assert seen == [("/_weaver/purge", "application/x-ndjson", {"prefix": "/shop", "soft": True})]


def test_purge_without_a_selector_is_exit_2_naming_the_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert purge_command(Config(), _args(soft=True)) == 2
    assert capsys.readouterr().err == "weaver purge: give --url, --prefix, --tag or --key\n"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"urls": "list.txt", "sitemap": "http://x/s.xml"}, "give --urls FILE or --sitemap URL"),
        ({"urls": None, "sitemap": None}, "give --urls FILE or --sitemap URL"),
        ({"concurrency": 0}, "--concurrency must be at least 1"),
        ({"timeout": "soon"}, "--timeout: "),
        ({"urls": "/nonexistent/urls.txt", "sitemap": None}, "--urls /nonexistent/urls.txt: "),
    ],
)
def test_warm_refuses_bad_options_with_exit_2_and_one_line(
    values: dict[str, object], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    defaults: dict[str, object] = {
        "urls": None,
        "sitemap": "http://127.0.0.1:1/sitemap.xml",
        "concurrency": 8,
        "timeout": "30s",
        "endpoint": "http://127.0.0.1:1",
    }
    args = argparse.Namespace(**{**defaults, **values})
    assert warm_cli(Config(), args) == 2
    err = capsys.readouterr().err
    assert err.startswith("weaver warm: " + message) and err.count("\n") == 1
