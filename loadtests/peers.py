"""peers: Weaver against Varnish (ESI) and nginx (proxy_cache + SSI), on the same workloads.

``python -m loadtests.peers OUTDIR`` installs nginx, varnish and wrk with apt-get when
they are missing, then runs, in one go and in front of one benchmark origin:

(a) assembly of K = 10 and 20 uncached fragments, each delayed 50 or 100 ms: TTFB (first
    body byte) and total, median of ``--rounds`` sequential requests;
(b) cache-hit replay, load from wrk: a 20 KB page without and with a session cookie, and
    a page of 10 cached fragments: req/s, p99, and the server's CPU µs per request (the
    utime+stime delta of its process tree over the run, divided by the requests);
(c) uncached proxying of a 20 KB page, the same measures;
(d) Weaver with workers = 1 and 2: skipped while ``server.workers`` runs one process.

The server under test runs on CPU 0 (taskset); the origin, wrk and the timing client run
on CPU 1. Varnish and nginx run as ``nobody`` with their own config files in a
temporary directory; Weaver runs as ``weaver serve --config``. Results go to OUTDIR:
``results.json`` (raw), ``results.md`` (the ratios Weaver ÷ peer, with versions and
the machine) and ``results.png``.

The ports are ``--base-port`` .. ``--base-port + 4``; the script refuses to run when any
is busy. Every process it starts is stopped by its id on exit, Ctrl-C or error, and the
whole run is bounded by ``--deadline`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from aiohttp import web

from loadtests.common import start_process

SERVER_CPU = 0
LOAD_CPU = 1
PEERS = ("weaver", "varnish", "nginx")
KS = (10, 20)
DELAYS_MS = (50, 100)
CACHED_FRAGMENTS = 10
HIT_CACHE = {"Cache-Control": "public, max-age=3600"}
NO_STORE = {"Cache-Control": "no-store"}


# --- the origin ------------------------------------------------------------------------


def body(size: int) -> bytes:
    unit = b"<p>lorem ipsum dolor sit amet, consectetur adipiscing</p>\n"
    return (b"<!doctype html><html><body>\n" + unit * (size // len(unit) + 1))[:size]


PAGE_20K = body(20 * 1024)
FRAGMENT = "<p>" + "fragment text " * 35 + "</p>"


def include(dialect: str, src: str) -> str:
    if dialect == "esi":
        return f'<esi:include src="{src}"/>'
    return f'<!--# include virtual="{src}" -->'


def shell(dialect: str, srcs: list[str]) -> str:
    items = "".join(f"<div>{include(dialect, src)}</div>\n" for src in srcs)
    return f"<!doctype html><html><head><title>bench</title></head><body>\n{items}</body></html>"


def origin_app() -> web.Application:
    """The benchmark origin: the same routes for every server; ``esi``/``ssi`` shells."""

    async def cached_page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE_20K, content_type="text/html", headers=HIT_CACHE)

    async def uncached_page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE_20K, content_type="text/html", headers=NO_STORE)

    async def assembly(request: web.Request) -> web.Response:
        k, delay = int(request.match_info["k"]), int(request.match_info["d"])
        srcs = [f"/frag/{delay}/{i}/nc" for i in range(k)]
        text = shell(request.match_info["dialect"], srcs)
        return web.Response(text=text, content_type="text/html", headers=NO_STORE)

    async def cached_assembly(request: web.Request) -> web.Response:
        srcs = [f"/frag/0/{i}/c" for i in range(CACHED_FRAGMENTS)]
        text = shell(request.match_info["dialect"], srcs)
        return web.Response(text=text, content_type="text/html", headers=HIT_CACHE)

    async def fragment(request: web.Request) -> web.Response:
        delay = int(request.match_info["d"])
        if delay:
            await asyncio.sleep(delay / 1000)
        headers = HIT_CACHE if request.match_info["c"] == "c" else NO_STORE
        return web.Response(text=FRAGMENT, content_type="text/html", headers=headers)

    app = web.Application()
    app.router.add_get("/p20", cached_page)
    app.router.add_get("/u20", uncached_page)
    app.router.add_get("/{dialect:esi|ssi}/asm/{k:\\d+}/{d:\\d+}", assembly)
    app.router.add_get("/{dialect:esi|ssi}/cached", cached_assembly)
    app.router.add_get("/frag/{d:\\d+}/{i:\\d+}/{c:c|nc}", fragment)
    return app


# --- the servers' configs ----------------------------------------------------------------


def weaver_toml(port: int, session_port: int, origin_port: int, cache_dir: Path) -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"

[session]
listen = "127.0.0.1:{session_port}"
secret = "{secrets.token_hex(16)}"
publish_token = "{secrets.token_hex(8)}"

[cache]
dir = "{cache_dir}"
memory_size = "64MiB"

[[origin]]
name = "bench"
url = "http://127.0.0.1:{origin_port}"

[[route]]
path = "/"
origin = "bench"
fragment_timeout = "5s"
"""


