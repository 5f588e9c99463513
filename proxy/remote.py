"""``weaver purge``, ``weaver publish`` and ``weaver warm``: commands that ask a running
Weaver over HTTP and print what it answered; each returns the process's exit code."""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time

from weaver.config.schema import Config


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
