"""The ``weaver`` command: serve, check, demo, purge, publish, warm."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
import threading
import time
from collections.abc import Sequence

from aiohttp import web

from weaver.config.errors import WeaverError
from weaver.config.load import build_config, load_config, parse_host_port
from weaver.config.schema import Config, ServerConfig
from weaver.proxy import worker
from weaver.proxy.app import build_app, lane_front
from weaver.proxy.demo.origin import build_origin
from weaver.proxy.listener import EdgeRunner
from weaver.proxy.node import Node
from weaver.proxy.session_secret import secret_path
from weaver.proxy.supervisor import supervise

log = logging.getLogger(__name__)


def _run(main: asyncio.Future[None] | object) -> None:
    worker.run(lambda: main)


async def _until_signal() -> None:
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
        runner: web.AppRunner = EdgeRunner(app, server, front=lane_front)
    else:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server  # aiohttp exposes the bound socket only here
    sockets = getattr(bound, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else port


def serve_command(path: str) -> None:
    """``weaver serve``: one process, or a supervisor and ``server.workers`` workers."""
    config = _load_or_exit(path)
    if config.server.workers > 1:
        supervise(path, config)
        return

    def announce(node: Node) -> None:
        listen = node.config.server.listen
        print(  # noqa: T201
            f"weaver: serving on {node.scheme}://{listen.host}:{node.http_port}/", flush=True
        )

    load = worker.loader(path)
    _run(worker.serve_file(load, reuse_port=False, announce=announce))


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
            await _until_signal()
        finally:
            await runner.cleanup()
    finally:
        await origin_runner.cleanup()
    print("weaver demo: stopped", flush=True)  # noqa: T201


def _load_or_exit(path: str) -> Config:
    try:
        config = load_config(path)
        worker.check_servable(config)
    except WeaverError as exc:
        print(str(exc), file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None
    return config


def _summary(config: Config) -> str:
    server, session = config.server, config.session
    http = "https" if server.is_tls else "http"
    ws = "wss" if session.tls_cert else "ws"
    lines = [f"{config.source}: ok"]
    lines.append(
        f"  server  {http}://{server.listen}  session {ws}://{session.listen}  "
        f"workers {server.workers}  access log {server.access_log}"
    )
    lines.append(f"  cache   {config.cache.dir} ({config.cache.max_size_bytes} bytes)")
    lines.append(f"  bus     {config.bus.url}")
    if session.secret:
        lines.append("  secret  session.secret is set")
    else:
        path = secret_path(config)
        lines.append(f"  secret  generated once in {path} (this node only; set session.secret")
        lines.append("          to share sessions between nodes)")
    for origin in config.origins:
        lines.append(f"  origin  {origin.name} -> {origin.url}")
    for route in config.routes:
        shared = "shared" if route.shared else "per visitor"
        websocket = "websocket on" if route.is_upgrade_allowed else "websocket off"
        lines.append(
            f"  route   {route.path} -> {route.origin} ({route.include_mode}, {shared}, "
            f"{websocket}, {len(route.includes)} include rule(s))"
        )
    return "\n".join(lines)


def purge_command(config: Config, args: argparse.Namespace) -> int:
    """``weaver purge``: ask the running server to purge (so every node's bus gets it)."""
    body: dict[str, object] = {}
    if args.tag:
        body["tags"] = args.tag
    if args.prefix:
        body["prefix"] = args.prefix
    if args.key:
        body["keys"] = args.key
    if args.url:
        body["urls"] = args.url
    if args.soft:
        body["soft"] = True
    if not (args.tag or args.prefix or args.key or args.url):
        print("weaver purge: give --url, --prefix, --tag or --key", file=sys.stderr)  # noqa: T201
        return 2
    endpoint = args.endpoint or f"http://{config.server.listen}/_weaver/purge"
    started = time.monotonic()
    answer: dict[str, object] = {}
    code = _post_purge(endpoint, body, args.token or config.session.publish_token, answer)
    purged = answer.get("purged")
    if code == 0 and isinstance(purged, int):
        noun = "entry" if purged == 1 else "entries"
        print(  # noqa: T201
            f"weaver purge: {purged} {noun} removed in {time.monotonic() - started:.2f}s",
            flush=True,
        )
    return code


def publish_command(config: Config, args: argparse.Namespace) -> int:
    """``weaver publish``: push a message to a channel or one session on a running server."""
    import json

    try:
        data = json.loads(args.data)
    except ValueError as exc:
        print(f"weaver publish: --data is not JSON: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    body: dict[str, object] = {"data": data}
    if args.channel:
        body["channel"] = args.channel
    elif args.session:
        body["session"] = args.session
    else:
        print("weaver publish: give --channel or --session", file=sys.stderr)  # noqa: T201
        return 2
    url = args.url or f"http://{config.server.listen}/_weaver/publish"
    return _post_json(url, body, args.token or config.session.publish_token)


def _post_json(
    url: str, body: dict[str, object], token: str, *, answer: dict[str, object] | None = None
) -> int:
    """POST ``body`` with the bearer token; print the answer; 0 on 2xx, 1 otherwise.

    ``answer`` receives the decoded JSON object of a 2xx answer. On a terminal, a line
    says how long the server has been at it while the answer is awaited (a large purge
    is one call).
    """
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    waiting = threading.Event()
    ticker = None
    if sys.stderr.isatty():
        ticker = threading.Thread(target=_tick, args=(waiting, url), daemon=True)
        ticker.start()
    try:
        with urllib.request.urlopen(request, timeout=300) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read().decode()}", file=sys.stderr)  # noqa: T201
        return 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        waiting.set()
        if ticker is not None:
            ticker.join()
    print(text)  # noqa: T201
    if answer is not None:
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            answer.update(decoded)
    return 0


def _post_purge(url: str, body: dict[str, object], token: str, answer: dict[str, object]) -> int:
    """POST a purge asking for progress as it goes (one JSON line per batch, then the
    answer); report the batches on stderr and print the answer; 0 on 2xx, 1 otherwise."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/x-ndjson",
        },
        method="POST",
    )
    last = ""
    try:
        with urllib.request.urlopen(request, timeout=300) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if not line:
                    continue
                decoded = json.loads(line)
                if isinstance(decoded, dict) and "done" in decoded:
                    end = "\n" if not sys.stderr.isatty() else ""
                    print(  # noqa: T201
                        f"\rweaver purge: {decoded['done']}/{decoded['of']} entries",
                        end=end,
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
                last = line
                if isinstance(decoded, dict):
                    answer.update(decoded)
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read().decode()}", file=sys.stderr)  # noqa: T201
        return 1
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    if sys.stderr.isatty():
        print(file=sys.stderr)  # noqa: T201
    print(last)  # noqa: T201
    return 0


def _tick(done: threading.Event, url: str) -> None:
    """``waiting for …: 3s`` on a terminal, rewritten each second until ``done``."""
    started = time.monotonic()
    while not done.wait(1.0):
        elapsed = time.monotonic() - started
        print(f"\rwaiting for {url}: {elapsed:.0f}s", end="", file=sys.stderr, flush=True)  # noqa: T201
    if time.monotonic() - started >= 1.0:
        print(file=sys.stderr)  # noqa: T201


def warm_cli(config: Config, args: argparse.Namespace) -> int:
    """``weaver warm``: fill the cache for a list of pages (:mod:`weaver.proxy.warm`)."""
    from weaver.config.units import parse_duration
    from weaver.proxy.warm import WarmError, read_url_list, warm_command

    if bool(args.urls) == bool(args.sitemap):
        print("weaver warm: give --urls FILE or --sitemap URL", file=sys.stderr)  # noqa: T201
        return 2
    if args.concurrency < 1:
        print("weaver warm: --concurrency must be at least 1", file=sys.stderr)  # noqa: T201
        return 2
    try:
        timeout_s = parse_duration(args.timeout)
    except ValueError as exc:
        print(f"weaver warm: --timeout: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    endpoint = args.endpoint or f"http://{config.server.listen}"
    urls = None
    if args.urls:
        try:
            with open(args.urls, encoding="utf-8") as file:
                urls = read_url_list(file.read())
        except OSError as exc:
            print(f"weaver warm: --urls {args.urls}: {exc.strerror or exc}", file=sys.stderr)  # noqa: T201
            return 2
    try:
        return asyncio.run(
            warm_command(
                endpoint,
                urls=urls,
                sitemap=args.sitemap,
                concurrency=args.concurrency,
                timeout_s=timeout_s,
                out=sys.stdout,
                is_tty=sys.stdout.isatty(),
            )
        )
    except WarmError as exc:
        print(f"weaver warm: {exc}", file=sys.stderr)  # noqa: T201
        return 1


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: one clear line and a non-zero exit for an operator's mistake."""
    try:
        _main(argv)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except (WeaverError, OSError) as exc:
        print(f"weaver: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(1) from None


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="weaver", description=__doc__)
    parser.add_argument("--version", action="version", version=f"weaver {_version()}")
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_p = commands.add_parser("serve", help="serve a config")
    serve_p.add_argument("--config", default="weaver.toml")
    check_p = commands.add_parser("check", help="validate a config and print every error")
    check_p.add_argument("--config", default="weaver.toml")
    demo_p = commands.add_parser("demo", help="the bundled demo origin behind Weaver")
    demo_p.add_argument("--listen", default="127.0.0.1:8080")
    purge_p = commands.add_parser("purge", help="purge cached entries on a running server")
    purge_p.add_argument("--config", default="weaver.toml")
    purge_p.add_argument("--endpoint", help="the purge endpoint (default: server.listen)")
    purge_p.add_argument(
        "--url",
        action="append",
        default=[],
        help="every stored variant of this URL (http://host/path?q, or /path?q on any host)",
    )
    purge_p.add_argument("--prefix", help="every path under this one, by segments")
    purge_p.add_argument("--tag", action="append", default=[])
    purge_p.add_argument("--key", action="append", default=[])
    purge_p.add_argument("--soft", action="store_true", help="mark stale instead of delete")
    purge_p.add_argument("--token", help="the publish token (default: the config's)")
    publish_p = commands.add_parser("publish", help="push a message to a channel or session")
    publish_p.add_argument("--config", default="weaver.toml")
    publish_p.add_argument("--url", help="the publish endpoint (default: server.listen)")
    publish_p.add_argument("--channel")
    publish_p.add_argument("--session")
    publish_p.add_argument("--data", required=True, help="the message, as JSON")
    publish_p.add_argument("--token", help="the publish token (default: the config's)")
    warm_p = commands.add_parser("warm", help="fill the cache for a list of pages")
    warm_p.add_argument("--config", default="weaver.toml")
    warm_p.add_argument("--urls", metavar="FILE", help="a file of URLs, one per line")
    warm_p.add_argument("--sitemap", metavar="URL", help="a sitemap (or sitemap index)")
    warm_p.add_argument("--endpoint", help="Weaver's base URL (default: server.listen)")
    warm_p.add_argument("--concurrency", type=int, default=8, help="pages at once (8)")
    warm_p.add_argument("--timeout", default="30s", help="per page (30s)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    if args.command == "check":
        config = _load_or_exit(args.config)
        print(_summary(config))  # noqa: T201
    elif args.command == "serve":
        serve_command(args.config)
    elif args.command == "demo":
        try:
            parse_host_port(args.listen)
        except ValueError as exc:
            parser.error(f"--listen: {exc}")
        _run(demo(args.listen))
    elif args.command == "warm":
        # With --endpoint no config file is needed.
        config = Config() if args.endpoint else _load_or_exit(args.config)
        raise SystemExit(warm_cli(config, args))
    elif args.command in ("publish", "purge"):
        # With --url and --token no config file is needed (e.g. against the demo).
        config = Config() if args.url and args.token else _load_or_exit(args.config)
        command = publish_command if args.command == "publish" else purge_command
        raise SystemExit(command(config, args))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("weaver-edge")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


if __name__ == "__main__":
    main()
