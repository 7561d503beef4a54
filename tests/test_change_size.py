"""PATCH /tasks/{id} {"resolution": ...}: the size a task is made at, changed until its
transcode starts; for a resumable upload still receiving, the size its task will have."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .support import tus
from .support.checks import assert_error
from .support.clips import Clips, hanging_ffmpeg
from .support.failing import failed_task, queue_held
from .support.internals import Settings
from .support.queue import Redis
from .support.servers import MakeClient, start_server
from .support.uploading import AppClient, get_json, upload_ok, wait_for_state


async def change(client: AppClient, task_id: str, body: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.patch(f"/tasks/{task_id}", data=data,
                              headers={"Content-Type": "application/json"})


async def test_a_queued_task_is_made_at_the_size_it_was_changed_to(make_client: MakeClient, clips: Clips,
                                                                   settings: Settings, tmp_path: Path) -> None:
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)))
    clip = clips.make("hd.mp4", size="1280x720")
    async with queue_held(client, clips):
        task = await upload_ok(client, clip, "720")
        response = await change(client, task["id"], {"resolution": 240 + 120})
        await assert_error(response, 400, "bad_resolution")
        response = await change(client, task["id"], {"resolution": "480"})
        assert response.status == 200, await response.text()
        changed = await response.json()
        assert (changed["resolution"], changed["state"]) == ("480", "QUEUED")
        assert changed["display"]["resolution"] == "480p"
        saved = json.loads(settings.layout.snapshot_path.read_text())["tasks"]
        assert [t["resolution"] for t in saved if t["id"] == task["id"]] == ["480"]  # on disk
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    assert (done["output"]["width"], done["output"]["height"]) == (854, 480)


async def test_a_started_or_finished_task_keeps_its_size(make_client: MakeClient, clips: Clips,
                                                         tmp_path: Path) -> None:
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)))
    async with queue_held(client, clips) as running:
        await assert_error(await change(client, running["id"], {"resolution": 1080}),
                           409, "already_started")
    done = await wait_for_state(client, (await upload_ok(client, clips.small(), "480"))["id"],
                                "COMPLETED")
    await assert_error(await change(client, done["id"], {"resolution": 720}), 409, "already_started")
    assert (await get_json(client, f"/tasks/{done['id']}"))["resolution"] == "480"


async def test_a_failed_task_retried_runs_at_its_new_size(make_client: MakeClient, clips: Clips,
                                                          settings: Settings, tmp_path: Path) -> None:
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)))
    failed = await failed_task(client, clips, settings.layout.uploads_dir, resolution="480")
    response = await change(client, failed.task["id"], {"resolution": 720})
    assert response.status == 200 and (await response.json())["resolution"] == "720"
    failed.repair()
    assert (await client.post(f"/tasks/{failed.task['id']}/retry")).status == 200
    done = await wait_for_state(client, failed.task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    assert done["resolution"] == "720"
    assert done["display"]["resolution"] == "kept at 240p: the source is smaller"


@pytest.mark.parametrize("body", [b"", b"not json", b"[1080]", {"resolution": True},
                                  {"resolution": 1080.0}, {"resolution": [1080]}, {},
                                  {"resolution": 1080, "filename": "x.mp4"}])
async def test_a_change_that_is_not_a_resolution_is_refused(client: AppClient, clips: Clips,
                                                            body: Any) -> None:
    task = await upload_ok(client, clips.small(), "480")
    response = await change(client, task["id"], body)
    assert response.status == 400
    code = (await response.json())["error"]["code"]
    assert code in ("bad_change", "bad_resolution"), code
    assert (await get_json(client, f"/tasks/{task['id']}"))["resolution"] == "480"


async def test_a_change_for_no_task_is_404(client: AppClient) -> None:
    await assert_error(await change(client, "0" * 32, {"resolution": 480}), 404, "not_found")
    await assert_error(await change(client, "../x", {"resolution": 480}), 404, "not_found")


async def test_a_resumable_upload_takes_the_size_changed_while_it_uploads(client: AppClient,
                                                                          clips: Clips) -> None:
    data = clips.make("hd.mp4", size="1280x720").read_bytes()
    location = await tus.created(client, len(data), "hd.mp4", resolution="720")
    upload_id = location.rsplit("/", 1)[-1]
    assert (await tus.patch(client, location, 0, data[:1000])).status == 204
    response = await change(client, upload_id, {"resolution": 480})
    assert response.status == 202, await response.text()
    assert await response.json() == {"id": upload_id, "resolution": "480"}
    assert (await tus.patch(client, location, 1000, data[1000:])).status == 204
    done = await wait_for_state(client, upload_id, "COMPLETED", "FAILED")
    assert (done["state"], done["resolution"]) == ("COMPLETED", "480"), done["error"]
    assert (done["output"]["width"], done["output"]["height"]) == (854, 480)


async def test_with_a_queue_the_size_changes_only_before_the_task_is_queued(
        tmp_path: Path, clips: Clips, redis: Redis) -> None:
    """A task queued for the workers has its job, order and all, in Redis already: 409.
    A resumable upload still sending is not a job yet: its size still changes."""
    server = await start_server(tmp_path / "data", "--queue", redis.url)
    try:
        async with server.session() as session:
            task = await upload_ok(session, clips.small(), "480")
            response = await session.patch(f"/tasks/{task['id']}", json={"resolution": 720})
            await assert_error(response, 409, "already_queued")
            assert (await get_json(session, f"/tasks/{task['id']}"))["resolution"] == "480"
            location = await tus.created(session, 5000, "clip.mp4", resolution="480")
            response = await session.patch(f"/tasks/{location.rsplit('/', 1)[-1]}",
                                           json={"resolution": 720})
            assert response.status == 202, await response.text()
    finally:
        assert await server.stop() == 0
