"""The ``weaver`` command: serve, check, demo, purge, publish, warm.

This module parses the command line, checks a config (``weaver check``) and hands each
other command to its module: :mod:`weaver.proxy.serve` (serve, demo) and
:mod:`weaver.proxy.remote` (purge, publish, warm).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from weaver.config.errors import WeaverError
from weaver.config.load import load_config, parse_host_port
from weaver.config.schema import Config
from weaver.proxy import worker
from weaver.proxy.remote import publish_command, purge_command, warm_cli
from weaver.proxy.serve import demo, run, serve_command
from weaver.proxy.session_secret import secret_path

log = logging.getLogger(__name__)

_DESCRIPTION = "The ``weaver`` command: serve, check, demo, purge, publish, warm."


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
    parser = argparse.ArgumentParser(prog="weaver", description=_DESCRIPTION)
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
        serve_command(args.config, _load_or_exit(args.config))
    elif args.command == "demo":
        try:
            parse_host_port(args.listen)
        except ValueError as exc:
            parser.error(f"--listen: {exc}")
        run(demo(args.listen))
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
