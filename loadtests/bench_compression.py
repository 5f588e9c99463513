"""bench_compression: bytes on the wire and req/s of a 20 KB cached page, by coding.

A real Weaver (a child process, memory tier on) in front of a real origin, both on
127.0.0.1. The page is filled once and each coding's variant made once; then each
``Accept-Encoding`` is loaded in turn with ``wrk`` when installed (``apt-get install
wrk``), else with Python clients in separate processes. Printed: the body and response
size per coding (its ratio to identity), req/s and the bytes per second sent, and what
making each variant once cost in this process. Bounded: ``--duration`` seconds per coding.

Run: ``python -m loadtests.bench_compression [--duration 5] [--concurrency 64]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import urllib.request

from aiohttp import web

from loadtests.common import free_port, rps, start_process
from weaver.config.load import build_config
from weaver.proxy.app import build_app
from weaver.proxy.compressors import AVAILABLE, Encoding, compress_whole

CACHE = {"Cache-Control": "max-age=3600"}
ACCEPTS = {"identity": "identity", "gzip": "gzip", "br": "gzip, br", "zstd": "zstd"}


def page(size: int = 20 * 1024) -> bytes:
    """A shop listing of ``size`` bytes: markup that repeats, text and numbers that vary."""
    items = []
    for i in range(size // 60):
        items.append(
            f'<li class="product" data-id="{i * 7919 % 100003}"><a href="/p/{i}">'
            f'<img src="/img/{i * 31 % 997}.jpg" alt="Item {i}"><h2>Handmade item {i}</h2>'
            f'</a><p class="price">{i * 37 % 500}.{i % 100:02d} EUR</p></li>\n'
        )
    text = "<!doctype html><html><head><title>Shop</title></head><body><ul>" + "".join(items)
    return text.encode()[:size]


PAGE = page()


def origin_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html", headers=CACHE)

    app = web.Application()
    app.router.add_get("/p20", handler)
    return app


def weaver_app(origin_port: int, cache_dir: str) -> web.Application:
    config = build_config(
        {
            "cache": {"dir": cache_dir, "memory_size": "64MiB"},
            "origin": [{"name": "o", "url": f"http://127.0.0.1:{origin_port}"}],
            "route": [{"path": "/", "origin": "o"}],
        },
        "<bench>",
    )
    return build_app(config)


def fetch(url: str, accept: str) -> tuple[bytes, int, str, str]:
    """The body as sent (not decoded), the header block's size, X-Weaver-Cache, coding."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": accept})
    with urllib.request.urlopen(request, timeout=10) as resp:
        body = resp.read()
        header_bytes = len(f"HTTP/1.1 {resp.status} {resp.reason}\r\n") + len(bytes(resp.headers))
        cache = resp.headers.get("X-Weaver-Cache", "")
        return body, header_bytes, cache, resp.headers.get("Content-Encoding", "identity")


def make_cost_ms(encoding: Encoding, rounds: int = 20) -> float:
    """What making one variant of the page costs, here, in milliseconds (median)."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        compress_whole(PAGE, encoding)
        samples.append(time.perf_counter() - started)
    return sorted(samples)[len(samples) // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    codings = ["identity", *(e.value for e in AVAILABLE if e is not Encoding.ZSTD)]
    if Encoding.ZSTD in AVAILABLE:
        codings.append("zstd")
    origin_port, weaver_port = free_port(), free_port()
    procs = [start_process(origin_app, origin_port)]
    with tempfile.TemporaryDirectory() as cache_dir:
        try:
            procs.append(start_process(weaver_app, weaver_port, origin_port, cache_dir))
            url = f"http://127.0.0.1:{weaver_port}/p20"
            fetch(url, "identity")  # the fill
            sizes: dict[str, tuple[int, int]] = {}
            for coding in codings:
                fetch(url, ACCEPTS[coding])  # the variant, made once
                body, header_bytes, cache, sent = fetch(url, ACCEPTS[coding])
                assert (cache, sent) == ("HIT", coding), (coding, cache, sent)
                sizes[coding] = (len(body), len(body) + header_bytes)
            tool = "wrk" if shutil.which("wrk") else "python clients"
            print(f"load: {tool}, {args.concurrency} connections, {args.duration}s each")
            print(f"page: {len(PAGE)} B of HTML, cached; Accept-Encoding per row")
            identity_body, identity_wire = sizes["identity"]
            results: dict[str, dict[str, float]] = {}
            for coding in codings:
                body_bytes, wire_bytes = sizes[coding]
                rate = rps(
                    url,
                    args.duration,
                    args.concurrency,
                    headers={"Accept-Encoding": ACCEPTS[coding]},
                )
                results[coding] = {"rps": round(rate), "body": body_bytes, "wire": wire_bytes}
                made = (
                    ""
                    if coding == "identity"
                    else f"  made once in {make_cost_ms(Encoding(coding)):.1f} ms"
                )
                print(
                    f"{coding:8} body {body_bytes:6d} B ({body_bytes / identity_body:.3f})  "
                    f"response {wire_bytes:6d} B ({wire_bytes / identity_wire:.3f})  "
                    f"{rate:8.0f} req/s  {rate * wire_bytes / 1e6:7.1f} MB/s sent{made}"
                )
            base = results["identity"]["rps"]
            print(
                "req/s vs identity: "
                + ", ".join(f"{c} {results[c]['rps'] / base:.2f}x" for c in codings[1:])
            )
            print(json.dumps(results))
        finally:
            for proc in procs:
                proc.kill()


if __name__ == "__main__":
    main()
