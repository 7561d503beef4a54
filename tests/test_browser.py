"""The page in a real headless Chromium (Debian's package), driven by Playwright, against the real server.

A missing browser is a failure, never a skip: `.ci/run` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright, expect

from video_async.config import Settings

from .conftest import (Clips, Serve, ffmpeg_pids, files_in, hanging_ffmpeg, pad_to, realtime_ffmpeg,
                       start_server, wait_until)

CHROMIUM = os.environ.get("VIDEO_ASYNC_CHROMIUM", "/usr/bin/chromium")
# Without these, Chromium tries to reach Google's services at start-up and on a
# closed network gets stuck retrying.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
                    "(.ci/run does) or set VIDEO_ASYNC_CHROMIUM")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=shutil.which(CHROMIUM),
                                                    args=CHROMIUM_ARGS, headless=True)
        yield launched
        await launched.close()


@pytest.fixture
async def server(serve: Serve) -> TestServer:
    return await serve()


class Api:
    """The test's own view of the server, through the same HTTP API."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base, self.session = base, session

    async def tasks(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.base}/tasks") as response:
            return await response.json()

    async def upload(self, clip: Path, resolution: str = "480", name: str | None = None) -> dict[str, Any]:
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("resolution", resolution)
        with clip.open("rb") as video:
            form.add_field("video", video, filename=name or clip.name)
            async with self.session.post(f"{self.base}/videos/upload", data=form) as response:
                assert response.status == 201
                return await response.json()

    async def delete(self, task_id: str) -> None:
        async with self.session.delete(f"{self.base}/tasks/{task_id}") as response:
            assert response.status == 200

    async def wait_state(self, task_id: str, *states: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            async with self.session.get(f"{self.base}/tasks/{task_id}") as response:
                task = await response.json()
            return task if task["state"] in states else None
        return await wait_until(check, 60, f"{task_id} to reach {states}")

    @classmethod
    def of(cls, server: TestServer, session: aiohttp.ClientSession) -> Api:
        return cls(str(server.make_url("")).rstrip("/"), session)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(server: TestServer, session: aiohttp.ClientSession) -> Api:
    return Api.of(server, session)


async def open_page(browser: Browser, server: TestServer, **context: Any) -> tuple[Page, list[str]]:
    page = await (await browser.new_context(accept_downloads=True, **context)).new_page()
    problems: list[str] = []  # console errors, CSP violations, uncaught exceptions
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(str(server.make_url("/")))
    return page, problems


def card(page: Page, name: str) -> Any:
    return page.locator("li.task", has=page.locator(".name", has_text=name))


async def record_states(page: Page) -> None:
    """Keep every data-state the cards take, so a short-lived state can't be missed."""
    await page.evaluate("""() => {
        window.seenStates = {};
        const note = (el) => {
            const list = window.seenStates[el.dataset.id] ||= [];
            if (list[list.length - 1] !== el.dataset.state) list.push(el.dataset.state);
        };
        document.querySelectorAll('li.task').forEach(note);
        new MutationObserver((changes) => changes.forEach((c) => {
            const nodes = c.type === 'attributes' ? [c.target] : [...c.addedNodes];
            nodes.filter((n) => n.matches && n.matches('li.task')).forEach(note);
        })).observe(document.getElementById('tasks'),
                    {subtree: true, childList: true, attributes: true, attributeFilter: ['data-state']});
    }""")


async def test_upload_watch_preview_and_download(browser: Browser, serve: Serve, clips: Clips,
                                                 session: aiohttp.ClientSession, tmp_path: Path) -> None:
    server = await serve(ffmpeg=str(hanging_ffmpeg(tmp_path)))
    api = Api.of(server, session)
    page, problems = await open_page(browser, server)
    await record_states(page)
    # a job running until it is deleted, so the page's upload waits its turn in the queue
    blocker = await api.upload(clips.long(), "480")
    await api.wait_state(blocker["id"], "PROCESSING")

    # a bigger file and a slowed network, so the upload bar is there to be seen
    video = pad_to(clips.long(), tmp_path / "holiday.mp4", 12 * 1024 * 1024)
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                        "downloadThroughput": -1,
                                                        "uploadThroughput": 8 * 1024 * 1024})
    await page.locator("input[name=resolution][value='480']").check()
    await page.locator("#video-input").set_input_files(video)
    await page.locator("#upload-form button[type=submit]").click()
    row = page.locator("#uploads li.upload")
    await expect(row).to_be_visible()
    await expect(row.locator(".name")).to_have_text("holiday.mp4")
    await expect(row.locator(".percent")).to_have_text(PART_WAY, timeout=20_000)
    await expect(row).to_have_count(0, timeout=30_000)
    await cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                        "downloadThroughput": -1, "uploadThroughput": -1})

    task = card(page, "holiday.mp4")
    await expect(task).to_have_attribute("data-state", "QUEUED")
    await expect(task.locator(".status")).to_contain_text("next in line")
    await api.delete(blocker["id"])
    await expect(task).to_have_attribute("data-state", "PROCESSING", timeout=20_000)
    await expect(task.locator("progress.bar")).to_be_visible()
    await expect(task).to_have_attribute("data-state", "COMPLETED", timeout=60_000)
    task_id = await task.get_attribute("data-id")
    states = await page.evaluate("(id) => window.seenStates[id]", task_id)
    assert states == ["QUEUED", "PROCESSING", "COMPLETED"], states
    await expect(task.locator(".thumb img")).to_be_visible()
    await expect(task.locator(".duration")).to_have_text("0:12")
    await expect(task.locator(".output")).to_have_text(re.compile(r"^→ \d+\.\d [KM]B$"))

    # the inline preview plays
    preview = task.locator(".preview video")
    await expect(preview).to_be_visible()
    await preview.evaluate("v => { v.muted = true; return v.play(); }")
    await wait_until(lambda: preview.evaluate("v => !v.paused && v.currentTime > 0.2"), 20,
                     "the preview to play")

    # Download gives the MP4
    async with page.expect_download() as download_info:
        await task.locator("a.download").click()
    download = await download_info.value
    assert download.suggested_filename == "holiday-480p.mp4"
    saved = tmp_path / "saved.mp4"
    await download.save_as(saved)
    assert saved.read_bytes()[4:8] == b"ftyp"
    assert problems == []


