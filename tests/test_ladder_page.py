"""All sizes in the page: a 1080p clip uploaded with "All sizes" plays as an HLS ladder,
through hls.js where the browser has no HLS of its own (its sizes switchable), and through
the browser's own HLS where it has it."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page

from .support.browser import completed_card, open_page, upload_in_page
from .support.clips import Clips
from .support.uploading import AppClient
from .support.waiting import wait_until

SOURCE = (1920, 1080)
# A browser without HLS of its own (Firefox, Chrome before it had one): the page must
# bring its player.
NO_NATIVE_HLS = """
const canPlay = HTMLMediaElement.prototype.canPlayType;
HTMLMediaElement.prototype.canPlayType = function (type) {
  return /mpegurl/i.test(type) ? "" : canPlay.call(this, type);
};
"""


def hd_clip(clips: Clips) -> Path:
    """2 s of 1080p with sound: a ladder of four rungs."""
    return clips.make("hd-2s.mp4", size="1920x1080", seconds=2,
                      vcodec=("-c:v", "libx264", "-preset", "ultrafast", "-crf", "35"))


async def ladder_task(page: Page, clips: Clips) -> tuple[str, list[str]]:
    """The clip uploaded with "All sizes" in the page, once COMPLETED: (its task id, the
    URLs the page requests from then on)."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await upload_in_page(page, hd_clip(clips), "all")
    task = await completed_card(page, "hd-2s.mp4", timeout=120_000)
    task_id = await task.get_attribute("data-id")
    assert task_id
    return task_id, requested


async def test_all_sizes_play_with_a_player_that_switches_between_them(
        browser: Browser, client: AppClient, clips: Clips) -> None:
    page, problems = await open_page(browser, client)
    await page.context.add_init_script(NO_NATIVE_HLS)
    await page.reload()
    task_id, requested = await ladder_task(page, clips)
    video = page.locator(f'li.task[data-id="{task_id}"] .preview video')
    assert await video.get_attribute("data-ladder") == f"/tasks/{task_id}/ladder/master.m3u8"
    async def player_attached() -> bool:
        return bool(await video.evaluate("(video) => Boolean(video.hls)"))
    await wait_until(player_attached, 30, "hls.js to take the video")
    assert any(url.endswith("/static/hls.light.min.js") for url in requested)

    # played: the player reads the master playlist and lists its rungs
    await video.evaluate("""(video) => {
        window.loadedLevels = [];
        video.hls.on(Hls.Events.FRAG_LOADED, (event, data) => window.loadedLevels.push(data.frag.level));
        video.muted = true;
        video.play().catch(() => {});
    }""")

    async def rungs() -> list[list[int]] | None:
        found = await video.evaluate("(video) => video.hls.levels.map((l) => [l.width, l.height])")
        return found or None
    levels = await wait_until(rungs, 30, "the player to read the master playlist")
    # the player orders its levels by bitrate, lowest first: each one's rung by its playlist
    playlists = await video.evaluate("(video) => video.hls.levels.map((l) => l.uri || l.url)")
    assert len(levels) >= 3, levels
    assert all(width <= SOURCE[0] and height <= SOURCE[1] for width, height in levels), levels
    assert len(set(map(tuple, levels))) == len(levels), levels

    async def playing() -> bool:
        return bool(await video.evaluate("(video) => video.currentTime > 0"))
    await wait_until(playing, 30, "the ladder to play")

    # each size, asked for in turn, is fetched from its own rung
    for level in range(len(levels)):
        # from the start: a 2 s clip has played to its end by now, and a switch fetches
        # the segment at the playing position
        await video.evaluate("""(video, level) => {
            video.currentTime = 0;
            video.hls.currentLevel = level;
            video.play().catch(() => {});
        }""", level)

        async def rung_loaded() -> bool:
            loaded = await page.evaluate("() => window.loadedLevels")
            rung = playlists[level].rsplit("/", 1)[-1].removesuffix("m3u8")  # "v2."
            return level in loaded and any(f"/ladder/{rung}" in url and url.endswith(".m4s")
                                           for url in requested)
        await wait_until(rung_loaded, 30, f"a segment of rung {level}")

    # the server's first paint of the card plays the ladder too
    await page.reload()
    await wait_until(player_attached, 30, "hls.js to take the server-drawn card's video")
    assert problems == []


async def test_all_sizes_play_natively_where_the_browser_has_hls(
        browser: Browser, client: AppClient, clips: Clips) -> None:
    page, problems = await open_page(browser, client)
    assert await page.evaluate("() => document.createElement('video')"
                               ".canPlayType('application/vnd.apple.mpegurl')") != ""
    task_id, requested = await ladder_task(page, clips)
    video = page.locator(f'li.task[data-id="{task_id}"] .preview video')
    master = f"/tasks/{task_id}/ladder/master.m3u8"

    async def given_the_ladder() -> bool:
        return bool(await video.evaluate("(video, url) => video.src.endsWith(url)", master))
    await wait_until(given_the_ladder, 10, "the video to be given the master playlist")
    await video.evaluate("(video) => { video.muted = true; return video.play(); }")

    async def playing() -> bool:
        return bool(await video.evaluate("(video) => video.currentTime > 0"))
    await wait_until(playing, 30, "the ladder to play")
    assert any(url.endswith(master) for url in requested)
    assert not any(url.endswith("/static/hls.light.min.js") for url in requested)
    assert problems == []
