"""A real ``weaver serve`` process for tests: started, its URL read from its first line."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


async def spawn_serve(config: Path) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``weaver serve --config config`` (warnings only on stderr); return the
    process and its base URL, read from its "serving on" line (within 30 s)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "weaver.proxy.cli",
        "--log-level",
        "WARNING",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    assert "serving on " in line, line
    return proc, line.split("serving on ", 1)[1].strip().rstrip("/")
