"""The page's resumable uploads in a real Chromium: a dropped connection, a reload, Cancel,
answers to wait out and answers that end an upload, an answer lost on its way back."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Request, expect

from .support.browser import card, open_page, upload_in_page
from .support.checks import files_in
from .support.clips import Clips, pad_to
from .support.internals import MIB, Settings
from .support.network import FlakyGateway, LostAnswer, Relay
from .support.raw import address
from .support.servers import start_server
from .support.uploading import AppClient, get_json, list_tasks, wait_for_state
from .support.waiting import wait_until

SIZE = 8 * MIB


def stored_bytes(settings: Settings) -> int:
    """What the server holds of the upload in progress (its .tus file), 0 if none yet."""
    found = list(settings.layout.uploads_dir.glob("*.tus"))
    return found[0].stat().st_size if found else 0


def patch_offsets(page: Page) -> list[int]:
    """The Upload-Offset of every tus PATCH the page sends, as it sends them."""
    offsets: list[int] = []

    def seen(request: Request) -> None:
        if request.method == "PATCH" and "/files" in request.url:
            offsets.append(int(request.headers["upload-offset"]))
    page.on("request", seen)
    return offsets


async def some_stored(settings: Settings, at_least: int) -> None:
    async def enough() -> bool:
        return stored_bytes(settings) >= at_least
    await wait_until(enough, 30, f"{at_least} bytes to reach the server")


async def completed(page: Page, client: AppClient, settings: Settings, video: Path) -> dict[str, Any]:
    """The page's upload, once its row is gone and its task COMPLETED, with the source checked."""
    await expect(page.locator("#uploads li.upload")).to_have_count(0, timeout=60_000)
    task_card = card(page, video.name)
    await expect(task_card).to_be_visible(timeout=10_000)
    task_id = await task_card.get_attribute("data-id")
    assert task_id
    done = await wait_for_state(client, task_id, "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    assert settings.layout.source(task_id, ".mp4").read_bytes() == video.read_bytes()
    assert await page.evaluate("() => localStorage.getItem('video_async.uploads')") == "[]"
    return done


def offline_noise(problems: list[str]) -> list[str]:
    """Console errors other than the failed requests a dropped connection causes."""
    return [text for text in problems if "net::ERR_" not in text]


async def test_dropped_connection_resumes(browser: Browser, client: AppClient, settings: Settings,
                                          clips: Clips, tmp_path: Path) -> None:
    video = pad_to(clips.small(), tmp_path / "holiday.mp4", SIZE)
    async with Relay(*address(client), rate=MIB) as relay:  # a slow uplink that can drop
        page, problems = await open_page(browser, client, url=relay.url + "/")
        offsets = patch_offsets(page)
        await upload_in_page(page, video, "480")
        await some_stored(settings, 2 * MIB)
        await relay.cut()  # offline
        row = page.locator("#uploads li.upload")
        await expect(row.locator(".note")).to_have_text("Connection lost: retrying…")

        async def server_let_go() -> bool:  # the server saw the connection drop
            streaming: int = (await get_json(client, "/healthz"))["uploads_in_progress"]
            return streaming == 0
        await wait_until(server_let_go, 20, "the server to see the connection drop")
        kept = stored_bytes(settings)
        assert 2 * MIB <= kept < SIZE
        relay.restore(rate=64 * MIB)  # back online
        await completed(page, client, settings, video)
    # every PATCH after the first went on from where the server was: it was sent, in all,
    # less than twice the file (starting again from zero would have been twice)
    assert len(offsets) >= 2 and offsets[0] == 0 and all(offset >= kept for offset in offsets[1:])
    assert sum(SIZE - offset for offset in offsets) < 2 * SIZE
    assert offline_noise(problems) == []


async def test_reload_then_pick_the_same_file(browser: Browser, client: AppClient,
                                              settings: Settings, clips: Clips,
                                              tmp_path: Path) -> None:
    video = pad_to(clips.small(), tmp_path / "holiday.mp4", SIZE)
    async with Relay(*address(client), rate=MIB) as relay:
        page, problems = await open_page(browser, client, url=relay.url + "/")
        offsets = patch_offsets(page)
        await upload_in_page(page, video, "480")
        await some_stored(settings, 2 * MIB)
        await page.reload()
        row = page.locator("#uploads li.upload")
        await expect(row.locator(".note")).to_have_text(
            re.compile(r"^Interrupted: pick holiday\.mp4 again to resume from [1-9]\d? %$"))
        held = (await get_json(client, "/healthz"))["unfinished_uploads"]
        assert held["count"] == 1 and held["bytes"] >= 2 * MIB
        await expect(page.locator('[data-field="unfinished"]')).to_contain_text("1 (")
        # the size it resumes at: the row's, changed now, not the one it was started with
        await row.locator("select").select_option("720")
        relay.restore(rate=64 * MIB)
        await upload_in_page(page, video)  # the same file: picking it resumes it at once
        done = await completed(page, client, settings, video)
        assert done["resolution"] == "720"
    assert offsets[0] == 0 and offsets[-1] >= 2 * MIB  # resumed, not restarted
    assert problems == []


async def test_cancel_leaves_no_bytes(browser: Browser, client: AppClient, settings: Settings,
                                      clips: Clips, tmp_path: Path) -> None:
    video = pad_to(clips.small(), tmp_path / "holiday.mp4", SIZE)
    async with Relay(*address(client), rate=MIB) as relay:
        page, problems = await open_page(browser, client, url=relay.url + "/")
        await upload_in_page(page, video, "480")
        await some_stored(settings, MIB)
        await page.locator("#uploads li.upload button.cancel").click()
        await expect(page.locator("#uploads li.upload")).to_have_count(0)

        # the relay stays up until the DELETE has been answered and the page has seen it
        async def removed() -> bool:
            return files_in(settings.layout.uploads_dir) == []
        await wait_until(removed, 20, "the server to remove the upload's bytes")

        async def forgotten() -> bool:
            return bool(await page.evaluate("() => localStorage.getItem('video_async.uploads')") == "[]")
        await wait_until(forgotten, 20, "the page to forget the cancelled upload")
    assert (await get_json(client, "/healthz"))["unfinished_uploads"]["count"] == 0
    await expect(page.locator("#announcer")).to_contain_text("cancelled")
    assert await page.locator("li.task").count() == 0
    assert problems == []


async def test_server_killed_mid_upload(browser: Browser, clips: Clips, tmp_path: Path) -> None:
    """The page's upload survives a SIGKILL of the real server: once it is back, the page
    goes on from the offset the restarted server reports, and the task completes."""
    video = pad_to(clips.small(), tmp_path / "holiday.mp4", SIZE)
    data_dir = tmp_path / "data"
    server = await start_server(data_dir)
    async with Relay("127.0.0.1", server.port, rate=MIB) as relay:
        page, problems = await open_page(browser, None, url=relay.url + "/")
        offsets = patch_offsets(page)
        await upload_in_page(page, video, "480")

        async def some_on_disk() -> bool:
            return any(path.stat().st_size >= 2 * MIB for path in (data_dir / "uploads").glob("*.tus"))
        await wait_until(some_on_disk, 30, "2 MiB to reach the server")
        await server.kill()
        await relay.cut()
        await expect(page.locator("#uploads li.upload .note")).to_have_text("Connection lost: retrying…")
        server = await start_server(data_dir)
        try:
            relay.restore(rate=64 * MIB, port=server.port)
            await expect(page.locator("#uploads li.upload")).to_have_count(0, timeout=60_000)
            async with server.session() as session:
                [task] = await list_tasks(session)
                done = await wait_for_state(session, task["id"], "COMPLETED", "FAILED", timeout=90)
            assert done["state"] == "COMPLETED", done["error"]
            assert (data_dir / "uploads" / f"{task['id']}.mp4").read_bytes() == video.read_bytes()
        finally:
            assert await server.stop() == 0
    assert offsets[0] == 0 and offsets[-1] >= 2 * MIB  # went on, did not start again
    assert offline_noise(problems) == []
    assert "Traceback" not in server.output()


@pytest.mark.parametrize(("status", "code"), [(502, ""), (408, "idle_timeout"),
                                             (400, "client_disconnected")])
async def test_a_lost_connection_answer_is_waited_out(
        browser: Browser, client: AppClient, settings: Settings, clips: Clips,
        tmp_path: Path, status: int, code: str) -> None:
    """A proxy's 502 (or 504), the server's 408 after a silent PATCH, its 400 for a body
    cut short: not the server's verdict on the upload. The page asks where it got to
    and goes on."""
    video = pad_to(clips.small(), tmp_path / "holiday.mp4", SIZE)
    page, problems = await open_page(browser, client)
    offsets = patch_offsets(page)
    gateway = FlakyGateway(status, code)
    await gateway.install(page)
    await upload_in_page(page, video, "480")
    row = page.locator("#uploads li.upload")
    await expect(row.locator(".note")).to_have_text("Connection lost: retrying…")
    assert gateway.answered and await page.locator("#refusals").is_hidden()
    gateway.go_on()
    await completed(page, client, settings, video)
    assert offsets == [0, 0]  # the one the proxy failed, then the one that went through
    assert await page.locator("#refusals").is_hidden()
    assert len(await list_tasks(client)) == 1
    assert [text for text in problems if str(status) not in text] == []


async def test_a_refusal_ends_the_upload(browser: Browser, client: AppClient,
                                         settings: Settings, clips: Clips,
                                         tmp_path: Path) -> None:
    """Another 4xx is the server's last word: no retry, its message shown."""
    video = pad_to(clips.small(), tmp_path / "holiday.mp4", SIZE)
    page, problems = await open_page(browser, client)
    offsets = patch_offsets(page)
    gateway = FlakyGateway(415, "not_offset_stream")
    await gateway.install(page)
    await upload_in_page(page, video, "480")
    await expect(page.locator("#refusals")).to_contain_text(
        '"holiday.mp4": A not_offset_stream error.')
    await expect(page.locator("#uploads li.upload")).to_have_count(0)
    assert offsets == [0]
    assert await page.evaluate("() => localStorage.getItem('video_async.uploads')") == "[]"
    assert [text for text in problems if "415" not in text] == []


async def test_lost_answer_to_the_last_patch(browser: Browser, client: AppClient,
                                             settings: Settings, clips: Clips,
                                             tmp_path: Path) -> None:
    """Every byte arrived and the task was made, but the answer never came back: the page
    learns from HEAD that the upload is complete, and neither errs nor uploads it again."""
    video = pad_to(clips.small(), tmp_path / "holiday.mp4", SIZE)
    page, problems = await open_page(browser, client)
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.method)
            if "/files" in request.url else None)
    lost = LostAnswer(video.read_bytes())
    await lost.install(page)
    await upload_in_page(page, video, "480")
    await completed(page, client, settings, video)
    assert lost.statuses == [204]  # the server took it all, and the page never heard
    assert sent.count("POST") == 1 and sent.count("PATCH") == 1
    assert "HEAD" in sent  # it asked, after the connection broke
    assert await page.locator("#refusals").is_hidden()
    assert len(await list_tasks(client)) == 1
    assert offline_noise(problems) == []


