"""The task store's state machine, alone: QUEUED -> PROCESSING -> COMPLETED | FAILED,
retry and requeue, removal, the version counter, the queue's places and the cache of each
task's encoded JSON."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest

from .support.internals import Output, State, Task, TaskStore, a_task

pytestmark = pytest.mark.unit

OUTPUT = Output(size=1000, width=854, height=480, duration=2.0)


def three(store: TaskStore, folder: Path) -> list[Task]:
    return [store.add(a_task(folder / f"{n}.mp4")) for n in range(3)]


def positions(store: TaskStore, tasks: list[Task]) -> list[int | None]:
    return [store.to_json(task)["queue_position"] for task in tasks]


def test_a_new_task_waits_in_the_queue(tmp_path: Path) -> None:
    store = TaskStore()
    task = store.add(a_task(tmp_path / "a.mp4"))
    assert store.get(task.id) is task and store.all() == [task] and len(store) == 1
    assert (task.state, task.progress, task.started_at, task.finished_at) == (State.QUEUED, 0, None, None)
    assert store.counts() == {"QUEUED": 1, "PROCESSING": 0, "COMPLETED": 0, "FAILED": 0}
    assert store.queued_count() == 1 and positions(store, [task]) == [1]
    assert store.version == 1


def test_claim_next_takes_the_oldest_queued_task(tmp_path: Path) -> None:
    store = TaskStore()
    first, second, third = three(store, tmp_path)
    store.fail(first, "Broken.")
    assert store.claim_next() is second
    assert second.state is State.PROCESSING and second.started_at is not None
    assert positions(store, [first, second, third]) == [None, None, 1]
    assert store.claim_next() is third
    assert store.claim_next() is None  # nothing waits
    assert store.counts() == {"QUEUED": 0, "PROCESSING": 2, "COMPLETED": 0, "FAILED": 1}


def test_progress_stays_below_100_until_complete(tmp_path: Path) -> None:
    store = TaskStore()
    task = store.add(a_task(tmp_path / "a.mp4"))
    store.start(task)
    store.set_progress(task, 150, 3.0)
    assert (task.progress, task.eta_seconds) == (99, 3.0)
    store.set_progress(task, -5, None)
    assert task.progress == 0
    store.complete(task, tmp_path / "out.mp4", OUTPUT, tmp_path / "out.jpg")
    assert (task.state, task.progress, task.eta_seconds) == (State.COMPLETED, 100, None)
    assert (task.output, task.output_path, task.thumbnail_path) == (
        OUTPUT, tmp_path / "out.mp4", tmp_path / "out.jpg")
    assert task.started_at is not None and task.finished_at is not None
    assert task.finished_at >= task.started_at


def test_a_failure_keeps_its_reason_and_ffmpegs_words(tmp_path: Path) -> None:
    store = TaskStore()
    task = store.add(a_task(tmp_path / "a.mp4"))
    store.start(task)
    store.set_progress(task, 30, 5.0)
    store.fail(task, "The file is damaged.", "moov atom not found")
    assert (task.state, task.error, task.error_detail) == (
        State.FAILED, "The file is damaged.", "moov atom not found")
    assert task.eta_seconds is None and task.finished_at is not None
    other = store.add(a_task(tmp_path / "b.mp4"))
    store.fail(other, "Stopped.")  # no words from ffmpeg: none, not an empty string
    assert other.error_detail is None


def test_retry_queues_a_failure_again_and_counts_it(tmp_path: Path) -> None:
    store = TaskStore()
    first, second = (store.add(a_task(tmp_path / f"{n}.mp4")) for n in range(2))
    assert store.claim_next() is first
    store.fail(first, "Broken.", "what ffmpeg said")
    assert positions(store, [first, second]) == [None, 1]
    store.retry(first)
    assert (first.state, first.retries, first.error, first.error_detail) == (State.QUEUED, 1, None, None)
    assert first.retried_at is not None
    assert (first.started_at, first.finished_at, first.progress) == (None, None, 0)
    # back at its place by upload time, ahead of the task uploaded after it
    assert positions(store, [first, second]) == [1, 2]
    assert store.claim_next() is first
    store.fail(first, "Broken again.")
    store.retry(first)
    assert first.retries == 2


def test_requeue_forgets_an_interrupted_run(tmp_path: Path) -> None:
    store = TaskStore()
    task = store.add(a_task(tmp_path / "a.mp4"))
    store.start(task)
    store.set_progress(task, 60, 2.0)
    store.requeue(task)  # its worker died, or a restart interrupted it: not a retry
    assert (task.state, task.progress, task.eta_seconds, task.retries) == (State.QUEUED, 0, None, 0)
    assert task.started_at is None and task.retried_at is None
    store.start(task)
    store.complete(task, tmp_path / "out.mp4", OUTPUT, None)
    store.requeue(task)
    assert (task.output, task.output_path, task.thumbnail_path) == (None, None, None)


def test_remove_takes_a_task_out_of_everything(tmp_path: Path) -> None:
    store = TaskStore()
    first, second, third = three(store, tmp_path)
    seen = store.version
    assert store.remove(first.id) is first
    assert store.get(first.id) is None and store.all() == [second, third] and len(store) == 2
    assert positions(store, [second, third]) == [1, 2]  # the queue moved up
    assert store.changed_at(first.id) is None
    assert store.version == seen + 1
    assert store.remove(first.id) is None  # gone already: nothing changes
    assert store.remove("0" * 32) is None
    assert store.version == seen + 1


def test_every_change_is_a_new_version_and_nothing_else_is(tmp_path: Path) -> None:
    store = TaskStore()
    task = store.add(a_task(tmp_path / "a.mp4"))
    versions = [store.version]
    for change in (lambda: store.start(task), lambda: store.set_progress(task, 10, 9.0),
                   lambda: store.set_progress(task, 10, 9.0),  # the same again: no change
                   lambda: store.fail(task, "Broken."), lambda: store.retry(task),
                   lambda: store.remove(task.id)):
        change()
        versions.append(store.version)
    assert versions == [1, 2, 3, 3, 4, 5, 6]


def test_the_version_clients_see_names_this_store(tmp_path: Path) -> None:
    store, other = TaskStore(), TaskStore()
    store.add(a_task(tmp_path / "a.mp4"))
    assert store.version_named(store.list_version) == store.version == 1
    assert store.version_named(other.list_version) == -1  # another run's: older than any
    for garbage in ("", "1", "abc.1", f"{store.instance}.", f"{store.instance}.-1",
                    f"{store.instance}.1 ", f"{store.instance}.1\n", f"{store.instance}.{'9' * 19}"):
        with pytest.raises(ValueError):
            store.version_named(garbage)


def test_changes_come_in_upload_order_whatever_order_they_changed_in(tmp_path: Path) -> None:
    store = TaskStore()
    first, second, third = three(store, tmp_path)
    store.fail(first, "Broken.")
    store.fail(second, "Broken.")
    store.fail(third, "Broken.")
    seen = store.version
    store.retry(third)
    store.retry(first)
    changed, removed = store.changes_since(seen) or ([], [])
    assert changed == [first, third] and removed == []
    assert store.changes_since(store.version) == ([], [])


def test_places_in_the_queue_follow_every_change(tmp_path: Path) -> None:
    store = TaskStore()
    tasks = three(store, tmp_path)
    assert positions(store, tasks) == [1, 2, 3]
    seen = store.version
    store.start(tasks[0])
    # the two behind it moved up: changed, so a page that polls repaints their cards
    assert store.changes_since(seen) == (tasks, [])
    assert positions(store, tasks) == [None, 1, 2]
    seen = store.version
    store.set_progress(tasks[0], 50, None)
    assert store.changes_since(seen) == ([tasks[0]], [])  # nobody else moved


def test_each_task_is_encoded_once_per_change(tmp_path: Path) -> None:
    store = TaskStore()
    first, second = (store.add(a_task(tmp_path / f"{n}.mp4")) for n in range(2))
    kept = store.encoded(second)
    assert store.encoded(second) is kept  # the very same bytes, not encoded again
    assert json.loads(kept) == store.to_json(second)
    store.start(first)  # second moves up the queue: its JSON changed
    assert store.encoded(second) is not kept
    assert json.loads(store.encoded(second))["queue_position"] == 1
    kept = store.encoded(second)
    store.set_progress(first, 20, None)  # another task's change leaves its bytes alone
    assert store.encoded(second) is kept
    assert json.loads(store.encoded(first))["progress"] == 20


def test_transitions_are_announced_and_progress_is_not(tmp_path: Path) -> None:
    store = TaskStore()
    announced: list[int] = []
    store.on_transition = lambda: announced.append(store.version)
    task = store.add(a_task(tmp_path / "a.mp4"))
    store.start(task)
    store.set_progress(task, 10, None)
    store.set_progress(task, 20, None)
    store.complete(task, tmp_path / "out.mp4", OUTPUT, None)
    store.remove(task.id)
    assert announced == [1, 2, 5, 6]


def test_restore_puts_tasks_back_oldest_first(tmp_path: Path) -> None:
    store = TaskStore()
    store.restore([])
    assert store.version == 0  # nothing restored, nothing changed
    older, newer, done = (a_task(tmp_path / f"{n}.mp4") for n in range(3))
    older.created_at = newer.created_at - timedelta(minutes=1)
    done.state = State.COMPLETED
    store.restore([newer, done, older])
    assert store.all() == [older, newer, done]
    assert store.version == 1 and store.changes_since(0) == ([older, newer, done], [])
    assert positions(store, [older, newer, done]) == [1, 2, None]
    assert store.claim_next() is older


def test_a_page_cursor_survives_a_deletion(tmp_path: Path) -> None:
    store = TaskStore()
    tasks = [store.add(a_task(tmp_path / f"{n}.mp4")) for n in range(5)]
    page, after = store.page(0, 2)
    assert page == tasks[:2] and after is not None
    store.remove(tasks[1].id)  # the cursor's own task goes
    page, after = store.page(after, 2)
    assert page == tasks[2:4] and after is not None
    assert store.page(after, 2) == ([tasks[4]], None)
    assert store.page(0, 10) == ([tasks[0], *tasks[2:]], None)


async def test_waiting_for_a_change_ends_with_the_change(tmp_path: Path) -> None:
    store = TaskStore()
    await asyncio.wait_for(store.wait_for_change(store.version - 1), 1)  # differs already: at once
    waiting = asyncio.create_task(store.wait_for_change(store.version))
    done, _ = await asyncio.wait([waiting], timeout=0.05)
    assert not done  # nothing changed yet
    store.add(a_task(tmp_path / "a.mp4"))
    await asyncio.wait_for(waiting, 1)


async def test_queuing_wakes_the_worker(tmp_path: Path) -> None:
    store = TaskStore()
    task = store.add(a_task(tmp_path / "a.mp4"))
    assert store.claim_next() is task
    store.fail(task, "Broken.")
    waiting = asyncio.create_task(store.wait_for_work())
    done, _ = await asyncio.wait([waiting], timeout=0.05)
    assert not done  # nothing queued since the last claim found none
    store.retry(task)
    await asyncio.wait_for(waiting, 1)
