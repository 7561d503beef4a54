"""The teaching switch (--teach): on a loopback server, the page offers "Block the loop"; on,
an upload's writes block the loop and the page's lag figure shows it; off, it recovers.
Nowhere else is it offered."""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from .support.browser import open_page
from .support.clips import Clips
from .support.internals import Settings
from .support.servers import MakeClient, Server, refused_start, running_server
from .support.waiting import wait_until

CHUNK = 256 * 1024


async def page_lag(page: Page) -> float:
    text = await page.locator('#heartbeat [data-field="lag-last"]').inner_text()
    found = re.fullmatch(r"(\d+(?:\.\d+)?) ms", text.strip())
    assert found, text
    return float(found.group(1))


@contextlib.asynccontextmanager
async def upload_running(server: Server, head: bytes) -> AsyncIterator[None]:
    """An upload that goes on, at about 5 MB/s, for the length of the block."""
    async def body() -> AsyncIterator[bytes]:
        yield head
        filler = bytes(CHUNK)
        while True:
            yield filler
            await asyncio.sleep(0.05)  # pacing, not waiting for anything

    async def send() -> None:
        with aiohttp.MultipartWriter("form-data") as form:
            part = form.append(body(), {"Content-Type": "video/mp4"})
            part.set_content_disposition("form-data", name="video", filename="long.mp4")
            async with server.session() as session:
                await session.post("/videos/upload", data=form)

    sending = asyncio.create_task(send())
    try:
        yield
    finally:
        sending.cancel()  # the client goes away mid-upload
        with contextlib.suppress(asyncio.CancelledError):
            await sending


async def test_the_switch_blocks_the_loop_and_the_page_shows_it(browser: Browser, clips: Clips,
                                                                 tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", "--teach", "--max-upload-mb", "100000") as server:
        page, problems = await open_page(browser, None, url=server.url)
        switch = page.locator("#block-the-loop")
        await expect(switch).not_to_be_checked()
        uploads = page.locator('#heartbeat [data-field="uploads"]')
        async with upload_running(server, clips.small().read_bytes()[:64]):
            await expect(uploads).to_have_text("1", timeout=20_000)
            # its level with the switch off, over a few heartbeats (the first ones may still
            # show the server's and the browser's start)
            off = []
            for _ in range(5):
                await page.wait_for_function(  # the next heartbeat
                    "(before) => document.querySelector('[data-field=\"request-ms\"]').dataset.polls"
                    " !== before", arg=await polls(page))
                off.append(await page_lag(page))
            # with the switch on, a tick due while a chunk's 100 ms wait runs is late by up
            # to all of it, and the page shows the worst of the last 2 s
            high = max(80.0, 2 * statistics.median(off))

            await switch.check()
            async with server.session() as session, session.get("/teach") as answer:
                assert await answer.json() == {"block_the_loop": True}

            async def lag_is_high() -> bool:
                return await page_lag(page) > high
            await wait_until(lag_is_high, 30, f"the page's lag above {high} ms (off: {off})")

            await switch.uncheck()

            async def lag_is_back() -> bool:
                return await page_lag(page) < high
            await wait_until(lag_is_back, 30, f"the page's lag back under {high} ms")
        assert problems == []


async def polls(page: Page) -> str | None:
    return await page.locator('[data-field="request-ms"]').get_attribute("data-polls")


async def test_without_the_flag_there_is_no_switch(browser: Browser, make_client: MakeClient) -> None:
    client = await make_client()
    page, problems = await open_page(browser, client)
    await expect(page.locator('#heartbeat [data-field="lag-last"]')).to_have_text(
        re.compile(r"^\d+\.\d ms$"))
    assert await page.locator("#block-the-loop").count() == 0
    assert (await client.put("/teach", json={"block_the_loop": True})).status in (404, 405)
    assert "teach" not in await (await client.get("/healthz")).json()
    assert problems == []


async def test_a_server_others_can_reach_refuses_the_flag(tmp_path: Path) -> None:
    said = await refused_start(tmp_path / "data", "--teach", "--host", "0.0.0.0", "--no-token")
    assert "--teach" in said and "loopback only" in said
    with pytest.raises(ValueError, match="loopback only"):
        from video_async.app import create_app
        create_app(Settings(host="0.0.0.0", no_token=True, teach=True))


async def test_the_switch_takes_only_a_boolean(make_client: MakeClient) -> None:
    client = await make_client(teach=True)
    for body in ({"block_the_loop": "yes"}, {}, [True]):
        answer = await client.put("/teach", json=body)
        assert answer.status == 400
        assert (await answer.json())["error"]["code"] == "bad_switch"
    assert await (await client.get("/teach")).json() == {"block_the_loop": False}


async def test_asyncio_debug_mode_names_the_blocked_step(clips: Clips, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the guide shows: with PYTHONASYNCIODEBUG=1, asyncio logs each step of a task
    that held the loop 100 ms or more; here, a request's handler task."""
    monkeypatch.setenv("PYTHONASYNCIODEBUG", "1")  # the server process inherits it
    async with running_server(tmp_path / "data", "--teach", "--max-upload-mb", "100000") as server:
        async with server.session() as session:
            async with session.put("/teach", json={"block_the_loop": True}) as answer:
                assert answer.status == 200
        slow_step = re.compile(r"WARNING asyncio: Executing <Task .*coro=<RequestHandler\."
                               r"_handle_request\(\).* took \d+\.\d+ seconds")

        async def logged() -> bool:
            return bool(slow_step.search(server.output()))
        async with upload_running(server, clips.small().read_bytes()[:64]):
            await wait_until(logged, 30, "asyncio's warning about a slow step")
