"""GET /tasks with many tasks kept: what changed since a version, pages of the list, and the
plain array the original client reads; each task's JSON encoded once per change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .support.checks import assert_error
from .support.clips import Clips, hanging_ffmpeg
from .support.failing import queue_held
from .support.internals import (MAX_PAGE_SIZE, PAGE_SIZE, REMOVALS_KEPT, STORE, Settings,
                                TaskStore, a_task, kept_tasks)
from .support.servers import MakeClient
from .support.uploading import AppClient, delete, get_json, list_tasks, upload_ok, wait_for_state


async def list_version(client: AppClient) -> str:
    """The list's version now: its ETag without the quotes."""
    response = await client.get("/tasks")
    await response.read()
    return response.headers["ETag"].strip('"')


async def since(client: AppClient, version: str) -> dict[str, Any]:
    changes: dict[str, Any] = await get_json(client, f"/tasks?since={version}")
    return changes


def ids(tasks: list[dict[str, Any]]) -> list[str]:
    return [task["id"] for task in tasks]


# -- the store's version counter, no sockets ------------------------------------------

@pytest.mark.unit
def test_the_store_counts_versions_and_knows_what_changed(tmp_path: Path) -> None:
    store = TaskStore()
    first, second, third = (store.add(a_task(tmp_path / f"{n}.mp4")) for n in range(3))
    assert store.version == 3
    assert store.changes_since(0) == ([first, second, third], [])
    seen = store.version
    store.set_progress(first, 0, None)  # no change at all: no new version
    assert store.version == seen and store.changes_since(seen) == ([], [])

    # the first leaves the queue: the others' places in it move, so they changed too
    store.start(first)
    assert store.version == seen + 1
    assert store.changes_since(seen) == ([first, second, third], [])
    assert [store.to_json(t)["queue_position"] for t in (second, third)] == [1, 2]
    seen = store.version
    store.set_progress(first, 40, 12.0)
    store.set_progress(first, 41, 11.0)
    assert store.version == seen + 2
    assert store.changes_since(seen) == ([first], [])  # once, however often it changed
    assert store.changes_since(seen + 1) == ([first], [])

    seen = store.version
    store.remove(third.id)
    assert store.changes_since(seen) == ([], [third.id])
    # a version the store has not reached yet: it cannot tell
    assert store.changes_since(store.version + 1) is None


@pytest.mark.unit
def test_a_removal_older_than_the_store_remembers_means_the_whole_list(tmp_path: Path) -> None:
    store = TaskStore()
    # none queued, so a removal changes no other task
    tasks = kept_tasks(store, REMOVALS_KEPT + 2, tmp_path)
    before = store.version
    for task in tasks[:REMOVALS_KEPT]:
        store.remove(task.id)
    assert store.changes_since(before) is not None  # every removal since is still known
    store.remove(tasks[REMOVALS_KEPT].id)
    assert store.changes_since(before) is None  # the first one is forgotten
    assert store.changes_since(before + 1) == ([], [t.id for t in tasks[1:REMOVALS_KEPT + 1]])


# -- over HTTP ------------------------------------------------------------------------

async def test_since_answers_exactly_the_changed_and_removed_tasks(client: AppClient, clips: Clips,
                                                                   settings: Settings) -> None:
    kept = kept_tasks(client.app[STORE], 5, settings.layout.uploads_dir)
    before = await list_version(client)
    assert await since(client, before) == {"version": before, "full": False, "removed": [],
                                           "tasks": []}
    await delete(client, kept[1].id)
    after_delete = await list_version(client)
    new = await upload_ok(client, clips.small(), "480")
    await wait_for_state(client, new["id"], "COMPLETED")

    changes = await since(client, before)
    assert changes["full"] is False
    assert changes["removed"] == [kept[1].id]
    assert ids(changes["tasks"]) == [new["id"]]
    assert changes["tasks"][0] == await get_json(client, f"/tasks/{new['id']}")
    assert changes["version"] == await list_version(client)
    later = await since(client, after_delete)
    assert later["removed"] == [] and ids(later["tasks"]) == [new["id"]]
    # nothing since the version just given: an empty answer, or a 304 to a page that has it
    assert await since(client, changes["version"]) == {**changes, "removed": [], "tasks": []}
    unchanged = await client.get(f"/tasks?since={changes['version']}",
                                 headers={"If-None-Match": f'"{changes["version"]}"'})
    assert unchanged.status == 304


async def test_a_task_moving_up_the_queue_is_a_change(make_client: MakeClient, clips: Clips,
                                                      tmp_path: Path) -> None:
    """Its card says its place in the queue: when the task before it goes, that text changes."""
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)))
    async with queue_held(client, clips):
        first = await upload_ok(client, clips.small(), "480")
        second = await upload_ok(client, clips.small(), "480")
        version = await list_version(client)
        assert (await get_json(client, f"/tasks/{second['id']}"))["queue_position"] == 2
        await delete(client, first["id"])
        changes = await since(client, version)
        assert changes["removed"] == [first["id"]]
        assert ids(changes["tasks"]) == [second["id"]]
        assert changes["tasks"][0]["queue_position"] == 1
        assert changes["tasks"][0]["display"]["status"] == "Waiting: next in line"


