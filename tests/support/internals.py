"""The package's own names that the tests use, imported here and nowhere else in tests/.

When a name moves inside the package, this is the one file to change.
"""

from pathlib import Path

from video_async.app import create_app
from video_async.config import MIB, RESOLUTIONS, Settings, build_parser
from video_async.ffmpeg import (Limits, Media, ProbePool, media_from, mp4_duration, output_size,
                                parse_progress)
from video_async.layout import SOURCE_EXTENSIONS, DataLayout
from video_async.multipart import HEAD_LIMIT
from video_async.jobs import FUNCTION as QUEUE_FUNCTION, QUEUE_NAME
from video_async.receive import BATCH_SIZE, receive
from video_async.display import api_json, clock, human_size
from video_async.routes.tasks import content_disposition
from video_async.routes.intake import container_of, display_name
from video_async.snapshot import Encoder, SnapshotWriter, from_record, to_record
from video_async.keys import STORE
from video_async.routes.tasks import MAX_PAGE_SIZE, PAGE_SIZE
from video_async.jobs import TranscodeJob
from video_async.resumable import Upload
from video_async.store import REMOVALS_KEPT, Order, State, Task, TaskStore, new_task_id


def a_task(source: Path) -> Task:
    """A task as an upload makes it (a.mp4, 480p, one byte), for tests of the store alone."""
    return Task(id=new_task_id(), filename="a.mp4", resolution=480, source_path=source, size=1)


def kept_tasks(store: TaskStore, count: int, uploads: Path) -> list[Task]:
    """count FAILED tasks put straight into the store, as a restart puts back those of its
    snapshot: a long list without uploading it. Their uploads are not on disk."""
    tasks = []
    for n in range(count):
        task = a_task(uploads / f"kept-{n}.mp4")
        task.filename, task.state, task.error = f"kept {n}.mp4", State.FAILED, "Kept for a test."
        tasks.append(store.add(task))
    return tasks


__all__ = ["Order", "TranscodeJob", "Upload", "from_record", "api_json", "BATCH_SIZE", "HEAD_LIMIT", "MAX_PAGE_SIZE", "PAGE_SIZE", "QUEUE_FUNCTION", "QUEUE_NAME", "REMOVALS_KEPT", "STORE", "kept_tasks", "MIB", "RESOLUTIONS", "SOURCE_EXTENSIONS", "DataLayout", "Limits", "Media", "ProbePool", "mp4_duration", "Settings", "Encoder", "SnapshotWriter", "TaskStore", "to_record", "a_task", "build_parser", "clock", "container_of",
           "content_disposition", "create_app", "display_name", "human_size", "output_size",
           "media_from", "parse_progress", "receive"]
