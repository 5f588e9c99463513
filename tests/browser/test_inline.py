"""Inline suspense delivery in a real browser: the slots fill from the page's own response."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import WebSocket

from tests.browser.test_demo import Demo, demo, text

__all__ = ["demo"]  # the fixture, shared with test_demo

ANSWER = ".assistant weaver-slot"


async def test_inline_slots_fill_with_no_websocket_frame_carrying_them(
    demo: Demo, tmp_path: Path
) -> None:
    page = await (await demo.browser.new_context()).new_page()
    frames: list[str] = []
    opened: list[str] = []

    def on_socket(ws: WebSocket) -> None:
        opened.append(ws.url)
        ws.on("framereceived", lambda payload: frames.append(str(payload)))

    page.on("websocket", on_socket)
    await page.add_init_script(
        "window.slotEvents = [];"
        "document.addEventListener('weaver:slot', (e) => window.slotEvents.push(e.detail));"
    )
    response = await page.goto(demo.url + "/inline-demo")
    assert response is not None
    assert response.headers["cache-control"].startswith("private")
    assert "etag" not in response.headers
    await page.wait_for_selector('.recs weaver-slot[data-state="slot"]', timeout=15_000)
    await page.wait_for_selector('.cart weaver-slot[data-state="slot"]')
    await page.wait_for_selector(f'{ANSWER}[data-state="done"]', timeout=15_000)
    await page.wait_for_selector('.deals weaver-slot[data-state="error"]')
    assert "Linen shirt" in await text(page, ".recs")
    assert "Deals are unavailable" in await text(page, ".deals")  # the fallback stays
    cards = await page.locator(f"{ANSWER} .card h3").all_inner_texts()
    assert cards == ["Rain jacket", "Wool socks", "Canvas tote"]
    assert await page.locator("template[data-weaver-for]").count() == 0  # swapped, removed
    # The session opened (for pushes and events) and said hello, and nothing else.
    await page.wait_for_function("window.weaver && window.weaver.state.connection === 'open'")
    assert opened
    slot_frames = [f for f in frames if '"slot' in f]
    assert slot_frames == []
    events: list[dict[str, Any]] = await page.evaluate("window.slotEvents")
    assert events and all(e["inline"] for e in events)
    await demo.publish("deals", {"html": "<b>still live</b>"})  # pushes still arrive
    await page.wait_for_selector(".flash b")
    assert await text(page, ".flash") == "still live"
    await page.context.close()
