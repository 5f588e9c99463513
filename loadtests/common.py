"""Helpers shared by the benchmark scripts: servers in child processes, a load loop."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import re
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from weaver.config.schema import Config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve_forever(
    factory: Callable[..., web.Application], port: int, args: tuple[Any, ...]
) -> None:
    import uvloop

    web.run_app(
        factory(*args),
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        handler_cancellation=True,
        loop=uvloop.new_event_loop(),
    )


def start_process(
    factory: Callable[..., web.Application], port: int, *args: Any
) -> mp.process.BaseProcess:
    """Run ``factory(*args)`` as an aiohttp app in a child process on ``port``."""
    return _start(_serve_forever, factory, port, args)


def _start(
    target: Callable[..., None], factory: Callable[..., Any], port: int, args: tuple[Any, ...]
) -> mp.process.BaseProcess:
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=target, args=(factory, port, args), daemon=True)
    proc.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server on port {port} did not start")


def _serve_edge_forever(
    config_factory: Callable[..., Config], port: int, args: tuple[Any, ...]
) -> None:
    import uvloop

    from weaver.proxy.app import build_app, lane_front, page_front
    from weaver.proxy.listener import EdgeRunner

    async def main() -> None:
        config = config_factory(*args)
        runner = EdgeRunner(build_app(config), config.server, front=lane_front, pages=page_front)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    uvloop.run(main())


def start_edge_process(
    config_factory: Callable[..., Config], port: int, *args: Any
) -> mp.process.BaseProcess:
    """Run Weaver as ``weaver serve`` runs it (its listener, the hit lane ahead of the
    router) for ``config_factory(*args)`` in a child process on ``port``."""
    return _start(_serve_edge_forever, config_factory, port, args)


async def load(
    url: str, *, duration_s: float, concurrency: int, headers: dict[str, str] | None = None
) -> float:
    """Requests per second that ``concurrency`` clients get from ``url`` over ``duration_s``
    (bodies read as sent: not decompressed)."""
    count = 0
    deadline = time.perf_counter() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as client:

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                async with client.get(url, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{url} answered {resp.status}")
                count += 1

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for _ in range(concurrency):
                tasks.create_task(worker())
        return count / (time.perf_counter() - started)


def _load_child(
    url: str, duration_s: float, concurrency: int, headers: dict[str, str] | None, out: Any
) -> None:
    import uvloop

    out.put(uvloop.run(load(url, duration_s=duration_s, concurrency=concurrency, headers=headers)))


def load_in_processes(
    url: str,
    *,
    duration_s: float,
    concurrency: int,
    processes: int,
    headers: dict[str, str] | None = None,
) -> float:
    """Total req/s from ``processes`` load processes (a Python client is itself a bottleneck)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_load_child, args=(url, duration_s, concurrency, headers, out))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    total = sum(float(out.get(timeout=duration_s + 60)) for _ in procs)
    for proc in procs:
        proc.join(timeout=10)
    return total


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def free_port_pair() -> int:
    """A free port P with P + 1 free too (``weaver demo`` puts the session on P + 1)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU seconds the process ``pid`` has used (Linux /proc)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Measured:
    """One load run against one server: its req/s and its CPU per request."""

    rps: float
    cpu_us: float  # the server process's CPU (user + system) per request, in µs

    def __str__(self) -> str:
        return f"{self.rps:8.0f} req/s {self.cpu_us:5.0f} µs CPU/req"


def measure(url: str, duration_s: float, concurrency: int, pid: int | None) -> Measured:
    """:func:`rps` on ``url`` and the CPU the server process ``pid`` spent per request.

    CPU per request is the sturdier figure on a shared machine: req/s falls when another
    process takes the core, CPU per request much less."""
    before = cpu_seconds(pid)
    started = time.perf_counter()
    rate = rps(url, duration_s, concurrency)
    elapsed = time.perf_counter() - started
    # wrk's rate is over its own duration; the CPU is over ours (a little longer: wrk's
    # start and end), so this slightly overstates the CPU per request, alike for all.
    spent = cpu_seconds(pid) - before
    return Measured(rate, spent / max(1.0, rate * min(elapsed, duration_s)) * 1e6)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def rps(
    url: str,
    duration_s: float,
    concurrency: int,
    *,
    processes: int = 2,
    headers: dict[str, str] | None = None,
) -> float:
    """Requests per second on ``url``: wrk when installed, else Python clients in
    ``processes`` processes. Raises RuntimeError when wrk saw non-2xx answers."""
    if shutil.which("wrk"):
        extra = [
            arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")
        ]
        out = subprocess.run(
            ["wrk", "-t2", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s", *extra, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration_s + 60,
        ).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if match is None or "Non-2xx" in out:
            raise RuntimeError(f"wrk failed on {url}:\n{out}")
        return float(match.group(1))
    return load_in_processes(
        url,
        duration_s=duration_s,
        concurrency=max(1, concurrency // processes),
        processes=processes,
        headers=headers,
    )
