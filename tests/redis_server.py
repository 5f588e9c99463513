"""A real redis-server for the tests: a free port on 127.0.0.1, its own directory, no
persistence (``--save '' --appendonly no``). It can be killed and started again on the
same port (an outage, then recovery)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is missing: scripts/test.sh installs it"
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on :attr:`port`; returns once the server says it accepts connections."""
        assert self.proc is None
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                "",
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        seen = []
        for line in self.proc.stdout:  # readiness is a line on its log, not a sleep
            seen.append(line)
            if b"Ready to accept connections" in line:
                self.proc.stdout.close()
                return
        raise RuntimeError(f"redis-server did not start: {b''.join(seen).decode()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL, as a crash: every connection drops at once."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(64).startswith(b"+OK")

    def ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            self.start()
