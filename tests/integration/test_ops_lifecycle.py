"""SIGTERM drains, SIGHUP reloads: ``weaver serve`` as a real process."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.integration.harness import html
from tests.integration.ops_harness import weaver_serve
from tests.servers import serve_app


def _config(tmp_path: Path, origin_url: str, *, extra: str = "") -> str:
    return (
        f'[server]\nlisten = "127.0.0.1:0"\ndrain_timeout = "30s"\n{extra}'
        '[session]\nlisten = "127.0.0.1:0"\n'
        f'[cache]\ndir = "{tmp_path / "cache"}"\n'
        f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n'
        '[[route]]\npath = "/"\norigin = "o"\n'
    )


async def test_sigterm_lets_a_slow_page_in_flight_finish_then_exits_cleanly(
    tmp_path: Path,
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return html("slow but whole", **{"Cache-Control": "no-store"})

    origin = web.Application()
    origin.router.add_get("/slow", slow)
    config = tmp_path / "weaver.toml"
    async with serve_app(origin) as origin_url:
        config.write_text(_config(tmp_path, origin_url))
        async with weaver_serve(config) as weaver, aiohttp.ClientSession() as client:

            async def fetch() -> tuple[int, bytes]:
                async with client.get(weaver.url + "/slow") as resp:
                    return resp.status, await resp.read()

            async with asyncio.TaskGroup() as tasks:
                page = tasks.create_task(fetch())
                await arrived.wait()
                weaver.signal(signal.SIGTERM)
                await weaver.err.wait_for(lambda line: "draining" in line)
                release.set()
            assert page.result() == (200, b"slow but whole")
            assert await weaver.proc.wait() == 0


async def test_sighup_refuses_a_bad_config_and_applies_a_good_one(tmp_path: Path) -> None:
    async def one(request: web.Request) -> web.Response:
        return html("from origin one", **{"Cache-Control": "no-store"})

    async def two(request: web.Request) -> web.Response:
        return html("from origin two", **{"Cache-Control": "no-store"})

    apps = [web.Application(), web.Application()]
    apps[0].router.add_get("/", one)
    apps[1].router.add_get("/", two)
    config = tmp_path / "weaver.toml"
    async with serve_app(apps[0]) as url_one, serve_app(apps[1]) as url_two:
        config.write_text(_config(tmp_path, url_one))
        async with weaver_serve(config) as weaver, aiohttp.ClientSession() as client:

            async def body() -> bytes:
                async with client.get(weaver.url + "/") as resp:
                    return await resp.read()

            assert await body() == b"from origin one"

            config.write_text(_config(tmp_path, url_two).replace('path = "/"', 'path = "x"'))
            weaver.signal(signal.SIGHUP)
            await weaver.err.wait_for(lambda line: "still serving" in line)
            assert f'{config}: route[0].path: "x" must start with "/"' in weaver.err.text
            assert await body() == b"from origin one"

            config.write_text(_config(tmp_path, url_two))
            weaver.signal(signal.SIGHUP)
            await weaver.err.wait_for(lambda line: f"reloaded {config}" in line)
            assert await body() == b"from origin two"  # the same listener, the new config
