"""Serve one config in this process until SIGTERM; SIGHUP reloads the config file.

``weaver serve`` with one worker runs :func:`serve_file` itself; with several, the
supervisor starts each worker as ``python -m weaver.proxy.worker`` with the ports it
reserved (see :mod:`weaver.proxy.supervisor`).

A reload validates the file first: a bad one is refused with the same ``file: key:``
messages as ``weaver check``, logged, and the old config keeps serving.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable, Sequence

from weaver.config.errors import ConfigError, WeaverError
from weaver.config.load import load_config
from weaver.config.schema import Config, HostPort
from weaver.proxy import collector
from weaver.proxy.node import Node
from weaver.proxy.session_secret import with_session_secret

log = logging.getLogger(__name__)

READY = "weaver-worker: ready"


class NothingToServe(WeaverError):
    pass


def check_servable(config: Config) -> None:
    """Raises NothingToServe for a config with no origin or no route (an empty file)."""
    missing = [
        what
        for what, items in (("[[origin]]", config.origins), ("[[route]]", config.routes))
        if not items
    ]
    if missing:
        raise NothingToServe(
            f"{config.source}: no {' and no '.join(missing)}: nothing to serve (add an "
            '[[origin]] with name and url, and a [[route]] with path = "/" and that origin)'
        )


def is_single_node(config: Config) -> bool:
    return config.server.workers == 1 and config.bus.url.startswith("memory://")


def pinned(config: Config, http_port: int | None, session_port: int | None) -> Config:
    """``config`` with the listen ports a supervisor reserved (where the file says 0)."""
    server, session = config.server, config.session
    if http_port is not None and server.listen.port == 0:
        server = dataclasses.replace(server, listen=HostPort(server.listen.host, http_port))
    if session_port is not None and session.listen.port == 0:
        session = dataclasses.replace(session, listen=HostPort(session.listen.host, session_port))
    return dataclasses.replace(config, server=server, session=session)


def loader(
    path: str, http_port: int | None = None, session_port: int | None = None
) -> Callable[[], Config]:
    """Reads, validates and completes the config at ``path`` (blocking: before serving).

    Raises (when called): ConfigError, NothingToServe, OSError (the secret file).
    """

    def load() -> Config:
        config = pinned(load_config(path), http_port, session_port)
        check_servable(config)
        return with_session_secret(config) if is_single_node(config) else config

    return load


async def serve_file(
    load: Callable[[], Config], *, reuse_port: bool, announce: Callable[[Node], None]
) -> None:
    """Serve what ``load`` returns until SIGINT/SIGTERM (a drain); SIGHUP reloads."""
    node = Node(load(), reuse_port=reuse_port)
    await node.start()
    loop = asyncio.get_running_loop()
    stop, hup = asyncio.Event(), asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    try:
        announce(node)
        while not stop.is_set():
            async with asyncio.TaskGroup() as waits:
                stopped = waits.create_task(stop.wait())
                hupped = waits.create_task(hup.wait())
                await asyncio.wait({stopped, hupped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                hupped.cancel()
            if hup.is_set() and not stop.is_set():
                hup.clear()
                await reload(node, load)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        log.info("draining (server.drain_timeout = %.1f s)", node.config.server.drain_timeout_s)
        await node.stop()


async def reload(node: Node, load: Callable[[], Config]) -> bool:
    """Validate and apply the config file; on any problem keep the old one (logged)."""
    try:
        new = await asyncio.to_thread(load)
        if new.server.workers != node.config.server.workers:
            raise NothingToServe(
                f"{new.source}: server.workers: changed from {node.config.server.workers} "
                f"to {new.server.workers}; restart weaver to apply"
            )
        await node.reload(new)
    except (WeaverError, OSError) as exc:
        for line in str(exc).splitlines():
            log.error("reload refused: %s", line)
        log.error("reload refused: still serving %s as before", node.config.source)
        return False
    return True


def run(main: Callable[[], object]) -> None:
    """Run a coroutine function on uvloop (asyncio's loop where uvloop is missing), with
    the collector tuned for serving (:mod:`weaver.proxy.collector`)."""
    collector.tune_for_serving()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we run
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())  # type: ignore[arg-type]  # a coroutine


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m weaver.proxy.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--session-port", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    def announce(node: Node) -> None:
        print(READY, flush=True)  # noqa: T201  # the supervisor waits for this line

    try:
        load = loader(args.config, args.http_port, args.session_port)
        run(lambda: serve_file(load, reuse_port=True, announce=announce))
    except (ConfigError, WeaverError, OSError) as exc:
        log.error("weaver worker: %s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
