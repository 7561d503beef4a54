"""Retention: finished tasks' uploads, or whole finished tasks, deleted a number of days
after they finished. No test waits days: a task's finish is moved back in time, as if it
had finished that long ago, and the server's next look (every 50 ms here) acts on it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from .support.checks import files_in
from .support.clips import Clips
from .support.internals import STORE, Settings
from .support.servers import MakeClient
from .support.uploading import AppClient, download, list_tasks, upload_ok, wait_for_state
from .support.waiting import wait_until

SWEEP = 0.05  # seconds between the server's looks, instead of minutes


async def finished(client: AppClient, clips: Clips, name: str) -> str:
    task = await upload_ok(client, clips.small(), "480", filename=name)
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    return str(task["id"])


def age(client: AppClient, task_id: str, days: float) -> None:
    """As if the task had finished that many days ago."""
    task = client.server.app[STORE].get(task_id)
    assert task is not None and task.finished_at is not None
    task.finished_at -= timedelta(days=days)


async def test_uploads_older_than_the_setting_are_deleted(make_client: MakeClient, clips: Clips,
                                                          settings: Settings) -> None:
    client = await make_client(delete_sources_after=30, retention_sweep=SWEEP)
    old, recent = await finished(client, clips, "old.mp4"), await finished(client, clips, "recent.mp4")
    uploads = settings.layout.uploads_dir
    assert files_in(uploads) == sorted([f"{old}.mp4", f"{recent}.mp4"])
    age(client, recent, 29)  # not yet
    age(client, old, 31)

    async def old_upload_gone() -> bool:
        return files_in(uploads) == [f"{recent}.mp4"]
    await wait_until(old_upload_gone, 10, "the old task's upload to be deleted")
    # the task stays, with its video and thumbnail
    assert [task["id"] for task in await list_tasks(client)] == [old, recent]
    assert len(await download(client, old)) > 0
    assert f"{old}.mp4" in files_in(settings.layout.outputs_dir)


async def test_tasks_older_than_the_setting_are_deleted_whole(make_client: MakeClient, clips: Clips,
                                                              settings: Settings) -> None:
    client = await make_client(delete_tasks_after=0.5, retention_sweep=SWEEP)
    old, recent = await finished(client, clips, "old.mp4"), await finished(client, clips, "recent.mp4")
    age(client, old, 0.6)

    async def old_task_gone() -> bool:  # from the list, then its files from the disk
        return ([task["id"] for task in await list_tasks(client)] == [recent]
                and files_in(settings.layout.uploads_dir) == [f"{recent}.mp4"]
                and files_in(settings.layout.outputs_dir) == [f"{recent}.jpg", f"{recent}.mp4"])
    await wait_until(old_task_gone, 10, "the old task and its files to be deleted")
    assert (await client.get(f"/tasks/{old}")).status == 404

    def saved_ids() -> list[str]:
        return [task["id"] for task in json.loads(settings.layout.snapshot_path.read_text())["tasks"]]

    async def snapshot_without_it() -> bool:
        return saved_ids() == [recent]
    await wait_until(snapshot_without_it, 10, "tasks.json without the old task")


async def test_only_the_time_since_it_finished_counts(make_client: MakeClient, clips: Clips,
                                                     settings: Settings) -> None:
    """An upload made long ago but finished now is kept; one finished long ago goes."""
    client = await make_client(delete_tasks_after=1, retention_sweep=SWEEP)
    kept, gone = await finished(client, clips, "kept.mp4"), await finished(client, clips, "gone.mp4")
    task = client.server.app[STORE].get(kept)
    assert task is not None
    task.created_at -= timedelta(days=400)
    age(client, gone, 2)

    async def swept() -> bool:  # from the list, then its files from the disk
        return ([t["id"] for t in await list_tasks(client)] == [kept]
                and files_in(settings.layout.uploads_dir) == [f"{kept}.mp4"]
                and files_in(settings.layout.outputs_dir) == [f"{kept}.jpg", f"{kept}.mp4"])
    await wait_until(swept, 10, "the task finished long ago to be deleted, with its files")


@pytest.mark.parametrize("flag", ["--delete-sources-after", "--delete-tasks-after"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_retention_flags_refuse_what_is_not_a_number_of_days(flag: str, value: str) -> None:
    with pytest.raises(SystemExit, match="number of days"):
        Settings.from_args([f"{flag}={value}"], environ={})


def test_retention_is_off_unless_asked_for() -> None:
    default = Settings.from_args([], environ={})
    assert default.delete_sources_after == default.delete_tasks_after == 0
    asked = Settings.from_args(["--delete-sources-after", "30"],
                               environ={"VIDEO_ASYNC_DELETE_TASKS_AFTER": "365"})
    assert (asked.delete_sources_after, asked.delete_tasks_after) == (30, 365)
