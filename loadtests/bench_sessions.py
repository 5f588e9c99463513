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

Each publication is read by every client before the next is published (so its arrival
is timed exactly: loadtests/ws_swarm.py); ``--quiet-clients`` also keeps the clients
from reading while a publication is sent, so that on a small machine they take no CPU
from the server meanwhile (clients elsewhere would not).

Run: ``python -m loadtests.bench_sessions [--repeat 3]`` (about a minute a run).
``--listen-backlog 100 --handshake-timeout 10s`` reproduces websockets' defaults.

Fan-out over worker processes: ``--workers 1,2`` runs ``weaver serve`` (a real process
tree, as deployed) once per entry, in the same run: ``1`` is one process on the memory
bus, ``1r`` one process on the Redis bus, ``2`` (any N > 1) a supervisor and N workers
sharing the session port (``SO_REUSEPORT``) and a ``redis-server`` started for the run.
For each it prints how the sessions spread over the workers (established sockets per
worker pid), then a table of p50/p99/fan-out per size with the ratio to the first entry
and the load average. Everything started (redis-server, weaver's process group, the
client processes) is stopped at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from loadtests import ws_swarm
from loadtests.common import free_port, start_process
from weaver.config.load import build_config
from weaver.proxy import collector
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
    collector.tune_for_serving()  # as `weaver serve` does (proxy/worker.py run)
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


