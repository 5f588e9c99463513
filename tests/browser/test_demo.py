"""The demo in a real browser (Debian's Chromium driven by playwright): what a visitor sees."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.servers import serve_app
from weaver.config.load import build_config
from weaver.proxy.app import build_app
from weaver.proxy.demo.origin import build_origin

TOKEN = "browser-test-token"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


@dataclass
class Demo:
    url: str
    browser: Browser

    async def publish(self, channel: str, data: object) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                self.url + "/_weaver/publish",
                json={"channel": channel, "data": data},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as resp:
                assert resp.status == 202


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is required: scripts/test.sh installs it"
    return path


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    async with serve_app(build_origin()) as origin_url:
        config = build_config(
            {
                "session": {"listen": "127.0.0.1:0", "secret": "s", "publish_token": TOKEN},
                "cache": {"dir": str(tmp_path / "cache")},
                "origin": [{"name": "demo", "url": origin_url, "events": "/_events"}],
                "route": [
                    {"path": "/", "origin": "demo", "fragment_timeout": "1s"},
                    {
                        "path": "/inline-demo",
                        "origin": "demo",
                        "fragment_timeout": "1s",
                        "suspense_delivery": "inline",
                    },
                ],
            },
            "<browser-test>",
        )
        async with serve_app(build_app(config)) as url, async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium(), args=["--no-sandbox"]
            )
            try:
                yield Demo(url, browser)
            finally:
                await browser.close()


async def text(page: Page, selector: str) -> str:
    return (await page.inner_text(selector)).strip()


async def test_without_javascript_the_paint_is_complete_with_fallbacks(demo: Demo) -> None:
    context = await demo.browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(demo.url + "/")
    assert "Linen shirt" in await text(page, ".products")  # blocking fragments are in
    assert "Loading your cart" in await text(page, ".cart")  # suspense: the fallback
    assert "Finding recommendations" in await text(page, ".recs")
    assert "Deals are unavailable" in await text(page, ".deals")  # a failed fragment
    assert await text(page, ".panel") == "session no JavaScript · transport - · seq 0"
    await context.close()


async def test_first_paint_then_suspense_fills_in(demo: Demo) -> None:
    OUTPUT.mkdir(exist_ok=True)
    context = await demo.browser.new_context(viewport={"width": 1100, "height": 700})
    page = await context.new_page()
    await page.goto(demo.url + "/", wait_until="domcontentloaded")
    assert "Finding recommendations" in await text(page, ".recs")  # 1.2 s to come
    first = OUTPUT / "demo-first-paint.png"
    await page.screenshot(path=str(first))
    await page.wait_for_selector('.recs weaver-slot[data-state="slot"]', timeout=10_000)
    await page.wait_for_selector('.cart weaver-slot[data-state="slot"]', timeout=10_000)
    assert "Canvas tote" in await text(page, ".recs")
    assert "0 item(s) in your cart" in await text(page, ".cart")
    assert await text(page, '[data-weaver-status="connection"]') == "open"
    after = OUTPUT / "demo-after-suspense.png"
    await page.screenshot(path=str(after))
    for shot in (first, after):
        assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    assert first.read_bytes() != after.read_bytes()
    await context.close()


async def test_two_visitors_share_the_paint_and_each_has_their_own_cart(demo: Demo) -> None:
    alice = await (await demo.browser.new_context()).new_page()
    bob = await (await demo.browser.new_context()).new_page()
    alice_response = await alice.goto(demo.url + "/")
    bob_response = await bob.goto(demo.url + "/")
    assert alice_response is not None and bob_response is not None
    assert await alice_response.body() == await bob_response.body()  # identical paint
    for page in (alice, bob):
        await page.wait_for_selector('.cart weaver-slot[data-state="slot"]')
    button = alice.locator('#p3 button[data-weaver-event="add-to-cart"]')
    await button.click()
    await alice.wait_for_selector('.cart weaver-slot[data-state="patch"]', timeout=10_000)
    assert "1 item(s) in your cart" in await text(alice, ".cart")
    assert "Wool socks" in await text(alice, ".cart")
    assert await button.get_attribute("data-weaver-ack") == "ok"
    assert await button.get_attribute("data-weaver-pending") is None
    # A message published now reaches Bob after anything sent to him before it.
    await demo.publish("news", "after alice's cart")
    await bob.wait_for_selector(".ticker li >> text=after alice's cart", timeout=10_000)
    assert "0 item(s) in your cart" in await text(bob, ".cart")  # Bob's cart is his own
    await alice.context.close()
    await bob.context.close()


async def test_a_pushed_message_appears_live(demo: Demo) -> None:
    page = await (await demo.browser.new_context()).new_page()
    await page.goto(demo.url + "/")
    await page.wait_for_function("window.weaver && window.weaver.state.connection === 'open'")
    await demo.publish("deals", {"html": "<b>Flash sale: wool socks -50%</b>"})
    await page.wait_for_selector(".flash b", timeout=10_000)
    assert await text(page, ".flash") == "Flash sale: wool socks -50%"
    await page.context.close()


async def test_a_dropped_connection_resumes_and_loses_nothing(demo: Demo) -> None:
    page = await (await demo.browser.new_context()).new_page()
    await page.goto(demo.url + "/")
    await page.wait_for_function("window.weaver && window.weaver.state.connection === 'open'")
    for i in range(1, 6):
        await demo.publish("news", f"news {i}")
    await page.wait_for_function("document.querySelectorAll('.ticker li').length === 5")
    await page.evaluate("window.weaver.drop()")
    for i in range(6, 11):  # published while the page is disconnected
        await demo.publish("news", f"news {i}")
    await page.wait_for_function(
        "document.querySelectorAll('.ticker li').length >= 10", timeout=15_000
    )
    await demo.publish("news", "news 11")  # live, after the resume: arrives after any duplicate
    await page.wait_for_selector(".ticker li >> text=news 11", timeout=15_000)
    items = await page.locator(".ticker li").all_inner_texts()
    assert items == [f"news {i}" for i in range(1, 12)]
    await page.context.close()
