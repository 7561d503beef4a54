"""tasks.json: what a restart brings back, and what it refuses to believe."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from .support.checks import files_in
from .support.clips import Clips, realtime_ffmpeg
from .support.failing import failed_task
from .support.internals import Encoder, Settings, SnapshotWriter, TaskStore, a_task, to_record
from .support.servers import MakeClient
from .support.uploading import upload_ok, wait_for_state


def snapshot(settings: Settings) -> dict[str, Any]:
    return json.loads(settings.layout.snapshot_path.read_text())


def without_position(task: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in task.items() if key != "queue_position"}


async def test_restart_brings_back_every_task(make_client: MakeClient, clips: Clips,
                                              settings: Settings, tmp_path: Path) -> None:
    # each job as slow as its video plays: failed_task's blocker outlasts the damage
    client = await make_client(ffmpeg=str(realtime_ffmpeg(tmp_path)))
    done = await upload_ok(client, clips.small(), "480", filename="über clip.mp4")
    await wait_for_state(client, done["id"], "COMPLETED")
    broken = (await failed_task(client, clips, settings.layout.uploads_dir)).task
    before = await (await client.get("/tasks")).json()
    video = await (await client.get(f"/tasks/{done['id']}/download")).read()
    await client.close()  # a clean stop: the last snapshot is written on the way out

    records = snapshot(settings)["tasks"]
    assert [r["source"] for r in records] == [f"uploads/{done['id']}.mp4",
                                              f"uploads/{broken['id']}.mp4"]  # relative paths
    assert records[0]["output_path"] == f"outputs/{done['id']}.mp4"
    client = await make_client()
    after = await (await client.get("/tasks")).json()
    assert [without_position(t) for t in after] == [without_position(t) for t in before]
    assert await (await client.get(f"/tasks/{done['id']}/download")).read() == video
    assert (await client.get(f"/tasks/{done['id']}/thumbnail")).status == 200
    health = await (await client.get("/healthz")).json()
    assert health["unreferenced_files"] == [] and health["persist"] is True


async def test_files_gone_while_stopped(make_client: MakeClient, clips: Clips,
                                        settings: Settings, tmp_path: Path) -> None:
    client = await make_client(ffmpeg=str(realtime_ffmpeg(tmp_path)))  # still running at the stop
    done = await upload_ok(client, clips.small(), "480")
    await wait_for_state(client, done["id"], "COMPLETED")
    running = await upload_ok(client, clips.long(), "480")
    queued = await upload_ok(client, clips.small(), "480")
    await wait_for_state(client, running["id"], "PROCESSING")
    await client.close()  # stops the running job: it is PROCESSING in the snapshot
    assert [r["state"] for r in snapshot(settings)["tasks"]] == ["COMPLETED", "PROCESSING", "QUEUED"]

    (settings.layout.outputs_dir / f"{done['id']}.mp4").unlink()
    (settings.layout.uploads_dir / f"{queued['id']}.mp4").unlink()
    client = await make_client()
    tasks = {t["id"]: t for t in await (await client.get("/tasks")).json()}
    assert tasks[done["id"]]["state"] == "FAILED"
    assert "finished video is missing" in tasks[done["id"]]["error"]
    assert (await client.get(f"/tasks/{done['id']}/download")).status == 409
    assert tasks[queued["id"]]["state"] == "FAILED"
    assert "uploaded file is missing" in tasks[queued["id"]]["error"]
    # the interrupted job runs again from the start
    assert tasks[running["id"]]["state"] in ("QUEUED", "PROCESSING")
    assert tasks[running["id"]]["started_at"] is None or tasks[running["id"]]["progress"] < 100
    finished = await wait_for_state(client, running["id"], "COMPLETED", "FAILED")
    assert finished["state"] == "COMPLETED", finished["error"]
    # the task whose video vanished keeps its thumbnail: still shown, so not reported as stray
    assert (settings.layout.outputs_dir / f"{done['id']}.jpg").is_file()
    assert (await client.get(f"/tasks/{done['id']}/thumbnail")).status == 200
    health = await (await client.get("/healthz")).json()
    assert health["unreferenced_files"] == []


async def test_unreferenced_files_are_reported_not_deleted(make_client: MakeClient, clips: Clips,
                                                           settings: Settings) -> None:
    stray = settings.layout.outputs_dir / ("ab" * 16 + ".mp4")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(clips.small().read_bytes())
    (settings.layout.uploads_dir).mkdir()
    (settings.layout.uploads_dir / ("cd" * 16 + ".partial")).write_bytes(b"half an upload")
    (settings.layout.outputs_dir / ("ef" * 16 + ".partial.mp4")).write_bytes(b"half an output")
    client = await make_client()
    health = await (await client.get("/healthz")).json()
    assert health["unreferenced_files"] == [f"outputs/{stray.name}"]
    assert stray.exists()
    assert files_in(settings.layout.uploads_dir) == [] and files_in(settings.layout.outputs_dir) == [stray.name]
    assert await (await client.get("/tasks")).json() == []


async def test_unreadable_snapshot_is_kept_aside(make_client: MakeClient, clips: Clips,
                                                 settings: Settings) -> None:
    client = await make_client()
    task = await upload_ok(client, clips.small(), "480")
    await wait_for_state(client, task["id"], "COMPLETED")
    await client.close()
    settings.layout.snapshot_path.write_text('{"format": 1, "tasks": [')  # cut short
    client = await make_client()
    assert await (await client.get("/tasks")).json() == []
    assert (settings.data_dir / "tasks.json.bad").read_text() == '{"format": 1, "tasks": ['
    health = await (await client.get("/healthz")).json()
    assert sorted(health["unreferenced_files"]) == sorted(
        [f"outputs/{task['id']}.jpg", f"outputs/{task['id']}.mp4", f"uploads/{task['id']}.mp4"])


async def test_snapshot_cannot_point_outside_the_data_dir(make_client: MakeClient, clips: Clips,
                                                          settings: Settings, tmp_path: Path) -> None:
    client = await make_client()
    task = await upload_ok(client, clips.small(), "480")
    await wait_for_state(client, task["id"], "COMPLETED")
    await client.close()
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not yours")
    document = snapshot(settings)
    good = document["tasks"][0]
    evil = [
        {**good, "output_path": "../secret.mp4"},
        {**good, "output_path": str(secret)},
        {**good, "id": "../" + good["id"]},
        {**good, "source": f"uploads/{good['id']}.sh"},
        {**good, "state": "HACKED"},
        {**good, "created_at": "yesterday"},
        {**good, "resolution": "4320"},
        "not even a record",
    ]
    document["tasks"] = evil
    settings.layout.snapshot_path.write_text(json.dumps(document))
    client = await make_client()
    assert await (await client.get("/tasks")).json() == []
    assert (await client.get(f"/tasks/{good['id']}/download")).status == 404


async def test_no_persist_writes_nothing(make_client: MakeClient, clips: Clips,
                                         settings: Settings) -> None:
    client = await make_client(persist=False)
    task = await upload_ok(client, clips.small(), "480")
    await wait_for_state(client, task["id"], "COMPLETED")
    assert (await (await client.get("/healthz")).json())["persist"] is False
    await client.close()
    assert not settings.layout.snapshot_path.exists()
    client = await make_client(persist=False)
    assert await (await client.get("/tasks")).json() == []
    health = await (await client.get("/healthz")).json()
    assert len(health["unreferenced_files"]) == 3  # the files stay, reported


async def test_a_burst_of_progress_updates_is_a_few_writes(tmp_path: Path) -> None:
    """ffmpeg reports progress twice a second per job; the snapshot is not rewritten each time."""
    settings = Settings(data_dir=tmp_path, snapshot_interval=0.5)
    store = TaskStore()
    writer = SnapshotWriter(store, settings)
    running = asyncio.create_task(writer.run())
    try:
        task = store.add(a_task(settings.layout.uploads_dir / "x.mp4"))
        await writer.durable()
        snapshots = {settings.layout.snapshot_path.stat().st_ino}  # each write is a new file renamed in
        changes = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        while loop.time() < end:
            changes += 1
            store.set_progress(task, changes % 99, float(changes))
            await asyncio.sleep(0.005)
            snapshots.add(settings.layout.snapshot_path.stat().st_ino)
        await writer.durable()
        snapshots.add(settings.layout.snapshot_path.stat().st_ino)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert changes > 50  # about 190 on an idle machine; a busy one manages fewer
    assert len(snapshots) <= 5, f"{len(snapshots)} writes for {changes} progress updates"
    assert snapshot(settings)["tasks"][0]["progress"] == changes % 99  # and the last one is in


@pytest.mark.unit
def test_each_record_is_encoded_once_per_change(settings: Settings) -> None:
    """A snapshot write re-encodes only the tasks that changed since the last one, and
    what it writes is every task's record all the same."""
    store = TaskStore()
    still, moving, gone = (store.add(a_task(settings.layout.uploads_dir / f"{n}.mp4"))
                           for n in range(3))
    store.fail(still, "Out of the queue, and then left alone.")
    encoder = Encoder(store, settings.layout)
    encoder.encode()
    kept = encoder.record(still)
    assert store.claim_next() is moving
    store.set_progress(moving, 40, None)
    store.remove(gone.id)
    written = json.loads(encoder.encode())
    assert encoder.record(still) is kept  # the very bytes of the last write: not encoded again
    assert written["tasks"] == [to_record(task, settings.layout) for task in store.all()]
    assert [record["id"] for record in written["tasks"]] == [still.id, moving.id]
    assert written["tasks"][1]["progress"] == 40
