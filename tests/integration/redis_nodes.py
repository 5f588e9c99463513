"""``weaver serve`` nodes sharing one redis-server, as operators run them: each node its
own process and cache directory, the same session secret and Redis."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.harness import html
from tests.servers import serve_app
from tests.weaver_process import spawn_serve

SECRET = "nodes-share-this-secret"
TOKEN = "nodes-publish-token"
PAGE = '<html><weaver-subscribe channel="feed"/><p>feed</p></html>'


@dataclass
class Node:
    proc: asyncio.subprocess.Process
    url: str
    ws_url: str
    config: Path

    async def get(self, http: aiohttp.ClientSession, path: str) -> tuple[int, str, str]:
        """(status, X-Weaver-Cache, the weaver_session Cookie header to send back)."""
        async with http.get(self.url + path) as resp:
            await resp.read()
            cookie = resp.cookies.get("weaver_session")
            cache = resp.headers.get("X-Weaver-Cache", "")
            return resp.status, cache, f"weaver_session={cookie.value}" if cookie else ""

    async def post(self, http: aiohttp.ClientSession, path: str, body: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(self.url + path, json=body, headers=headers) as resp:
            assert resp.status in (200, 202), await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)


def origin_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return html(PAGE, **{"Cache-Control": "max-age=600"})

    async def cached(request: web.Request) -> web.Response:
        return html("cached", **{"Cache-Control": "max-age=600", "Surrogate-Key": "home"})

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/cached", cached)
    return app


@asynccontextmanager
async def origin() -> AsyncIterator[str]:
    async with serve_app(origin_app()) as url:
        yield url


def write_config(directory: Path, origin_url: str, redis_url: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "weaver.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n'
        '[session]\nlisten = "127.0.0.1:0"\n'
        f'secret = "{SECRET}"\npublish_token = "{TOKEN}"\n'
        f'[cache]\ndir = "{directory / "cache"}"\n'
        f'[bus]\nurl = "{redis_url}"\ntimeout = "2s"\n'
        "session_log = 2000\nchannel_history = 2000\n"
        f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n'
        '[[route]]\npath = "/"\norigin = "o"\n'
    )
    return config


async def start_node(config: Path) -> Node:
    proc, url = await spawn_serve(config)
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/_weaver/client.js") as resp:
            found = re.search(r"ws://\{host\}:(\d+)/", await resp.text())
    assert found is not None
    return Node(proc, url, f"ws://127.0.0.1:{found.group(1)}/", config)


@asynccontextmanager
async def nodes(
    tmp_path: Path, origin_url: str, redis_url: str, count: int
) -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    try:
        for index in range(count):
            started.append(
                await start_node(write_config(tmp_path / f"node{index}", origin_url, redis_url))
            )
        yield started
    finally:
        for node in started:
            if node.proc.returncode is None:
                node.kill()
            await node.proc.wait()


@asynccontextmanager
async def session_socket(
    node: Node, cookie: str, last_seq: int = 0
) -> AsyncIterator[ClientConnection]:
    async with connect(node.ws_url, additional_headers={"Cookie": cookie}, max_size=None) as ws:
        await ws.send(orjson.dumps({"type": "hello", "last_seq": last_seq}).decode())
        yield ws
