"""bench_browser: navigation to first paint and to every suspense slot filled, in Chromium.

Weaver serving the demo (blocking header and products, suspense cart and slow
recommendations) against the demo origin rendering the same page inline (``/inline``:
it waits for the slow part, as a server-rendered page must). The inline page is
complete at its first paint. Median of 20 loads each, fresh browser context per load.
Run: ``python -m loadtests.bench_browser`` (needs Debian's chromium and playwright).
"""

from __future__ import annotations

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


def weaver_app(origin_port: int, session_port: int, cache_dir: str) -> web.Application:
    config = build_config(
        {
            "session": {"listen": f"127.0.0.1:{session_port}", "secret": "bench"},
            "cache": {"dir": cache_dir},
            "origin": [
                {"name": "demo", "url": f"http://127.0.0.1:{origin_port}", "events": "/_events"}
            ],
            "route": [{"path": "/", "origin": "demo", "fragment_timeout": "2s"}],
        },
        "<bench>",
    )
    return build_app(config)


async def load(browser: Browser, url: str, *, has_slots: bool) -> tuple[float, float]:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url, wait_until="commit")
    first_paint = float(await page.evaluate(FCP))
    if has_slots:
        await page.wait_for_function(ALL_FILLED, polling=5, timeout=20_000)
        complete = float(await page.evaluate("performance.now()"))
    else:
        complete = first_paint
    await context.close()
    return first_paint, complete


async def run() -> None:
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
                    ("through Weaver", f"http://127.0.0.1:{weaver_port}/", True),
                ):
                    await load(browser, url, has_slots=has_slots)  # warm up
                    samples = [await load(browser, url, has_slots=has_slots) for _ in range(LOADS)]
                    results[name] = (
                        statistics.median(s[0] for s in samples),
                        statistics.median(s[1] for s in samples),
                    )
                await browser.close()
        finally:
            for proc in procs:
                proc.kill()
    base_paint, base_complete = results["origin inline"]
    print(f"median of {LOADS} loads, headless Chromium")
    for name, (paint, complete) in results.items():
        print(
            f"{name:15} first paint {paint:7.1f} ms ({paint / base_paint:.2f}x inline)   "
            f"all content {complete:7.1f} ms ({complete / base_complete:.2f}x inline)"
        )


if __name__ == "__main__":
    asyncio.run(run())
