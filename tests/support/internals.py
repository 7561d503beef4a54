"""The package's own names that the tests use, imported here and nowhere else in tests/.

When a name moves inside the package, this is the one file to change.
"""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from saq.job import Job, Status as JobStatus

from video_async.app import create_app
from video_async.config import MAX_PIXELS_CEILING, MIB, RESOLUTIONS, Settings, build_parser, build_worker_parser, is_loopback
from video_async.ffmpeg import (Limits, Media, explain, input_args, media_from, output_size,
                                parse_progress)
from video_async.mp4 import mp4_duration
from video_async.probing import ProbePool
from video_async.layout import SOURCE_EXTENSIONS, DataLayout, checked_id
from video_async.multipart import HEAD_LIMIT, BodyTooLarge, Malformed, Reader as MultipartReader
from video_async.jobs import (FUNCTION as QUEUE_FUNCTION, QUEUE_NAME, TranscodeJob,
                              outcome_to_json as outcome_json, without_password)
from video_async.queue import JobQueue, Followed, job_key, worker_json
from video_async.jobs import CannotRunHere, QuietWhileRedisIsAway, RedisWatch
from video_async.ffmpeg import Interrupted
from video_async.receive import BATCH_SIZE, DiskThreads, receive
from video_async.errors import ApiError
from video_async.durable import rename as rename_durably, replace_file
from video_async.display import api_json, card_texts, clock, human_size, one_of, ordinal, time_left
from video_async.tus.protocol import MAX_METADATA, metadata as read_tus_metadata
from video_async.tus.uploads import ResumableUploads, Upload, scan as scan_uploads
from video_async.routes.tasks import content_disposition
from video_async.routes.intake import container_of, display_name
from video_async.snapshot import Encoder, SnapshotWriter, from_record, to_record
from video_async.keys import STORE
from video_async.routes.tasks import MAX_PAGE_SIZE, PAGE_SIZE
from video_async.store import CHOICES, REMOVALS_KEPT, Order, Output, State, Task, TaskStore, new_task_id
from video_async.worker import Failed, Transcoded


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


def job_updates(store: TaskStore, settings: Settings) -> Callable[[Task, Job], None]:
    """What the web process does to a task on reading its queue job as Redis has it (a
    state, progress, a result), without Redis: the job is made by the test. The one
    place a test reaches inside JobQueue, so that a move of the job contract changes
    this function, not the tests."""
    jobs = JobQueue(store, replace(settings, queue="redis://127.0.0.1:1/0"))  # never connected

    def apply(task: Task, job: Job) -> None:
        jobs._apply(Followed(task, job_key(task)), job)
    return apply


__all__ = ["CannotRunHere", "Interrupted", "QuietWhileRedisIsAway", "RedisWatch", "worker_json",
           "Order", "TranscodeJob", "api_json", "BodyTooLarge", "Failed", "Transcoded", "Job", "JobStatus", "MAX_PIXELS_CEILING",
           "Malformed", "MultipartReader", "Output", "ResumableUploads", "State", "Task", "Upload",
           "card_texts", "checked_id", "explain", "from_record", "input_args", "is_loopback",
           "job_key", "job_updates", "new_task_id", "one_of", "ordinal", "outcome_json",
           "scan_uploads", "time_left", "without_password",
           "BATCH_SIZE", "HEAD_LIMIT", "MAX_PAGE_SIZE", "PAGE_SIZE", "QUEUE_FUNCTION", "QUEUE_NAME", "CHOICES", "REMOVALS_KEPT", "STORE", "kept_tasks", "MIB", "RESOLUTIONS", "SOURCE_EXTENSIONS", "DataLayout", "Limits", "Media", "ProbePool", "mp4_duration", "Settings", "Encoder", "SnapshotWriter", "TaskStore", "to_record", "a_task", "build_parser", "build_worker_parser", "clock", "container_of",
           "content_disposition", "create_app", "display_name", "human_size", "output_size",
           "media_from", "parse_progress", "receive", "DiskThreads", "rename_durably", "replace_file", "MAX_METADATA", "read_tus_metadata", "ApiError"]