PART_WAY = re.compile(r"^[1-9]\d?%$")  # an upload percentage between the start and the end
MILLISECONDS = re.compile(r"^\d+\.\d ms$")


async def test_two_uploads_at_once_and_cancel(browser: Browser, server: TestServer, api: Api,
                                             clips: Clips, settings: Settings, tmp_path: Path) -> None:
    first = pad_to(clips.small(), tmp_path / "first.mp4", 6 * 1024 * 1024)
    second = pad_to(clips.small(), tmp_path / "second.mov", 6 * 1024 * 1024)
    page, problems = await open_page(browser, server)
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/tasks") else None)
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                        "downloadThroughput": -1,
                                                        "uploadThroughput": 1024 * 1024})
    await page.locator("#video-input").set_input_files([first, second])
    await page.locator("#upload-form button[type=submit]").click()
    rows = page.locator("#uploads li.upload")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0).locator(".speed")).to_have_text(re.compile(r"MB/s$"))
    await expect(rows.nth(1).locator(".left")).to_contain_text("left")
    await wait_until(lambda: _streaming(api, 2), 20, "both uploads to reach the server")
    for _ in range(2):
        await rows.first.locator("button.cancel").click()
    await expect(rows).to_have_count(0)
    await wait_until(lambda: _streaming(api, 0), 20, "the server to drop both uploads")
    assert await api.tasks() == []
    assert files_in(settings.layout.uploads_dir) == []
    await expect(page.locator("#announcer")).to_contain_text("cancelled")
    # the list is polled all along, and an unchanged list costs a 304
    async def two_304s() -> bool:
        return statuses.count(304) >= 2
    await wait_until(two_304s, 20, "304 answers")
    assert problems == []


async def _streaming(api: Api, count: int) -> bool:
    async with api.session.get(f"{api.base}/healthz") as response:
        return (await response.json())["uploads_in_progress"] == count


