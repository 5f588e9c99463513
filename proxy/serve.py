"""``weaver serve`` and ``weaver demo``: Weaver in this process, until a signal stops it."""

from __future__ import annotations

import asyncio
import secrets
import signal

from aiohttp import web

from weaver.config.load import build_config
from weaver.config.schema import Config, ServerConfig
from weaver.proxy import worker
from weaver.proxy.app import build_app, lane_front, page_front
from weaver.proxy.demo.origin import build_origin
from weaver.proxy.listener import EdgeRunner
from weaver.proxy.node import Node
from weaver.proxy.supervisor import supervise


def run(main: asyncio.Future[None] | object) -> None:
    """Run ``main`` on the worker's event loop (uvloop if present) until it ends."""
    worker.run(lambda: main)


async def until_signal() -> None:
    """Return on SIGINT or SIGTERM (the handlers are removed again)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def start_site(
    app: web.Application, host: str, port: int, server: ServerConfig | None = None
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on host:port (0 picks a free port); return the runner and the port.

    With ``server``, the listener has its limits (header and keep-alive timeouts, head
    sizes, the drain deadline on shutdown): see :mod:`weaver.proxy.listener`.
    """
    if server is not None:
        runner: web.AppRunner = EdgeRunner(app, server, front=lane_front, pages=page_front)
    else:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server  # aiohttp exposes the bound socket only here
    sockets = getattr(bound, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else port


def serve_command(path: str, config: Config) -> None:
    """``weaver serve``: one process, or a supervisor and ``server.workers`` workers.

    ``config`` is what ``path`` held when checked; workers load ``path`` again.
    """
    if config.server.workers > 1:
        supervise(path, config)
        return

    def announce(node: Node) -> None:
        listen = node.config.server.listen
        print(  # noqa: T201
            f"weaver: serving on {node.scheme}://{listen.host}:{node.http_port}/", flush=True
        )

    load = worker.loader(path)
    run(worker.serve_file(load, reuse_port=False, announce=announce))


DEMO_TOKEN = "demo"


def demo_config(origin_port: int, listen: str) -> Config:
    host, _, port = listen.rpartition(":")
    session_port = int(port) + 1 if port.isdigit() and int(port) else 0
    return build_config(
        {
            "server": {"listen": listen},
            "session": {
                "listen": f"{host}:{session_port}",
                "secret": secrets.token_hex(16),  # a demo: sessions last one run
                "publish_token": DEMO_TOKEN,
            },
            "origin": [
                {"name": "demo", "url": f"http://127.0.0.1:{origin_port}", "events": "/_events"}
            ],
            "route": [
                # Pages: one shared paint for everyone; personal parts are suspense.
                {
                    "path": "/",
                    "origin": "demo",
                    "ttl": "10s",
                    "fragment_timeout": "500ms",
                    "shared": True,
                },
                # The same page with its slots inline: they follow the paint in the
                # same response, no WebSocket needed for the first view.
                {
                    "path": "/inline-demo",
                    "origin": "demo",
                    "ttl": "10s",
                    "fragment_timeout": "500ms",
                    "shared": True,
                    "suspense_delivery": "inline",
                },
                # The app's own account and API: passed through with the visitor's
                # cookies (shared = false, the default).
                {"path": "/account", "origin": "demo"},
                {"path": "/api", "origin": "demo"},
            ],
        },
        "<demo>",
    )


async def demo(listen: str) -> None:
    """The bundled demo origin behind Weaver, on the embedded defaults."""
    origin_runner, origin_port = await start_site(build_origin(), "127.0.0.1", 0)
    try:
        config = demo_config(origin_port, listen)
        runner, port = await start_site(
            build_app(config), config.server.listen.host, config.server.listen.port, config.server
        )
        try:
            host = config.server.listen.host
            print(f"weaver demo: origin on http://127.0.0.1:{origin_port}/", flush=True)  # noqa: T201
            print(f"weaver demo: open http://{host}:{port}/  (Ctrl-C stops)", flush=True)  # noqa: T201
            print(  # noqa: T201
                "weaver demo: push a flash sale from another terminal:\n"
                f"  weaver publish --url http://{host}:{port}/_weaver/publish --token "
                f"{DEMO_TOKEN} --channel deals --data "
                '\'{"html": "<b>Flash sale: wool socks -50%</b>"}\'',
                flush=True,
            )
            await until_signal()
        finally:
            await runner.cleanup()
    finally:
        await origin_runner.cleanup()
    print("weaver demo: stopped", flush=True)  # noqa: T201
