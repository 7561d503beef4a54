"""Never flooded: upload slots, queue length, disk reserve, silent clients, video length, body caps."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .support.checks import assert_error, assert_nothing_left, files_in
from .support.clips import Clips, hanging_ffmpeg
from .support.failing import queue_held
from .support.internals import MIB, Settings
from .support.raw import PART_HEAD, EndlessUpload, address, hang_up, open_upload
from .support.servers import MakeClient
from .support.uploading import AppClient, upload, upload_ok, uploads_in_progress, wait_for_state
from .support.waiting import wait_until


# -- 503 -----------------------------------------------------------------------------

async def test_too_many_uploads_at_once(make_client: MakeClient, settings: Settings,
                                        clips: Clips) -> None:
    client = await make_client(max_uploads=1)
    _, first = await open_upload(*address(client), PART_HEAD + clips.small().read_bytes())
    await wait_until(lambda: uploads_in_progress(client, 1), 10, "the first upload to start")
    response = await upload(client, clips.small())
    await assert_error(response, 503, "busy")
    assert int(response.headers["Retry-After"]) > 0
    await hang_up(first)
    await wait_until(lambda: uploads_in_progress(client, 0), 10, "the first upload to end")
    await assert_nothing_left(client, settings)  # neither left a file
    await upload_ok(client, clips.small())  # a slot is free again


async def test_queue_full(make_client: MakeClient, settings: Settings, clips: Clips,
                          tmp_path: Path) -> None:
    client = await make_client(max_queued=2, ffmpeg=str(hanging_ffmpeg(tmp_path)))  # runs till deleted
    async with queue_held(client, clips):  # a running job is not a waiting one
        waiting = [await upload_ok(client, clips.small(), "480") for _ in range(2)]
        response = await upload(client, clips.small())
        await assert_error(response, 503, "queue_full")
        assert "2 uploads in progress or waiting" in (await response.json())["error"]["message"]
        assert int(response.headers["Retry-After"]) > 0
        assert len(files_in(settings.layout.uploads_dir)) == 3
        await client.delete(f"/tasks/{waiting[0]['id']}")
        await upload_ok(client, clips.small())  # room again


async def test_queue_full_counts_uploads_in_progress(make_client: MakeClient, settings: Settings,
                                                     clips: Clips) -> None:
    """Nothing queued yet, one upload still streaming: it counts, and the message says so."""
    client = await make_client(max_queued=1)
    _, first = await open_upload(*address(client), PART_HEAD + clips.small().read_bytes())
    await wait_until(lambda: uploads_in_progress(client, 1), 10, "the first upload to start")
    response = await upload(client, clips.small())
    await assert_error(response, 503, "queue_full")
    message = (await response.json())["error"]["message"]
    assert "1 upload in progress or waiting" in message, message
    assert "1 videos" not in message and "1 uploads" not in message
    await hang_up(first)
    await wait_until(lambda: uploads_in_progress(client, 0), 10, "the first upload to end")
    await assert_nothing_left(client, settings)


# -- 507 -----------------------------------------------------------------------------

async def test_no_upload_eats_into_the_disk_reserve(make_client: MakeClient, settings: Settings,
                                                    clips: Clips) -> None:
    client = await make_client(min_free_bytes=2**60)  # more than any disk has
    reader, writer = await open_upload(*address(client), b"", length=1000)
    async with asyncio.timeout(10):
        status_line = await reader.readline()
    await hang_up(writer)
    assert b" 507 " in status_line  # refused from the headers alone
    await assert_error(await upload(client, clips.small()), 507, "disk_full")
    await assert_nothing_left(client, settings)


async def test_content_length_checked_against_the_reserve(make_client: MakeClient, settings: Settings,
                                                          clips: Clips, tmp_path: Path) -> None:
    settings.data_dir.mkdir()
    free = shutil.disk_usage(settings.data_dir).free
    # margins in hundreds of MiB: other programs may write to the same disk meanwhile
    client = await make_client(min_free_bytes=free - 300 * MIB, max_upload_bytes=2048 * MIB)
    reader, writer = await open_upload(*address(client), b"", length=1024 * MIB)  # 724 MiB too much
    async with asyncio.timeout(10):
        assert b" 507 " in await reader.readline()
    await hang_up(writer)
    await assert_nothing_left(client, settings)
    task = await upload_ok(client, clips.small(), "480")  # a small one still fits
    await wait_for_state(client, task["id"], "COMPLETED")


async def test_streaming_upload_stopped_at_the_reserve(make_client: MakeClient, settings: Settings,
                                                       clips: Clips, caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    """No Content-Length: the upload is stopped once what it wrote brings free space to the reserve."""
    settings.data_dir.mkdir()
    free = shutil.disk_usage(settings.data_dir).free
    client = await make_client(min_free_bytes=free - 64 * MIB, max_upload_bytes=2048 * MIB)
    endless = EndlessUpload(clips.small(), 256 * 1024, until=600 * MIB)
    status, code = await endless.refused(client, caplog)
    assert status == 507 and code in ("disk_full", None)  # None: the answer was cut off, see refused()
    assert endless.sent < 400 * MIB, "the upload went on past the reserve"
    assert "free disk space reached the reserve" in caplog.text
    await wait_until(lambda: uploads_in_progress(client, 0), 10, "the upload to end")
    await assert_nothing_left(client, settings)


# -- silent clients ------------------------------------------------------------------

async def test_silent_upload_is_dropped(make_client: MakeClient, settings: Settings,
                                        clips: Clips) -> None:
    client = await make_client(upload_idle_timeout=1.0)
    reader, writer = await open_upload(*address(client), PART_HEAD + clips.small().read_bytes()[:5000])
    await wait_until(lambda: uploads_in_progress(client, 1), 10, "the upload to start")
    async with asyncio.timeout(10):
        status_line = await reader.readline()  # we send nothing more
    assert b" 408 " in status_line
    await hang_up(writer)
    await wait_until(lambda: uploads_in_progress(client, 0), 10, "the upload to be dropped")
    await assert_nothing_left(client, settings)


async def test_silent_before_the_first_byte_of_body(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(upload_idle_timeout=1.0)
    reader, writer = await open_upload(*address(client), b"")
    async with asyncio.timeout(10):
        assert b" 408 " in await reader.readline()
    await hang_up(writer)
    await assert_nothing_left(client, settings)


async def test_slow_but_steady_upload_is_kept(make_client: MakeClient, settings: Settings,
                                              clips: Clips) -> None:
    """Each pause is shorter than the idle limit, the whole upload much longer: it is accepted."""
    client = await make_client(upload_idle_timeout=1.0)
    data = clips.small().read_bytes()
    pieces = [data[i:i + len(data) // 6 + 1] for i in range(0, len(data), len(data) // 6 + 1)]

    async def trickle() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            await asyncio.sleep(0.4)  # the slowness is what this test is about

    with aiohttp.MultipartWriter("form-data") as body:
        part = body.append(trickle(), {"Content-Type": "video/mp4"})
        part.set_content_disposition("form-data", name="video", filename="slow.mp4")
    response = await client.post("/videos/upload", data=body)
    assert response.status == 201, await response.text()
    task = await response.json()
    await wait_for_state(client, task["id"], "COMPLETED")


# -- length of the video, bodies of other routes ------------------------------------------

async def test_video_longer_than_the_limit(make_client: MakeClient, settings: Settings,
                                           clips: Clips) -> None:
    client = await make_client(max_duration=0.5)
    response = await upload(client, clips.small())  # 1 s long
    await assert_error(response, 422, "too_long")
    assert "1 s" in (await response.json())["error"]["message"]
    await assert_nothing_left(client, settings)
    assert Settings().max_duration == 3 * 3600


async def test_other_routes_refuse_big_bodies(client: AppClient, clips: Clips) -> None:
    task = await upload_ok(client, clips.small(), "480")
    for method, path in (("POST", f"/tasks/{task['id']}/retry"), ("DELETE", f"/tasks/{task['id']}"),
                         ("GET", "/tasks"), ("POST", f"/tasks/{task['id']}/delete")):
        response = await client.request(method, path, data=bytes(1024 * 1024))
        await assert_error(response, 413, "too_large")
    assert (await client.get(f"/tasks/{task['id']}")).status == 200  # nothing was deleted
    await wait_for_state(client, task["id"], "COMPLETED")


async def test_a_burst_cannot_slip_past_the_upload_limit(make_client: MakeClient, settings: Settings,
                                                         clips: Clips) -> None:
    """Six uploads arriving together, two slots: the limit holds even while admitted() awaits the disk check."""
    client = await make_client(max_uploads=2)
    opened = await asyncio.gather(*(open_upload(*address(client), PART_HEAD + clips.small().read_bytes()[:1000])
                                    for _ in range(6)))
    statuses = []
    for reader, writer in opened:
        try:
            async with asyncio.timeout(2):
                statuses.append(await reader.readline())
        except TimeoutError:
            statuses.append(b"still streaming")
        await hang_up(writer)
    assert sum(b" 503 " in line for line in statuses) == 4, statuses
    await wait_until(lambda: uploads_in_progress(client, 0), 10, "the two uploads to be dropped")
    await assert_nothing_left(client, settings)

