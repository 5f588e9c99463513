"""The shop assistant in a real browser: it grows as it streams, shows progress, stops."""

from __future__ import annotations

from playwright.async_api import Page

from tests.browser.test_demo import Demo, demo, text

__all__ = ["demo"]  # the fixture, shared with test_demo

ANSWER = ".assistant weaver-slot"


async def answer_length(page: Page) -> int:
    length: int = await page.evaluate(
        f"(document.querySelector('{ANSWER} [data-weaver-stream]') || {{textContent: ''}})"
        ".textContent.length"
    )
    return length


async def test_the_assistant_answer_grows_progressively_with_a_moving_progress_bar(
    demo: Demo,
) -> None:
    page = await (await demo.browser.new_context()).new_page()
    await page.add_init_script(
        "window.progressSeen = [];"
        "document.addEventListener('weaver:progress',"
        " (e) => window.progressSeen.push(e.detail.percent));"
    )
    await page.goto(demo.url + "/")
    await page.wait_for_selector(f"{ANSWER} [data-weaver-progress] progress")
    await page.wait_for_function(
        f"(document.querySelector('{ANSWER} [data-weaver-stream]') || {{textContent: ''}})"
        ".textContent.length > 20"
    )
    early = await answer_length(page)
    assert await page.get_attribute(ANSWER, "data-state") == "streaming"
    await page.wait_for_selector(f'{ANSWER}[data-state="done"]', timeout=15_000)
    assert await answer_length(page) > early  # it grew after it first showed
    assert "rain jacket" in await text(page, ANSWER)
    cards = await page.locator(f"{ANSWER} .card h3").all_inner_texts()
    assert cards == ["Rain jacket", "Wool socks", "Canvas tote"]  # nested, in order
    seen = await page.evaluate("window.progressSeen")
    assert seen == sorted(seen) and seen[0] < 50 and seen[-1] == 100  # the bar moved
    assert await page.locator(f"{ANSWER} [data-weaver-progress]").count() == 0  # done: gone
    await page.context.close()


async def test_stop_cancels_the_answer_and_keeps_what_came(demo: Demo) -> None:
    page = await (await demo.browser.new_context()).new_page()
    await page.goto(demo.url + "/")
    await page.wait_for_function(
        f"(document.querySelector('{ANSWER} [data-weaver-stream]') || {{textContent: ''}})"
        ".textContent.length > 10"
    )
    await page.click(".assistant button[data-weaver-cancel]")
    await page.wait_for_selector(f'{ANSWER}[data-state="cancelled"]', timeout=10_000)
    kept = await answer_length(page)
    assert 0 < kept < 200
    assert await page.locator(f"{ANSWER} .card").count() == 0
    await page.context.close()


async def test_the_panel_shows_the_cache_status_and_each_slots_arrival(demo: Demo) -> None:
    first = await (await demo.browser.new_context()).new_page()
    await first.goto(demo.url + "/")
    await first.wait_for_selector(f'{ANSWER}[data-state="done"]', timeout=15_000)
    assert await text(first, '[data-did="cache"]') == "MISS"
    await first.context.close()
    context = await demo.browser.new_context()  # another visitor: Weaver's cache, not theirs
    second = await context.new_page()
    await second.goto(demo.url + "/")
    await second.wait_for_selector(f'{ANSWER}[data-state="done"]', timeout=15_000)
    assert await text(second, '[data-did="cache"]') == "HIT"
    rows = await second.locator("#weaver-did li[data-slot]").all_inner_texts()
    assert any(row.startswith("/fragments/assistant: first at ") for row in rows)
    assert any("/fragments/deals" in row and "error" in row for row in rows)
    await context.close()
