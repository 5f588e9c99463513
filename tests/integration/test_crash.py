"""A real ``weaver serve`` killed with SIGKILL mid-fill leaves a store with whole entries."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.servers import serve_app
from tests.weaver_process import spawn_serve
from weaver.cache.store import Store

ROUNDS = 6


def body_for(path: str) -> bytes:
    """What the origin sends for ``path``: checkable after the crash."""
    return (f"<p>{path}</p>" * 2000).encode()


async def streaming_page(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/html", "Cache-Control": "max-age=3600"}
    )
    await response.prepare(request)
    data = body_for(request.path)
    step = len(data) // 8
    for start in range(0, len(data), step):
        await response.write(data[start : start + step])
        await asyncio.sleep(random.uniform(0, 0.03))
    await response.write_eof()
    return response


async def hit(client: aiohttp.ClientSession, url: str) -> None:
    try:
        async with client.get(url) as resp:
            await resp.read()
    except aiohttp.ClientError:
        pass  # the server was killed under us: expected


async def test_sigkill_mid_fill_leaves_only_complete_entries(tmp_path: Path) -> None:
    origin = web.Application()
    origin.router.add_get("/{name}", streaming_page)
    cache_dir = tmp_path / "cache"
    async with serve_app(origin) as origin_url, aiohttp.ClientSession() as client:
        config = tmp_path / "weaver.toml"
        config.write_text(
            '[server]\nlisten = "127.0.0.1:0"\n[session]\nlisten = "127.0.0.1:0"\n'
            f'[cache]\ndir = "{cache_dir}"\n'
            f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n'
            '[[route]]\npath = "/"\norigin = "o"\n'
        )
        for round_ in range(ROUNDS):
            proc, url = await asyncio.wait_for(spawn_serve(config), 30)
            try:
                async with asyncio.TaskGroup() as tasks:
                    for i in range(8):
                        tasks.create_task(hit(client, f"{url}/r{round_}p{i}"))
                    await asyncio.sleep(random.uniform(0.05, 0.3))
                    proc.send_signal(signal.SIGKILL)
            finally:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()

    store = Store(str(cache_dir), max_size_bytes=1024**3)
    await store.open()
    try:
        assert await store.check() == []
        keys = await store.keys()
        assert keys, "no fill finished in any round: the test proved nothing"
        for key in keys:
            entry = await store.get(key)
            assert entry is not None
            path = "/" + key.split("/", 1)[1].split("?")[0].split("|")[0]
            got = b"".join([chunk async for chunk in entry.body()])
            assert got == body_for(path), key
    finally:
        await store.close()
