"""`video-async worker --queue redis://... --data-dir DIR`: run queue jobs on this machine.

A SAQ worker whose one job is worker.transcode_task, the very function the in-process
worker runs: the same transcode, thumbnail, time limit and stall watchdog. The job
names files relative to the data dir, so each machine may mount the shared folder
where it likes. While a job runs, its progress goes back to Redis at most a few times
a second, and at least every quarter heartbeat, so the queue can tell a slow job from
a dead worker.

SAQ does the rest: it waits on Redis for work (no polling), aborts a job when its task
is deleted (the transcode is cancelled, so ffmpeg stops and partial files go), sweeps
the jobs of a worker that stopped sending heartbeats and runs them again elsewhere,
and on SIGTERM cancels the running jobs and puts them back in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import ffmpeg, worker
from .config import Settings
from .queue import FUNCTION, QUEUE_NAME, UNREACHABLE, without_password

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25  # seconds: at most this often a job's progress goes to Redis


def outcome_json(outcome: worker.Done | worker.Failed) -> dict[str, Any]:
    """What a finished job returns through Redis; queue.JobQueue reads it back."""
    if isinstance(outcome, worker.Failed):
        return {"failed": outcome.reason, "detail": outcome.detail}
    output = outcome.output
    return {"output": {"size": output.size, "width": output.width, "height": output.height,
                       "duration": output.duration},
            "thumbnail": outcome.thumbnail is not None}


class Reporter:
    """Sends a job's progress to Redis, throttled, and a heartbeat when there is none."""

    def __init__(self, job: Any, heartbeat: int) -> None:
        self.job, self.heartbeat = job, heartbeat
        self.progress: int = 0
        self.eta: float | None = None
        self._changed = asyncio.Event()

    def __call__(self, progress: int, eta: float | None) -> None:
        if (progress, eta) != (self.progress, self.eta):
            self.progress, self.eta = progress, eta
            self._changed.set()

    async def run(self) -> None:
        while True:
            # a quarter heartbeat even without progress: a stalled ffmpeg is the stall
            # watchdog's to judge, not the sweeper's
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat / 4):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.job.update(progress=self.progress / 100, meta={"eta": self.eta})
            except UNREACHABLE as exc:  # the transcode goes on; Redis may be back in a moment
                log.warning("job %s: could not report progress (%s)", self.job.key, exc)
            await asyncio.sleep(PROGRESS_INTERVAL)


def make_job(settings: Settings, ffmpeg_path: str) -> Callable[..., Any]:
    """The job function SAQ runs, for this worker's settings."""
    layout = settings.layout

    async def transcode(ctx: Any, *, task_id: str, source: str, resolution: int,
                        media: dict[str, Any] | None) -> dict[str, Any]:
        try:
            # only a file the server itself names for this task, never a path from outside
            source_path = layout.ours(source, task_id, "source")
        except ValueError:
            log.error("job for task %s names an unexpected source %r", task_id, source)
            return outcome_json(worker.Failed("The job named a file outside the data folder."))
        reporter = Reporter(ctx["job"], settings.queue_heartbeat)
        reporting = asyncio.create_task(reporter.run())
        try:
            outcome = await worker.transcode_task(
                task_id, source_path, ffmpeg.Media.from_json(media) if media else None,
                resolution, ffmpeg_path, settings, reporter)
        finally:
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting
        return outcome_json(outcome)

    return transcode


async def serve(settings: Settings) -> None:
    """Run jobs until SIGINT or SIGTERM; running jobs are then stopped and queued again."""
    from saq import Worker
    from saq.queue.redis import RedisQueue
    from saq.types import PartialTimersDict

    info = await ffmpeg.check(settings.ffmpeg)
    layout = settings.layout
    for folder in (layout.uploads_dir, layout.outputs_dir):
        if not await asyncio.to_thread(folder.is_dir):
            raise SystemExit(f"video-async worker: {folder} is not there: give the server's "
                             "data dir, shared with this machine, as --data-dir")
    ffmpeg.die_with_parent()
    queue = RedisQueue.from_url(settings.queue, name=QUEUE_NAME)
    heartbeat = settings.queue_heartbeat
    # a dead worker's job is swept, and run again, about one heartbeat after its last
    timers: PartialTimersDict = {"schedule": 1, "worker_info": 10, "sweep": heartbeat, "abort": 1}
    runner = Worker(
        queue, functions=[(FUNCTION, make_job(settings, info.path))],
        concurrency=settings.workers,
        timers=timers,
        # a cancelled job stops its ffmpeg (terminate, then kill after 3 s) before going back
        cancellation_hard_deadline_s=10.0,
        metadata={"host": socket.gethostname(), "pid": os.getpid(), "jobs": settings.workers})
    log.info("worker on %s: %d job(s) at a time from %s, data dir %s, %s",
             socket.gethostname(), settings.workers, without_password(settings.queue),
             layout.data_dir.resolve(), info.version)
    await queue.connect()
    try:
        await runner.start()
    finally:
        with contextlib.suppress(*UNREACHABLE):
            await queue.disconnect()


def main(argv: Sequence[str] | None = None) -> None:
    settings = Settings.for_worker(argv)
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except ffmpeg.FFmpegError as exc:
        sys.exit(f"video-async worker: {exc}")
