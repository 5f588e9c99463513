"""bench_streaming: streaming suspense slots, end to end on loopback.

An origin and Weaver (with its session listener) run in a child process; WebSocket
clients run in this one. The origin stamps each chunk with ``time.monotonic_ns()`` as it
writes it (CLOCK_MONOTONIC: the same clock in both processes) and notes when it sees its
connection closed. Figures:

- chunk latency: origin write -> client receive of the slot-append carrying it, p50/p99
  (it includes the origin -> Weaver hop, so it bounds "arrives at Weaver -> client" from
  above), target p50 <= 1 ms;
- cancel latency: the client's ``cancel`` sent -> the origin sees its connection closed,
  and the same for the client's socket closing (1001), p50/max, target <= 10 ms;
- N concurrent streaming slots of 200 chunks each (default 1,000): wall time, chunks/s
  delivered, and the Weaver process's RSS before and at the end.

Run: ``python -m loadtests.bench_streaming [--slots 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import re
import statistics
import tempfile
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect

from loadtests.common import free_port
from weaver.config.load import build_config
from weaver.proxy.app import build_app

SECRET = "bench-secret"
TAG = '<weaver-include src="/answer{q}" mode="suspense" stream timeout="5s">…</weaver-include>'


def _child(port: int, session_port: int, cache_dir: str, events: Any) -> None:
    async def shell(request: web.Request) -> web.Response:
        return web.Response(
            text="<h1>bench</h1>" + TAG.format(q="?" + request.query_string),
            content_type="text/html",
            headers={"Cache-Control": "max-age=600"},
        )

    async def answer(request: web.Request) -> web.StreamResponse:
        chunks = int(request.query.get("chunks", "200"))
        gap_s = float(request.query.get("gap", "0"))
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        try:
            for _ in range(chunks):
                await response.write(b"<i>%d</i>" % time.monotonic_ns())
                if gap_s:
                    await asyncio.sleep(gap_s)
                else:
                    await asyncio.sleep(0)
            await response.write_eof()
        except asyncio.CancelledError:
            events.put(("closed", request.query.get("id", ""), time.monotonic_ns()))
            raise
        return response

    async def main() -> None:
        origin = web.Application()
        origin.router.add_get("/", shell)
        origin.router.add_get("/answer", answer)
        runner = web.AppRunner(origin, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        origin_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        config = build_config(
            {
                "server": {"listen": f"127.0.0.1:{port}"},
                "session": {"listen": f"127.0.0.1:{session_port}", "secret": SECRET},
                "cache": {"dir": cache_dir},
                "origin": [{"name": "o", "url": f"http://127.0.0.1:{origin_port}"}],
                "route": [{"path": "/", "origin": "o"}],
            },
            "<bench>",
        )
        weaver = web.AppRunner(build_app(config), handler_cancellation=True, access_log=None)
        await weaver.setup()
        await web.TCPSite(weaver, "127.0.0.1", port).start()
        events.put(("ready", "", 0))
        await asyncio.Event().wait()

    asyncio.run(main())


async def _page(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    """(the slot id, the session cookie) of one page view."""
    async with http.get(url) as resp:
        body = await resp.text()
        jar: SimpleCookie = SimpleCookie()
        jar.load(resp.headers["Set-Cookie"])
    slot = re.findall(r'<weaver-slot id="([^"]+)"', body)[0]
    return slot, jar["weaver_session"].value


async def _session(ws_url: str, token: str) -> ClientConnection:
    ws = await connect(ws_url, additional_headers={"Cookie": f"weaver_session={token}"})
    await ws.send('{"type":"hello","last_seq":0}')
    return ws


def _stamps(html: str) -> list[int]:
    return [int(x) for x in re.findall(r"<i>(\d+)</i>", html)]


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def chunk_latency(base: str, ws_url: str, http: aiohttp.ClientSession) -> list[float]:
    latencies: list[float] = []
    for round_ in range(5):
        _, token = await _page(http, f"{base}/?chunks=200&gap=0.002&id=lat{round_}")
        ws = await _session(ws_url, token)
        async with ws:
            while True:
                message = orjson.loads(await ws.recv())
                now = time.monotonic_ns()
                if message["type"] == "slot-append":
                    latencies += [(now - t) / 1e6 for t in _stamps(message["html"])]
                elif message["type"] in ("slot-done", "slot-error"):
                    break
    return latencies


async def cancel_latency(
    base: str, ws_url: str, http: aiohttp.ClientSession, events: Any, *, by_close: bool
) -> list[float]:
    out: list[float] = []
    for round_ in range(20):
        ident = f"{'close' if by_close else 'cancel'}{round_}"
        slot, token = await _page(http, f"{base}/?chunks=100000&gap=0.005&id={ident}")
        ws = await _session(ws_url, token)
        while orjson.loads(await ws.recv())["type"] != "slot-append":
            pass
        sent = time.monotonic_ns()
        if by_close:
            await ws.close(1001)
        else:
            await ws.send(orjson.dumps({"type": "cancel", "id": slot}).decode())
        while True:
            kind, closed_id, at = await asyncio.to_thread(events.get, True, 10)
            if kind == "closed" and closed_id == ident:
                out.append((at - sent) / 1e6)
                break
        await ws.close()
    return out


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def concurrent(base: str, ws_url: str, slots: int, pid: int) -> dict[str, float]:
    before = _rss_kb(pid)
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        started = time.perf_counter()
        pages = await asyncio.gather(
            *(_page(http, f"{base}/?chunks=200&gap=0.01&id=c") for _ in range(slots))
        )
        peak = 0
        received = 0
        ended: dict[str, int] = {}

        async def one(token: str) -> None:
            nonlocal received
            ws = await _session(ws_url, token)
            async with ws:
                while True:
                    message = orjson.loads(await ws.recv())
                    if message["type"] == "slot-append":
                        received += len(_stamps(message["html"]))
                    elif message["type"] in ("slot-done", "slot-error"):
                        end = message.get("reason", message["type"])
                        ended[end] = ended.get(end, 0) + 1
                        return

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, _rss_kb(pid))
                await asyncio.sleep(0.1)

        sampler = asyncio.get_running_loop().create_task(sample())
        try:
            await asyncio.gather(*(one(token) for _, token in pages))
        finally:
            sampler.cancel()
        wall = time.perf_counter() - started
    return {
        "slots": slots,
        "chunks": received,
        "wall_s": wall,
        "chunks_per_s": received / wall,
        "rss_before_mb": before / 1024,
        "rss_peak_mb": peak / 1024,
        **{f"ended_{k}": float(v) for k, v in sorted(ended.items())},
    }


async def run(slots: int) -> None:
    port, session_port = free_port(), free_port()
    ctx = mp.get_context("spawn")
    events: Any = ctx.Queue()
    with tempfile.TemporaryDirectory() as cache_dir:
        process = ctx.Process(
            target=_child, args=(port, session_port, cache_dir, events), daemon=True
        )
        process.start()
        try:
            assert (await asyncio.to_thread(events.get, True, 30))[0] == "ready"
            base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{session_port}/"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
                latencies = await chunk_latency(base, ws_url, http)
                print(
                    f"chunk latency origin write -> client: p50 {statistics.median(latencies):.3f}"
                    f" ms, p99 {_pct(latencies, 0.99):.3f} ms ({len(latencies)} chunks)"
                )
                for by_close in (False, True):
                    cancels = await cancel_latency(base, ws_url, http, events, by_close=by_close)
                    what = "socket close (1001)" if by_close else "cancel message"
                    print(
                        f"cancel latency, {what} -> origin closed: p50 "
                        f"{statistics.median(cancels):.2f} ms, max {max(cancels):.2f} ms"
                    )
            assert process.pid is not None
            figures = await concurrent(base, ws_url, slots, process.pid)
            print(
                f"{figures['slots']:.0f} concurrent slots x 200 chunks: {figures['chunks']:.0f}"
                f" chunks in {figures['wall_s']:.2f} s ({figures['chunks_per_s']:.0f} chunks/s),"
                f" Weaver RSS {figures['rss_before_mb']:.0f} MB -> peak "
                f"{figures['rss_peak_mb']:.0f} MB; slots ended: "
                + ", ".join(
                    f"{k[6:]} {v:.0f}" for k, v in figures.items() if k.startswith("ended_")
                )
            )
        finally:
            process.terminate()
            process.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slots", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(run(args.slots))


if __name__ == "__main__":
    main()
