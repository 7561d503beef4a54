"""The task store: one dict of tasks, the single source of truth (tasksStore.js).

Routes and the worker change a task's state and progress only through
TaskStore's methods, so every change the page can see bumps `version` (the
ETag of GET /tasks), and queuing a task wakes the worker at once instead of
the worker polling on a timer.

Because every change passes through here, the store also knows which tasks
changed since a given version and which were removed: a page that polls asks
only for those, and each task's API JSON is encoded once per change and kept,
so a poll's cost follows what changed, not how many tasks are kept.

No lock is needed: everything runs on one thread, in one event loop, and no
method awaits in the middle of a change, so no other coroutine can ever see a
task half-updated.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .config import ALL_SIZES, DEFAULT_RESOLUTION, RESOLUTIONS, Resolution
from .ffmpeg import Media

# What a person is told when a bug of ours broke something (a job, or a request); the
# details go to the log.
INTERNAL_ERROR = "Something went wrong on the server; it has been logged."
# A version as clients see it: the store's instance, a dot, its version.
LIST_VERSION = re.compile(r"^([0-9a-f]{8})\.([0-9]{1,18})\Z")
# How many removals the store remembers for changes_since(): a page further behind
# than that gets the whole list again (about 100 bytes each).
REMOVALS_KEPT = 1000


class State(StrEnum):
    QUEUED = "QUEUED"  # stored on disk, waiting for a free worker
    PROCESSING = "PROCESSING"  # ffmpeg is running for it
    COMPLETED = "COMPLETED"  # output ready to download (and a thumbnail, unless that failed)
    FAILED = "FAILED"  # stopped with a short human reason in `error`

    @property
    def label(self) -> str:
        """What the page's badge says: "Queued", "Processing", ..."""
        return self.value.capitalize()


def new_task_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Output:
    """The finished video, as its transcode planned and reported it."""
    size: int  # bytes
    width: int
    height: int
    duration: float | None  # seconds
    # what ffmpeg complained of while it still finished: a file cut short or damaged
    # part way gives an output of what could be read, and this line says why
    source_warning: str | None = None

    @property
    def short_side(self) -> int:
        """The resolution it really has: 360 for a 640x360 video, whatever was asked."""
        return min(self.width, self.height)


@dataclass(frozen=True)
class Choice:
    """An order field the uploader sets: the key it is sent under (a form field, a
    resumable upload's metadata key, and the key in every JSON form of a task), and how
    its text is read (a ValueError says to a person what is accepted)."""
    key: str
    read: Callable[[str], Any]
    # True for a choice added after forms were written without it: those get its default
    missing_ok: bool = False


def read_resolution(text: str) -> Resolution:
    """'720' -> 720, 'all' -> ALL_SIZES."""
    if text.strip() == ALL_SIZES:
        return ALL_SIZES
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))} "
                         f"or {ALL_SIZES}.")
    return value