def kernel_net_counters() -> dict[str, int]:
    """Machine-wide: packets the kernel dropped from its per-CPU input backlog
    (``/proc/net/softnet_stat``, every CPU), and TCP's retransmission timeouts
    (``/proc/net/netstat`` TCPTimeouts). A loopback frame dropped there arrives a
    retransmission timeout later (200 ms and more): the fan-out's tail."""
    drops = 0
    for line in Path("/proc/net/softnet_stat").read_text().splitlines():
        drops += int(line.split()[1], 16)
    timeouts = 0
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            fields = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            timeouts = int(fields.get("TCPTimeouts", 0))
    return {"backlog_drops": drops, "tcp_timeouts": timeouts}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def sessions_round(
    weaver_pids: list[int],
    weaver_port: int,
    session_port: int,
    total: int,
    publishes: int,
    deadline_s: float,
    is_quiet: bool = False,
) -> dict[str, Any]:
    """``total`` sessions connect at once, then: RSS per idle session; ``publishes``
    publications (p50/p99 publish -> arrival); one fan-out (to the last arrival); then
    every socket drops (RST) and all reconnect at once with their last seq (the storm)."""
    now = time.time()
    tokens = [auth.issue(SECRET, auth.new_session_id(), now) for _ in range(total)]
    figures: dict[str, Any] = {"load_start": load()}
    before = sum(rss_bytes(pid) for pid in weaver_pids)
    swarm = Swarm(session_port, tokens, per_process=2500, deadline_s=deadline_s)
    try:
        connected = await swarm.connect(f"{total} connect", total, is_resume=False)
        figures["connect_s"] = connected["elapsed_s"]
        await asyncio.sleep(1.0)
        figures["per_session_kb"] = (
            (sum(rss_bytes(pid) for pid in weaver_pids) - before) / total / 1024
        )
        figures["spread"] = sessions_per_pid(weaver_pids, session_port)
        url = f"http://127.0.0.1:{weaver_port}/_weaver/publish"
        net_before = kernel_net_counters()
        async with aiohttp.ClientSession() as http:
            subscribed = total
            short = 0
            for n in range(publishes):
                if is_quiet:  # the clients read after the POST's answer (ws_swarm "hold")
                    await swarm.ask(f"{total} hold {n}", "hold")
                subscribed = min(subscribed, await publish(http, url, {"t": time.time(), "n": n}))
                # Each client reads this one before the next is published: its arrival
                # is then the only message of its read, timed exactly (ws_swarm.py).
                waited = await swarm.ask(f"{total} publish {n}", "wait", n + 1, 10.0)
                short += sum(waited)
                await asyncio.sleep(0.05)
            figures["load_fanout"] = load()
            if is_quiet:
                await swarm.ask(f"{total} hold", "hold")
            await publish(http, url, {"t": time.time(), "fanout": True})
            await swarm.ask(f"{total} fan-out", "wait", publishes + 1, 10.0)
            await asyncio.sleep(0.2)
            figures["short"] = short
        net_after = kernel_net_counters()
        figures["net"] = {k: net_after[k] - v for k, v in net_before.items()}
        figures["subscribed"] = subscribed
        kernel: list[float] = []
        user: list[float] = []
        fanout_kernel: list[float] = []
        fanout_user: list[float] = []
        expected = total * publishes
        last_by_publish: dict[int, float] = {}  # publication n -> its last arrival
        inexact = 0  # messages timed by a later one's arrival (ws_swarm.py)
        collect_until = time.monotonic() + deadline_s  # a slow bus is slow, not lost
        while True:
            errors: dict[str, int] = {}
            for received, failed in await swarm.ask(f"{total} collect", "collect"):
                for why, n in failed.items():
                    errors[why] = errors.get(why, 0) + n
                for kernel_t, user_t, raw, is_exact in received:
                    inexact += not is_exact
                    data = orjson.loads(raw)
                    if data.get("fanout"):
                        fanout_kernel.append(kernel_t - data["t"])
                        fanout_user.append(user_t - data["t"])
                    else:
                        kernel.append(kernel_t - data["t"])
                        user.append(user_t - data["t"])
                        last = last_by_publish.get(data["n"], 0.0)
                        last_by_publish[data["n"]] = max(last, kernel_t - data["t"])
            if len(kernel) >= expected and len(fanout_kernel) >= total:
                break
            if time.monotonic() > collect_until:
                raise BenchFailure(
                    f"{total} publish: {len(kernel)} of {expected} messages and "
                    f"{len(fanout_kernel)} of {total} fan-out messages arrived within "
                    f"{deadline_s:.0f} s; sockets failed: {errors or 'none'}"
                )
            await asyncio.sleep(0.5)
        if len(kernel) != expected or len(fanout_kernel) != total:
            raise BenchFailure(
                f"{total} publish: {len(kernel)} of {expected} messages and "
                f"{len(fanout_kernel)} of {total} fan-out messages arrived (duplicates)"
            )
        figures["inexact"] = inexact
        figures["p50_ms"] = percentile(kernel, 0.5) * 1000
        figures["p99_ms"] = percentile(kernel, 0.99) * 1000
        figures["p99_user_ms"] = percentile(user, 0.99) * 1000
        figures["fanout_ms"] = max(fanout_kernel) * 1000
        figures["fanout_user_ms"] = max(fanout_user) * 1000
        lasts = sorted(last_by_publish.values())
        figures["last_median_ms"] = statistics.median(lasts) * 1000
        figures["last_max_ms"] = lasts[-1] * 1000
        await swarm.ask(f"{total} drop", "drop")
        figures["load_storm"] = load()
        storm = await swarm.connect(f"{total} reconnect storm", total, is_resume=True)
        figures["storm_s"] = storm["elapsed_s"]
        figures["storm_resumed"] = storm["resumed"]
    finally:
        swarm.kill()
    return figures


def sessions_per_pid(pids: list[int], port: int) -> dict[int, int]:
    """Established TCP sockets on local ``port`` held by each pid (/proc: no psutil)."""
    inodes: dict[int, set[str]] = {}
    for pid in pids:
        found = inodes[pid] = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                found.add(target[8:-1])
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and int(local.rpartition(":")[2], 16) == port:
                established.add(inode)
    return {pid: len(found & established) for pid in pids}


def spread_text(spread: dict[int, int]) -> str:
    counts = list(spread.values())
    if len(counts) < 2:
        return f"{counts[0] if counts else 0} sessions on 1 process"
    share = max(counts) / max(1, sum(counts))
    return (
        "sessions per worker "
        + " / ".join(str(n) for n in counts)
        + f" (the busiest holds {share:.0%})"
    )


