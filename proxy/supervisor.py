"""``server.workers = N``: N worker processes sharing the listeners, and their parent.

The parent reserves each listener's port with an ``SO_REUSEPORT`` socket that it binds
until the workers listen (so port 0 resolves once and a busy port fails here with one
clear line; then the workers hold the port, and a restarted worker binds it again); each
worker (``python -m
weaver.proxy.worker``) opens its own listening sockets on those ports with
``SO_REUSEPORT``, and the kernel spreads new connections over them. Each worker runs its
own uvloop loop.

The parent restarts a worker that dies (logged; the delay doubles from 0.5 s up to 30 s
while workers die within 10 s of starting), forwards SIGTERM/SIGINT (every worker
drains, then the parent exits 0) and SIGHUP (validated here first: a bad file is
refused with its ``file: key:`` messages and no worker is touched). Metrics: the parent
makes ``PROMETHEUS_MULTIPROC_DIR`` a fresh temporary directory for the workers and
removes it on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass

from prometheus_client import multiprocess

from weaver.config.errors import WeaverError
from weaver.config.schema import Config
from weaver.proxy.metrics import MULTIPROC_ENV
from weaver.proxy.node import open_listener
from weaver.proxy.worker import READY, check_servable, loader

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 10.0  # a worker that lived this long restarts without delay


class WorkerFailed(WeaverError):
    """The first start of a worker failed (its error is in the log above)."""


@dataclass(slots=True)
class _Slot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    delay_s: float = 0.0


class Supervisor:
    """The parent of ``config.server.workers`` workers serving the file at ``path``."""

    def __init__(self, path: str, config: Config) -> None:
        self.path = path
        self.config = config
        self.slots = [_Slot(i) for i in range(config.server.workers)]
        self._stopping = False
        self._reserved: list[socket.socket] = []
        self.http_port = 0
        self.session_port = 0
        self._env = dict(os.environ)
        self._metrics_dir = ""
        self._log_level = logging.getLevelName(logging.getLogger().level)

    def reserve(self) -> None:
        """Bind the listeners' ports (reuse_port, not listening).

        Raises:
            ListenError: a port is taken by another program, or the address is not local.
        """
        http = open_listener(self.config.server.listen, key="server.listen", reuse_port=True)
        self._reserved.append(http)
        self.http_port = http.getsockname()[1]
        if self.config.session.secret:
            session = open_listener(
                self.config.session.listen, key="session.listen", reuse_port=True
            )
            self._reserved.append(session)
            self.session_port = session.getsockname()[1]

    async def run(self) -> None:
        """Start the workers, keep them running, until SIGTERM/SIGINT; then drain them."""
        metrics_dir = self._metrics_dir = tempfile.mkdtemp(prefix="weaver-metrics-")
        self._env[MULTIPROC_ENV] = metrics_dir
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            async with asyncio.TaskGroup() as tasks:
                ready = [asyncio.Event() for _ in self.slots]
                keepers = [tasks.create_task(self._keep(s, ready[s.index])) for s in self.slots]
                waiting = tasks.create_task(_all_set(ready))
                stopped = tasks.create_task(stop.wait())
                await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if waiting.done() and not stop.is_set():
                    self._release()
                    scheme = "https" if self.config.server.is_tls else "http"
                    host = self.config.server.listen.host
                    print(  # noqa: T201
                        f"weaver: serving on {scheme}://{host}:{self.http_port}/ "
                        f"({len(self.slots)} workers)",
                        flush=True,
                    )
                await stopped
                waiting.cancel()
                self._stopping = True
                log.info("stopping: every worker drains")
                self._signal_all(signal.SIGTERM)
                await asyncio.gather(*keepers)
        finally:
            self._stopping = True
            self._signal_all(signal.SIGTERM)  # a failed start: no worker outlives us
            for slot in self.slots:
                if slot.proc is not None:
                    await slot.proc.wait()
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self._release()
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _release(self) -> None:
        """Close the reservations once the workers listen: the kernel counts a bound
        SO_REUSEPORT socket in the port's group, so it would get (and drop) connections."""
        for sock in self._reserved:
            sock.close()
        self._reserved.clear()

    def is_stopping(self) -> bool:
        return self._stopping

    def _on_hup(self) -> None:
        try:
            new = loader(self.path)()
            check_servable(new)
            if new.server.workers != self.config.server.workers:
                raise WeaverError(
                    f"{new.source}: server.workers: changed from {self.config.server.workers}"
                    f" to {new.server.workers}; restart weaver to apply"
                )
        except (WeaverError, OSError) as exc:
            for line in str(exc).splitlines():
                log.error("reload refused: %s", line)
            log.error("reload refused: the workers keep serving %s as before", self.path)
            return
        log.info("reloading %s in every worker", self.path)
        self.config = new
        self._signal_all(signal.SIGHUP)

    def _signal_all(self, signum: signal.Signals) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signum)

    async def _keep(self, slot: _Slot, ready: asyncio.Event) -> None:
        """Run the worker of ``slot``; restart it when it dies, until stopping."""
        while not self._stopping:
            if slot.delay_s:
                log.warning("worker %d: restarting in %.1f s", slot.index, slot.delay_s)
                await asyncio.sleep(slot.delay_s)
                if self.is_stopping():
                    return
            started = time.monotonic()
            proc = slot.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "weaver.proxy.worker",
                "--config",
                self.path,
                "--http-port",
                str(self.http_port),
                "--session-port",
                str(self.session_port),
                "--log-level",
                self._log_level,
                stdout=asyncio.subprocess.PIPE,
                env=self._env,
            )
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                if line == READY:
                    print(f"weaver: worker {slot.index} pid {proc.pid} ready", flush=True)  # noqa: T201
                    ready.set()
                else:
                    print(line, flush=True)  # noqa: T201  # the worker's access log
            code = await proc.wait()
            multiprocess.mark_process_dead(proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]  # unannotated
            if self.is_stopping():
                log.info("worker %d (pid %d) stopped (%d)", slot.index, proc.pid, code)
                return
            how = f"signal {-code}" if code < 0 else f"code {code}"
            if not ready.is_set() and code > 0:
                raise WorkerFailed(f"worker {slot.index} could not start ({how}): see above")
            log.error("worker %d (pid %d) died (%s)", slot.index, proc.pid, how)
            lived_s = time.monotonic() - started
            quick = min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, 2 * slot.delay_s))
            slot.delay_s = 0.0 if lived_s >= HEALTHY_AFTER_S else quick


async def _all_set(events: list[asyncio.Event]) -> None:
    for event in events:
        await event.wait()


def supervise(path: str, config: Config) -> None:
    """``weaver serve`` with ``server.workers > 1``; returns when every worker stopped."""
    supervisor = Supervisor(path, config)
    supervisor.reserve()
    try:
        asyncio.run(supervisor.run())
    except* WorkerFailed as group:
        raise group.exceptions[0] from None
