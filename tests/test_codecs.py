"""A task's order (what its uploader asked for) is written once, in store.Order, and
every outside form of a task carries all of it: the API's JSON, the snapshot's record,
an unfinished resumable upload's sidecar and a queue job's arguments."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from .support.internals import (DataLayout, Order, TaskStore, TranscodeJob, Upload, a_task,
                                api_json, from_record, to_record)


def order_of(data: dict[str, Any]) -> dict[str, Any]:
    return vars(Order.from_json(data))


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    return DataLayout(tmp_path)


def test_every_form_of_a_task_carries_its_whole_order(layout: DataLayout) -> None:
    task = a_task(Path())
    task.source_path = layout.source(task.id, ".mp4")
    task.filename, task.resolution = "holiday.mov", 1080
    asked = vars(task.order())
    assert set(asked) == {field.name for field in fields(Order)}
    assert order_of(task.to_json()) == asked
    assert order_of(to_record(task, layout)) == asked
    assert vars(from_record(to_record(task, layout), layout).order()) == asked
    assert order_of(Upload(id=task.id, length=1, order=task.order()).sidecar()) == asked
    job = TranscodeJob.of(task, layout)
    back = TranscodeJob.from_json(job.to_json())
    assert (back.task_id, back.source) == (task.id, layout.relative(task.source_path))
    assert vars(back.order) == asked


@pytest.mark.parametrize("bad", [{"filename": "a.mp4", "resolution": "360"},
                                 {"filename": 7, "resolution": "480"}, {"filename": "a.mp4"}])
def test_an_order_no_upload_could_make_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises((ValueError, KeyError)):
        Order.from_json(bad)


def test_the_card_texts_are_the_apps_not_the_stores(layout: DataLayout) -> None:
    plain, shown = TaskStore(), TaskStore(api_json)
    task = a_task(layout.source("cd" * 16, ".mp4"))
    plain.add(task)
    shown.add(task)
    assert "display" not in plain.to_json(task)
    assert shown.to_json(task)["display"]["status"] == "Waiting: next in line"
