"""bench_hit: req/s of cache-hit replay against the Python ceiling, in the same run.

The ceiling is a bare aiohttp server returning the same bytes from memory. Weaver serves
the same bodies as cache hits: from its memory tier, and from disk (a second Weaver with
the memory tier off). An assembled page (a shell and 10 fragments, about 10 KB) is
reported beside a plain page of its size: a hit replays stored bytes either way.

The load generator is ``wrk`` when installed (``apt-get install wrk``), else Python
clients in separate processes. Run: ``python -m loadtests.bench_hit``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import urllib.request
from collections.abc import Awaitable, Callable

from aiohttp import web

from loadtests.common import (
    Measured,
    free_port,
    load_average,
    measure,
    start_edge_process,
    start_process,
)
from weaver.config.load import build_config
from weaver.config.schema import Config

CACHE = {"Cache-Control": "max-age=3600"}
FRAGMENT = "<li>" + "fragment text " * 60 + "</li>"


def body(size: int) -> bytes:
    unit = b"<p>lorem ipsum dolor sit amet, consectetur adipiscing</p>\n"
    return (b"<!doctype html><html><body>\n" + unit * (size // len(unit) + 1))[:size]


BODIES = {"/p20": body(20 * 1024), "/p200": body(200 * 1024), "/p8m": body(8 * 1024 * 1024)}
SHELL = "<!doctype html><ul>" + "".join(f'<esi:include src="/f/{i}"/>' for i in range(10))


def origin_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=BODIES[request.path], content_type="text/html", headers=CACHE)

    async def assembled(request: web.Request) -> web.Response:
        return web.Response(text=SHELL + "</ul>", content_type="text/html", headers=CACHE)

    async def fragment(request: web.Request) -> web.Response:
        return web.Response(text=FRAGMENT, content_type="text/html", headers=CACHE)

    app = web.Application()
    for path in BODIES:
        app.router.add_get(path, page)
    app.router.add_get("/asm", assembled)
    app.router.add_get("/f/{i}", fragment)
    return app


def ceiling_app(bodies: dict[str, bytes]) -> web.Application:
    """The Python ceiling: the same bytes from memory, nothing else."""

    def handler_for(data: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=data, content_type="text/html")

        return handler

    app = web.Application()
    for path, data in bodies.items():
        app.router.add_get(path, handler_for(data))
    return app


def file_app(path: str) -> web.Application:
    """The large-body baseline: aiohttp's FileResponse (sendfile where the loop has it)."""

    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/p8m", handler)
    return app


def weaver_config(origin_port: int, cache_dir: str, memory_size: str) -> Config:
    return build_config(
        {
            "cache": {"dir": cache_dir, "memory_size": memory_size},
            "origin": [{"name": "o", "url": f"http://127.0.0.1:{origin_port}"}],
            "route": [{"path": "/", "origin": "o"}],
        },
        "<bench>",
    )


def fetch(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read(), resp.headers.get("X-Weaver-Cache", "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    origin_port, ceiling_port = free_port(), free_port()
    memory_port, disk_port = free_port(), free_port()
    procs = [start_process(origin_app, origin_port)]
    with tempfile.TemporaryDirectory() as mem_dir, tempfile.TemporaryDirectory() as disk_dir:
        try:
            # Weaver as weaver serve runs it: its listener, the hit lane ahead of the router.
            procs.append(
                start_edge_process(weaver_config, memory_port, origin_port, mem_dir, "64MiB")
            )
            procs.append(start_edge_process(weaver_config, disk_port, origin_port, disk_dir, "0"))
            bodies = dict(BODIES)
            for port in (memory_port, disk_port):
                for path in (*BODIES, "/asm"):
                    fetch(f"http://127.0.0.1:{port}{path}")
                    data, status = fetch(f"http://127.0.0.1:{port}{path}")
                    assert status == "HIT", (port, path, status)
                    bodies[path] = data
            bodies["/plain-asm"] = body(len(bodies["/asm"]))
            procs.append(start_process(ceiling_app, ceiling_port, bodies))
            tool = "wrk" if shutil.which("wrk") else "python clients"
            print(f"load: {tool}, {args.concurrency} connections, {args.duration}s each")
            print(
                "each: req/s and the server's CPU per request (sturdier on a shared machine);"
                " ratios of req/s, CPU ratios as baseline CPU / this CPU (higher is better)"
            )
            pids = {
                "ceiling": procs[-1].pid,
                "memory": procs[1].pid,
                "disk": procs[2].pid,
            }
            results: dict[str, float] = {}
            for path in ("/p20", "/p200", "/asm"):
                runs = {
                    name: measure(
                        f"http://127.0.0.1:{port}{path}", args.duration, args.concurrency, pid
                    )
                    for name, port, pid in (
                        ("ceiling", ceiling_port, pids["ceiling"]),
                        ("memory", memory_port, pids["memory"]),
                        ("disk", disk_port, pids["disk"]),
                    )
                }
                ceiling, memory, disk = runs["ceiling"], runs["memory"], runs["disk"]
                results[path] = memory.rps
                print(
                    f"{path:6} {len(bodies[path]):7d} B  ceiling {ceiling}\n"
                    f"{'':16}memory  {memory}  {_ratios(memory, ceiling)} of ceiling\n"
                    f"{'':16}disk    {disk}  {_ratios(disk, ceiling)} of ceiling,"
                    f" {_ratios(disk, memory)} of memory (target >= 0.6x)  [{load_average()}]"
                )
            with tempfile.NamedTemporaryFile(suffix=".html") as big:
                big.write(BODIES["/p8m"])
                big.flush()
                file_port = free_port()
                procs.append(start_process(file_app, file_port, big.name))
                fetch(f"http://127.0.0.1:{file_port}/p8m")
                c = max(1, args.concurrency // 8)
                files = measure(
                    f"http://127.0.0.1:{file_port}/p8m", args.duration, c, procs[-1].pid
                )
                big_disk = measure(
                    f"http://127.0.0.1:{disk_port}/p8m", args.duration, c, pids["disk"]
                )
                print(
                    f"/p8m   {len(BODIES['/p8m']):7d} B  FileResponse {files}\n"
                    f"{'':16}weaver disk hit {big_disk}  {_ratios(big_disk, files)}"
                    f" (target >= 0.67x), {c} connections  [{load_average()}]"
                )
            print(
                "assembled hit vs plain 20 KB hit: "
                f"{results['/asm'] / results['/p20']:.2f}x req/s "
                f"({len(bodies['/asm'])} B vs {len(bodies['/p20'])} B)"
            )
            print(json.dumps({k: round(v) for k, v in results.items()}))
        finally:
            for proc in procs:
                proc.kill()


def _ratios(run: Measured, baseline: Measured) -> str:
    """``run`` against ``baseline``: req/s ratio, and CPU per request as baseline / run."""
    return f"{run.rps / baseline.rps:.2f}x req/s, {baseline.cpu_us / run.cpu_us:.2f}x CPU"


if __name__ == "__main__":
    main()
