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

`load_tasks` reads the snapshot back at start-up and checks it against the
disk: finished tasks whose video is still there come back as they were, a job
that was running is to be queued again, and a task whose files are gone is to
be FAILED with a reason saying so (recovery makes those changes through the
store). Paths are stored relative to the data dir and must be the generated
names they always are (layout.py): a hand-edited snapshot can never point the
server at a file outside the data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import durable
from .config import Settings
from .ffmpeg import Media
from .layout import TASK_ID, DataLayout
from .store import Order, Output, State, Task, TaskStore, utc_now

log = logging.getLogger(__name__)

FORMAT = 1  # bumped if the record layout ever changes incompatibly


# -- records -------------------------------------------------------------------

def to_record(task: Task, layout: DataLayout) -> dict[str, Any]:
    def relative(path: Path | None) -> str | None:
        return layout.relative(path) if path else None

    return {
        "id": task.id,
        **task.order_json(),
        "source": relative(task.source_path),
        "size": task.size,
        "media": task.media.to_json() if task.media else None,
        "state": task.state.value,
        "progress": task.progress,
        "error": task.error,
        "error_detail": task.error_detail,
        "retries": task.retries,
        "retried_at": task.retried_at.isoformat() if task.retried_at else None,
        "created_at": task.created_at.isoformat(),
        "started_at": task.started_at.isoformat() if task.started_at else None,
        "finished_at": task.finished_at.isoformat() if task.finished_at else None,
        "output": asdict(task.output) if task.output else None,
        "output_path": relative(task.output_path),
        "thumbnail_path": relative(task.thumbnail_path),
        "ladder_path": relative(task.ladder_path),
    }


def from_record(record: dict[str, Any], layout: DataLayout) -> Task:
    """The Task a record describes; ValueError (or KeyError, TypeError) if it is not one of ours."""
    task_id = record["id"]
    if not isinstance(task_id, str) or not TASK_ID.match(task_id):
        raise ValueError("bad task id")
    order = Order.from_json(record)
    for key in ("media", "output"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            raise ValueError(f"bad {key}")
    media, output = record.get("media"), record.get("output")

    def path(key: str, kind: str) -> Path | None:
        return None if record.get(key) is None else layout.ours(record[key], task_id, kind)

    return Task(
        **vars(order),
        id=task_id,
        source_path=layout.ours(record["source"], task_id, "source"),
        size=int(record["size"]),
        media=_media(media),
        state=State(record["state"]),
        progress=max(0, min(100, int(record.get("progress") or 0))),
        error=str(record["error"])[:300] if record.get("error") else None,
        error_detail=str(record["error_detail"])[:300] if record.get("error_detail") else None,
        retries=max(0, int(record.get("retries") or 0)),
        retried_at=_moment(record.get("retried_at")),
        created_at=_moment(record["created_at"]) or utc_now(),
        started_at=_moment(record.get("started_at")),
        finished_at=_moment(record.get("finished_at")),
        output=Output(**output) if output else None,
        output_path=path("output_path", "output"),
        thumbnail_path=path("thumbnail_path", "thumbnail"),
        ladder_path=path("ladder_path", "ladder"),
    )


def _media(data: dict[str, Any] | None) -> Media | None:
    """The upload's probe; None for an unusable record, and the worker probes again."""
    try:
        return Media.from_json(data) if data else None
    except (KeyError, TypeError):
        return None


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment


class Encoder:
    """The snapshot's bytes, on the loop: each task's record is encoded once per change of
    it and kept, so a write costs the loop a join of bytes, not a re-encoding of every
    task (at 10,000 tasks that took a third of the loop's time while one task progressed)."""

    def __init__(self, store: TaskStore, layout: DataLayout) -> None:
        self.store, self.layout = store, layout
        self._records: dict[str, tuple[int, bytes]] = {}  # task id -> (its version, its record)

    def encode(self) -> bytes:
        tasks = self.store.all()
        records = [self.record(task) for task in tasks]
        if len(self._records) > len(tasks):  # removed tasks are forgotten
            for task_id in self._records.keys() - {task.id for task in tasks}:
                del self._records[task_id]
        return b'{"format": %d, "tasks": [' % FORMAT + b", ".join(records) + b"]}"

    def record(self, task: Task) -> bytes:
        """The task's record as bytes, encoded again only if the task changed since."""
        version = self.store.changed_at(task.id)
        kept = self._records.get(task.id)
        if kept is None or version is None or kept[0] != version:
            kept = (-1 if version is None else version,
                    json.dumps(to_record(task, self.layout), ensure_ascii=False).encode())
            self._records[task.id] = kept
        return kept[1]


# -- writing ---------------------------------------------------------------------

class SnapshotWriter:
    """Keeps tasks.json in step with the store; does nothing when persistence is off."""

    def __init__(self, store: TaskStore, settings: Settings) -> None:
        self.store = store
        self.enabled = settings.persist
        self.layout = settings.layout
        self.encoder = Encoder(store, self.layout)
        self.path = self.layout.snapshot_path
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
        data = self.encoder.encode()
        await asyncio.to_thread(self._write, data, version)
        self.saved_version = version

    def _write(self, data: bytes, version: int) -> None:
        with self._lock:
            if version < self._on_disk:
                return  # a newer snapshot is already there
            durable.replace_file(self.path, data, self.path.with_name(self.path.name + ".tmp"))
            self._on_disk = version


# -- loading ---------------------------------------------------------------------

@dataclass
class Loaded:
    """A task read back from the snapshot, and what the disk says must happen to it."""
    task: Task
    interrupted: bool = False  # it was PROCESSING when the server stopped: run it again
    missing: str | None = None  # a file it needs is gone: it is FAILED with this reason


def load_tasks(layout: DataLayout) -> list[Loaded]:
    """The snapshot's tasks, checked against the disk (blocking: run it in a thread).

    An unreadable snapshot is renamed to tasks.json.bad, not overwritten, and the
    server starts empty; the files it described are then reported as unreferenced.
    The state changes the disk calls for are made by the caller, through the store.
    """
    path = layout.snapshot_path
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
    loaded: list[Loaded] = []
    seen: set[str] = set()
    for record in records:
        try:
            task = from_record(record, layout)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("skipping a task record in %s: %s", path.name, exc)
            continue
        if task.id in seen:
            continue
        seen.add(task.id)
        loaded.append(_check_files(task, layout))
    return loaded


def _check_files(task: Task, layout: DataLayout) -> Loaded:
    """What a loaded task needs, given what is really on disk."""
    found = Loaded(task)
    if task.thumbnail_path and not task.thumbnail_path.is_file():
        task.thumbnail_path = None
    if task.state is State.COMPLETED:
        if task.output_path is None or not task.output_path.is_file():
            task.output_path = task.output = None
            found.missing = "the finished video is missing from disk"
        elif task.ladder and (task.ladder_path is None or not task.ladder_path.is_dir()):
            task.ladder_path = None
            found.missing = "the finished sizes are missing from disk"
        return found
    if task.state is State.PROCESSING:
        # interrupted mid-job: whatever the job had written is incomplete
        for leftover in (layout.output(task.id, task.output_extension), layout.thumbnail(task.id)):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(layout.ladder(task.id), ignore_errors=True)
        found.interrupted = True
    if task.state is not State.FAILED and not task.source_path.is_file():
        found.missing = "the uploaded file is missing from disk"
    return found
