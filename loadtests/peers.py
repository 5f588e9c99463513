"""peers: Weaver against Varnish (ESI) and nginx (proxy_cache + SSI), on the same workloads.

``python -m loadtests.peers OUTDIR`` installs nginx, varnish, wrk and redis-server with
apt-get when they are missing, then runs, in one go and in front of one benchmark origin:

(a) assembly of K = 10 and 20 uncached fragments, each delayed 50 or 100 ms: TTFB (first
    body byte) and total, median of ``--rounds`` sequential requests;
(b) cache-hit replay, load from wrk: a 20 KB page without and with a session cookie, and
    a page of 10 cached fragments: req/s, p99, and the server's CPU µs per request (the
    utime+stime delta of its process tree over the run, divided by the requests);
(c) uncached proxying of a 20 KB page, the same measures; and hits on a 20 KB shop page
    (varied text) as identity, with ``Accept-Encoding: gzip`` (Weaver, Varnish storing it
    gzipped, nginx ``gzip on`` level 6 on ``/gz/``) and with ``gzip, br`` (Weaver only):
    the same measures and the bytes of one response's body as sent;
(d) Weaver alone with ``server.workers`` = 1 and 2 on the 20 KB hit: 2 workers need a
    shared bus, so a throwaway ``redis-server`` runs for it; see ``WORKER_LAYOUTS``.

The server under test runs on CPU 0 (taskset); the origin, wrk and the timing client run
on CPU 1 (but for (d), which needs both cores for the server). Varnish and nginx run as
``nobody`` with their own config files in a temporary directory; Weaver runs as
``weaver serve --config``. Results go to OUTDIR: ``results.json`` (raw), ``results.md``
(the ratios Weaver ÷ peer, with versions and the machine) and ``results.png``.

The ports are ``--base-port`` .. ``--base-port + 5``; the script refuses to run when any
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

from loadtests.bench_compression import page as shop_page
from loadtests.common import start_process
from weaver.session import auth

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


PAGE_20K = body(20 * 1024)  # one line repeated: compresses to almost nothing
SHOP_20K = shop_page(20 * 1024)  # markup that repeats, text and numbers that vary
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

    async def shop(request: web.Request) -> web.Response:
        return web.Response(body=SHOP_20K, content_type="text/html", headers=HIT_CACHE)

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
    app.router.add_get("/s20", shop)
    app.router.add_get("/u20", uncached_page)
    app.router.add_get("/{dialect:esi|ssi}/asm/{k:\\d+}/{d:\\d+}", assembly)
    app.router.add_get("/{dialect:esi|ssi}/cached", cached_assembly)
    app.router.add_get("/frag/{d:\\d+}/{i:\\d+}/{c:c|nc}", fragment)
    return app


# --- the servers' configs ----------------------------------------------------------------


def weaver_toml(
    port: int,
    session_port: int,
    origin_port: int,
    cache_dir: Path,
    secret: str,
    *,
    workers: int = 1,
    bus_url: str = "",
) -> str:
    bus = f'[bus]\nurl = "{bus_url}"\n' if bus_url else ""
    return f"""
[server]
listen = "127.0.0.1:{port}"
workers = {workers}

[session]
listen = "127.0.0.1:{session_port}"
secret = "{secret}"
publish_token = "{secrets.token_hex(8)}"