async def test_html_in_a_name_is_shown_as_text(browser: Browser, server: TestServer, api: Api,
                                              clips: Clips, tmp_path: Path) -> None:
    name = "<img src=x onerror=window.pwned=1>.mp4"
    clip = tmp_path / name
    clip.write_bytes(clips.small().read_bytes())
    page, problems = await open_page(browser, server)
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await page.locator("#video-input").set_input_files(clip)
    await page.locator("#upload-form button[type=submit]").click()
    task = page.locator("li.task").first
    await expect(task.locator(".name")).to_have_text(name)
    await expect(task).to_have_attribute("data-state", "COMPLETED", timeout=60_000)
    assert await page.evaluate("() => window.pwned") is None
    assert await page.locator("#tasks img[src=x]").count() == 0
    # and the server-rendered version of the same list after a reload
    await page.reload()
    await expect(page.locator("li.task .name").first).to_have_text(name)
    assert await page.evaluate("() => window.pwned") is None
    assert dialogs == [] and problems == []


async def test_wrong_type_and_too_large_are_refused_in_the_page(browser: Browser, serve: Serve,
                                                               tmp_path: Path, clips: Clips) -> None:
    small_limit = await serve(max_upload_bytes=1024 * 1024)
    page, problems = await open_page(browser, small_limit)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/videos/upload" in r.url else None)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    await page.locator("#video-input").set_input_files(notes)
    await page.locator("#upload-form button[type=submit]").click()
    await expect(page.locator("#upload-error")).to_contain_text("choose an .mp4, .mov or .webm file")
    big = pad_to(clips.small(), tmp_path / "big.mov", 2 * 1024 * 1024)
    await page.locator("#video-input").set_input_files(big)
    await page.locator("#upload-form button[type=submit]").click()
    await expect(page.locator("#upload-error")).to_contain_text("over the limit of 1 MB")
    assert requests == [] and problems == []
    assert await page.locator("li.task").count() == 0


async def test_delete_during_processing(browser: Browser, serve: Serve, session: aiohttp.ClientSession,
                                        clips: Clips, settings: Settings, tmp_path: Path) -> None:
    server = await serve(ffmpeg=str(realtime_ffmpeg(tmp_path)))  # still running when the page opens
    api = Api.of(server, session)
    task = await api.upload(clips.long(), "720", name="long one.mp4")
    page, problems = await open_page(browser, server)
    row = card(page, "long one.mp4")
    await expect(row).to_have_attribute("data-state", "PROCESSING", timeout=20_000)
    await expect(row.locator(".status")).to_contain_text("Transcoding", timeout=10_000)
    page.on("dialog", lambda dialog: dialog.accept())
    # The card may vanish on a poll (the task leaves the list at once) before the
    # DELETE has finished stopping ffmpeg, so wait for the DELETE's own answer.
    async with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        await row.locator("form.delete button").click()
    assert (await deleted.value).status == 200
    await expect(row).to_have_count(0)
    assert await api.tasks() == []
    assert ffmpeg_pids(settings.data_dir) == []
    assert files_in(settings.layout.uploads_dir) == [] and files_in(settings.layout.outputs_dir) == []
    await page.reload()
    await expect(page.locator("#empty")).to_be_visible()
    assert problems == [], task


async def test_failed_task_shows_reason_and_retries(browser: Browser, serve: Serve, clips: Clips,
                                                   session: aiohttp.ClientSession, settings: Settings,
                                                   tmp_path: Path) -> None:
    server = await serve(ffmpeg=str(hanging_ffmpeg(tmp_path)))  # the blocker runs until deleted
    api = Api.of(server, session)
    blocker = await api.upload(clips.long(), "480")
    victim = await api.upload(clips.small(), "480", name="damaged.mp4")
    source = settings.layout.uploads_dir / f"{victim['id']}.mp4"
    good = source.read_bytes()
    source.write_bytes(good[:40])  # damaged on disk while it waits
    await api.delete(blocker["id"])
    await api.wait_state(victim["id"], "FAILED")
    page, problems = await open_page(browser, server)
    row = card(page, "damaged.mp4")
    await expect(row).to_have_attribute("data-state", "FAILED")
    await expect(row.locator(".status")).not_to_be_empty()
    source.write_bytes(good)
    await row.locator("form.retry button").click()
    await expect(row).to_have_attribute("data-state", "COMPLETED", timeout=60_000)
    await expect(page.locator("#announcer")).to_contain_text("damaged.mp4")
    assert problems == []


