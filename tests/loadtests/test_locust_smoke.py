"""The locust scenarios run, briefly, against a real ``weaver demo``: they cannot rot.

Locust runs as a subprocess (pytest runs with ``-p no:locust``: its gevent monkey patch
must not enter this process), on loopback ports, for five seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

LOCUSTFILE = Path(__file__).parents[2] / "loadtests" / "locustfile.py"


def free_port_pair() -> int:
    """A free port P with P + 1 free too (``weaver demo`` puts the session on P + 1)."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports")


async def _drain(stream: asyncio.StreamReader) -> bytes:
    return await stream.read()


async def test_the_mixed_locust_scenario_runs_against_the_demo_without_failures(
    tmp_path: Path,
) -> None:
    port = free_port_pair()
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "weaver.proxy.cli",
        "--log-level",
        "WARNING",
        "demo",
        "--listen",
        f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert demo.stdout is not None
    try:
        async with asyncio.timeout(90), asyncio.TaskGroup() as tasks:
            banner = b""
            while b"open http://" not in banner:
                line = await demo.stdout.readline()
                assert line, f"weaver demo exited before serving: {banner.decode()}"
                banner += line
            demo_output = tasks.create_task(_drain(demo.stdout))
            locust = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(LOCUSTFILE),
                "--headless",
                "-u",
                "6",
                "-r",
                "6",
                "-t",
                "5s",
                "--stop-timeout",
                "5",
                "--host",
                f"http://127.0.0.1:{port}",
                "--json",
                "--skip-log",
                env={**os.environ, "WEAVER_PUBLISH_TOKEN": "demo"},
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await locust.communicate()
            demo.terminate()
    finally:
        if demo.returncode is None:
            demo.kill()
        await demo.wait()
    assert locust.returncode == 0, err.decode()[-3000:]
    stats = json.loads(out)
    failures = {f"{s['method']} {s['name']}": s["num_failures"] for s in stats}
    assert {name: n for name, n in failures.items() if n} == {}, demo_output.result().decode()
    names = set(failures)
    assert {
        "GET / [first visit]",
        "GET / [session]",
        "GET /_weaver/client.js",
        "WS hello",
        "WS slot /fragments/cart",
        "POST /_weaver/publish",
    } <= names, names
    assert any(name.endswith(" [cached]") for name in names), names
    assert any(name.startswith("WS message ") for name in names), names