{bus}
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
    shares pages between signed-in visitors configures it; the builtin VCL would pass);
    /gz/X is the origin's /X stored gzipped (``do_gzip``, ``gzip_level`` 6 by default)."""
    return f"""vcl 4.1;

backend origin {{
    .host = "127.0.0.1";
    .port = "{origin_port}";
    .first_byte_timeout = 10s;
}}

sub vcl_recv {{
    unset req.http.X-Bench-Gzip;
    if (req.url ~ "^/gz/") {{
        set req.url = regsub(req.url, "^/gz", "");
        set req.http.X-Bench-Gzip = "1";
    }}
    if (req.method == "GET" || req.method == "HEAD") {{
        return (hash);
    }}
}}

sub vcl_hash {{
    if (req.http.X-Bench-Gzip) {{
        hash_data("gz");
    }}
}}

sub vcl_backend_response {{
    if (bereq.url ~ "^/esi/") {{
        set beresp.do_esi = true;
    }}
    if (bereq.http.X-Bench-Gzip) {{
        set beresp.do_gzip = true;
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
    """One worker, proxy_cache for everything, SSI on /ssi/ (subrequests run in parallel),
    gzip (level 6, per response) on /gz/, which proxies to the origin's / (/gz/p20: /p20)."""
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
        location /gz/ {{
            gzip on;
            gzip_types text/html;
            gzip_comp_level 6;
            proxy_pass http://origin/;
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


def pinned(cmd: list[str], cpus: int | str) -> list[str]:
    """``cmd`` under ``taskset -c cpus`` (a CPU or a list such as ``"0,1"``)."""
    return ["taskset", "-c", str(cpus), *cmd] if CAN_PIN else cmd


# Decided once, before this process pins itself to the load CPU.
CAN_PIN = {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0) and shutil.which("taskset") is not None


def launch(
    procs: Processes,
    name: str,
    cmd: list[str],
    port: int,
    workdir: Path,
    cpus: int | str = SERVER_CPU,
    **kw: Any,
) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            pinned(cmd, cpus),
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
    server: Server,
    path: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    dl: Deadline,
    cpus: int | str = LOAD_CPU,
) -> dict[str, Any]:
    duration = max(1, min(args.duration, int(dl.remaining()) - 5))
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(f"http://127.0.0.1:{server.port}{path}")
    before = cpu_seconds(server.proc.pid)
    out = subprocess.run(
        pinned(cmd, cpus), capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    cpu = cpu_seconds(server.proc.pid) - before
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)  # not the tail of "87.99%"
    if requests is None or rps is None or p99 is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    read = re.search(r"requests in \S+, ([\d.]+)(B|KB|MB|GB|TB) read", out)
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
        "wire_bytes_per_req": read_bytes(read.group(1), read.group(2)) / count
        if read and count
        else float("nan"),
        "wrk": out,
    }


def read_bytes(number: str, unit: str) -> float:
    """wrk's "1.23GB read" in bytes (wrk's units are powers of 1024)."""
    scale: int = 1024 ** ["B", "KB", "MB", "GB", "TB"].index(unit)
    return float(number) * scale


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


@dataclass(frozen=True)
class Scenario:
    name: str
    paths: dict[str, str]  # peer -> path; a peer not named does not run it
    headers: dict[str, str]
    hit: bool  # warm it first, and expect a hit


def load_scenarios(cookie: str) -> list[Scenario]:
    def every(path: str) -> dict[str, str]:
        return {peer: path for peer in PEERS}

    gzip = {"Accept-Encoding": "gzip"}
    return [
        Scenario("hit_20k", every("/p20"), {}, True),
        Scenario("hit_20k_cookie", every("/p20"), {"Cookie": cookie}, True),
        Scenario(
            "hit_assembled_10",
            {"weaver": "/esi/cached", "varnish": "/esi/cached", "nginx": "/ssi/cached"},
            {},
            True,
        ),
        Scenario("uncached_20k", every("/u20"), {}, False),
        Scenario("shop_20k", every("/s20"), {}, True),
        Scenario("shop_20k_gzip", {**every("/gz/s20"), "weaver": "/s20"}, gzip, True),
        Scenario("shop_20k_gzip_br", {"weaver": "/s20"}, {"Accept-Encoding": "gzip, br"}, True),
    ]


def response_size(server: Server, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """One response's body as sent (http.client does not decode) and its coding."""
    status, got, sent = get(server.port, path, headers)
    if status != 200:
        raise RuntimeError(f"{server.name} {path} answered {status}")
    return {"body_bytes": len(sent), "content_encoding": got.get("Content-Encoding", "identity")}


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
        if name.startswith("shop"):
            for measure, unit in (("body_bytes", "body B"), ("wire_bytes_per_req", "wire B/req")):
                values = {p: per_peer[p][measure] for p in PEERS if p in per_peer}
                rows.append(Row(f"{name}: {unit}", "lower", values))
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
        f"{results['args']['duration']} s per run; (b, c): median of "
        f"{results['args']['load_rounds']} runs per server, interleaved; assembly: median of "
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
            f"| {row.metric} | {row.better} | {figure(w)} | {figure(v)} | {figure(n)} | "
            f"{ratio(w, v)} | {ratio(w, n)} |"
        )
    lines += ["", *workers_table(results.get("workers", {}))]
    lines += ["", "Targets:", "", *(f"- {line}" for line in targets(results))]
    lines += ["", "Notes:", "", *(f"- {note}" for note in results["notes"]), ""]
    return "\n".join(lines)


