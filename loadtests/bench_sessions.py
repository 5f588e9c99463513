"""bench_sessions: memory per idle session, publish latency, fan-out, a reconnect storm,
cancel on disconnect.

A real ``weaver`` app (origin + Weaver with its session listener) runs in a child
process; the WebSocket clients are loadtests/ws_swarm.py processes of 2,500 sockets each
(a process may hold 20,000 files), timing each arrival by the kernel's receive timestamp
(and, second, by when the client process read it). Per size (default 1k and 10k):

- every socket connects at once (no pacing);
- RSS of the Weaver process per idle session (baseline: before the clients), target
  <= 30 KB;
- publish -> arrival p50/p99 over ``--publishes`` publications 50 ms apart (POST
  /_weaver/publish to the frame's arrival at the client), target p99 <= 5 ms at 1k;
- one message's fan-out to every session (POST to the last arrival), target <= 100 ms
  at 10k;
- the reconnect storm: every socket is reset (RST, as a node restart does) and all
  reconnect at once with their last seq and session id; each must be resumed.

Plus: a visitor leaving mid-page -> the origin sees its suspense fetch cancelled, target
<= 10 ms. The load average goes with each figure (the machine may be shared).

Fails loudly: each phase has ``--phase-deadline`` (120 s); a phase that does not complete
prints what failed (sockets open, errors by kind), a client process that dies or stalls
is named, every process is killed at the end, and the exit status is 1.

Run: ``python -m loadtests.bench_sessions [--repeat 3]`` (about a minute a run).
``--listen-backlog 100 --handshake-timeout 10s`` reproduces websockets' defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from loadtests import ws_swarm
from loadtests.common import free_port, start_process
from weaver.config.load import build_config
from weaver.proxy.app import build_app
from weaver.session import auth

SECRET = "bench-secret"
TOKEN = "bench-token"
CHANNEL = "bench"


def origin_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text='<p>x</p><weaver-include src="/slow" mode="suspense" timeout="30s">…'
            '</weaver-include><esi:include src="/hold"/>',
            content_type="text/html",
        )

    cancelled_at: list[float] = []

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled_at.append(time.time())
            raise
        return web.Response(text="never")

    async def hold(request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response(text="never")

    async def cancels(request: web.Request) -> web.Response:
        return web.json_response(cancelled_at)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hold", hold)
    app.router.add_get("/_cancels", cancels)
    return app


def weaver_app(
    origin_port: int, session_port: int, cache_dir: str, listen: dict[str, Any]
) -> web.Application:
    raise_open_files_limit()
    config = build_config(
        {
            "session": {
                "listen": f"127.0.0.1:{session_port}",
                "secret": SECRET,
                "publish_token": TOKEN,
                **listen,
            },
            "cache": {"dir": cache_dir},
            "origin": [{"name": "o", "url": f"http://127.0.0.1:{origin_port}"}],
            "route": [{"path": "/", "origin": "o"}],
        },
        "<bench>",
    )
    return build_app(config)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class BenchFailure(Exception):
    """A phase did not complete: the benchmark stops and says what failed."""


class Swarm:
    """Client processes (loadtests/ws_swarm.py), each with a pipe; every call is bounded
    by the phase deadline, and :meth:`kill` ends them all whatever happened."""

    def __init__(self, port: int, tokens: list[str], per_process: int, deadline_s: float):
        ctx = mp.get_context("spawn")
        self.deadline_s = deadline_s
        self.procs: list[mp.process.BaseProcess] = []
        self.pipes: list[Connection] = []
        for first in range(0, len(tokens), per_process):
            ours, theirs = ctx.Pipe()
            chunk = tokens[first : first + per_process]
            proc = ctx.Process(
                target=ws_swarm.run,
                args=(port, chunk, CHANNEL, theirs, deadline_s),
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
            self.pipes.append(ours)

    async def ask(self, phase: str, *command: Any) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(command)
        answers = []
        for index, (pipe, proc) in enumerate(zip(self.pipes, self.procs, strict=True)):
            is_ready = await asyncio.to_thread(pipe.poll, self.deadline_s + 30)
            if not is_ready:
                alive = "alive" if proc.is_alive() else f"dead (exit code {proc.exitcode})"
                raise BenchFailure(
                    f"{phase}: client process {index} gave no answer in "
                    f"{self.deadline_s + 30:.0f} s; it is {alive}"
                )
            try:
                answers.append(pipe.recv()[1])
            except EOFError:
                raise BenchFailure(
                    f"{phase}: client process {index} died (exit code {proc.exitcode})"
                ) from None
        return answers

    async def connect(self, phase: str, total: int, *, is_resume: bool) -> dict[str, Any]:
        reports = await self.ask(phase, "connect", is_resume)
        merged: dict[str, Any] = {
            "open": sum(r["open"] for r in reports),
            "resumed": sum(r["resumed"] for r in reports),
            "elapsed_s": max(r["elapsed_s"] for r in reports),
            "errors": {},
        }
        for report in reports:
            for why, n in report["errors"].items():
                merged["errors"][why] = merged["errors"].get(why, 0) + n
        if merged["open"] != total or (is_resume and merged["resumed"] != total):
            raise BenchFailure(
                f"{phase}: {merged['open']} of {total} sockets open, {merged['resumed']} "
                f"resumed, after {merged['elapsed_s']:.1f} s; errors: {merged['errors']}"
            )
        return merged

    def kill(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("exit",))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)


def raise_open_files_limit() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def publish(http: aiohttp.ClientSession, url: str, data: dict[str, Any]) -> int:
    async with http.post(
        url, json={"channel": CHANNEL, "data": data}, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        delivered: int = (await resp.json())["delivered_to"]
        return delivered


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def sessions_round(
    weaver_pid: int,
    weaver_port: int,
    session_port: int,
    total: int,
    publishes: int,
    deadline_s: float,
) -> dict[str, Any]:
    """``total`` sessions connect at once, then: RSS per idle session; ``publishes``
    publications (p50/p99 publish -> arrival); one fan-out (to the last arrival); then
    every socket drops (RST) and all reconnect at once with their last seq (the storm)."""
    now = time.time()
    tokens = [auth.issue(SECRET, auth.new_session_id(), now) for _ in range(total)]
    figures: dict[str, Any] = {"load_start": load()}
    before = rss_bytes(weaver_pid)
    swarm = Swarm(session_port, tokens, per_process=2500, deadline_s=deadline_s)
    try:
        connected = await swarm.connect(f"{total} connect", total, is_resume=False)
        figures["connect_s"] = connected["elapsed_s"]
        await asyncio.sleep(1.0)
        figures["per_session_kb"] = (rss_bytes(weaver_pid) - before) / total / 1024
        url = f"http://127.0.0.1:{weaver_port}/_weaver/publish"
        async with aiohttp.ClientSession() as http:
            subscribed = total
            for n in range(publishes):
                subscribed = min(subscribed, await publish(http, url, {"t": time.time(), "n": n}))
                await asyncio.sleep(0.05)
            figures["load_fanout"] = load()
            await publish(http, url, {"t": time.time(), "fanout": True})
            await asyncio.sleep(1.0)
        figures["subscribed"] = subscribed
        kernel: list[float] = []
        user: list[float] = []
        fanout_kernel: list[float] = []
        fanout_user: list[float] = []
        for received in await swarm.ask(f"{total} collect", "collect"):
            for kernel_t, user_t, raw in received:
                data = orjson.loads(raw)
                if data.get("fanout"):
                    fanout_kernel.append(kernel_t - data["t"])
                    fanout_user.append(user_t - data["t"])
                else:
                    kernel.append(kernel_t - data["t"])
                    user.append(user_t - data["t"])
        expected = total * publishes
        if len(kernel) != expected or len(fanout_kernel) != total:
            raise BenchFailure(
                f"{total} publish: {len(kernel)} of {expected} messages and "
                f"{len(fanout_kernel)} of {total} fan-out messages arrived"
            )
        figures["p50_ms"] = percentile(kernel, 0.5) * 1000
        figures["p99_ms"] = percentile(kernel, 0.99) * 1000
        figures["p99_user_ms"] = percentile(user, 0.99) * 1000
        figures["fanout_ms"] = max(fanout_kernel) * 1000
        figures["fanout_user_ms"] = max(fanout_user) * 1000
        await swarm.ask(f"{total} drop", "drop")
        figures["load_storm"] = load()
        storm = await swarm.connect(f"{total} reconnect storm", total, is_resume=True)
        figures["storm_s"] = storm["elapsed_s"]
        figures["storm_resumed"] = storm["resumed"]
    finally:
        swarm.kill()
    return figures


async def disconnect_round(weaver_port: int, origin_port: int, rounds: int) -> list[float]:
    """A visitor leaves mid-page: how long until the origin sees the suspense fetch end."""
    delays = []
    async with aiohttp.ClientSession() as http:
        for _ in range(rounds):
            async with http.get(f"http://127.0.0.1:{origin_port}/_cancels") as resp:
                seen = len(await resp.json())
            resp = await http.get(f"http://127.0.0.1:{weaver_port}/")
            await resp.content.readany()
            await asyncio.sleep(0.05)  # the suspense fetch is under way
            left_at = time.time()
            resp.close()
            for _ in range(200):
                await asyncio.sleep(0.005)
                async with http.get(f"http://127.0.0.1:{origin_port}/_cancels") as check:
                    cancels = await check.json()
                if len(cancels) > seen:
                    delays.append((cancels[-1] - left_at) * 1000)
                    break
    return delays


async def run(
    sizes: list[int], publishes: int, repeat: int, deadline_s: float, listen: dict[str, Any]
) -> int:
    failures = 0
    for attempt in range(1, repeat + 1):
        origin_port, weaver_port, session_port = free_port(), free_port(), free_port()
        with tempfile.TemporaryDirectory() as cache_dir:
            origin = start_process(origin_app, origin_port)
            weaver = start_process(
                weaver_app, weaver_port, origin_port, session_port, cache_dir, listen
            )
            try:
                assert weaver.pid is not None
                delays = await disconnect_round(weaver_port, origin_port, 20)
                print(
                    f"[run {attempt}] leave mid-page -> suspense fetch cancelled at the "
                    f"origin: median {statistics.median(delays):.1f} ms, max "
                    f"{max(delays):.1f} ms over {len(delays)} rounds (target <= 10 ms); "
                    f"{load()}",
                    flush=True,
                )
                for total in sizes:
                    try:
                        f = await sessions_round(
                            weaver.pid, weaver_port, session_port, total, publishes, deadline_s
                        )
                    except BenchFailure as exc:
                        failures += 1
                        print(f"[run {attempt}] FAILED: {exc}; {load()}", flush=True)
                        break
                    print(
                        f"[run {attempt}] {total:6d} sessions: connected at once in "
                        f"{f['connect_s']:.1f} s; RSS {f['per_session_kb']:.1f} KB per idle "
                        f"session (target <= 30); publish->arrival p50 {f['p50_ms']:.2f} ms "
                        f"p99 {f['p99_ms']:.2f} ms (read by the client: p99 "
                        f"{f['p99_user_ms']:.2f} ms); fan-out to all in {f['fanout_ms']:.1f} ms "
                        f"(read: {f['fanout_user_ms']:.1f} ms) [{f['load_fanout']}]; "
                        f"reconnect storm: all {f['storm_resumed']} resumed in "
                        f"{f['storm_s']:.1f} s [{f['load_storm']}]; "
                        f"{f['subscribed']} of {total} subscribed",
                        flush=True,
                    )
            finally:
                weaver.kill()
                origin.kill()
                weaver.join(timeout=10)
                origin.join(timeout=10)
    return failures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--publishes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh server")
    parser.add_argument(
        "--phase-deadline", type=float, default=120.0, help="seconds each phase may take"
    )
    parser.add_argument(
        "--listen-backlog", type=int, help="session.listen_backlog (default: the config's)"
    )
    parser.add_argument(
        "--handshake-timeout", help='session.handshake_timeout, e.g. "10s" (websockets\' default)'
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    listen: dict[str, Any] = {}
    if args.listen_backlog is not None:
        listen["listen_backlog"] = args.listen_backlog
    if args.handshake_timeout is not None:
        listen["handshake_timeout"] = args.handshake_timeout
    failures = asyncio.run(run(sizes, args.publishes, args.repeat, args.phase_deadline, listen))
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
