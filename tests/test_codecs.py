"""A task in each of its outside forms: the API's JSON, the snapshot's record (and back),
the resumable upload's sidecar (and back), the queue job's key, arguments and result, and
what the web process makes of each state of a job. A task's order (what its uploader asked
for) is written once, in store.Order, and every one of these forms carries all of it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from dataclasses import fields
from typing import Any

import pytest

from .support.internals import (CHOICES, DataLayout, Failed, Job, JobStatus, Media, Order, Output,
                                ResumableUploads, Settings, State, Task, TaskStore,
                                TranscodeJob, Transcoded, Upload, a_task, api_json, from_record,
                                job_key, job_updates, new_task_id, outcome_json, scan_uploads,
                                to_record,
                                without_password)

pytestmark = pytest.mark.unit

MEDIA = Media(duration=4.0, width=1280, height=720, video_codec="h264", audio_codec="aac",
              pixel_format="yuv420p", frame_rate=25.0)
OUTPUT = Output(size=12345, width=854, height=480, duration=4.0, source_warning=None)
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def task_in(state: State, layout: DataLayout) -> Task:
    """A task of the layout's as the store would hold it in that state."""
    task_id = new_task_id()
    task = Task(id=task_id, filename="holiday «2024».mov", resolution=480,
                source_path=layout.source(task_id, ".mov"), size=5000, media=MEDIA)
    store = TaskStore()
    store.add(task)
    if state is State.QUEUED:
        return task
    store.start(task)
    store.set_progress(task, 42, 3.25)
    if state is State.COMPLETED:
        store.complete(task, layout.output(task_id, ".mp4"), OUTPUT, layout.thumbnail(task_id))
    elif state is State.FAILED:
        store.fail(task, "The file is damaged.", "Invalid data found")
        store.retry(task)
        store.start(task)
        store.fail(task, "Still damaged.", "Invalid data found")
    return task


# -- the API's JSON -------------------------------------------------------------------

def test_the_api_json_of_a_queued_task(tmp_path: Path) -> None:
    task = task_in(State.QUEUED, DataLayout(tmp_path))
    shown = api_json(task, 3)  # the app's: the task's fields and its card's texts
    choices = {choice.key for choice in CHOICES.values()}  # "resolution", and any added since
    assert set(shown) == {"id", "filename", *choices, "state", "progress", "queue_position",
                          "eta_seconds", "error", "error_detail", "retries", "retried_at", "size",
                          "created_at", "started_at", "finished_at", "media", "output",
                          "download_url", "thumbnail_url", "ladder_url", "display"}
    assert (shown["id"], shown["filename"], shown["resolution"], shown["state"]) == (
        task.id, "holiday «2024».mov", "480", "QUEUED")  # the original client reads a string
    assert (shown["queue_position"], shown["size"], shown["progress"]) == (3, 5000, 0)
    assert ISO_UTC.match(shown["created_at"])
    assert shown["started_at"] is shown["finished_at"] is shown["output"] is None
    assert shown["download_url"] is shown["thumbnail_url"] is shown["ladder_url"] is None
    assert shown["media"] == MEDIA.to_json()
    json.dumps(shown)  # nothing in it that JSON cannot carry


