"""The supervisor (proxy/supervisor.py) as operators run it: ``server.workers = 2``, two
processes share the listener; a killed one is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import html
from tests.integration.ops_harness import redis_server, weaver_serve
from tests.servers import serve_app

BURST = 200


def _config(tmp_path: Path, origin_url: str, redis_url: str) -> Path:
    config = tmp_path / "weaver.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\nworkers = 2\n'
        '[session]\nlisten = "127.0.0.1:0"\nsecret = "env:TEST_SECRET"\n'
        f'[bus]\nurl = "{redis_url}"\n'
        f'[cache]\ndir = "{tmp_path / "cache"}"\n'
        f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n'
        '[[route]]\npath = "/"\norigin = "o"\n'
    )
    return config


async def _burst(client: aiohttp.ClientSession, url: str) -> list[tuple[int, bytes]]:
    async def one(i: int) -> tuple[int, bytes]:
        # A new connection each: the kernel spreads connections, not requests.
        async with client.get(f"{url}/page?n={i % 10}", headers={"Connection": "close"}) as r:
            return r.status, await r.read()

    return await asyncio.gather(*(one(i) for i in range(BURST)))


async def _pages_counted(client: aiohttp.ClientSession, url: str) -> float:
    async with client.get(url + "/_weaver/metrics") as resp:
        text = await resp.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "weaver_requests_total" and sample.labels["route"] == "/"
    )


async def test_two_workers_serve_a_burst_and_a_killed_worker_is_replaced(
    tmp_path: Path,
) -> None:
    async def page(request: web.Request) -> web.Response:
        return html(f"page {request.query['n']}", **{"Cache-Control": "max-age=600"})

    origin = web.Application()
    origin.router.add_get("/page", page)
    env = {"TEST_SECRET": "x" * 64}
    with redis_server(tmp_path) as redis_url:
        async with (
            serve_app(origin) as origin_url,
            weaver_serve(_config(tmp_path, origin_url, redis_url), env=env) as weaver,
            aiohttp.ClientSession() as client,
        ):
            pids = {  # "weaver: worker 0 pid 1234 ready" -> {0: 1234}
                int(line.split()[2]): int(line.split()[4])
                for line in weaver.out.seen
                if line.endswith(" ready")
            }
            assert sorted(pids) == [0, 1] and "(2 workers)" in weaver.out.text

            answers = await _burst(client, weaver.url)
            assert answers == [(200, f"page {i % 10}".encode()) for i in range(BURST)]

            # A streamed MISS is counted after its last byte: wait until all are.
            while await _pages_counted(client, weaver.url) < BURST:
                pass
            seen_before = len(weaver.out.seen)
            os.kill(pids[0], signal.SIGKILL)
            line = await weaver.out.wait_for(lambda s: "worker 0 pid" in s, after=seen_before)
            replacement = int(line.split(" pid ")[1].split()[0])
            assert replacement not in pids.values()
            assert f"worker 0 (pid {pids[0]}) died (signal 9)" in weaver.err.text

            answers = await _burst(client, weaver.url)
            assert answers == [(200, f"page {i % 10}".encode()) for i in range(BURST)]

            # Every worker's requests are in the count, whichever worker answers; the
            # killed worker's counts stay in its file (prometheus-client sums them).
            pages = await _pages_counted(client, weaver.url)
            assert pages == 2 * BURST