def workers_table(workers: dict[str, Any]) -> list[str]:
    """Scenario (d) as its own table: one server, three layouts, medians of the runs."""
    lines = [
        "(d) Weaver, 20 KB hit, by server.workers (median of the runs; each run's req/s):",
        "",
        "| workers | server CPUs | wrk CPUs | processes | req/s | p99 ms | CPU µs/req "
        "| runs req/s |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for m in workers.values():
        each = ", ".join(f"{value:,.0f}" for value in m.get("rps_samples", [m["rps"]]))
        lines.append(
            f"| {m['workers']} | {m['server_cpus']} | {m['load_cpus']} | {m['processes']} | "
            f"{m['rps']:,.0f} | {m['p99_ms']:.1f} | {m['cpu_us_per_req']:.1f} | {each} |"
        )
    return lines


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
    assembled = load["hit_assembled_10"]
    asm = assembled["weaver"]["rps"] / assembled["nginx"]["rps"]
    asm_cpu = assembled["nginx"]["cpu_us_per_req"] / assembled["weaver"]["cpu_us_per_req"]
    out.append(
        f"assembled-page hit: Weaver = {asm:.2f} x nginx SSI req/s (target >= 3: "
        f"{verdict(asm >= 3)}); by CPU per request {asm_cpu:.2f} x"
    )
    plain = load["hit_20k"]["weaver"]["rps"] / load["hit_20k"]["nginx"]["rps"]
    by_cpu = (
        load["hit_20k"]["nginx"]["cpu_us_per_req"] / load["hit_20k"]["weaver"]["cpu_us_per_req"]
    )
    out.append(
        f"plain 20 KB hit: Weaver = {plain:.2f} x nginx proxy_cache req/s (target >= 0.6: "
        f"{verdict(plain >= 0.6)}); by CPU per request, the req/s one saturated core "
        f"would give, {by_cpu:.2f} x"
    )
    return out


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and b == b and a == a else "—"


def figure(value: float) -> str:
    return f"{value:,.1f}" if value == value else "—"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows_of(results) if any(r.values.get(p) for p in PEERS[1:])]
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


NEEDED = (
    ("nginx", "nginx"),
    ("varnishd", "varnish"),
    ("wrk", "wrk"),
    ("taskset", "util-linux"),
    ("redis-server", "redis-server"),
)


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
    ports |= {"varnish": base + 3, "nginx": base + 4, "redis": base + 5}
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
        secret = secrets.token_hex(16)
        servers = start_servers(procs, workdir, ports, secret)
        cookie = weaver_cookie(secret)
        print("(a) assembly of uncached fragments", flush=True)
        results["assembly"] = {
            name: measure_assembly(server.port, name, args.rounds, deadline)
            for name, server in servers.items()
        }
        print("(b, c) load with wrk", flush=True)
        results["load"] = {}
        for index, scenario in enumerate(load_scenarios(cookie)):
            results["load"][scenario.name] = {}
            if index:  # a fresh Weaver for each scenario: nothing carried from the last
                procs.stop_one(servers["weaver"].proc)
                servers["weaver"] = start_weaver(procs, workdir, ports)
            runs: dict[str, list[dict[str, Any]]] = {}
            for _ in range(args.load_rounds):  # interleaved: a busy spell hits every peer
                for name, server in servers.items():
                    path = scenario.paths.get(name)
                    if path is None:
                        continue
                    if scenario.hit:
                        warm(server, path, scenario.headers)
                    measured = run_wrk(server, path, scenario.headers, args, deadline)
                    measured |= response_size(server, path, scenario.headers)
                    runs.setdefault(name, []).append(measured)
                    report(scenario.name, name, measured)
            for name, samples in runs.items():
                results["load"][scenario.name][name] = median_run(samples)
        procs.stop_one(servers["weaver"].proc)
        print("(d) Weaver with server.workers = 1 and 2 (20 KB hit)", flush=True)
        results["workers"] = measure_workers(procs, workdir, ports, secret, args, deadline)
        results["notes"] += notes(results)
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (outdir / "results.md").write_text(markdown(results))
    chart(results, outdir / "results.png")
    return results


def report(scenario: str, name: str, measured: dict[str, Any]) -> None:
    print(
        f"  {scenario:17} {name:7} {measured['rps']:9.0f} req/s  p99 "
        f"{measured['p99_ms']:7.2f} ms  {measured['cpu_us_per_req']:7.1f} CPU µs/req  "
        f"{measured['body_bytes']:6d} B {measured['content_encoding']}"
        + (f"  non-2xx {measured['non_2xx']}" if measured["non_2xx"] else ""),
        flush=True,
    )