async def test_a_version_too_old_or_from_another_run_gets_the_full_list(
        make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(persist=False)  # a thousand deletes, each without a disk write
    store = client.app[STORE]
    kept = kept_tasks(store, REMOVALS_KEPT + 3, settings.layout.uploads_dir)
    old = await list_version(client)
    for task in kept[:REMOVALS_KEPT + 1]:
        await delete(client, task.id)
    everything = await list_tasks(client)
    assert ids(everything) == [task.id for task in kept[REMOVALS_KEPT + 1:]]
    now = await list_version(client)
    too_old = await since(client, old)
    assert too_old == {"version": now, "full": True, "removed": [], "tasks": everything}

    another_run = f"{'0' * 8 if store.instance != '0' * 8 else '1' * 8}.{store.version}"
    assert (await since(client, another_run))["full"] is True
    ahead = f"{store.instance}.{store.version + 1}"
    assert (await since(client, ahead))["full"] is True
    for bad in ("", "12", "abc.12", f"{store.instance}.x", f"{store.instance}.-1"):
        await assert_error(await client.get("/tasks", params={"since": bad}), 400, "bad_since")


async def test_paging_gives_every_task_once(client: AppClient, clips: Clips,
                                            settings: Settings) -> None:
    kept = kept_tasks(client.app[STORE], 23, settings.layout.uploads_dir)
    first = await get_json(client, "/tasks?limit=7")
    assert ids(first["tasks"]) == [task.id for task in kept[:7]]
    assert first["version"] == await list_version(client)
    # the list changes while it is paged through: the task the cursor names is deleted,
    # another one is added
    await delete(client, kept[6].id)
    new = await upload_ok(client, clips.small(), "480")
    paged = first["tasks"]
    after = first["next"]
    while after is not None:
        page = await get_json(client, f"/tasks?limit=7&after={after}")
        assert len(page["tasks"]) <= 7
        paged += page["tasks"]
        after = page["next"]
    assert ids(paged) == [task.id for task in kept] + [new["id"]]

    # without a limit, a page holds PAGE_SIZE tasks
    kept_tasks(client.app[STORE], PAGE_SIZE, settings.layout.uploads_dir)
    assert len((await get_json(client, "/tasks?after=0"))["tasks"]) == PAGE_SIZE
    last = await get_json(client, f"/tasks?limit={MAX_PAGE_SIZE}")
    assert last["next"] is None and ids(last["tasks"]) == ids(await list_tasks(client))
    for query, code in ((f"limit={MAX_PAGE_SIZE + 1}", "bad_limit"), ("limit=0", "bad_limit"),
                        ("limit=ten", "bad_limit"), ("after=-1", "bad_after"),
                        ("limit=5&since=x.1", "bad_since"),
                        (f"limit=5&since={await list_version(client)}", "bad_query")):
        await assert_error(await client.get(f"/tasks?{query}"), 400, code)
    await wait_for_state(client, new["id"], "COMPLETED")


async def test_the_plain_list_is_what_the_original_client_reads(client: AppClient, clips: Clips,
                                                                settings: Settings) -> None:
    """GET /tasks without a query: a JSON array of every task, oldest first, byte for byte
    what encoding the tasks' dicts together gives, with its ETag and 304."""
    kept = kept_tasks(client.app[STORE], 3, settings.layout.uploads_dir)
    new = await upload_ok(client, clips.small(), "480")
    await wait_for_state(client, new["id"], "COMPLETED")
    response = await client.get("/tasks")
    body = await response.read()
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    listed = json.loads(body)
    assert ids(listed) == [task.id for task in kept] + [new["id"]]
    assert body == json.dumps(listed).encode()
    assert listed[-1] == await get_json(client, f"/tasks/{new['id']}")
    etag = response.headers["ETag"]
    assert (await client.get("/tasks", headers={"If-None-Match": etag})).status == 304


async def test_a_task_is_encoded_once_per_change(client: AppClient, clips: Clips,
                                                 settings: Settings) -> None:
    store = client.app[STORE]
    unchanged, = kept_tasks(store, 1, settings.layout.uploads_dir)
    first_body = await (await client.get("/tasks")).read()
    encoded = store.encoded(unchanged)
    assert encoded in first_body
    new = await upload_ok(client, clips.small(), "480")
    encoded_new = store.encoded(store.get(new["id"]))
    await wait_for_state(client, new["id"], "COMPLETED")
    second_body = await (await client.get("/tasks")).read()
    # the same bytes object, not equal bytes made again; the task that changed made anew
    assert store.encoded(unchanged) is encoded
    assert store.encoded(store.get(new["id"])) is not encoded_new
    assert second_body == b"[" + encoded + b", " + store.encoded(store.get(new["id"])) + b"]"
    assert json.loads(second_body)[1]["state"] == "COMPLETED"