@dataclass(eq=False)
class Order:
    """What the uploader chose for a task, with its upload (the form's fields, or a
    resumable upload's metadata).

    These fields travel with a task everywhere: every outside form of a task (the API's
    JSON, the snapshot's record, an unfinished resumable upload's sidecar, a queue job)
    carries them through order_json and Order.from_json, and both upload routes read
    the choices by their metadata. A new per-upload option is a field here with its
    Choice, and the code that acts on it.
    """
    filename: str  # the uploader's name: display text only, never a path
    # the short side asked for: 480, 720 or 1080; or ALL_SIZES, a ladder of them
    resolution: Resolution = field(default=DEFAULT_RESOLUTION,
                                   metadata={"choice": Choice("resolution", read_resolution)})

    @property
    def output_extension(self) -> str:
        """The container the transcode makes, as the output file's extension (one of
        layout.OUTPUT_TYPES): the one place it is chosen."""
        return ".mp4"

    def order_json(self) -> dict[str, Any]:
        return {"filename": self.filename,
                **{choice.key: str(getattr(self, name)) for name, choice in CHOICES.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Order:
        """The order a JSON form of it describes; ValueError (or KeyError) for one no
        upload could have made. A queue job may leave out the name it does not need."""
        filename = data.get("filename", "")
        if not isinstance(filename, str):
            raise ValueError("bad file name")
        return cls(filename=filename[:255], **{name: choice.read(str(data[choice.key]))
                                               for name, choice in CHOICES.items()
                                               if choice.key in data or not choice.missing_ok})

    @property
    def ladder(self) -> bool:
        """All sizes were asked for: an HLS ladder besides the MP4."""
        return self.resolution == ALL_SIZES

    @property
    def top_size(self) -> int:
        """The short side of the MP4 made: the one asked for, or a ladder's top rung's."""
        return max(RESOLUTIONS) if self.resolution == ALL_SIZES else self.resolution

    def order(self) -> Order:
        """The order alone (of a Task: without its state)."""
        return Order.from_json(self.order_json())


# The Order fields an uploader sets, by field name.
CHOICES: dict[str, Choice] = {item.name: item.metadata["choice"]
                              for item in fields(Order) if "choice" in item.metadata}


@dataclass(eq=False, kw_only=True)
class Task(Order):
    """An order and what became of it."""
    id: str
    source_path: Path  # the upload, under a generated name
    size: int
    media: Media | None = None  # from probing the upload
    state: State = State.QUEUED
    progress: int = 0
    eta_seconds: float | None = None
    error: str | None = None  # a sentence for a person
    error_detail: str | None = None  # what ffmpeg itself said, if it said anything
    retries: int = 0  # how often a person asked to run it again after a failure
    # why a task that was running waits again ("Worker lost: running again"), until it runs
    requeued_because: str | None = None
    retried_at: datetime | None = None  # when the last of those retries was asked for
    created_at: datetime = field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Output | None = None
    output_path: Path | None = None
    thumbnail_path: Path | None = None
    ladder_path: Path | None = None  # the folder of an HLS ladder, when all sizes were asked for
    # the running job, so DELETE can stop its ffmpeg; never serialised
    job: asyncio.Task[None] | None = field(default=None, repr=False)

    def files(self) -> list[Path]:
        """Every file and folder the task has on disk (a ladder is a folder)."""
        return [p for p in (self.source_path, self.output_path, self.thumbnail_path,
                            self.ladder_path) if p]

    def to_json(self, queue_position: int | None = None) -> dict[str, Any]:
        """The task's fields as the API shows them (the app adds its card's texts: see
        TaskStore's to_json)."""
        completed = self.state is State.COMPLETED
        return {
            "id": self.id,
            **self.order_json(),
            "state": self.state.value,
            "progress": self.progress,
            "queue_position": queue_position,
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "error": self.error,
            "error_detail": self.error_detail,
            "retries": self.retries,
            "retried_at": _iso(self.retried_at),
            "size": self.size,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "media": self.media.to_json() if self.media else None,
            "output": asdict(self.output) if self.output else None,
            "download_url": f"/tasks/{self.id}/download" if completed else None,
            "thumbnail_url": f"/tasks/{self.id}/thumbnail" if self.thumbnail_path else None,
            # the ladder's master playlist; its other files are named in it, relative to it
            "ladder_url": (f"/tasks/{self.id}/ladder/master.m3u8"
                           if completed and self.ladder_path else None),
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


# A task's API JSON, given its place in the queue.
TaskJson = Callable[[Task, int | None], dict[str, Any]]


class TaskStore:
    def __init__(self, to_json: TaskJson = Task.to_json) -> None:
        """to_json: what the API shows of a task; the app's adds the texts of its card."""
        self._to_json = to_json
        self._tasks: dict[str, Task] = {}  # insertion order is upload order: oldest first
        self._version = 0
        # part of every ETag, so a restarted server never reuses an old version's tag
        self.instance = uuid.uuid4().hex[:8]
        # task id -> the version of its last change, least recently changed first:
        # the changes since a version are read from the end, no further back than they go
        self._changed_at: OrderedDict[str, int] = OrderedDict()
        # (version, task id) of the latest removals, oldest first, and the version of the
        # last one forgotten: a page that saw less than that must take the whole list
        self._removed: deque[tuple[int, str]] = deque()
        self._forgotten = 0
        self._encoded: dict[str, bytes] = {}  # task id -> its API JSON, dropped on any change
        # task id -> 1 for the task the worker takes next, 2 for the one after, ...:
        # kept current by every change
        self._queue_positions: dict[str, int] = {}
        # task id -> its place in upload order, never reused: the cursor of paging,
        # which a deleted task cannot invalidate
        self._places: dict[str, int] = {}
        self._last_place = 0
        # Since Python 3.10 an Event binds to a loop on first wait, not here,
        # so the store can be built by the synchronous create_app().
        self._work_queued = asyncio.Event()
        self._any_change = asyncio.Event()  # for the snapshot writer
        # Called on every change but a progress update (a task added, removed, or
        # moved to another state): the snapshot writer writes those at once.
        self.on_transition: Callable[[], None] | None = None

    @property
    def version(self) -> int:
        """Bumped on every change: equal versions mean an identical task list."""
        return self._version

    @property
    def list_version(self) -> str:
        """The version as clients see it: the ETag of GET /tasks, and what they send back
        as `since`. The instance in it keeps a restarted server's versions apart."""
        return f"{self.instance}.{self._version}"

    def version_named(self, list_version: str) -> int:
        """The version a client's list_version names: -1 for another run's, older than any
        this store can answer; ValueError if it is not a list version at all."""
        found = LIST_VERSION.match(list_version)
        if found is None:
            raise ValueError(f"not a list version: {list_version!r}")
        instance, version = found.groups()
        return int(version) if instance == self.instance else -1

    def _changed(self, task: Task, was_queued: bool, transition: bool = True) -> None:
        """Record a change just made to task: a new version, and its JSON to encode again
        (a removed task's only leaves the version)."""
        self._version += 1
        if task.id in self._tasks:
            self._touch(task.id)
        if was_queued or task.state is State.QUEUED:
            self._number_queue()
        self._announce(transition)

    def _announce(self, transition: bool) -> None:
        self._any_change.set()
        if transition and self.on_transition is not None:
            self.on_transition()

    def _touch(self, task_id: str) -> None:
        if task_id not in self._places:  # a task new to the store: it goes last
            self._last_place += 1
            self._places[task_id] = self._last_place
        self._changed_at[task_id] = self._version
        self._changed_at.move_to_end(task_id)
        self._encoded.pop(task_id, None)

    def _number_queue(self) -> None:
        """A task joined or left the queue: the others' places in it, shown on their cards,
        may have moved, and those that did are changed too."""
        queued = (task for task in self._tasks.values() if task.state is State.QUEUED)
        positions = {task.id: n for n, task in enumerate(queued, start=1)}
        for task_id, position in positions.items():
            if self._queue_positions.get(task_id) != position:
                self._touch(task_id)
        self._queue_positions = positions

    async def wait_for_change(self, seen_version: int) -> None:
        """Return once `version` differs from seen_version (at once if it already does)."""
        while self._version == seen_version:
            self._any_change.clear()
            await self._any_change.wait()

    # -- reading -----------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def all(self) -> list[Task]:
        return list(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in State}
        for task in self._tasks.values():
            counts[task.state.value] += 1
        return counts

    def queued_count(self) -> int:
        return len(self._queue_positions)

    def to_json(self, task: Task) -> dict[str, Any]:
        return self._to_json(task, self._queue_positions.get(task.id))

    def all_json(self) -> list[dict[str, Any]]:
        """Every task as the API shows it, oldest first: the page's first paint."""
        return [self.to_json(task) for task in self._tasks.values()]

    def encoded(self, task: Task) -> bytes:
        """The task's API JSON as bytes, encoded once per change of it: every poll of every
        page between two changes sends these same bytes."""
        data = self._encoded.get(task.id)
        if data is None:
            data = self._encoded[task.id] = json.dumps(self.to_json(task)).encode()
        return data

    def changed_at(self, task_id: str) -> int | None:
        """The version of the task's last change (None for a task the store does not hold):
        what caches of a task's other forms (the snapshot's record) compare with."""
        return self._changed_at.get(task_id)

    def changes_since(self, version: int) -> tuple[list[Task], list[str]] | None:
        """The tasks changed after `version`, oldest first, and the ids removed after it;
        None if the store cannot tell: `version` is newer than its own, or older than the
        removals it remembers."""
        if not self._forgotten <= version <= self._version:
            return None
        changed: list[Task] = []
        for task_id, changed_at in reversed(self._changed_at.items()):
            if changed_at <= version:
                break
            changed.append(self._tasks[task_id])
        changed.sort(key=lambda task: self._places[task.id])
        removed = []
        for removed_at, task_id in reversed(self._removed):
            if removed_at <= version:
                break
            removed.append(task_id)
        removed.reverse()
        return changed, removed

    def page(self, after: int, limit: int) -> tuple[list[Task], int | None]:
        """Up to `limit` tasks, oldest first, from those placed after `after` (0: the first);
        and the `after` of the next page, None if this is the last."""
        places = self._places
        later = (task for task in self._tasks.values() if places[task.id] > after)
        tasks = [task for _, task in zip(range(limit + 1), later)]
        if len(tasks) <= limit:
            return tasks, None
        del tasks[limit:]
        return tasks, places[tasks[-1].id]

    # -- changing ----------------------------------------------------------

    def add(self, task: Task) -> Task:
        self._tasks[task.id] = task
        self._changed(task, was_queued=False)
        self._work_queued.set()
        return task

    def restore(self, tasks: list[Task]) -> None:
        """Put back tasks loaded from a snapshot at start-up, oldest first, and wake the worker."""
        for task in sorted(tasks, key=lambda t: t.created_at):
            self._tasks[task.id] = task
        if tasks:
            self._version += 1
            for task in self._tasks.values():
                self._touch(task.id)
            self._number_queue()
            self._announce(transition=True)
            self._work_queued.set()

    def remove(self, task_id: str) -> Task | None:
        task = self._tasks.pop(task_id, None)
        if task:
            del self._changed_at[task_id], self._places[task_id]
            self._encoded.pop(task_id, None)
            self._changed(task, was_queued=task.state is State.QUEUED)
            self._removed.append((self._version, task_id))
            if len(self._removed) > REMOVALS_KEPT:
                self._forgotten = self._removed.popleft()[0]
        return task

    def change_resolution(self, task: Task, resolution: Resolution) -> None:
        """The size a task not yet started is to be made at (the caller checks its state)."""
        task.resolution = resolution
        self._changed(task, was_queued=False)

    def claim_next(self) -> Task | None:
        """Move the oldest QUEUED task to PROCESSING and return it (None if none waits)."""
        for task in self._tasks.values():
            if task.state is State.QUEUED:
                self.start(task)
                return task
        return None

    def start(self, task: Task) -> None:
        """QUEUED -> PROCESSING: a worker, here or on the queue, has taken it."""
        was_queued = task.state is State.QUEUED
        task.state = State.PROCESSING
        task.started_at = utc_now()
        task.progress, task.requeued_because = 0, None
        self._changed(task, was_queued)

    async def wait_for_work(self) -> None:
        """Return once a task may have been queued since the last claim_next() found none."""
        self._work_queued.clear()
        await self._work_queued.wait()

    def set_progress(self, task: Task, progress: int, eta_seconds: float | None) -> None:
        progress = max(0, min(99, progress))  # 100 means done, and only complete() says so
        if progress != task.progress or eta_seconds != task.eta_seconds:
            task.progress, task.eta_seconds = progress, eta_seconds
            self._changed(task, was_queued=False, transition=False)

    def complete(self, task: Task, output_path: Path, output: Output,
                 thumbnail_path: Path | None, ladder_path: Path | None = None) -> None:
        was_queued = task.state is State.QUEUED
        task.state = State.COMPLETED
        task.progress, task.eta_seconds = 100, None
        task.output_path, task.output, task.thumbnail_path = output_path, output, thumbnail_path
        task.ladder_path = ladder_path
        task.finished_at = utc_now()
        self._changed(task, was_queued)

    def fail(self, task: Task, reason: str, detail: str = "") -> None:
        was_queued = task.state is State.QUEUED
        task.state = State.FAILED
        task.error, task.error_detail = reason, detail or None
        task.eta_seconds = None
        task.finished_at = utc_now()
        self._changed(task, was_queued)

    def retry(self, task: Task) -> None:
        """FAILED -> QUEUED because a person asked: counted, so a failure again shows it."""
        task.retries += 1
        task.retried_at = utc_now()
        self.requeue(task)

    def requeue(self, task: Task, because: str | None = None) -> None:
        """Back to QUEUED with no trace of an earlier run, keeping its place by upload time:
        a retry, or a job a restart or a lost worker interrupted (`because` says which,
        on its card, until it runs again)."""
        task.state = State.QUEUED
        task.requeued_because = because
        task.progress, task.error, task.error_detail, task.eta_seconds = 0, None, None, None
        task.started_at = task.finished_at = None
        task.output = task.output_path = task.thumbnail_path = task.ladder_path = None
        self._changed(task, was_queued=False)  # queued now: the queue is numbered again
        self._work_queued.set()
