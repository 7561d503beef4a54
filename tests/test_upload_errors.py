"""Bad uploads: each gets a JSON error with the right status and leaves no file and no task."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from .support.checks import assert_error, assert_nothing_left, files_in
from .support.clips import Clips, pad_to, run_ffmpeg
from .support.internals import MIB, Settings
from .support.raw import PART_HEAD, EndlessFields, EndlessUpload, address, hang_up, open_upload, post_raw
from .support.servers import MakeClient
from .support.uploading import AppClient, upload, uploads_in_progress
from .support.waiting import wait_until


async def test_body_that_is_not_multipart(client: AppClient, settings: Settings) -> None:
    await assert_error(await client.post("/videos/upload", json={"video": "x"}), 400, "not_multipart")
    await assert_error(await client.post("/videos/upload", data=b"raw bytes"), 400, "not_multipart")
    await assert_nothing_left(client, settings)


async def test_no_video_field(client: AppClient, settings: Settings) -> None:
    form = aiohttp.FormData()
    form.add_field("resolution", "720")
    form.add_field("other", b"data", filename="clip.mp4")
    await assert_error(await client.post("/videos/upload", data=form), 400, "no_file")
    await assert_nothing_left(client, settings)


async def test_video_field_that_is_not_a_file(client: AppClient, settings: Settings) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("video", "just text")
    await assert_error(await client.post("/videos/upload", data=form), 400, "no_file")
    await assert_nothing_left(client, settings)


@pytest.mark.parametrize("resolution", ["360", "abc", "", "720p", "1080 "*300])
async def test_unknown_resolution(client: AppClient, settings: Settings, clips: Clips,
                                  resolution: str) -> None:
    response = await upload(client, clips.small(), resolution=resolution)
    await assert_error(response, 400, "field_too_large" if len(resolution) > 1024 else "bad_resolution")
    await assert_nothing_left(client, settings)


async def test_unknown_resolution_after_the_file(client: AppClient, settings: Settings,
                                                 clips: Clips) -> None:
    form = aiohttp.FormData()
    form.add_field("video", clips.small().read_bytes(), filename="clip.mp4")
    form.add_field("resolution", "999")
    await assert_error(await client.post("/videos/upload", data=form), 400, "bad_resolution")
    await assert_nothing_left(client, settings)


async def test_empty_file(client: AppClient, settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    await assert_error(await upload(client, empty), 415, "empty_file")
    await assert_nothing_left(client, settings)


@pytest.mark.parametrize("name", ["clip.flv", "clip.wmv", "clip", "clip.mp4.exe", "clip.txt"])
async def test_extension_not_accepted(client: AppClient, settings: Settings, clips: Clips,
                                      name: str) -> None:
    await assert_error(await upload(client, clips.small(), filename=name), 415, "unsupported_type")
    await assert_nothing_left(client, settings)


async def test_text_file_renamed_mp4(client: AppClient, settings: Settings, tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("This is not a video, just some notes.\n" * 100)
    await assert_error(await upload(client, fake), 415, "not_video")
    await assert_nothing_left(client, settings)


async def test_random_bytes(client: AppClient, settings: Settings, tmp_path: Path) -> None:
    noise = tmp_path / "noise.mov"
    noise.write_bytes(os.urandom(100_000))
    await assert_error(await upload(client, noise), 415, "not_video")
    await assert_nothing_left(client, settings)


async def test_audio_only_mp4(client: AppClient, settings: Settings, tmp_path: Path) -> None:
    song = tmp_path / "song.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(song))
    await assert_error(await upload(client, song), 415, "not_video")
    await assert_nothing_left(client, settings)


async def test_valid_header_then_garbage(client: AppClient, settings: Settings, tmp_path: Path,
                                         clips: Clips) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clips.small().read_bytes()[:32] + os.urandom(50_000))
    await assert_error(await upload(client, broken), 415, "not_video")
    await assert_nothing_left(client, settings)


async def test_webm_content_named_mp4(client: AppClient, settings: Settings, clips: Clips) -> None:
    webm = clips.make("tiny.webm", vcodec=("-c:v", "libvpx-vp9", "-deadline", "realtime"), audio=False)
    await assert_error(await upload(client, webm, filename="clip.mp4"), 415, "type_mismatch")
    await assert_nothing_left(client, settings)


async def test_two_video_parts(client: AppClient, settings: Settings, clips: Clips) -> None:
    form = aiohttp.FormData()
    form.add_field("video", clips.small().read_bytes(), filename="a.mp4")
    form.add_field("video", clips.small().read_bytes(), filename="b.mp4")
    await assert_error(await client.post("/videos/upload", data=form), 400, "bad_multipart")
    await assert_nothing_left(client, settings)


async def test_multipart_without_boundary(client: AppClient, settings: Settings) -> None:
    response = await client.post("/videos/upload", data=b"--x\r\n\r\n",
                                 headers={"Content-Type": "multipart/form-data"})
    await assert_error(response, 400, "bad_multipart")
    await assert_nothing_left(client, settings)


async def test_truncated_multipart_body(client: AppClient, settings: Settings, clips: Clips) -> None:
    body = PART_HEAD + clips.small().read_bytes()[:5000]  # no closing boundary
    await assert_error(await post_raw(client, body), 400, "bad_multipart")
    await assert_nothing_left(client, settings)


# -- the size limit ------------------------------------------------------------

async def test_limit_is_inclusive(make_client: MakeClient, settings: Settings, clips: Clips,
                                  tmp_path: Path) -> None:
    client = await make_client(max_upload_bytes=MIB)
    exact = pad_to(clips.small(), tmp_path / "exact.mp4", MIB)
    over = pad_to(clips.small(), tmp_path / "over.mp4", MIB + 1)
    response = await upload(client, exact)
    assert response.status == 201, await response.text()
    assert (await response.json())["size"] == MIB
    await assert_error(await upload(client, over), 413, "too_large")
    assert len(await (await client.get("/tasks")).json()) == 1
    assert len(files_in(settings.layout.uploads_dir)) == 1  # only the accepted one


async def test_default_limit_is_200_mib() -> None:
    assert Settings().max_upload_bytes == 209_715_200
    assert Settings.from_args([], environ={}).max_upload_bytes == 209_715_200


async def test_content_length_refused_before_any_byte(client: AppClient, settings: Settings) -> None:
    """A declared 300 MiB body is refused from its headers alone: nothing is sent after them."""
    reader, writer = await open_upload(*address(client), b"", length=300 * MIB)
    async with asyncio.timeout(10):
        status_line = await reader.readline()
    await hang_up(writer)
    assert b" 413 " in status_line
    await assert_nothing_left(client, settings)


async def test_streamed_body_stopped_at_the_limit(make_client: MakeClient, settings: Settings,
                                                  clips: Clips, caplog: pytest.LogCaptureFixture) -> None:
    """No Content-Length (chunked): the server counts and stops once the file passes the limit."""
    client = await make_client(max_upload_bytes=MIB)
    endless = EndlessUpload(clips.small(), 64 * 1024, until=20 * MIB)
    status, code = await endless.refused(client, caplog)
    assert status == 413 and code in ("too_large", None)  # None: the answer was cut off, see refused()
    assert endless.sent < 20 * MIB, "the server read the whole body instead of stopping at the limit"
    await wait_until(lambda: uploads_in_progress(client, 0), 10, "upload to end")
    await assert_nothing_left(client, settings)


async def test_a_body_that_goes_on_after_the_video_is_stopped(make_client: MakeClient, settings: Settings,
                                                               clips: Clips, caplog: pytest.LogCaptureFixture) -> None:
    """Small fields after the video, without end: the whole body counts against the limit."""
    client = await make_client(max_upload_bytes=MIB)
    endless = EndlessFields(clips.small(), 0, until=20 * MIB)
    status, code = await endless.refused(client, caplog)
    assert status == 413 and code in ("too_large", None)  # None: the answer was cut off, see refused()
    assert endless.sent < 20 * MIB, "the server read the whole body instead of stopping at the limit"
    await wait_until(lambda: uploads_in_progress(client, 0), 10, "upload to end")
    await assert_nothing_left(client, settings)


async def test_client_disconnect_mid_upload(client: AppClient, settings: Settings,
                                            clips: Clips) -> None:
    _, writer = await open_upload(*address(client), PART_HEAD + clips.small().read_bytes())
    await wait_until(lambda: uploads_in_progress(client, 1), 10, "the upload to start")
    await wait_until(lambda: _has_files(settings.layout.uploads_dir), 10, "the upload to reach the disk")
    await hang_up(writer)  # with most of the body unsent
    await wait_until(lambda: uploads_in_progress(client, 0), 10, "the server to notice")
    await assert_nothing_left(client, settings)


async def _has_files(folder: Path) -> bool:
    return files_in(folder) != []  # it really was being written


# -- unknown tasks ---------------------------------------------------------------

@pytest.mark.parametrize("task_id", ["0" * 32, "nope", "../../etc", "A" * 32, "0" * 33])
@pytest.mark.parametrize(("method", "suffix"), [
    ("GET", ""), ("GET", "/download"), ("GET", "/thumbnail"), ("DELETE", ""), ("POST", "/retry"),
])
async def test_unknown_task(client: AppClient, task_id: str, method: str, suffix: str) -> None:
    response = await client.request(method, f"/tasks/{task_id}{suffix}")
    await assert_error(response, 404, "not_found")


async def test_unknown_route_is_json(client: AppClient) -> None:
    await assert_error(await client.get("/nowhere"), 404, "not_found")
    await assert_error(await client.put("/tasks"), 405, "method_not_allowed")
