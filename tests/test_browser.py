"""The page in a real headless Chromium (Debian's package), driven by Playwright, against the real server.

A missing browser is a failure, never a skip: `make test` installs it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Browser, Page, expect

from .support.browser import card, open_page, upload_in_page
from .support.checks import files_in
from .support.clips import Clips, hanging_ffmpeg, pad_to, realtime_ffmpeg
from .support.failing import failed_task, queue_held
from .support.internals import Settings
from .support.processes import ffmpeg_pids
from .support.servers import MakeClient, start_server
from .support.uploading import (AppClient, delete, list_tasks, upload_ok, uploads_in_progress,
                                wait_for_state)
from .support.waiting import wait_until


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


async def test_upload_watch_preview_and_download(browser: Browser, make_client: MakeClient,
                                                 clips: Clips, tmp_path: Path) -> None:
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)))
    page, problems = await open_page(browser, client)
    await record_states(page)
    # a job running until it is deleted, so the page's upload waits its turn in the queue
    async with queue_held(client, clips):
        # a bigger file and a slowed network, so the upload bar is there to be seen
        video = pad_to(clips.long(), tmp_path / "holiday.mp4", 12 * 1024 * 1024)
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                            "downloadThroughput": -1,
                                                            "uploadThroughput": 8 * 1024 * 1024})
        await upload_in_page(page, video, "480")
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
    # out of queue_held: the blocker is deleted, and the page's upload runs
    await expect(task).to_have_attribute("data-state", "PROCESSING", timeout=20_000)
    await expect(task.locator("progress.bar")).to_be_visible()
    await expect(task).to_have_attribute("data-state", "COMPLETED", timeout=60_000)
    task_id = await task.get_attribute("data-id")
    states = await page.evaluate("(id) => window.seenStates[id]", task_id)
    assert states == ["QUEUED", "PROCESSING", "COMPLETED"], states
    # one picture per card: the video, with the thumbnail as its poster
    poster = await task.locator(".preview video").get_attribute("poster")
    assert poster == f"/tasks/{task_id}/thumbnail"
    assert await page.evaluate("async (url) => (await fetch(url)).headers.get('content-type')",
                               poster) == "image/jpeg"
    assert await task.locator("img").count() == 0
    await expect(task.locator(".duration")).to_have_text("0:12")
    await expect(task.locator(".output")).to_have_text(re.compile(r"^→ \d+\.\d [KM]iB$"))

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


async def test_two_uploads_at_once_and_cancel(browser: Browser, client: AppClient, clips: Clips,
                                             settings: Settings, tmp_path: Path) -> None:
    first = pad_to(clips.small(), tmp_path / "first.mp4", 6 * 1024 * 1024)
    second = pad_to(clips.small(), tmp_path / "second.mov", 6 * 1024 * 1024)
    page, problems = await open_page(browser, client)
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if urlsplit(r.url).path == "/tasks" else None)
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                        "downloadThroughput": -1,
                                                        "uploadThroughput": 1024 * 1024})
    await upload_in_page(page, [first, second])
    rows = page.locator("#uploads li.upload")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0).locator(".speed")).to_have_text(re.compile(r"MB/s$"))
    await expect(rows.nth(1).locator(".left")).to_contain_text("left")
    await wait_until(lambda: uploads_in_progress(client, 2), 20, "both uploads to reach the server")
    for _ in range(2):
        await rows.first.locator("button.cancel").click()
    await expect(rows).to_have_count(0)
    await wait_until(lambda: uploads_in_progress(client, 0), 20, "the server to drop both uploads")

    async def nothing_stored() -> bool:  # each Cancel ends with a DELETE of the tus upload
        return files_in(settings.layout.uploads_dir) == []
    await wait_until(nothing_stored, 20, "the uploads' files to be removed")
    assert await list_tasks(client) == []
    await expect(page.locator("#announcer")).to_contain_text("cancelled")
    # the list is polled all along, and an unchanged list costs a 304
    async def two_304s() -> bool:
        return statuses.count(304) >= 2
    await wait_until(two_304s, 20, "304 answers")
    assert problems == []


async def test_html_in_a_name_is_shown_as_text(browser: Browser, client: AppClient, clips: Clips,
                                              tmp_path: Path) -> None:
    name = "<img src=x onerror=window.pwned=1>.mp4"
    clip = tmp_path / name
    clip.write_bytes(clips.small().read_bytes())
    page, problems = await open_page(browser, client)
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await upload_in_page(page, clip)
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


async def test_wrong_type_and_too_large_are_refused_in_the_page(browser: Browser, make_client: MakeClient,
                                                               tmp_path: Path, clips: Clips) -> None:
    small_limit = await make_client(max_upload_bytes=1024 * 1024)
    page, problems = await open_page(browser, small_limit)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url)
            if "/videos/upload" in r.url or "/files" in r.url else None)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    big = pad_to(clips.small(), tmp_path / "big.mov", 2 * 1024 * 1024)
    await upload_in_page(page, [notes, big])  # two bad files at once: a line for each
    refusals = page.locator("#refusals li")
    await expect(refusals).to_have_text([
        re.compile(r'^"notes\.txt" is not a video we can take: choose an \.mp4, \.mov, \.m4v, '
                   r"\.3gp, \.webm, \.mkv, \.avi, \.mts or \.m2ts file\.\s*×$"),
        re.compile(r'^"big\.mov" is over the limit of 1 MiB\.\s*×$')])
    assert requests == [] and problems == []
    assert await page.locator("li.task").count() == 0
    # each is dismissed on its own...
    await refusals.first.locator(".dismiss").click()
    await expect(refusals).to_have_count(1)
    await expect(refusals).to_contain_text("big.mov")
    # ...and stays, even once a later upload goes through, until it is
    await upload_in_page(page, clips.small())
    await expect(page.locator("li.task")).to_have_count(1)
    await expect(refusals).to_have_count(1)
    await refusals.first.locator(".dismiss").click()
    await expect(page.locator("#refusals")).to_be_hidden()


async def test_a_name_with_quotes_is_shown_as_typed(browser: Browser, client: AppClient,
                                                    clips: Clips, tmp_path: Path) -> None:
    """The browser sends '"' in a file name as %22; the page shows the quotes."""
    named = tmp_path / 'my "best" take.mp4'
    named.write_bytes(clips.small().read_bytes())
    page, problems = await open_page(browser, client)
    await upload_in_page(page, named)
    await expect(page.locator("li.task .name")).to_have_text('my "best" take.mp4')
    [task] = await list_tasks(client)
    assert task["filename"] == 'my "best" take.mp4'
    assert problems == []


async def test_delete_during_processing(browser: Browser, make_client: MakeClient, clips: Clips,
                                        settings: Settings, tmp_path: Path) -> None:
    client = await make_client(ffmpeg=str(realtime_ffmpeg(tmp_path)))  # still running when the page opens
    task = await upload_ok(client, clips.long(), "720", filename="long one.mp4")
    page, problems = await open_page(browser, client)
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
    assert await list_tasks(client) == []
    assert ffmpeg_pids(settings.data_dir) == []
    assert files_in(settings.layout.uploads_dir) == [] and files_in(settings.layout.outputs_dir) == []
    await page.reload()
    await expect(page.locator("#empty")).to_be_visible()
    assert problems == [], task


async def test_failed_task_shows_reason_and_retries(browser: Browser, make_client: MakeClient,
                                                   clips: Clips, settings: Settings, tmp_path: Path) -> None:
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)))  # holds the queue, see failed_task
    damaged = await failed_task(client, clips, settings.layout.uploads_dir, filename="damaged.mp4")
    page, problems = await open_page(browser, client)
    row = card(page, "damaged.mp4")
    await expect(row).to_have_attribute("data-state", "FAILED")
    await expect(row.locator(".status")).not_to_be_empty()
    damaged.repair()
    await row.locator("form.retry button").click()
    await expect(row).to_have_attribute("data-state", "COMPLETED", timeout=60_000)
    await expect(page.locator("#announcer")).to_contain_text("damaged.mp4")
    assert problems == []


async def test_heartbeat_and_offline_notice(browser: Browser, client: AppClient) -> None:
    page, problems = await open_page(browser, client)
    beat = page.locator("#heartbeat")
    await expect(beat.locator('[data-field="lag-last"]')).to_have_text(MILLISECONDS)
    await expect(beat.locator('[data-field="jobs"]')).to_have_text("0")
    await page.context.set_offline(True)
    await expect(page.locator("#offline")).to_be_visible(timeout=15_000)
    await page.context.set_offline(False)
    await expect(page.locator("#offline")).to_be_hidden(timeout=15_000)
    # offline, a poll failed (that is what showed the notice) and the browser logged it;
    # nothing else may have gone wrong
    offline = [p for p in problems if "ERR_INTERNET_DISCONNECTED" in p or "Failed to fetch" in p]
    assert offline, "no failed request was logged while offline"
    assert len(offline) == len(problems), problems




async def test_the_list_follows_what_changed_since_its_version(browser: Browser, client: AppClient,
                                                               clips: Clips) -> None:
    """The page asks only for what changed since the list it shows, and from that adds,
    updates and removes cards, keeping them newest first, each saying when it was uploaded."""
    first = await upload_ok(client, clips.small(), "480", filename="first.mp4")
    await wait_for_state(client, first["id"], "COMPLETED")
    page, problems = await open_page(browser, client)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if urlsplit(r.url).path == "/tasks" else None)
    names = page.locator("li.task .name")
    await expect(names).to_have_text(["first.mp4"])

    second = await upload_ok(client, clips.small(), "480", filename="second.mp4")
    await expect(names).to_have_text(["second.mp4", "first.mp4"], timeout=10_000)  # added on top
    await expect(card(page, "second.mp4")).to_have_attribute("data-state", "COMPLETED",
                                                             timeout=60_000)  # updated
    await expect(card(page, "second.mp4").locator("a.download")).to_be_visible()
    await delete(client, first["id"])
    await expect(names).to_have_text(["second.mp4"], timeout=10_000)  # removed
    await upload_ok(client, clips.small(), "480", filename="third.mp4")
    await expect(names).to_have_text(["third.mp4", "second.mp4"], timeout=10_000)
    # the server's first paint, and a full list (render), draw the same order
    await page.reload()
    await expect(names).to_have_text(["third.mp4", "second.mp4"])
    await page.evaluate("() => render([])")  # as after a restart: the page drops its cards...
    await expect(names).to_have_count(0)
    await page.evaluate("(tasks) => render(tasks)", await list_tasks(client))  # ...redraws all
    await expect(names).to_have_text(["third.mp4", "second.mp4"])
    uploaded = page.locator("li.task time.uploaded")
    await expect(uploaded).to_have_text([re.compile(r"^\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d$")] * 2)
    assert await uploaded.first.get_attribute("datetime") == (await list_tasks(client))[-1]["created_at"]
    await delete(client, second["id"])
    await expect(names).to_have_text(["third.mp4"], timeout=10_000)

    # every poll asked for changes since a version, each from the version the one before got
    assert len(polls) >= 4
    assert all("since" in parse_qs(urlsplit(url).query) for url in polls), polls
    assert len({parse_qs(urlsplit(url).query)["since"][0] for url in polls}) >= 4
    assert problems == []


async def test_page_works_without_javascript(browser: Browser, client: AppClient, clips: Clips) -> None:
    page, _ = await open_page(browser, client, java_script_enabled=False)
    await upload_in_page(page, clips.small(), "480")
    await page.wait_for_url(str(client.make_url("/")))
    await expect(page.locator("li.task .name")).to_have_text("small.mp4")
    [task] = await list_tasks(client)
    assert task["resolution"] == "480"
    await wait_for_state(client, task["id"], "COMPLETED")
    await page.reload()
    await expect(page.locator("li.task a.download")).to_be_visible()
    await page.locator("li.task form.delete button").click()
    await page.wait_for_url(str(client.make_url("/")))
    await expect(page.locator("#empty")).to_be_visible()
    assert await list_tasks(client) == []


async def test_phone_sized_screen_and_keyboard(browser: Browser, client: AppClient, clips: Clips) -> None:
    task = await upload_ok(client, clips.small(), "480", filename="a rather long file name from a phone camera.mov")
    await wait_for_state(client, task["id"], "COMPLETED")
    page, problems = await open_page(browser, client, viewport={"width": 375, "height": 740})
    await expect(page.locator("li.task")).to_have_count(1)
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    # the keyboard reaches the file picker, the resolution, and the task's actions
    focused = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        focused.append(await page.evaluate(
            "() => document.activeElement.id || document.activeElement.textContent.trim()"
            " || document.activeElement.name"))
    # (the Upload button is for pages without JavaScript: here a pick starts the upload)
    assert "video-input" in focused and "resolution" in focused and "Delete" in focused, focused
    assert problems == []


async def test_four_finished_tasks_fit_a_phone(browser: Browser, client: AppClient,
                                               clips: Clips) -> None:
    """One picture per card: four finished videos take well under 2,450 px on a phone."""
    for number in range(4):
        task = await upload_ok(client, clips.make("wide.mp4", size="640x360"), "480",
                               filename=f"clip {number}.mp4")
        await wait_for_state(client, task["id"], "COMPLETED")
    page, problems = await open_page(browser, client, viewport={"width": 390, "height": 844})
    await expect(page.locator("li.task video")).to_have_count(4)
    assert await page.locator("li.task img").count() == 0
    height = await page.evaluate("() => document.documentElement.scrollHeight")
    assert height < 2450, height
    # the picture keeps the video's shape: a 16:9 box, the whole frame in it
    box = await page.locator("li.task video").first.bounding_box()
    assert box is not None and abs(box["width"] / box["height"] - 16 / 9) < 0.02
    assert problems == []


@pytest.mark.parametrize(("width", "name"), [(1280, "screenshot.png"), (390, "screenshot-phone.png")])
async def test_screenshot_of_every_state(browser: Browser, clips: Clips, tmp_path: Path,
                                         width: int, name: str) -> None:
    """Also the README's pictures: `make screenshot` saves them to docs/.

    The real program, as its own process: the heartbeat in the picture is then the
    server's own, not that of a loop it shares with this test and the browser driver.
    """
    hd, long, small = clips.make("hd.mov", size="1920x1080"), clips.long(), clips.small()
    # The browser's renderer starts before the server does: starting it takes both
    # cores for a moment, and the heartbeat would show that machine load as lag.
    page = await (await browser.new_context(viewport={"width": width, "height": 900})).new_page()
    await page.goto("about:blank")
    data_dir = tmp_path / "data"
    # every job as slow as its video plays: "interview take 3" is still running, and
    # "drone footage" still waiting, when the picture is taken
    server = await start_server(data_dir, "--ffmpeg", str(realtime_ffmpeg(tmp_path)))
    try:
        async with server.session() as session:
            done = await upload_ok(session, hd, "720", filename="beach at sunset.mov")
            await wait_for_state(session, done["id"], "COMPLETED")
            await failed_task(session, clips, data_dir / "uploads", resolution="1080",
                              filename="corrupted clip.mp4")
            running = await upload_ok(session, long, "720", filename="interview take 3.mov")
            await upload_ok(session, small, "1080", filename="drone footage.mp4")
            await wait_for_state(session, running["id"], "PROCESSING")
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            await page.goto(server.url)
            await expect(card(page, "interview take 3.mov").locator(".status")).to_contain_text(
                "left", timeout=20_000)
            # an upload still sending, its size changed on its row, and a file refused
            cdp = await page.context.new_cdp_session(page)
            await cdp.send("Network.emulateNetworkConditions", {
                "offline": False, "latency": 0, "downloadThroughput": -1,
                "uploadThroughput": 256 * 1024})
            recording = pad_to(clips.make("recording.mkv"), tmp_path / "family dinner.mkv",
                               64 * 1024 * 1024)
            notes = tmp_path / "notes.txt"
            notes.write_text("not a video")
            await upload_in_page(page, [recording, notes])
            row = page.locator("#uploads li.upload")
            await row.locator("select").select_option("1080")
            await expect(row.locator(".percent")).not_to_have_text("0%", timeout=20_000)
            await expect(page.locator("#refusals li")).to_have_count(1)
            target = Path(os.environ.get("VIDEO_ASYNC_SCREENSHOTS", "test-artifacts")) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(target), full_page=True)
            assert target.stat().st_size > 10_000
            for state in ("COMPLETED", "FAILED", "PROCESSING", "QUEUED"):
                assert await page.locator(f'li.task[data-state="{state}"]').count() >= 1, state
            assert await page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
            assert problems == []
            await page.context.close()  # the upload still sending ends with the page
    finally:
        assert await server.stop() == 0


async def test_a_queued_card_changes_its_size_until_its_transcode_starts(
        browser: Browser, make_client: MakeClient, clips: Clips, tmp_path: Path) -> None:
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)))
    page, problems = await open_page(browser, client)
    async with queue_held(client, clips) as running:
        await upload_ok(client, clips.make("hd.mp4", size="1280x720"), "720", filename="waiting.mp4")
        waiting = card(page, "waiting.mp4")
        await expect(waiting).to_have_attribute("data-state", "QUEUED", timeout=10_000)
        size = waiting.locator("label.size select")
        await expect(size).to_have_value("720")
        # the running one's transcode has started: no choice left on its card
        await expect(page.locator(f'li.task[data-id="{running["id"]}"] label.size')).to_be_hidden()
        async with page.expect_response(lambda r: r.request.method == "PATCH") as changed:
            await size.select_option("480")
        assert (await changed.value).status == 200
        await expect(waiting.locator(".res")).to_have_text("480p")
        await page.reload()  # the server's own drawing of the card has the choice too
        await expect(size).to_have_value("480")
    await expect(waiting).to_have_attribute("data-state", "COMPLETED", timeout=60_000)
    await expect(waiting.locator("label.size")).to_be_hidden()
    [task] = [t for t in await list_tasks(client) if t["filename"] == "waiting.mp4"]
    assert (task["resolution"], task["output"]["height"]) == ("480", 480)
    assert problems == []
