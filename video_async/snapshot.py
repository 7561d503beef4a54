"""tasks.json: the task store written to disk, so a restart loses no upload and no result.

The dict in TaskStore stays the single source of truth; this module only
copies it out. `SnapshotWriter.run` waits for the store's version to change,
writes the whole list (a temporary file, fsync, rename: a crash leaves the old
snapshot or the new one, never half of one), then pauses, so a burst of
progress updates costs one write, not hundreds. A change of state (a task
added, finished, failed, deleted) ends the pause at once: those are on disk
within milliseconds, and the upload route waits for its task to be written
before it answers 201. The JSON is encoded on the
loop, where the store cannot change under it; only the disk work goes to a
thread.

`load_tasks` reads the snapshot back at start-up and reconciles it with the
disk: finished tasks whose video is still there come back as they were, a job
that was running is queued again, and a task whose files are gone is FAILED
with a reason saying so. Paths are stored relative to the data dir and must
be the generated names they always are: a hand-edited snapshot can never point
the server at a file outside the data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import RESOLUTIONS, Settings
from .store import TASK_ID, State, Task, TaskStore, utc_now

log = logging.getLogger(__name__)

FORMAT = 1  # bumped if the record layout ever changes incompatibly
SOURCE_EXTENSIONS = (".mp4", ".mov", ".webm")


# -- records -------------------------------------------------------------------

def to_record(task: Task, data_dir: Path) -> dict[str, Any]:
    def relative(path: Path | None) -> str | None:
        return path.relative_to(data_dir).as_posix() if path else None

    return {
        "id": task.id,
        "filename": task.filename,
        "resolution": task.resolution,
        "source": relative(task.source_path),
        "size": task.size,
        "media": task.media,
        "state": task.state.value,
        "progress": task.progress,
        "error": task.error,
        "created_at": task.created_at.isoformat(),
        "started_at": task.started_at.isoformat() if task.started_at else None,
        "finished_at": task.finished_at.isoformat() if task.finished_at else None,
        "output": task.output,
        "output_path": relative(task.output_path),
        "thumbnail_path": relative(task.thumbnail_path),
    }


def from_record(record: dict[str, Any], data_dir: Path) -> Task:
    """The Task a record describes; ValueError (or KeyError, TypeError) if it is not one of ours."""
    task_id = record["id"]
    if not isinstance(task_id, str) or not TASK_ID.match(task_id):
        raise ValueError("bad task id")
    source = _generated(record["source"], {f"uploads/{task_id}{ext}" for ext in SOURCE_EXTENSIONS})
    output_path = thumbnail_path = None
    if record.get("output_path") is not None:
        output_path = _generated(record["output_path"], {f"outputs/{task_id}.mp4"})
    if record.get("thumbnail_path") is not None:
        thumbnail_path = _generated(record["thumbnail_path"], {f"outputs/{task_id}.jpg"})
    if record["resolution"] not in RESOLUTIONS or not isinstance(record["filename"], str):
        raise ValueError("bad resolution or file name")
    for key in ("media", "output"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            raise ValueError(f"bad {key}")
    return Task(
        id=task_id,
        filename=record["filename"][:255],
        resolution=record["resolution"],
        source_path=data_dir / source,
        size=int(record["size"]),
        media=record.get("media"),
        state=State(record["state"]),
        progress=max(0, min(100, int(record.get("progress") or 0))),
        error=str(record["error"])[:300] if record.get("error") else None,
        created_at=_moment(record["created_at"]) or utc_now(),
        started_at=_moment(record.get("started_at")),
        finished_at=_moment(record.get("finished_at")),
        output=record.get("output"),
        output_path=data_dir / output_path if output_path else None,
        thumbnail_path=data_dir / thumbnail_path if thumbnail_path else None,
    )


def _generated(value: Any, allowed: set[str]) -> str:
    if value not in allowed:
        raise ValueError(f"unexpected path {value!r}")
    return str(value)


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment


def encode(store: TaskStore, data_dir: Path) -> bytes:
    records = [to_record(task, data_dir) for task in store.all()]
    return json.dumps({"format": FORMAT, "tasks": records}, ensure_ascii=False).encode()


# -- writing ---------------------------------------------------------------------

class SnapshotWriter:
    """Keeps tasks.json in step with the store; does nothing when persistence is off."""

    def __init__(self, store: TaskStore, settings: Settings) -> None:
        self.store = store
        self.enabled = settings.persist
        self.path = settings.snapshot_path
        self.interval = settings.snapshot_interval
        self.saved_version = store.version  # what is on disk already: nothing new yet
        # A task changed state, or someone waits in durable(): skip the pause. Only
        # progress updates are coalesced; every transition is on disk within milliseconds.
        self._urgent = asyncio.Event()
        if self.enabled:
            store.on_transition = self._urgent.set
        self._attempted = asyncio.Event()  # set after every write, good or failed
        # A write cancelled at shutdown goes on in its thread; the final write must
        # wait for it and must never be overtaken by it.
        self._lock = threading.Lock()
        self._on_disk = -1
        self._failing = False
        self._stopped = False  # at shutdown: durable() must not wait for a writer that is gone

    async def run(self) -> None:
        """Write whenever the store changed, at most once per interval, until cancelled."""
        try:
            await self._keep_writing()
        finally:
            self._stopped = True

    async def _keep_writing(self) -> None:
        while True:
            await self.store.wait_for_change(self.saved_version)
            self._urgent.clear()  # this write covers whatever made it urgent
            try:
                await self.save()
            except OSError as exc:  # disk full, read-only...: keep serving, retry next round
                if not self._failing:
                    log.error("cannot write %s: %s; tasks will be lost on a restart until "
                              "this is fixed", self.path, exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("%s is written again", self.path)
                self._failing = False
            finally:
                self._attempted.set()
            # the pause that turns a burst of progress updates into one write
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._urgent.wait()

    async def durable(self) -> None:
        """Return once every change made so far is on disk (or a write of it failed).

        The upload route awaits this before its 201, so an upload that was
        acknowledged is never lost to a crash a moment later.
        """
        wanted = self.store.version
        while self.enabled and not self._stopped and self.saved_version < wanted:
            self._attempted.clear()
            self._urgent.set()
            await self._attempted.wait()
            if self._failing:
                return

    async def save(self) -> None:
        version = self.store.version
        data = encode(self.store, self.path.parent)
        await asyncio.to_thread(self._write, data, version)
        self.saved_version = version

    def _write(self, data: bytes, version: int) -> None:
        with self._lock:
            if version < self._on_disk:
                return  # a newer snapshot is already there
            temporary = self.path.with_name(self.path.name + ".tmp")
            with open(temporary, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
            # the rename itself is only durable once the folder is synced too
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
            self._on_disk = version


# -- loading ---------------------------------------------------------------------

def load_tasks(settings: Settings) -> list[Task]:
    """The snapshot's tasks, reconciled with the disk (blocking: run it in a thread).

    An unreadable snapshot is renamed to tasks.json.bad, not overwritten, and the
    server starts empty; the files it described are then reported as unreferenced.
    """
    path = settings.snapshot_path
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    # Any other OSError (no permission, an I/O error) stops the start-up with the
    # error: starting empty would look as if every task had been lost.
    try:
        document = json.loads(raw)
        records = document["tasks"]
        if document.get("format") != FORMAT or not isinstance(records, list):
            raise ValueError("unknown snapshot format")
    except (ValueError, KeyError, TypeError) as exc:
        bad = path.with_name(path.name + ".bad")
        log.error("cannot read %s (%s); it is kept as %s and the server starts with no tasks",
                  path, exc, bad.name)
        os.replace(path, bad)
        return []
    tasks: list[Task] = []
    seen: set[str] = set()
    for record in records:
        try:
            task = from_record(record, settings.data_dir)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("skipping a task record in %s: %s", path.name, exc)
            continue
        if task.id in seen:
            continue
        seen.add(task.id)
        tasks.append(_reconcile(task, settings.outputs_dir))
    return tasks


def _reconcile(task: Task, outputs_dir: Path) -> Task:
    """Make a loaded task match what is really on disk."""
    if task.state is State.COMPLETED:
        if task.output_path is None or not task.output_path.is_file():
            return _missing(task, "the finished video is missing from disk")
        if task.thumbnail_path and not task.thumbnail_path.is_file():
            task.thumbnail_path = None
        return task
    if task.state is State.PROCESSING:
        # interrupted mid-job: whatever the job had written is incomplete, run it again
        for name in (f"{task.id}.mp4", f"{task.id}.jpg"):
            (outputs_dir / name).unlink(missing_ok=True)
        task.state, task.progress, task.eta_seconds = State.QUEUED, 0, None
        task.started_at = task.finished_at = None
        task.output = task.output_path = task.thumbnail_path = None
        log.info("task %s was interrupted mid-transcode; queued again", task.id)
    if task.state is State.QUEUED and not task.source_path.is_file():
        return _missing(task, "the uploaded file is missing from disk")
    return task


def _missing(task: Task, what: str) -> Task:
    log.warning("task %s: %s after a restart; marked FAILED", task.id, what)
    task.state = State.FAILED
    task.error = f"{what} (found at restart)"
    task.progress, task.eta_seconds = 0, None
    task.finished_at = utc_now()
    if task.output_path and not task.output_path.is_file():
        task.output_path = task.output = None
    if task.thumbnail_path and not task.thumbnail_path.is_file():
        task.thumbnail_path = None
    return task