def round_text(total: int, f: dict[str, Any]) -> str:
    return (
        f"{total:6d} sessions: connected at once in "
        f"{f['connect_s']:.1f} s; {spread_text(f['spread'])}; RSS "
        f"{f['per_session_kb']:.1f} KB per idle session (target <= 30); publish->arrival "
        f"p50 {f['p50_ms']:.2f} ms p99 {f['p99_ms']:.2f} ms (read by the client: p99 "
        f"{f['p99_user_ms']:.2f} ms; a publication's last arrival: median "
        f"{f['last_median_ms']:.1f} ms, max {f['last_max_ms']:.1f} ms; meanwhile the "
        f"machine's kernel dropped {f['net']['backlog_drops']} input packets and had "
        f"{f['net']['tcp_timeouts']} TCP retransmission timeouts; {f['inexact']} "
        f"timed inexactly, {f['short']} not read before the next publication); "
        "fan-out to all in "
        f"{f['fanout_ms']:.1f} ms "
        f"(read: {f['fanout_user_ms']:.1f} ms) [{f['load_fanout']}]; "
        f"reconnect storm: all {f['storm_resumed']} resumed in "
        f"{f['storm_s']:.1f} s [{f['load_storm']}]; "
        f"{f['subscribed']} of {total} subscribed (on the node that took the POST)"
    )


