"""The job contract of queue mode: what the web process (queue.py) sends a queue worker
(remote_worker.py), and what the worker sends back, encoded and decoded in one place.

Both sides import this module and neither imports the other. It imports no web code, so
a worker process loads neither aiohttp's server nor jinja2: only the job it runs
(`worker.transcode_task`), the store's records and ffmpeg.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from .ffmpeg import Media
from .layout import DataLayout
from .store import Order, Output, Task
from .worker import Transcoded, Failed

VERSION = _version("video_async")
# Bumped whenever what a job carries, or the worker routes, change: web and workers must agree.
CONTRACT = 2
WORKER_PREFIX = "/worker/"  # the routes a worker without the shared folder uses
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


def outcome_to_json(outcome: Transcoded | Failed) -> dict[str, Any]:
    """What a finished job returns through Redis."""
    if isinstance(outcome, Failed):
        return {"failed": outcome.reason, "detail": outcome.detail}
    output = outcome.output
    return {"output": {"size": output.size, "width": output.width, "height": output.height,
                       "duration": output.duration, "source_warning": output.source_warning},
            "thumbnail": outcome.thumbnail is not None, "ladder": outcome.ladder}


def outcome_from_json(result: Any, task_id: str, layout: DataLayout) -> Transcoded | Failed:
    """A finished job's result read back by the web process, as outcome_to_json wrote it."""
    if not isinstance(result, dict):
        return Failed("Something went wrong on the worker; it has been logged.")
    if "failed" in result:
        return Failed(str(result["failed"]), str(result.get("detail") or ""))
    return Transcoded(Output(**result["output"]),
                      layout.thumbnail(task_id) if result.get("thumbnail") else None,
                      ladder=result.get("ladder") is True)


class CannotRunHere(Exception):
    """The worker, not the job, is at fault (its data dir is not the server's, say): the job
    goes back to the queue for another worker, and this one stops, saying why once."""


class RedisWatch:
    """Whether Redis answers, said in the log once when it stops and once when it is back,
    however many calls fail in between (each one would otherwise log, many a traceback)."""

    def __init__(self, url: str, log: logging.Logger) -> None:
        self.url, self.log = without_password(url), log
        self.reachable = False  # until it first answers
        self._ever = False  # the first answer is no "back"

    def lost(self, exc: BaseException) -> None:
        if self.reachable or not self._ever:
            self.log.warning("Redis at %s does not answer (%s: %s); waiting for it", self.url,
                             type(exc).__name__, exc)
            self._ever = True  # said once, from now on only "back" when it answers
        self.reachable = False

    def answered(self) -> None:
        if not self.reachable and self._ever:
            self.log.warning("Redis at %s answers again", self.url)
        self.reachable = True
        self._ever = True


class QuietWhileRedisIsAway(logging.Filter):
    """Drops a library's log records whose exception is only Redis not answering (SAQ logs
    each failed call with its traceback), telling the watch instead, which says it once;
    and those of CannotRunHere, which the worker says in one line as it stops."""

    def __init__(self, watch: RedisWatch) -> None:
        super().__init__()
        self.watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, UNREACHABLE):
            self.watch.lost(exc)
            return False
        return not isinstance(exc, CannotRunHere)


async def file_sha256(path: Path) -> str:
    """A file's SHA-256, in hex, read in a thread (200 MB take a few tenths of a second)."""
    def digest() -> str:
        sha = hashlib.sha256()
        with open(path, "rb") as file:
            while block := file.read(1024 * 1024):
                sha.update(block)
        return sha.hexdigest()
    return await asyncio.to_thread(digest)


def without_password(url: str) -> str:
    """A Redis URL as logs and /healthz show it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