def varnish_vcl(origin_port: int) -> str:
    """ESI on for /esi/; GET/HEAD are looked up whatever the cookies (as a site that
    shares pages between signed-in visitors configures it; the builtin VCL would pass)."""
    return f"""vcl 4.1;

backend origin {{
    .host = "127.0.0.1";
    .port = "{origin_port}";
    .first_byte_timeout = 10s;
}}

sub vcl_recv {{
    if (req.method == "GET" || req.method == "HEAD") {{
        return (hash);
    }}
}}

sub vcl_backend_response {{
    if (bereq.url ~ "^/esi/") {{
        set beresp.do_esi = true;
    }}
}}

sub vcl_deliver {{
    if (obj.hits > 0) {{
        set resp.http.X-Cache = "HIT";
    }} else {{
        set resp.http.X-Cache = "MISS";
    }}
}}
"""


def nginx_conf(prefix: Path, port: int, origin_port: int) -> str:
    """One worker, proxy_cache for everything, SSI on /ssi/ (subrequests run in parallel)."""
    return f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=bench:16m max_size=256m
                     inactive=60m use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_cache bench;
        add_header X-Cache $upstream_cache_status;
        location /ssi/ {{
            ssi on;
            proxy_pass http://origin;
        }}
        location / {{
            proxy_pass http://origin;
        }}
    }}
}}
"""


# --- processes ---------------------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the global deadline passed")
        return left


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Processes:
    """Every process the harness started; ``stop`` ends each by its id."""

    popens: list[subprocess.Popen[bytes]] = field(default_factory=list)
    children: list[Any] = field(default_factory=list)  # multiprocessing processes

    def stop_one(self, popen: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=5)
        self.popens.remove(popen)

    def stop(self) -> None:
        for popen in self.popens:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGTERM)  # its own session: its group
        for popen in self.popens:
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(timeout=5)
        for child in self.children:
            child.kill()
            child.join(timeout=5)


def port_busy(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not busy
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            raise RuntimeError(f"process {proc.args!r} exited {proc.returncode}:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after 30 s")


def unprivileged() -> dict[str, Any]:
    """Popen arguments that drop root to ``nobody`` (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("nobody")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def pinned(cmd: list[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd] if CAN_PIN else cmd


# Decided once, before this process pins itself to the load CPU.
CAN_PIN = {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0) and shutil.which("taskset") is not None


def launch(
    procs: Processes, name: str, cmd: list[str], port: int, workdir: Path, **kw: Any
) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            pinned(cmd, SERVER_CPU),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kw,
        )
    procs.popens.append(proc)
    wait_for_port(port, proc, log)
    return Server(name, port, proc, log)


def weaver_command() -> list[str]:
    script = Path(sys.executable).parent / "weaver"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from weaver.proxy.cli import main; main()"]


def tree_pids(root: int) -> list[int]:
    """``root`` and its descendants (Varnish's cache child, nginx's worker)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    """utime + stime of ``root``'s process tree, from /proc/PID/stat."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / os.sysconf("SC_CLK_TCK")


# --- measuring ---------------------------------------------------------------------------


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def timed(conn: http.client.HTTPConnection, path: str) -> tuple[float, float, bytes]:
    """TTFB (first body byte) and total of one GET on a kept-alive connection."""
    started = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    first = resp.read(1)
    ttfb = time.perf_counter() - started
    rest = resp.read()
    total = time.perf_counter() - started
    if resp.status != 200:
        raise RuntimeError(f"GET {path} answered {resp.status}")
    return ttfb, total, first + rest


def assembly_path(peer: str, k: int, delay_ms: int) -> str:
    return f"/{'ssi' if peer == 'nginx' else 'esi'}/asm/{k}/{delay_ms}"


def measure_assembly(port: int, peer: str, rounds: int, deadline: Deadline) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for k in KS:
            for delay in DELAYS_MS:
                path = assembly_path(peer, k, delay)
                _, _, page = timed(conn, path)  # warm the connections
                if page.count(FRAGMENT.encode()) != k:
                    raise RuntimeError(f"{peer} {path}: {page.count(FRAGMENT.encode())}/{k}")
                samples = []
                for _ in range(rounds):
                    deadline.remaining()
                    ttfb, total, _ = timed(conn, path)
                    samples.append((ttfb, total))
                out[f"K{k}_d{delay}"] = {
                    "k": k,
                    "delay_ms": delay,
                    "ttfb_ms": statistics.median(t for t, _ in samples) * 1000,
                    "total_ms": statistics.median(t for _, t in samples) * 1000,
                    "ttfb_ms_samples": [round(t * 1000, 3) for t, _ in samples],
                    "total_ms_samples": [round(t * 1000, 3) for _, t in samples],
                }
                point = out[f"K{k}_d{delay}"]
                print(
                    f"  {peer:7} K={k:2d} d={delay:3d}ms  TTFB {point['ttfb_ms']:7.1f} ms"
                    f"  total {point['total_ms']:7.1f} ms",
                    flush=True,
                )
    finally:
        conn.close()
    return out


def parse_latency_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    server: Server, path: str, headers: dict[str, str], args: argparse.Namespace, dl: Deadline
) -> dict[str, Any]:
    duration = max(1, min(args.duration, int(dl.remaining()) - 5))
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(f"http://127.0.0.1:{server.port}{path}")
    before = cpu_seconds(server.proc.pid)
    out = subprocess.run(
        pinned(cmd, LOAD_CPU), capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    cpu = cpu_seconds(server.proc.pid) - before
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    if requests is None or rps is None or p99 is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    count = int(requests.group(1))
    return {
        "requests": count,
        "rps": float(rps.group(1)),
        "p99_ms": parse_latency_ms(p99.group(1)),
        "cpu_s": cpu,
        "cpu_us_per_req": cpu / count * 1e6 if count else float("nan"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
        "wrk": out,
    }


def cache_header(peer: str) -> str:
    return "X-Weaver-Cache" if peer == "weaver" else "X-Cache"


def warm(server: Server, path: str, headers: dict[str, str]) -> None:
    """Fetch until the server says HIT (fragments first fill on the shell's miss)."""
    for _ in range(5):
        status, got, _ = get(server.port, path, headers)
        if status != 200:
            raise RuntimeError(f"{server.name} {path} answered {status}")
        if got.get(cache_header(server.name), "") == "HIT":
            return
    raise RuntimeError(f"{server.name} {path} is not a cache hit after 5 requests")


def load_scenarios(cookie: str) -> list[tuple[str, str, dict[str, str], bool]]:
    """(name, path template, headers, expect a hit); ``{d}`` is esi or ssi."""
    return [
        ("hit_20k", "/p20", {}, True),
        ("hit_20k_cookie", "/p20", {"Cookie": cookie}, True),
        ("hit_assembled_10", "/{d}/cached", {}, True),
        ("uncached_20k", "/u20", {}, False),
    ]


# --- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    metric: str
    better: str  # "higher" or "lower"
    values: dict[str, float]


def rows_of(results: dict[str, Any]) -> list[Row]:
    rows = []
    assembly = results["assembly"]
    for key in assembly["weaver"]:
        k, d = assembly["weaver"][key]["k"], assembly["weaver"][key]["delay_ms"]
        for measure in ("ttfb_ms", "total_ms"):
            label = f"assembly K={k} x {d} ms: {measure.split('_')[0].upper()} (ms)"
            values = {p: assembly[p][key][measure] for p in PEERS if p in assembly}
            rows.append(Row(label, "lower", values))
    for name, per_peer in results["load"].items():
        for measure, better, unit in (
            ("rps", "higher", "req/s"),
            ("p99_ms", "lower", "p99 ms"),
            ("cpu_us_per_req", "lower", "CPU µs/req"),
        ):
            values = {p: per_peer[p][measure] for p in PEERS if p in per_peer}
            rows.append(Row(f"{name}: {unit}", better, values))
    return rows


def markdown(results: dict[str, Any]) -> str:
    machine, versions = results["machine"], results["versions"]
    lines = [
        "# Weaver against its peers",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}, "
        f"Python {machine['python']}. Server on CPU {SERVER_CPU}, origin/load on CPU "
        f"{LOAD_CPU} (pinned: {machine['pinned']}). Run at {results['started']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        f"wrk: 1 thread, {results['args']['connections']} connections, "
        f"{results['args']['duration']} s per run; assembly: median of "
        f"{results['args']['rounds']} sequential requests.",
        "",
        "| metric | better | Weaver | Varnish | nginx | Weaver ÷ Varnish | Weaver ÷ nginx |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows_of(results):
        w = row.values.get("weaver", float("nan"))
        v = row.values.get("varnish", float("nan"))
        n = row.values.get("nginx", float("nan"))
        lines.append(
            f"| {row.metric} | {row.better} | {w:,.1f} | {v:,.1f} | {n:,.1f} | "
            f"{ratio(w, v)} | {ratio(w, n)} |"
        )
    lines += ["", "Targets:", "", *(f"- {line}" for line in targets(results))]
    lines += ["", "Notes:", "", *(f"- {note}" for note in results["notes"]), ""]
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets, each with the measured figure and met / NOT met."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    out = []
    assembly = results["assembly"]
    for key, point in assembly["weaver"].items():
        k, d = point["k"], point["delay_ms"]
        total = point["total_ms"] / d
        varnish = assembly["varnish"][key]["total_ms"] / (k * d)
        gap = point["ttfb_ms"] - assembly["nginx"][key]["ttfb_ms"]
        nginx = assembly["nginx"][key]["total_ms"] / d
        out.append(
            f"K={k} x {d} ms: Weaver total = {total:.2f} x max(delay) (target <= 1.1: "
            f"{verdict(total <= 1.1)}; nginx SSI: {nginx:.2f} x); "
            f"Varnish total = {varnish:.2f} x sum(delays); "
            f"Weaver TTFB - nginx SSI TTFB = {gap:+.1f} ms (target <= +1 ms: "
            f"{verdict(gap <= 1.0)})"
        )
    load = results["load"]
    asm = load["hit_assembled_10"]["weaver"]["rps"] / load["hit_assembled_10"]["nginx"]["rps"]
    out.append(
        f"assembled-page hit: Weaver = {asm:.2f} x nginx SSI req/s (target >= 3: "
        f"{verdict(asm >= 3)})"
    )
    plain = load["hit_20k"]["weaver"]["rps"] / load["hit_20k"]["nginx"]["rps"]
    out.append(
        f"plain 20 KB hit: Weaver = {plain:.2f} x nginx proxy_cache req/s (target >= 0.6: "
        f"{verdict(plain >= 0.6)})"
    )
    return out


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and b == b and a == a else "n/a"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows_of(results)
    labels = [f"{r.metric} ({r.better} is better)" for r in rows]
    fig, ax = plt.subplots(figsize=(11, 0.38 * len(rows) + 1.5))
    ys = range(len(rows))
    for offset, peer, color in ((-0.2, "varnish", "#4c72b0"), (0.2, "nginx", "#55a868")):
        ratios = [r.values["weaver"] / r.values[peer] if r.values.get(peer) else 0.0 for r in rows]
        ax.barh([y + offset for y in ys], ratios, height=0.4, label=f"Weaver ÷ {peer}", color=color)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio Weaver ÷ peer (log scale)")
    machine = results["machine"]
    ax.set_title(f"Weaver ÷ peer — {machine['cpu']}, {machine['cores']} cores", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- setup -------------------------------------------------------------------------------


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in NEEDED if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)}")
    print(f"installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        check=True,
        env=env,
        timeout=900,
    )


NEEDED = (("nginx", "nginx"), ("varnishd", "varnish"), ("wrk", "wrk"), ("taskset", "util-linux"))


def versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (run.stdout + run.stderr).strip().splitlines()[0]

    try:
        weaver = importlib.metadata.version("weaver-edge")
    except importlib.metadata.PackageNotFoundError:
        weaver = "?"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    ).stdout.strip()
    return {
        "weaver": f"{weaver} ({commit})" if commit else weaver,
        "varnish": first_line(["varnishd", "-V"]).removeprefix("varnishd "),
        "nginx": first_line(["nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": first_line(["wrk", "-v"]).split(" Copyright")[0],
    }


def machine() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pinned": CAN_PIN,
    }


@contextlib.contextmanager
def stopped_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGALRM (the deadline's backstop) raise, so ``finally`` runs."""

    def raise_exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    def raise_timeout(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError("the global deadline passed")

    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if ignored
    old_term = signal.signal(signal.SIGTERM, raise_exit)
    old_alarm = signal.signal(signal.SIGALRM, raise_timeout)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGALRM, old_alarm)


# --- main --------------------------------------------------------------------------------


def run(args: argparse.Namespace, outdir: Path) -> dict[str, Any]:
    deadline = Deadline(args.deadline)
    signal.alarm(int(args.deadline) + 60)  # a backstop should a call block past the deadline
    base = args.base_port
    ports = {"origin": base, "weaver": base + 1, "session": base + 2}
    ports |= {"varnish": base + 3, "nginx": base + 4}
    busy = [f"{name} {port}" for name, port in ports.items() if port_busy(port)]
    if busy:
        raise SystemExit(f"ports busy: {', '.join(busy)}; pick others with --base-port")
    if CAN_PIN:
        os.sched_setaffinity(0, {LOAD_CPU})  # this client, the origin and wrk: CPU 1
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "args": {k: v for k, v in vars(args).items() if k != "outdir"},
        "machine": machine(),
        "versions": versions(),
        "ports": ports,
        "notes": [],
    }
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="weaver-peers-"))
    try:
        workdir.chmod(0o755)
        procs.children.append(start_process(origin_app, ports["origin"]))
        servers = start_servers(procs, workdir, ports)
        cookie = weaver_cookie(servers["weaver"])
        print("(a) assembly of uncached fragments", flush=True)
        results["assembly"] = {
            name: measure_assembly(server.port, name, args.rounds, deadline)
            for name, server in servers.items()
        }
        print("(b, c) load with wrk", flush=True)
        results["load"] = {}
        for index, (scenario, template, headers, hit) in enumerate(load_scenarios(cookie)):
            results["load"][scenario] = {}
            if index:  # a fresh Weaver: the sessions the last run opened weigh on the next
                procs.stop_one(servers["weaver"].proc)
                servers["weaver"] = start_weaver(procs, workdir, ports)
            for name, server in servers.items():
                path = template.format(d="ssi" if name == "nginx" else "esi")
                if hit:
                    warm(server, path, headers)
                measured = run_wrk(server, path, headers, args, deadline)
                results["load"][scenario][name] = measured
                print(
                    f"  {scenario:17} {name:7} {measured['rps']:9.0f} req/s  p99 "
                    f"{measured['p99_ms']:7.2f} ms  {measured['cpu_us_per_req']:7.1f} CPU µs/req"
                    + (f"  non-2xx {measured['non_2xx']}" if measured["non_2xx"] else ""),
                    flush=True,
                )
        results["notes"].append(
            "(d) Weaver with workers = 1 and 2: skipped: server.workers is accepted by the "
            "config but only one process runs, so workers = 2 would measure workers = 1."
        )
        print(results["notes"][-1], flush=True)
        results["notes"] += notes(results)
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (outdir / "results.md").write_text(markdown(results))
    chart(results, outdir / "results.png")
    return results