# (workers, the server's CPUs, wrk's CPUs). Two workers need both cores, so wrk shares
# them with the server; workers = 1 runs both pinned as in (b) and on both cores beside
# wrk, so that 2 against 1 compares like with like.
BOTH = f"{SERVER_CPU},{LOAD_CPU}"
WORKER_LAYOUTS: tuple[tuple[int, str, str], ...] = (
    (1, str(SERVER_CPU), str(LOAD_CPU)),
    (1, BOTH, BOTH),
    (2, BOTH, BOTH),
)


def measure_workers(
    procs: Processes,
    workdir: Path,
    ports: dict[str, int],
    secret: str,
    args: argparse.Namespace,
    deadline: Deadline,
) -> dict[str, Any]:
    """Scenario (d): the 20 KB hit with ``server.workers`` = 1 and 2 (``WORKER_LAYOUTS``).

    CPU per request is summed over the supervisor and its workers (the process tree).
    Two workers need a shared bus: a throwaway ``redis-server`` on the load CPU, stopped
    by its id before this returns.
    """
    redis_dir = workdir / "redis"
    redis_dir.mkdir()
    redis = launch(
        procs,
        "redis",
        [
            *("redis-server", "--bind", "127.0.0.1", "--port", str(ports["redis"])),
            *("--save", "", "--appendonly", "no", "--dir", str(redis_dir)),
        ],
        ports["redis"],
        workdir,
        cpus=LOAD_CPU,
    )
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        for _ in range(args.worker_rounds):  # interleaved: a busy spell hits every layout
            for workers, server_cpus, load_cpus in WORKER_LAYOUTS:
                measured = measure_layout(
                    procs, workdir, ports, secret, args, deadline, workers, server_cpus, load_cpus
                )
                runs.setdefault(worker_key(workers, server_cpus), []).append(measured)
                report(f"w={workers} cpu {server_cpus}/{load_cpus}", "weaver", measured)
    finally:
        procs.stop_one(redis.proc)
    return {key: median_run(samples) for key, samples in runs.items()}


def measure_layout(
    procs: Processes,
    workdir: Path,
    ports: dict[str, int],
    secret: str,
    args: argparse.Namespace,
    deadline: Deadline,
    workers: int,
    server_cpus: str,
    load_cpus: str,
) -> dict[str, Any]:
    """One wrk run of the 20 KB hit against a fresh ``weaver serve`` with ``workers``."""
    bus = f"redis://127.0.0.1:{ports['redis']}" if workers > 1 else ""
    config = workdir / f"weaver-w{workers}.toml"
    config.write_text(
        weaver_toml(
            ports["weaver"],
            ports["session"],
            ports["origin"],
            workdir / "weaver-cache",
            secret,
            workers=workers,
            bus_url=bus,
        )
    )
    server = start_weaver(procs, workdir, ports, config, server_cpus)
    try:
        warm(server, "/p20", {})
        for _ in range(8 * workers):  # new connections: every worker gets a hit
            get(server.port, "/p20")
        measured = run_wrk(server, "/p20", {}, args, deadline, cpus=load_cpus)
        measured |= response_size(server, "/p20", {})
        measured["processes"] = len(tree_pids(server.proc.pid))
    finally:
        procs.stop_one(server.proc)
    return measured | {
        "workers": workers,
        "server_cpus": server_cpus,
        "load_cpus": load_cpus,
        "bus": bus or "memory://",
    }


