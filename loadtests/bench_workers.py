"""bench_workers: cache-hit req/s of ``weaver serve`` with 1 worker and with 2.

Each run is a real ``weaver serve`` process (the supervisor and its workers for 2) on
loopback in front of a small origin; one 20 KB page is fetched once (MISS), then loaded
as HITs. Two workers need a shared bus, so the run with 2 starts a throwaway
``redis-server`` and points ``bus.url`` at it. The load generator is ``wrk`` when
installed, else Python clients in separate processes (then the client competes for the
same cores; wrk does too, less). Bounded: a few seconds per run.

Run: ``python -m loadtests.bench_workers [--seconds 5] [--concurrency 64]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from loadtests.bench_hit import fetch
from loadtests.common import free_port, rps, start_process

WEAVER = (sys.executable, "-m", "weaver.proxy.cli")
PAGE = b"<!doctype html><p>" + b"cached page " * 1700 + b"</p>"


def origin_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(
            body=PAGE, content_type="text/html", headers={"Cache-Control": "max-age=3600"}
        )

    app = web.Application()
    app.router.add_get("/page", page)
    return app


def _serve(config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*WEAVER, "--log-level", "WARNING", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "serving on " in line:
            return proc, line.split("serving on ", 1)[1].split()[0].rstrip("/")
    raise RuntimeError("weaver serve did not start")


def _run(
    workers: int, origin_port: int, redis_url: str, tmp: Path, seconds: float, c: int
) -> float:
    config = tmp / f"weaver-{workers}.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\nworkers = {workers}\naccess_log = "off"\n'
        f'[session]\nlisten = "127.0.0.1:0"\nsecret = "{"s" * 64}"\n'
        + (f'[bus]\nurl = "{redis_url}"\n' if workers > 1 else "")
        + f'[cache]\ndir = "{tmp / f"cache-{workers}"}"\n'
        f'[[origin]]\nname = "o"\nurl = "http://127.0.0.1:{origin_port}"\n'
        '[[route]]\npath = "/"\norigin = "o"\n'
    )
    proc, url = _serve(config)
    try:
        url += "/page"
        assert fetch(url)[0] == PAGE
        for _ in range(2 * workers):  # each worker's memory tier gets it
            fetch(url)
        rps(url, 1, c)  # warm-up
        return rps(url, seconds, c)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    redis = shutil.which("redis-server")
    if redis is None:
        raise SystemExit("bench_workers needs redis-server for workers = 2 (apt-get install)")
    origin_port = free_port()
    origin = start_process(origin_app, origin_port)
    redis_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc = subprocess.Popen(
            [redis, "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
        )
        try:
            results = {
                n: _run(
                    n,
                    origin_port,
                    f"redis://127.0.0.1:{redis_port}",
                    Path(tmp),
                    args.seconds,
                    args.concurrency,
                )
                for n in (1, 2)
            }
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)
            origin.kill()
    tool = "wrk" if shutil.which("wrk") else "python clients"
    print(f"cache-hit req/s, 20 KB page, {tool}, c={args.concurrency}, cores={os.cpu_count()}")
    for n, value in results.items():
        print(f"  workers = {n}: {value:10.0f} req/s")
    print(f"  ratio 2/1: {results[2] / results[1]:.2f}")


if __name__ == "__main__":
    main()