class RedisProcess:
    """A throwaway ``redis-server`` (no persistence) on a free port, for the Redis bus."""

    def __init__(self, directory: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchFailure("--workers N > 1 (or 1r) needs redis-server (apt-get install)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                directory,
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BenchFailure(f"redis-server did not answer on port {self.port} within 15 s")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Served:
    """``weaver serve`` in its own process group: its pids (the serving ones) and ports."""

    proc: subprocess.Popen[str]
    http_port: int
    session_port: int
    pids: list[int] = field(default_factory=list)
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def stop(self) -> None:
        """SIGTERM (every worker drains); past 30 s SIGKILL to the whole group."""
        if os.environ.get("BENCH_LOG"):  # BENCH_LOG=INFO: weaver's log, when it failed
            while not self.lines.empty():
                print("weaver:", self.lines.get())
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                print("weaver serve did not stop in 30 s: killed", flush=True)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers a crash left behind
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def serve_weaver(
    workers: int, bus_url: str, origin_port: int, cache_dir: str, listen: dict[str, Any]
) -> Served:
    """Start ``weaver serve`` with ``workers`` workers; returns once it serves (or raises
    BenchFailure with what it printed)."""
    http_port, session_port = free_port(), free_port()
    extra = "".join(f"{key} = {orjson.dumps(value).decode()}\n" for key, value in listen.items())
    config = Path(cache_dir) / f"weaver-{workers}.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{http_port}"\nworkers = {workers}\n'
        'access_log = "off"\n'
        f'[session]\nlisten = "127.0.0.1:{session_port}"\nsecret = "{SECRET}"\n'
        f'publish_token = "{TOKEN}"\n{extra}'
        f'[bus]\nurl = "{bus_url}"\n'
        f'[cache]\ndir = "{Path(cache_dir) / "cache"}"\n'
        f'[[origin]]\nname = "o"\nurl = "http://127.0.0.1:{origin_port}"\n'
        '[[route]]\npath = "/"\norigin = "o"\n'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weaver.proxy.cli",
            "--log-level",
            os.environ.get("BENCH_LOG", "WARNING"),
            "serve",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # one process group: stop() ends the workers too
        preexec_fn=raise_open_files_limit,
    )
    served = Served(proc, http_port, session_port)

    def drain() -> None:  # the pipe must never fill: the workers would block on it
        assert proc.stdout is not None
        for line in proc.stdout:
            served.lines.put(line.rstrip("\n"))

    threading.Thread(target=drain, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            line = served.lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if " pid " in line and line.endswith(" ready"):
            served.pids.append(int(line.split(" pid ")[1].split()[0]))
        elif "serving on " in line:
            if not served.pids:
                served.pids.append(proc.pid)  # one process: it serves itself
            return served
    served.stop()
    raise BenchFailure("weaver serve did not start:\n" + "\n".join(seen[-20:]))


@dataclass(frozen=True)
class Setup:
    """One entry of ``--workers``: N processes, on the memory or the Redis bus."""

    workers: int
    is_redis: bool

    @classmethod
    def parse(cls, text: str) -> Setup:
        workers = int(text.rstrip("r"))
        return cls(workers, workers > 1 or text.endswith("r"))

    @property
    def label(self) -> str:
        return f"workers={self.workers} {'redis' if self.is_redis else 'memory'} bus"


async def run_setups(
    setups: list[Setup],
    sizes: list[int],
    publishes: int,
    repeat: int,
    deadline_s: float,
    listen: dict[str, Any],
) -> int:
    """Each setup in turn on a fresh ``weaver serve``; then the table with the ratios."""
    failures = 0
    results: dict[tuple[Setup, int], list[dict[str, Any]]] = {}
    origin_port = free_port()
    origin = start_process(origin_app, origin_port)
    try:
        for attempt in range(1, repeat + 1):
            for setup in setups:
                with tempfile.TemporaryDirectory() as tmp:
                    redis = RedisProcess(tmp) if setup.is_redis else None
                    served: Served | None = None
                    try:
                        served = serve_weaver(
                            setup.workers,
                            redis.url if redis else "memory://",
                            origin_port,
                            tmp,
                            listen,
                        )
                        for total in sizes:
                            f = await sessions_round(
                                served.pids,
                                served.http_port,
                                served.session_port,
                                total,
                                publishes,
                                deadline_s,
                            )
                            results.setdefault((setup, total), []).append(f)
                            print(f"[run {attempt}] {setup.label}: {round_text(total, f)}")
                    except BenchFailure as exc:
                        failures += 1
                        print(f"[run {attempt}] {setup.label} FAILED: {exc}; {load()}")
                    finally:
                        if served is not None:
                            served.stop()
                        if redis is not None:
                            redis.stop()
    finally:
        origin.kill()
        origin.join(timeout=10)
    print_table(setups, sizes, results)
    return failures


def print_table(
    setups: list[Setup], sizes: list[int], results: dict[tuple[Setup, int], list[dict[str, Any]]]
) -> None:
    """Median over the runs of each figure; ratios to the first setup (lower is better)."""
    print(f"\nfan-out, clients in separate processes, cores={os.cpu_count()} (medians of runs)")
    print(
        f"{'setup':28s} {'sessions':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'fan-out ms':>10s}"
        f" {'p99/base':>8s} {'fan/base':>8s}  load (1 5 15) at the fan-out"
    )
    for total in sizes:
        base: dict[str, float] | None = None
        for setup in setups:
            runs = results.get((setup, total))
            if not runs:
                print(f"{setup.label:28s} {total:8d}  (failed)")
                continue
            med = {
                key: statistics.median(r[key] for r in runs)
                for key in ("p50_ms", "p99_ms", "fanout_ms")
            }
            base = base or med
            print(
                f"{setup.label:28s} {total:8d} {med['p50_ms']:8.2f} {med['p99_ms']:8.2f} "
                f"{med['fanout_ms']:10.1f} {med['p99_ms'] / base['p99_ms']:8.2f} "
                f"{med['fanout_ms'] / base['fanout_ms']:8.2f}  {runs[-1]['load_fanout']}"
            )


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
    sizes: list[int],
    publishes: int,
    repeat: int,
    deadline_s: float,
    listen: dict[str, Any],
    is_quiet: bool = False,
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
                            [weaver.pid],
                            weaver_port,
                            session_port,
                            total,
                            publishes,
                            deadline_s,
                            is_quiet,
                        )
                    except BenchFailure as exc:
                        failures += 1
                        print(f"[run {attempt}] FAILED: {exc}; {load()}", flush=True)
                        break
                    print(f"[run {attempt}] {round_text(total, f)}", flush=True)
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
    parser.add_argument(
        "--quiet-clients",
        action="store_true",
        help="the clients read nothing while a publication is sent (as clients on other "
        "machines take no CPU from the server); one process (no --workers) only",
    )
    parser.add_argument(
        "--workers",
        help="e.g. 1,2: `weaver serve` with 1 process (memory bus) then 2 workers (Redis "
        "bus), in one run; 1r is 1 process on the Redis bus (see the module docstring)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    listen: dict[str, Any] = {}
    if args.listen_backlog is not None:
        listen["listen_backlog"] = args.listen_backlog
    if args.handshake_timeout is not None:
        listen["handshake_timeout"] = args.handshake_timeout
    if args.workers:
        setups = [Setup.parse(text) for text in args.workers.split(",")]
        failures = asyncio.run(
            run_setups(setups, sizes, args.publishes, args.repeat, args.phase_deadline, listen)
        )
    else:
        failures = asyncio.run(
            run(sizes, args.publishes, args.repeat, args.phase_deadline, listen, args.quiet_clients)
        )
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
