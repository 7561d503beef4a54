"""The happy path, end to end: upload, watch the task, download a web-ready MP4 and check it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .support.checks import files_in
from .support.clips import Clips, assert_web_ready, describe, hanging_ffmpeg, run_ffmpeg, video_size
from .support.internals import Settings
from .support.servers import MakeClient
from .support.uploading import AppClient, form_upload, upload_ok, wait_for_state


async def transcode(client: AppClient, clip: Path, resolution: str, tmp_path: Path,
                    filename: str | None = None) -> tuple[dict[str, Any], Path]:
    task = await upload_ok(client, clip, resolution, filename)
    # a small clip can finish while the answer waits for tasks.json to reach the disk
    assert task["state"] in ("QUEUED", "PROCESSING", "COMPLETED")
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    response = await client.get(done["download_url"])
    assert response.status == 200
    assert response.headers["Content-Type"] == "video/mp4"
    out = tmp_path / f"{task['id']}.mp4"
    out.write_bytes(await response.read())
    return done, out


@pytest.mark.parametrize(("resolution", "expected"), [("480", (854, 480)), ("720", (1280, 720)),
                                                      ("1080", (1920, 1080))])
async def test_each_resolution(client: AppClient, clips: Clips, tmp_path: Path, resolution: str,
                               expected: tuple[int, int]) -> None:
    clip = clips.make("hd.mov", size="1920x1080", seconds=1)
    task, out = await transcode(client, clip, resolution, tmp_path)
    assert video_size(assert_web_ready(out)) == expected
    assert (task["output"]["width"], task["output"]["height"]) == expected
    assert task["progress"] == 100 and task["error"] is None
    assert task["media"]["video_codec"] == "h264" and task["media"]["audio_codec"] == "aac"
    assert task["started_at"] <= task["finished_at"]


async def test_never_upscaled(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    _, out = await transcode(client, clips.small(), "1080", tmp_path)
    assert video_size(assert_web_ready(out)) == (320, 240)


async def test_portrait_clip_comes_out_720_wide(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    clip = clips.make("portrait.mp4", size="720x1280", seconds=1)
    _, out = await transcode(client, clip, "480", tmp_path)
    assert video_size(assert_web_ready(out)) == (480, 854)


async def test_rotation_metadata_is_applied(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    """A phone clip stored landscape with a 90 degree display matrix is shown portrait."""
    clip = clips.make("landscape.mov", size="640x360", seconds=1)
    rotated = tmp_path / "rotated.mov"
    run_ffmpeg("-display_rotation:v", "90", "-i", str(clip), "-c", "copy", str(rotated))
    assert "rotation of" in describe(rotated)
    task, out = await transcode(client, rotated, "480", tmp_path)
    assert task["media"]["rotation"] in (90, 270)
    assert video_size(assert_web_ready(out)) == (360, 640)


async def test_clip_without_audio(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    clip = clips.make("silent.mp4", audio=False)
    task, out = await transcode(client, clip, "720", tmp_path)
    assert task["media"]["audio_codec"] is None
    assert_web_ready(out, audio=False)


async def test_odd_sized_clip(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    clip = clips.make("odd.mp4", size="321x241", pix_fmt="yuv444p")  # odd sizes need 4:4:4
    _, out = await transcode(client, clip, "720", tmp_path)
    width, height = video_size(assert_web_ready(out))
    assert (width % 2, height % 2) == (0, 0) and abs(width - 320) <= 2 and height == 240


async def test_webm_vp9_with_opus(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    clip = clips.make("vp9.webm", vcodec=("-c:v", "libvpx-vp9", "-deadline", "realtime"))
    _, out = await transcode(client, clip, "480", tmp_path)
    assert video_size(assert_web_ready(out)) == (320, 240)


async def test_uppercase_extension_is_accepted(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    task, _ = await transcode(client, clips.small(), "480", tmp_path, filename="HOLIDAY.MOV")
    assert task["filename"] == "HOLIDAY.MOV"


async def test_download_details(client: AppClient, clips: Clips, tmp_path: Path,
                                settings: Settings) -> None:
    name = 'über "clip" <b>$(touch x)</b>.mp4'.replace("/", "")
    task, out = await transcode(client, clips.small(), "480", tmp_path, filename=name)
    assert task["filename"] == name
    response = await client.get(task["download_url"])
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="')
    # a 320x240 clip asked for at 480 is kept at 240p, and named so
    assert ("filename*=UTF-8''%C3%BCber%20%22clip%22%20%3Cb%3E%24%28touch%20x%29%3Cb%3E-240p.mp4"
            in disposition)
    assert "\n" not in disposition and '"clip"' not in disposition
    # Range requests, so a player can seek
    partial = await client.get(task["download_url"], headers={"Range": "bytes=0-99"})
    assert partial.status == 206 and len(await partial.read()) == 100
    thumb = await client.get(task["thumbnail_url"])
    assert thumb.status == 200 and thumb.headers["Content-Type"] == "image/jpeg"
    assert (await thumb.read())[:2] == b"\xff\xd8"
    # stored under generated names only, the original name nowhere on disk
    assert all(re.fullmatch(r"[0-9a-f]{32}\.(mp4|jpg)", f) for f in files_in(settings.layout.outputs_dir))
    assert all(re.fullmatch(r"[0-9a-f]{32}\.mp4", f) for f in files_in(settings.layout.uploads_dir))
    assert not (Path.cwd() / "x").exists()


async def test_download_before_completion_is_409(make_client: MakeClient, clips: Clips,
                                                tmp_path: Path) -> None:
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)))  # the job runs until deleted
    task = await upload_ok(client, clips.long(), "480")
    response = await client.get(f"/tasks/{task['id']}/download")
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "not_completed"
    await client.delete(f"/tasks/{task['id']}")


async def test_plain_form_post_redirects_to_the_page(client: AppClient, clips: Clips) -> None:
    response = await form_upload(client, clips.small(), "480")
    assert response.status == 200 and response.url.path == "/"  # followed the 303
    assert response.history[0].status == 303
    assert "small.mp4" in await response.text()


async def test_page_lists_tasks_with_names_escaped(client: AppClient, clips: Clips) -> None:
    task = await upload_ok(client, clips.small(), "480", filename="<script>alert(1)<i>.mp4")
    await wait_for_state(client, task["id"], "COMPLETED")
    page = await client.get("/")
    html = await page.text()
    assert "&lt;script&gt;alert(1)&lt;i&gt;.mp4" in html
    assert "<script>alert" not in html
    assert f'/tasks/{task["id"]}/download' in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