def start_weaver(procs: Processes, workdir: Path, ports: dict[str, int]) -> Server:
    config = workdir / "weaver.toml"  # the same secret each time: the cookie stays valid
    return launch(
        procs,
        "weaver",
        [*weaver_command(), "--log-level", "WARNING", "serve", "--config", str(config)],
        ports["weaver"],
        workdir,
    )


def start_servers(procs: Processes, workdir: Path, ports: dict[str, int]) -> dict[str, Server]:
    origin = ports["origin"]
    cache = workdir / "weaver-cache"
    config = workdir / "weaver.toml"
    config.write_text(weaver_toml(ports["weaver"], ports["session"], origin, cache))
    servers = {"weaver": start_weaver(procs, workdir, ports)}
    drop = unprivileged()
    varnish_dir = workdir / "varnish"
    varnish_dir.mkdir()
    (varnish_dir / "bench.vcl").write_text(varnish_vcl(origin))
    nginx_dir = workdir / "nginx"
    for sub in ("tmp", "cache"):
        (nginx_dir / sub).mkdir(parents=True)
    (nginx_dir / "nginx.conf").write_text(nginx_conf(nginx_dir, ports["nginx"], origin))
    if drop:
        for path in (varnish_dir, nginx_dir, *nginx_dir.iterdir()):
            os.chown(path, drop["user"], drop["group"])
    servers["varnish"] = launch(
        procs,
        "varnish",
        [
            *("varnishd", "-F", "-j", "none", "-T", "none", "-n", str(varnish_dir / "n")),
            *("-a", f"127.0.0.1:{ports['varnish']}", "-f", str(varnish_dir / "bench.vcl")),
            *("-s", "malloc,256m"),
        ],
        ports["varnish"],
        workdir,
        cwd=varnish_dir,
        **drop,
    )
    servers["nginx"] = launch(
        procs,
        "nginx",
        ["nginx", "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"), "-e", "stderr"],
        ports["nginx"],
        workdir,
        **drop,
    )
    return servers


