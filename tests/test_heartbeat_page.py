"""The heartbeat as a visitor sees it: one compact line on a phone, foldable, explained."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from .support.browser import open_page
from .support.uploading import AppClient


async def test_on_a_phone_the_heartbeat_is_one_line(browser: Browser, client: AppClient) -> None:
    page, problems = await open_page(browser, client, viewport={"width": 390, "height": 800})
    beat = page.locator("#heartbeat")
    lag = beat.locator('[data-field="lag-last"]')
    await expect(lag).to_be_visible()
    request = beat.locator('[data-field="request-ms"]')
    await expect(request).to_be_visible()
    for hidden in ('[data-field="lag-max"]', '[data-field="jobs"]', "#lag-chart"):
        await expect(beat.locator(hidden)).to_be_hidden()
    lag_box, request_box = await lag.bounding_box(), await request.bounding_box()
    assert lag_box and request_box and abs(lag_box["y"] - request_box["y"]) < 4  # side by side
    box = await beat.bounding_box()
    assert box and box["height"] < 48  # one line of text, not a quarter of the screen
    assert problems == []


async def test_the_heartbeat_folds_away_and_stays_folded(browser: Browser, client: AppClient) -> None:
    page, problems = await open_page(browser, client)
    beat = page.locator("#heartbeat")
    fold = beat.locator(".beat-fold")
    await expect(fold).to_have_attribute("aria-expanded", "true")
    await fold.click()
    await expect(beat.locator('[data-field="lag-last"]')).to_be_hidden()
    await expect(fold).to_have_attribute("aria-expanded", "false")
    await page.reload()
    await expect(beat.locator('[data-field="lag-last"]')).to_be_hidden()
    await fold.click()
    await expect(beat.locator('[data-field="lag-last"]')).to_be_visible()
    assert problems == []


async def test_the_figures_are_explained_where_they_are_shown(browser: Browser,
                                                              client: AppClient) -> None:
    page, problems = await open_page(browser, client)
    help_text = page.locator("#heartbeat .beat-help p")
    await expect(help_text).to_be_hidden()
    await page.locator("#heartbeat .beat-help summary").click()
    await expect(help_text).to_contain_text("every 10 ms")  # the LagMonitor's interval
    await expect(help_text).to_contain_text("did not run the server")  # lag includes the OS
    await expect(help_text).to_contain_text("there and back")
    assert problems == []
