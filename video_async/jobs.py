"""The job contract of queue mode: what the web process (queue.py) sends a queue worker
(remote_worker.py), and what the worker sends back, encoded and decoded in one place.

Both sides import this module and neither imports the other. It imports no web code, so
a worker process loads neither aiohttp's server nor jinja2: only the job it runs
(`worker.transcode_task`), the store's records and ffmpeg.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from .ffmpeg import Media
from .layout import DataLayout
from .store import Order, Output, Task
from .worker import Done, Failed

QUEUE_NAME = "video_async"
FUNCTION = "transcode"  # the name a worker registers the job under
# Errors that mean "Redis is not answering", as opposed to a bug of ours.
UNREACHABLE = (RedisError, OSError)


@dataclass(frozen=True)
class TranscodeJob:
    """One task's job as a worker runs it; the task's other fields stay with the web process.

    Files are named relative to the data dir, so each machine may mount the shared folder
    where it likes.
    """
    task_id: str
    source: str  # relative to the data dir
    order: Order
    media: Media | None

    @classmethod
    def of(cls, task: Task, layout: DataLayout) -> TranscodeJob:
        return cls(task.id, layout.relative(task.source_path), task.order(), task.media)

    def to_json(self) -> dict[str, Any]:
        """The job's keyword arguments in Redis."""
        return {"task_id": self.task_id, "source": self.source, **self.order.order_json(),
                "media": self.media.to_json() if self.media else None}

    @classmethod
    def from_json(cls, arguments: dict[str, Any]) -> TranscodeJob:
        media = arguments.get("media")
        return cls(str(arguments["task_id"]), str(arguments["source"]),
                   Order.from_json(arguments), Media.from_json(media) if media else None)

    def source_in(self, layout: DataLayout) -> Path:
        """The source as a path here; ValueError unless it is a file the server named for
        this task (whoever can write to Redis can write a job)."""
        return layout.ours(self.source, self.task_id, "source")


def outcome_to_json(outcome: Done | Failed) -> dict[str, Any]:
    """What a finished job returns through Redis."""
    if isinstance(outcome, Failed):
        return {"failed": outcome.reason, "detail": outcome.detail}
    output = outcome.output
    return {"output": {"size": output.size, "width": output.width, "height": output.height,
                       "duration": output.duration, "source_warning": output.source_warning},
            "thumbnail": outcome.thumbnail is not None, "ladder": outcome.ladder}


def outcome_from_json(result: Any, task_id: str, layout: DataLayout) -> Done | Failed:
    """A finished job's result read back by the web process, as outcome_to_json wrote it."""
    if not isinstance(result, dict):
        return Failed("Something went wrong on the worker; it has been logged.")
    if "failed" in result:
        return Failed(str(result["failed"]), str(result.get("detail") or ""))
    return Done(Output(**result["output"]),
                layout.thumbnail(task_id) if result.get("thumbnail") else None,
                ladder=result.get("ladder") is True)


def without_password(url: str) -> str:
    """A Redis URL as logs and /healthz show it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