async def drop(page: Page, video: Path) -> None:
    """The file dropped on the page, as a person drags it there from their desktop."""
    data_transfer = await page.evaluate_handle("""([name, data]) => {
        const bytes = Uint8Array.from(atob(data), (char) => char.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: "video/mp4" }));
        return transfer;
    }""", [video.name, base64.b64encode(video.read_bytes()).decode()])
    await page.dispatch_event("main", "drop", {"dataTransfer": data_transfer})


async def test_drop_a_file_and_change_its_size_while_it_uploads(browser: Browser, client: AppClient,
                                                                 settings: Settings, clips: Clips,
                                                                 tmp_path: Path) -> None:
    """No Upload click: the drop starts it, at the form's size (720p); its row's choice,
    changed to 480p while its bytes still go, is the size its task is made at."""
    video = pad_to(clips.make("hd.mp4", size="1280x720"), tmp_path / "holiday.mp4", 4 * MIB)
    async with Relay(*address(client), rate=MIB) as relay:  # slow enough to change it meanwhile
        page, problems = await open_page(browser, client, url=relay.url + "/")
        await drop(page, video)
        row = page.locator("#uploads li.upload")
        await expect(row.locator("select")).to_have_value("720")
        await some_stored(settings, MIB)
        async with page.expect_response(lambda r: r.request.method == "PATCH"
                                        and "/tasks/" in r.url) as changed:
            await row.locator("select").select_option("480")
        # 202: the server took it for the upload still sending, not for a task
        assert (await changed.value).status == 202
        assert stored_bytes(settings) < video.stat().st_size
        relay.restore(rate=64 * MIB)
        done = await completed(page, client, settings, video)
    assert done["resolution"] == "480"
    assert (done["output"]["width"], done["output"]["height"]) == (854, 480)
    await expect(card(page, "holiday.mp4").locator(".res")).to_have_text("480p")
    assert problems == []