def weaver_cookie(server: Server) -> str:
    """A valid session cookie, as a returning visitor sends it."""
    _, headers, _ = get(server.port, "/p20")
    for value in headers.get_all("Set-Cookie") or []:
        if value.startswith("weaver_session="):
            return str(value.split(";", 1)[0])
    raise RuntimeError("Weaver set no weaver_session cookie")


def notes(results: dict[str, Any]) -> list[str]:
    out = []
    for scenario, per_peer in results["load"].items():
        for name, measured in per_peer.items():
            if measured["non_2xx"] or measured["socket_errors"]:
                out.append(
                    f"{scenario} {name}: non-2xx {measured['non_2xx']}, "
                    f"socket errors {measured['socket_errors'] or 0}"
                )
    out.append(
        "uncached_20k: the origin (one aiohttp process) shares CPU 1 with wrk, so req/s is "
        "bounded by the origin for the faster servers; CPU µs/req is the fair measure."
    )
    out.append(
        "Weaver is restarted (same config, disk cache kept) before each load scenario: "
        "every cookie-less HTML request opens a session the hub holds for 60 s, and tens "
        "of thousands of them slowed the runs that followed (measured: uncached_20k at "
        "894 vs 444 CPU us/req)."
    )
    out.append(
        "Varnish is configured to look GET/HEAD up whatever the Cookie header (the builtin "
        "VCL passes requests with cookies); nginx's cache key ignores cookies by default."
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--base-port", type=int, default=18400)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10, help="requests per assembly point")
    parser.add_argument("--deadline", type=float, default=900, help="seconds for the run")
    args = parser.parse_args()
    ensure_tools()
    with stopped_on_signals():
        run(args, args.outdir)
    print(f"wrote {args.outdir}/results.md, results.png, results.json")
    print((args.outdir / "results.md").read_text())


if __name__ == "__main__":
    main()
