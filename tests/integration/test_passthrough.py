"""A body that is not woven streams through a real ``weaver serve`` in constant memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.servers import serve_app
from tests.weaver_process import spawn_serve

CHUNK = b"\x00\x01\x02\x03" * (64 * 1024 // 4)
TOTAL = 1024**3  # 1 GiB


async def huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = TOTAL
    await response.prepare(request)
    for _ in range(TOTAL // len(CHUNK)):
        await response.write(CHUNK)
    await response.write_eof()
    return response


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_gigabyte_passes_through_in_constant_memory(tmp_path: Path) -> None:
    origin = web.Application()
    origin.router.add_get("/huge.bin", huge)
    async with serve_app(origin) as origin_url:
        config = tmp_path / "weaver.toml"
        config.write_text(
            '[server]\nlisten = "127.0.0.1:0"\n[session]\nlisten = "127.0.0.1:0"\n'
            f'[cache]\ndir = "{tmp_path / "cache"}"\n'
            f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n[[route]]\npath = "/"\norigin = "o"\n'
        )
        proc, url = await spawn_serve(config)
        try:
            baseline = rss_bytes(proc.pid)
            peak = baseline
            received = 0
            async with asyncio.timeout(120), aiohttp.ClientSession() as client:
                async with client.get(url + "/huge.bin") as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Length"] == str(TOTAL)
                    async for chunk in resp.content.iter_chunked(1024 * 1024):
                        received += len(chunk)
                        if received % (64 * 1024 * 1024) < len(chunk):
                            peak = max(peak, rss_bytes(proc.pid))
                            await asyncio.sleep(0.05)  # a slower client: backpressure
            assert received == TOTAL
            # Buffers are bounded (the fill's, aiohttp's); a copy would be 1 GiB.
            assert peak - baseline < 64 * 1024**2, (baseline, peak)
        finally:
            proc.terminate()
            await proc.wait()
