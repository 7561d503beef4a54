"""The browser side: Debian's Chromium through Playwright, and how tests find things on the page.

A missing browser is a failure, never a skip: `make test` installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from .uploading import AppClient

CHROMIUM = os.environ.get("VIDEO_ASYNC_CHROMIUM", "/usr/bin/chromium")
# Without these, Chromium tries to reach Google's services at start-up and on a
# closed network gets stuck retrying.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
                    "(make test does) or set VIDEO_ASYNC_CHROMIUM")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=shutil.which(CHROMIUM),
                                                    args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


def card(page: Page, name: str) -> Any:
    """The task card showing this file name."""
    return page.locator("li.task", has=page.locator(".name", has_text=name))


async def open_page(browser: Browser, client: AppClient | None, url: str | None = None,
                    **context: Any) -> tuple[Page, list[str]]:
    """The page (of client's server, or at url) in a context of its own, and a list that
    collects its problems (console errors, CSP violations, uncaught exceptions) as they happen."""
    page = await (await browser.new_context(accept_downloads=True, **context)).new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    if url is None:
        assert client is not None, "open_page needs a test client or a url"
        url = str(client.make_url("/"))
    await page.goto(url)
    return page, problems


async def upload_in_page(page: Page, files: Path | list[Path], resolution: str | None = None) -> None:
    """Pick a resolution (if given) and files in the page's upload form, as a visitor does:
    the pick starts the uploads; without JavaScript, the Upload button sends the form."""
    if resolution is not None:
        await page.locator(f"input[name=resolution][value='{resolution}']").check()
    await page.locator("#video-input").set_input_files(files)
    submit = page.locator("#upload-form button[type=submit]")
    if await submit.is_visible():
        await submit.click()


async def completed_card(page: Page, name: str, timeout: float = 60_000) -> Any:
    """The card of this file name, once the page shows it COMPLETED."""
    task = card(page, name)
    await expect(task).to_have_attribute("data-state", "COMPLETED", timeout=timeout)
    return task