def test_the_api_json_of_a_running_then_a_finished_task(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    task = task_in(State.PROCESSING, layout)
    shown = task.to_json()
    assert (shown["state"], shown["progress"], shown["eta_seconds"]) == ("PROCESSING", 42, 3.2)
    assert ISO_UTC.match(shown["started_at"]) and shown["download_url"] is None
    done = task_in(State.COMPLETED, layout)
    shown = done.to_json()
    assert (shown["state"], shown["progress"], shown["eta_seconds"]) == ("COMPLETED", 100, None)
    assert shown["output"] == {"size": 12345, "width": 854, "height": 480, "duration": 4.0,
                               "source_warning": None}
    assert shown["download_url"] == f"/tasks/{done.id}/download"
    assert shown["thumbnail_url"] == f"/tasks/{done.id}/thumbnail"
    assert ISO_UTC.match(shown["finished_at"])


def test_the_api_json_of_a_failed_task(tmp_path: Path) -> None:
    task = task_in(State.FAILED, DataLayout(tmp_path))
    shown = task.to_json()
    assert (shown["state"], shown["error"], shown["error_detail"], shown["retries"]) == (
        "FAILED", "Still damaged.", "Invalid data found", 1)
    assert ISO_UTC.match(shown["retried_at"])
    assert shown["download_url"] is None and shown["output"] is None


# -- the snapshot's record ------------------------------------------------------------------

@pytest.mark.parametrize("state", list(State))
def test_a_record_brings_back_the_task_it_was_made_from(tmp_path: Path, state: State) -> None:
    layout = DataLayout(tmp_path)
    task = task_in(state, layout)
    record = json.loads(json.dumps(to_record(task, layout)))  # as it goes through tasks.json
    back = from_record(record, layout)
    assert to_record(back, layout) == record

    def shown(task: Task) -> dict[str, Any]:
        # all but the estimate of time left, which is not kept: a task that was running
        # when the server stopped runs again from the start
        return {key: value for key, value in task.to_json().items()
                if key not in ("eta_seconds", "display")}
    assert shown(back) == shown(task)
    assert (back.source_path, back.output_path, back.thumbnail_path) == (
        task.source_path, task.output_path, task.thumbnail_path)
    assert back.media == task.media and back.output == task.output
    assert back.created_at == task.created_at and back.created_at.tzinfo is not None


def test_a_record_names_files_relative_to_the_data_dir(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data")
    task = task_in(State.COMPLETED, layout)
    record = to_record(task, layout)
    assert record["source"] == f"uploads/{task.id}.mov"
    assert (record["output_path"], record["thumbnail_path"]) == (
        f"outputs/{task.id}.mp4", f"outputs/{task.id}.jpg")
    moved = DataLayout(tmp_path / "elsewhere")  # the data dir mounted somewhere else
    assert from_record(record, moved).source_path == moved.source(task.id, ".mov")


def good_record(layout: DataLayout) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(json.dumps(to_record(task_in(State.COMPLETED, layout), layout)))
    return record


@pytest.mark.parametrize("change", [
    {"id": "../../etc"}, {"id": "A" * 32}, {"id": 7},
    {"resolution": "360"}, {"resolution": "tall"},
    {"filename": ["a.mp4"]},
    {"source": "/etc/passwd"}, {"source": "uploads/../../x.mp4"},
    {"output_path": "outputs/elsewhere.mp4"}, {"thumbnail_path": "uploads/x.jpg"},
    {"state": "DANCING"},
    {"media": "big"}, {"output": [1, 2]},
    {"created_at": "2024-01-01T00:00:00"},  # no time zone
])
def test_a_record_that_is_not_ours_is_refused(tmp_path: Path, change: dict[str, Any]) -> None:
    layout = DataLayout(tmp_path)
    record = {**good_record(layout), **change}
    with pytest.raises((ValueError, KeyError, TypeError)):
        from_record(record, layout)


def test_a_record_from_another_task_cannot_name_its_files(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    record, other = good_record(layout), good_record(layout)
    with pytest.raises(ValueError):
        from_record({**record, "output_path": other["output_path"]}, layout)


def test_a_record_is_read_within_bounds(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    record = {**good_record(layout), "filename": "x" * 1000 + ".mov", "progress": 250,
              "error": "e" * 1000, "retries": -3, "media": {"not": "a probe"}}
    task = from_record(record, layout)
    assert len(task.filename) == 255 and task.progress == 100 and task.retries == 0
    assert task.error is not None and len(task.error) == 300
    assert task.media is None  # unusable: the worker probes again


# -- the resumable upload's sidecar -------------------------------------------------------

async def test_a_sidecar_brings_back_its_upload(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    layout.make_private()
    uploads = ResumableUploads(layout, expiry=3600, reserve_idle=300)
    upload = Upload(id=new_task_id(), length=9000, order=Order("clip «1».webm", 1080),
                    metadata="filename Y2xpcA==", client="127.0.0.2")
    await uploads.create(upload)
    layout.resumable(upload.id).write_bytes(b"x" * 1234)  # bytes that arrived since
    found = scan_uploads(layout, 3600, finished=set())
    assert found.removed == [] and len(found.live) == 1
    back = found.live[0]
    assert back.sidecar() == upload.sidecar()
    assert (back.id, back.offset) == (upload.id, 1234)  # the offset is the bytes on disk


@pytest.mark.parametrize("sidecar", [
    b"not json", b'{"length": 10}', b'{"length": -1, "filename": "a.mp4", "resolution": 480}',
    b'{"length": 10, "filename": "a.mp4", "resolution": 360}',
])
async def test_an_unreadable_sidecar_removes_its_upload(tmp_path: Path, sidecar: bytes) -> None:
    layout = DataLayout(tmp_path)
    layout.make_private()
    upload_id = new_task_id()
    layout.resumable(upload_id).write_bytes(b"x")
    layout.resumable_info(upload_id).write_bytes(sidecar)
    found = scan_uploads(layout, 3600, finished=set())
    assert found.live == []
    assert sorted(found.removed) == [f"uploads/{upload_id}.tus", f"uploads/{upload_id}.tus.json"]


# -- the queue job ------------------------------------------------------------------------

def test_each_run_of_a_task_is_a_job_of_its_own(tmp_path: Path) -> None:
    task = a_task(tmp_path / "a.mp4")
    assert job_key(task) == task.id
    task.retries = 2
    assert job_key(task) == f"{task.id}.retry2"


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://q:6379/0", "redis://q:6379/0"),
    ("redis://:s3cret@q:6379/0", "redis://:***@q:6379/0"),
    ("rediss://user:s3cret@q/1", "rediss://user:***@q/1"),
])
def test_a_queue_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert without_password(url) == shown


def running(status: JobStatus, **fields: Any) -> Job:
    return Job(function="transcode", status=status, **fields)


def test_a_job_taken_and_progressing_moves_its_task(tmp_path: Path) -> None:
    store = TaskStore()
    apply = job_updates(store, Settings(data_dir=tmp_path))
    task = store.add(a_task(tmp_path / "a.mp4"))
    apply(task, running(JobStatus.QUEUED))
    assert task.state is State.QUEUED
    apply(task, running(JobStatus.ACTIVE, progress=0.37, meta={"eta": 12.5}))
    assert (task.state, task.progress, task.eta_seconds) == (State.PROCESSING, 37, 12.5)
    apply(task, running(JobStatus.ACTIVE, progress=0.5, meta={"eta": "soon"}))
    assert (task.progress, task.eta_seconds) == (50, None)  # only a number is an estimate
    apply(task, running(JobStatus.NEW))  # its worker died: SAQ queued it again
    assert (task.state, task.progress) == (State.QUEUED, 0)


def test_a_finished_jobs_result_completes_its_task(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = TaskStore()
    apply = job_updates(store, settings)
    task = store.add(a_task(tmp_path / "a.mp4"))
    thumbnail = settings.layout.thumbnail(task.id)
    result = json.loads(json.dumps(outcome_json(Transcoded(OUTPUT, thumbnail))))  # through Redis
    apply(task, running(JobStatus.ACTIVE, progress=0.9))
    apply(task, running(JobStatus.COMPLETE, result=result))
    assert (task.state, task.output, task.progress) == (State.COMPLETED, OUTPUT, 100)
    assert (task.output_path, task.thumbnail_path) == (settings.layout.output(task.id, ".mp4"), thumbnail)
    apply(task, running(JobStatus.ACTIVE, progress=0.1))  # a late message changes nothing
    assert task.state is State.COMPLETED

    no_thumbnail = store.add(a_task(tmp_path / "b.mp4"))
    apply(no_thumbnail, running(JobStatus.COMPLETE, result=outcome_json(Transcoded(OUTPUT, None))))
    assert no_thumbnail.state is State.COMPLETED and no_thumbnail.thumbnail_path is None


@pytest.mark.parametrize(("job", "error", "detail"), [
    (running(JobStatus.COMPLETE, result=outcome_json(Failed("The file is damaged.", "moov"))),
     "The file is damaged.", "moov"),
    (running(JobStatus.COMPLETE, result="not a result"), "Something went wrong on the worker", None),
    (running(JobStatus.FAILED, error="boom"), "The workers could not finish this job", "failed"),
    (running(JobStatus.ABORTED), "The workers could not finish this job", "aborted"),
])
def test_a_job_that_ended_badly_fails_its_task(tmp_path: Path, job: Job, error: str,
                                               detail: str | None) -> None:
    store = TaskStore()
    task = store.add(a_task(tmp_path / "a.mp4"))
    job_updates(store, Settings(data_dir=tmp_path))(task, job)
    assert task.state is State.FAILED and task.error is not None
    assert task.error.startswith(error) and task.error_detail == detail


def test_a_deleted_tasks_job_changes_nothing(tmp_path: Path) -> None:
    store = TaskStore()
    apply = job_updates(store, Settings(data_dir=tmp_path))
    task = store.add(a_task(tmp_path / "a.mp4"))
    store.remove(task.id)
    seen = store.version
    apply(task, running(JobStatus.COMPLETE, result=outcome_json(Transcoded(OUTPUT, None))))
    assert task.state is State.QUEUED and store.version == seen


def test_a_failed_outcome_says_why_in_the_jobs_result() -> None:
    assert outcome_json(Failed("Stopped.", "")) == {"failed": "Stopped.", "detail": ""}
    done = outcome_json(Transcoded(Output(1, 2, 4, None, "cut short"), Path("x.jpg")))
    assert done == {"output": {"size": 1, "width": 2, "height": 4, "duration": None,
                               "source_warning": "cut short"}, "thumbnail": True, "ladder": False}
    assert "x.jpg" not in json.dumps(done)  # no paths: each side names its own files


# -- the order, in every form ---------------------------------------------------------------

def test_every_form_of_a_task_carries_its_whole_order(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    task = a_task(Path())
    task.source_path = layout.source(task.id, ".mp4")
    task.filename, task.resolution = "holiday.mov", 1080
    asked = vars(task.order())
    assert set(asked) == {field.name for field in fields(Order)}

    def order_of(data: dict[str, Any]) -> dict[str, Any]:
        return vars(Order.from_json(data))
    assert order_of(task.to_json()) == asked
    assert order_of(to_record(task, layout)) == asked
    assert vars(from_record(to_record(task, layout), layout).order()) == asked
    assert order_of(Upload(id=task.id, length=1, order=task.order()).sidecar()) == asked
    back = TranscodeJob.from_json(TranscodeJob.of(task, layout).to_json())
    assert (back.task_id, back.source) == (task.id, layout.relative(task.source_path))
    assert vars(back.order) == asked


@pytest.mark.parametrize("bad", [{"filename": "a.mp4", "resolution": "360"},
                                 {"filename": "a.mp4", "resolution": "720p"},
                                 {"filename": 7, "resolution": "480"}, {"filename": "a.mp4"}])
def test_an_order_no_upload_could_make_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises((ValueError, KeyError)):
        Order.from_json(bad)


def test_the_card_texts_are_the_apps_not_the_stores(tmp_path: Path) -> None:
    plain, shown = TaskStore(), TaskStore(api_json)
    task = a_task(DataLayout(tmp_path).source("cd" * 16, ".mp4"))
    plain.add(task)
    shown.add(task)
    assert "display" not in plain.to_json(task)
    assert shown.to_json(task)["display"]["status"] == "Waiting: next in line"
