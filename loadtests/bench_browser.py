"""bench_browser: navigation to first paint and to every suspense slot filled, in Chromium.

Weaver serving the demo (blocking header and products, suspense cart and slow
recommendations) against the demo origin rendering the same page inline (``/inline``:
it waits for the slow part, as a server-rendered page must). The inline page is
complete at its first paint. Weaver serves the demo twice: ``/`` with session delivery
(slots over the WebSocket) and ``/inline-demo`` with ``suspense_delivery = "inline"``
(slots after the paint in the same response). For each: first contentful paint, every
slot showing content ("filled": any state) and every slot ended ("ended": slot, done or
error: the streaming assistant has finished). Median of 20 loads each (after one warm-up
load, so pages are cache HITs), fresh browser context per load.
Run: ``python -m loadtests.bench_browser [--latency MS]`` (needs Debian's chromium and
playwright); ``--latency`` adds that much to every request and connection (Chromium's
network emulation), as a visitor far from the edge would see.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile

from aiohttp import web
from playwright.async_api import Browser, async_playwright

from loadtests.common import free_port, start_process
from weaver.config.load import build_config
from weaver.proxy.app import build_app
from weaver.proxy.demo.origin import build_origin

LOADS = 20
FCP = """() => new Promise(resolve => {
  const find = () => performance.getEntriesByName('first-contentful-paint')[0];
  const entry = find();
  if (entry) return resolve(entry.startTime);
  new PerformanceObserver(() => { const e = find(); if (e) resolve(e.startTime); })
    .observe({ type: 'paint', buffered: true });
})"""
ALL_FILLED = "() => [...document.querySelectorAll('weaver-slot')].every(s => s.dataset.state)"
CART_FILLED = "() => !!document.querySelector('.cart weaver-slot[data-state]')"  # a fast slot
ALL_ENDED = (
    "() => [...document.querySelectorAll('weaver-slot')]"
    ".every(s => ['slot', 'done', 'error'].includes(s.dataset.state))"
)


def weaver_app(origin_port: int, session_port: int, cache_dir: str) -> web.Application:
    config = build_config(
        {
            "session": {"listen": f"127.0.0.1:{session_port}", "secret": "bench"},
            "cache": {"dir": cache_dir},
            "origin": [
                {"name": "demo", "url": f"http://127.0.0.1:{origin_port}", "events": "/_events"}
            ],
            "route": [
                {"path": "/", "origin": "demo", "fragment_timeout": "2s"},
                {
                    "path": "/inline-demo",
                    "origin": "demo",
                    "fragment_timeout": "2s",
                    "suspense_delivery": "inline",
                },
            ],
        },
        "<bench>",
    )
    return build_app(config)


async def load(
    browser: Browser, url: str, *, has_slots: bool, latency_ms: float = 0
) -> tuple[float, float, float, float]:
    """(first paint, the fast cart slot filled, every slot filled, every slot ended) in
    ms from navigation start."""
    context = await browser.new_context()
    page = await context.new_page()
    if latency_ms:
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": latency_ms,
                "downloadThroughput": -1,
                "uploadThroughput": -1,
            },
        )
    await page.goto(url, wait_until="commit")
    first_paint = float(await page.evaluate(FCP))
    cart = filled = ended = first_paint
    if has_slots:
        await page.wait_for_function(CART_FILLED, polling=5, timeout=20_000)
        cart = float(await page.evaluate("performance.now()"))
        await page.wait_for_function(ALL_FILLED, polling=5, timeout=20_000)
        filled = float(await page.evaluate("performance.now()"))
        await page.wait_for_function(ALL_ENDED, polling=5, timeout=20_000)
        ended = float(await page.evaluate("performance.now()"))
    await context.close()
    return first_paint, cart, filled, ended


async def run(latency_ms: float) -> None:
    origin_port, weaver_port, session_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as cache_dir:
        procs = [start_process(build_origin, origin_port)]
        procs.append(start_process(weaver_app, weaver_port, origin_port, session_port, cache_dir))
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=shutil.which("chromium"), args=["--no-sandbox"]
                )
                results = {}
                for name, url, has_slots in (
                    ("origin inline", f"http://127.0.0.1:{origin_port}/inline", False),
                    ("Weaver session", f"http://127.0.0.1:{weaver_port}/", True),
                    ("Weaver inline", f"http://127.0.0.1:{weaver_port}/inline-demo", True),
                ):
                    await load(browser, url, has_slots=has_slots)  # warm up
                    samples = [
                        await load(browser, url, has_slots=has_slots, latency_ms=latency_ms)
                        for _ in range(LOADS)
                    ]
                    results[name] = tuple(
                        statistics.median(s[i] for s in samples) for i in range(4)
                    )
                await browser.close()
        finally:
            for proc in procs:
                proc.kill()
    base_paint, _, base_complete, _ = results["origin inline"]
    print(f"median of {LOADS} loads, headless Chromium, added latency {latency_ms:g} ms")
    for name, (paint, cart, filled, ended) in results.items():
        print(
            f"{name:15} first paint {paint:7.1f} ms ({paint / base_paint:.2f}x inline)  "
            f"cart slot {cart:7.1f} ms  "
            f"all slots filled {filled:7.1f} ms ({filled / base_complete:.2f}x inline)  "
            f"all slots ended {ended:7.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="first paint and slots, in Chromium")
    parser.add_argument("--latency", type=float, default=0, help="ms added per request")
    asyncio.run(run(parser.parse_args().latency))