async def test_heartbeat_and_offline_notice(browser: Browser, server: TestServer) -> None:
    page, problems = await open_page(browser, server)
    beat = page.locator("#heartbeat")
    await expect(beat.locator('[data-field="lag-last"]')).to_have_text(MILLISECONDS)
    await expect(beat.locator('[data-field="jobs"]')).to_have_text("0")
    await page.context.set_offline(True)
    await expect(page.locator("#offline")).to_be_visible(timeout=15_000)
    await page.context.set_offline(False)
    await expect(page.locator("#offline")).to_be_hidden(timeout=15_000)
    assert all("ERR_INTERNET_DISCONNECTED" in p or "Failed to fetch" in p for p in problems)




async def test_page_works_without_javascript(browser: Browser, server: TestServer, api: Api,
                                             clips: Clips) -> None:
    page, _ = await open_page(browser, server, java_script_enabled=False)
    await page.locator("#video-input").set_input_files(clips.small())
    await page.locator("input[name=resolution][value='480']").check()
    await page.locator("#upload-form button[type=submit]").click()
    await page.wait_for_url(str(server.make_url("/")))
    await expect(page.locator("li.task .name")).to_have_text("small.mp4")
    [task] = await api.tasks()
    assert task["resolution"] == "480"
    await api.wait_state(task["id"], "COMPLETED")
    await page.reload()
    await expect(page.locator("li.task a.download")).to_be_visible()
    await page.locator("li.task form.delete button").click()
    await page.wait_for_url(str(server.make_url("/")))
    await expect(page.locator("#empty")).to_be_visible()
    assert await api.tasks() == []


async def test_phone_sized_screen_and_keyboard(browser: Browser, server: TestServer, api: Api,
                                               clips: Clips) -> None:
    task = await api.upload(clips.small(), "480", name="a rather long file name from a phone camera.mov")
    await api.wait_state(task["id"], "COMPLETED")
    page, problems = await open_page(browser, server, viewport={"width": 375, "height": 740})
    await expect(page.locator("li.task")).to_have_count(1)
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    # the keyboard reaches the file picker, the resolution, Upload, and the task's actions
    focused = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        focused.append(await page.evaluate(
            "() => document.activeElement.id || document.activeElement.textContent.trim()"
            " || document.activeElement.name"))
    assert "video-input" in focused and "Upload" in focused and "Delete" in focused, focused
    assert problems == []


async def test_screenshot_of_every_state(browser: Browser, clips: Clips, tmp_path: Path) -> None:
    """Also the README's picture: `make screenshot` saves it to docs/screenshot.png.

    The real program, as its own process: the heartbeat in the picture is then the
    server's own, not that of a loop it shares with this test and the browser driver.
    """
    hd, long, small = clips.make("hd.mov", size="1920x1080"), clips.long(), clips.small()
    # The browser's renderer starts before the server does: starting it takes both
    # cores for a moment, and the heartbeat would show that machine load as lag.
    page = await (await browser.new_context(viewport={"width": 1100, "height": 1100})).new_page()
    await page.goto("about:blank")
    data_dir = tmp_path / "data"
    # every job as slow as its video plays: "interview take 3" is still running, and
    # "drone footage" still waiting, when the picture is taken
    server = await start_server(data_dir, "--ffmpeg", str(realtime_ffmpeg(tmp_path)))
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(server.url, session)
            done = await api.upload(hd, "720", name="beach at sunset.mov")
            await api.wait_state(done["id"], "COMPLETED")
            blocker = await api.upload(long, "480", name="GoPro ride.mp4")
            failed = await api.upload(small, "1080", name="corrupted clip.mp4")
            (data_dir / "uploads" / f"{failed['id']}.mp4").write_bytes(b"\x00\x00\x00\x08ftyp")
            await api.delete(blocker["id"])
            await api.wait_state(failed["id"], "FAILED")
            running = await api.upload(long, "720", name="interview take 3.mov")
            await api.upload(small, "1080", name="drone footage.mp4")
            await api.wait_state(running["id"], "PROCESSING")
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            await page.goto(server.url)
            await expect(card(page, "interview take 3.mov").locator(".status")).to_contain_text(
                "left", timeout=20_000)
            target = Path(os.environ.get("VIDEO_ASYNC_SCREENSHOT", "test-artifacts/page.png"))
            target.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(target), full_page=True)
            assert target.stat().st_size > 10_000
            for state in ("COMPLETED", "FAILED", "PROCESSING", "QUEUED"):
                assert await page.locator(f'li.task[data-state="{state}"]').count() >= 1, state
            assert problems == []
    finally:
        assert await server.stop() == 0