def median_run(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run's fields, with req/s, p99, CPU µs/req and wire bytes the medians of
    all runs (each taken alone: the three may come from different runs)."""
    out = dict(samples[0])
    for measure in ("rps", "p99_ms", "cpu_us_per_req", "wire_bytes_per_req"):
        out[measure] = statistics.median(sample[measure] for sample in samples)
        out[f"{measure}_samples"] = [sample[measure] for sample in samples]
    out["wrk"] = [sample["wrk"] for sample in samples]
    out["requests"] = sum(sample["requests"] for sample in samples)
    out["non_2xx"] = sum(sample["non_2xx"] for sample in samples)
    out["socket_errors"] = "; ".join(s["socket_errors"] for s in samples if s["socket_errors"])
    return out


def worker_key(workers: int, server_cpus: str) -> str:
    return f"workers_{workers}_cpu_{server_cpus.replace(',', '_')}"


def start_weaver(
    procs: Processes,
    workdir: Path,
    ports: dict[str, int],
    config: Path | None = None,
    cpus: int | str = SERVER_CPU,
) -> Server:
    """``weaver serve`` on ``config`` (by default ``weaver.toml``: the same secret each
    time), returned once it says it serves: with workers, once every worker listens."""
    server = launch(
        procs,
        "weaver",
        [
            *weaver_command(),
            *("--log-level", "WARNING", "serve"),
            *("--config", str(config or workdir / "weaver.toml")),
        ],
        ports["weaver"],
        workdir,
        cpus=cpus,
    )
    end = time.monotonic() + 30
    while "serving on " not in server.log.read_text(errors="replace"):
        if server.proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"weaver did not start:\n{server.log.read_text()}")
        time.sleep(0.05)
    return server


def start_servers(
    procs: Processes, workdir: Path, ports: dict[str, int], secret: str
) -> dict[str, Server]:
    origin = ports["origin"]
    cache = workdir / "weaver-cache"
    config = workdir / "weaver.toml"
    config.write_text(weaver_toml(ports["weaver"], ports["session"], origin, cache, secret))
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


def weaver_cookie(secret: str) -> str:
    """A valid session cookie, as a returning visitor sends it (a plain page sets none
    since Weaver opens sessions only for pages with suspense or channels)."""
    token = auth.issue(secret, auth.new_session_id(), time.time())
    return f"{auth.COOKIE}={token}"


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
        "Weaver is restarted (same config, disk cache kept) before each load scenario, so "
        "that none inherits another's state. The cookie of hit_20k_cookie is a valid "
        "weaver_session token signed with the run's secret (a plain page sets none: "
        "Weaver opens sessions only for pages with suspense or channels)."
    )
    out.append(
        "shop_20k*: a 20 KB shop listing (varied text; /p20 repeats one line and gzips to "
        "169 B). shop_20k_gzip / shop_20k_gzip_br: wrk sends Accept-Encoding: gzip (or "
        "gzip, br); every other row sends none, so hits are identity. Weaver compresses a "
        "stored variant once (gzip 9 and br 11 for bodies up to 64 KiB) and replays it; "
        "Varnish stores the page gzipped once (do_gzip, gzip_level 6) on /gz/; nginx "
        "compresses every response (gzip on, gzip_comp_level 6) on /gz/. bytes = one "
        "response's body as sent; wire B/req = wrk's bytes read / requests (headers too)."
    )
    out += worker_notes(results.get("workers", {}))
    out.append(
        "Varnish is configured to look GET/HEAD up whatever the Cookie header (the builtin "
        "VCL passes requests with cookies); nginx's cache key ignores cookies by default."
    )
    return out


def worker_notes(workers: dict[str, Any]) -> list[str]:
    if not workers:
        return []
    layouts = "; ".join(
        f"{m['workers']} worker(s): server on CPU {m['server_cpus']}, wrk on {m['load_cpus']}"
        for m in workers.values()
    )
    rounds = len(next(iter(workers.values()))["rps_samples"])
    out = [
        f"(d) {layouts}. Each layout ran {rounds} times, interleaved, in a fresh server "
        "each time; the table gives medians. Two workers need both cores, so wrk (one "
        "thread) shares them with the server and takes CPU from it: req/s understates what "
        "two workers do with the load elsewhere; compare 2 workers with 1 worker on the "
        "same two cores. CPU µs/req is summed over the supervisor and its workers. "
        "2 workers use a throwaway redis-server as bus (sessions only: a plain hit does "
        "not touch it); 1 worker the memory bus."
    ]
    one, two = workers.get(worker_key(1, BOTH)), workers.get(worker_key(2, BOTH))
    if one and two:
        out.append(
            f"(d) 2 workers ÷ 1 worker, both on CPUs {BOTH} beside wrk: req/s "
            f"{two['rps'] / one['rps']:.2f}, CPU µs/req "
            f"{two['cpu_us_per_req'] / one['cpu_us_per_req']:.2f}."
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--base-port", type=int, default=18400)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10, help="requests per assembly point")
    parser.add_argument(
        "--load-rounds", type=int, default=3, help="wrk runs per server in (b, c) (median)"
    )
    parser.add_argument(
        "--worker-rounds", type=int, default=3, help="wrk runs per layout in (d) (median)"
    )
    parser.add_argument("--deadline", type=float, default=1500, help="seconds for the run")
    args = parser.parse_args()
    ensure_tools()
    with stopped_on_signals():
        run(args, args.outdir)
    print(f"wrote {args.outdir}/results.md, results.png, results.json")
    print((args.outdir / "results.md").read_text())


if __name__ == "__main__":
    main()
