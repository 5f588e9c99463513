"""soak: the mixed locust scenario against ``weaver demo`` for minutes, watching for drift.

``python -m loadtests.soak --minutes 10 OUTDIR`` starts ``weaver demo`` on free loopback
ports, runs ``loadtests/locustfile.py`` headless against it (visitors, session users and
a publisher) and samples, every ``--every`` seconds, the demo process's RSS
(/proc/PID/status), the sessions subscribed to the demo's channel (``/_weaver/presence``)
and the open session sockets (/proc/net/tcp). It writes to OUTDIR: ``soak.json`` (the
samples and locust's final stats: requests, failures, p50/p99 per request type),
``locust_stats_history.csv`` (p50/p99 per request type over time) and ``soak.png``.

The demo runs its origin in the same process: its carts (one entry per add-to-cart
event) are in the RSS too, a few bytes per event.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from loadtests.common import free_port_pair

LOCUSTFILE = Path(__file__).parent / "locustfile.py"
TOKEN = "demo"  # weaver demo's publish token
WEAVER = (sys.executable, "-m", "weaver.proxy.cli")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def presence(port: int, channel: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/_weaver/presence?channel={channel}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        sessions: int = json.loads(resp.read())["sessions"]
        return sessions


def open_sockets(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (the session listener)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                count += 1
    return count


def sample_until(
    stop: threading.Event, pid: int, port: int, every: float, out: list[dict[str, Any]]
) -> None:
    started = time.monotonic()
    while not stop.is_set():
        row: dict[str, Any] = {"t_s": round(time.monotonic() - started, 1)}
        try:
            row["rss_mb"] = rss_mb(pid)
            row["sessions_on_deals"] = presence(port, "deals")
            row["open_sockets"] = open_sockets(port + 1)
        except (OSError, ValueError) as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        out.append(row)
        stop.wait(every)


def start_demo(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [*WEAVER, "--log-level", "WARNING", "demo", "--listen", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 30
    while "open http://" not in log.read_text(errors="replace"):
        if demo.poll() is not None or time.monotonic() > deadline:
            demo.kill()
            raise RuntimeError(f"weaver demo did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return demo


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def history(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def plot(samples: list[dict[str, Any]], rows: list[dict[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    ok = [s for s in samples if "rss_mb" in s]
    t = [s["t_s"] / 60 for s in ok]
    axes[0].plot(t, [s["rss_mb"] for s in ok])
    axes[0].set_ylabel("weaver demo RSS (MB)")
    axes[1].plot(t, [s["sessions_on_deals"] for s in ok], label="sessions on 'deals'")
    axes[1].plot(t, [s["open_sockets"] for s in ok], label="open session sockets")
    axes[1].set_ylabel("sessions")
    axes[1].legend(fontsize=8)
    start = float(rows[0]["Timestamp"]) if rows else 0.0
    names = sorted({(r["Type"], r["Name"]) for r in rows if r["Name"] != "Aggregated"})
    for kind, name in names:
        mine = [r for r in rows if r["Type"] == kind and r["Name"] == name and r["99%"] != "N/A"]
        times = [(float(r["Timestamp"]) - start) / 60 for r in mine]
        axes[2].plot(times, [float(r["99%"]) for r in mine], label=f"{kind} {name}", lw=0.8)
    axes[2].set_ylabel("p99 ms (locust stats history)")
    axes[2].set_yscale("log")
    axes[2].legend(fontsize=6, ncol=2)
    total = [r for r in rows if r["Name"] == "Aggregated"]
    axes[3].plot(
        [(float(r["Timestamp"]) - start) / 60 for r in total],
        [float(r["Total Failure Count"]) for r in total],
        color="red",
    )
    axes[3].set_ylabel("failures (cumulative)")
    axes[3].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description="soak: locust against weaver demo")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spawn-rate", type=int, default=5)
    parser.add_argument("--every", type=float, default=5, help="seconds between samples")
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    port = free_port_pair()
    demo = start_demo(port, args.outdir / "demo.log")
    samples: list[dict[str, Any]] = []
    halt = threading.Event()
    sampler = threading.Thread(
        target=sample_until, args=(halt, demo.pid, port, args.every, samples), daemon=True
    )
    sampler.start()
    seconds = round(args.minutes * 60)
    locust: subprocess.Popen[bytes] | None = None
    try:
        with (args.outdir / "locust.log").open("wb") as log:
            locust = subprocess.Popen(
                [
                    *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"),
                    *("-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{seconds}s"),
                    *("--stop-timeout", "10", "--host", f"http://127.0.0.1:{port}"),
                    *("--csv", str(args.outdir / "locust"), "--csv-full-history"),
                    *("--json-file", str(args.outdir / "locust_final"), "--only-summary"),
                ],
                env={**os.environ, "WEAVER_PUBLISH_TOKEN": TOKEN},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            locust.wait(timeout=seconds + 120)
    finally:
        if locust is not None and locust.poll() is None:
            locust.send_signal(signal.SIGINT)
            locust.wait(timeout=30)
        halt.set()
        sampler.join(timeout=30)
        stop(demo)
    final_path = args.outdir / "locust_final.json"
    final = json.loads(final_path.read_text()) if final_path.exists() else []
    summary = summarize(samples, final)
    (args.outdir / "soak.json").write_text(
        json.dumps({"args": vars(args) | {"outdir": str(args.outdir)}, **summary}, indent=2)
    )
    plot(samples, history(args.outdir / "locust_stats_history.csv"), args.outdir / "soak.png")
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=2))


def summarize(samples: list[dict[str, Any]], final: list[dict[str, Any]]) -> dict[str, Any]:
    per_type = {}
    for entry in final:
        hist = {int(k): v for k, v in entry.get("response_times", {}).items()}
        per_type[f"{entry['method']} {entry['name']}"] = {
            "requests": entry["num_requests"],
            "failures": entry["num_failures"],
            "p50_ms": percentile(hist, 0.5),
            "p99_ms": percentile(hist, 0.99),
        }
    ok = [s for s in samples if "rss_mb" in s]
    after_warmup = [s for s in ok if s["t_s"] >= 60] or ok
    rss = {}
    if len(after_warmup) >= 2:
        first, last = after_warmup[0], after_warmup[-1]
        minutes = max((last["t_s"] - first["t_s"]) / 60, 1e-9)
        rss = {
            "start_mb": ok[0]["rss_mb"],
            "after_1min_mb": first["rss_mb"],
            "end_mb": last["rss_mb"],
            "max_mb": max(s["rss_mb"] for s in ok),
            "slope_mb_per_min_after_1min": (last["rss_mb"] - first["rss_mb"]) / minutes,
        }
    return {
        "failures": sum(v["failures"] for v in per_type.values()),
        "requests": sum(v["requests"] for v in per_type.values()),
        "per_type": per_type,
        "rss": rss,
        "sessions_end": ok[-1]["sessions_on_deals"] if ok else None,
        "sampler_errors": [s for s in samples if "error" in s][:5],
        "samples": samples,
    }


def percentile(hist: dict[int, int], q: float) -> float | None:
    """Locust's rounded response-time histogram (ms -> count) at quantile ``q``."""
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= q * total:
            return float(value)
    return float(max(hist))


if __name__ == "__main__":
    main()
