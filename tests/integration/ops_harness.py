"""``weaver serve`` as a real subprocess, its output read line by line; a real Redis."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Lines:
    """Every line a stream printed so far; :meth:`wait_for` waits on the next match."""

    seen: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    closed: bool = False

    async def read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            async with self.changed:
                self.seen.append(raw.decode(errors="replace").rstrip("\n"))
                self.changed.notify_all()
        async with self.changed:
            self.closed = True
            self.changed.notify_all()

    async def wait_for(self, match: Callable[[str], bool], *, after: int = 0) -> str:
        """The first line from index ``after`` on that matches (waits for it)."""
        async with self.changed:
            while True:
                for line in self.seen[after:]:
                    if match(line):
                        return line
                if self.closed:
                    raise AssertionError("output ended without the line; got:\n" + self.text)
                await self.changed.wait()

    @property
    def text(self) -> str:
        return "\n".join(self.seen)


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    url: str
    out: Lines
    err: Lines

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)


@asynccontextmanager
async def weaver_serve(config: Path, *, env: dict[str, str] | None = None) -> AsyncIterator[Served]:
    """``weaver serve --config config``; yields once it prints "serving on"; SIGTERM at
    the end (unless the test stopped it) and asserts a clean exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "weaver.proxy.cli",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(), Lines()
    async with asyncio.TaskGroup() as readers:
        readers.create_task(out.read(proc.stdout))
        readers.create_task(err.read(proc.stderr))
        try:
            line = await out.wait_for(lambda s: "serving on " in s)
            url = line.split("serving on ", 1)[1].split()[0].rstrip("/")
            yield Served(proc, url, out, err)
        finally:
            if proc.returncode is None:
                proc.terminate()
            code = await proc.wait()
    assert code == 0, err.text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (no persistence); yields its redis:// URL."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is needed (apt-get install redis-server)"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:  # its log says when it accepts connections
            if b"Ready to accept connections" in raw:
                break
        else:
            raise AssertionError("redis-server did not start")
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
