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
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aiofiles.os

from . import ffmpeg, probing, processes, worker
from .config import Settings
from .jobs import (FUNCTION, QUEUE_NAME, UNREACHABLE, TranscodeJob, outcome_to_json,
                   without_password)
from .store import Order, Output

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25  # seconds: at most this often a job's progress goes to Redis


class Reporter:
    """Sends a job's progress to Redis, throttled, and a heartbeat when there is none;
    each one also keeps the task's run lock (see make_job) alive."""

    def __init__(self, job: Any, heartbeat: int, lock: RunLock) -> None:
        self.job, self.heartbeat, self.lock = job, heartbeat, lock
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
                await self.lock.keep()
            except UNREACHABLE as exc:  # the transcode goes on; Redis may be back in a moment
                log.warning("job %s: could not report progress (%s)", self.job.key, exc)
            await asyncio.sleep(PROGRESS_INTERVAL)


class RunLock:
    """At most one run of a task at a time, across all workers: a Redis key that expires
    two heartbeats after its holder last renewed it (so a dead worker's lock goes too).

    SAQ can start a job a second time while it still runs: its sweeper takes a job that
    a worker has just dequeued, but not yet marked active, for abandoned, and queues it
    again once its abort went unanswered. Two runs would write the same partial file.
    """

    def __init__(self, redis: Any, task_id: str, heartbeat: int) -> None:
        self.redis, self.heartbeat = redis, heartbeat
        self.key = f"{QUEUE_NAME}:running:{task_id}"
        self.token = uuid.uuid4().hex
        self.held = False

    async def take(self) -> None:
        while not await self.redis.set(self.key, self.token, nx=True, ex=2 * self.heartbeat):
            await asyncio.sleep(self.heartbeat / 4)  # another run of this task is on
        self.held = True

    async def keep(self) -> None:
        # only our own: renewing another run's lock would keep a dead worker's for ever
        if self.held and await self.redis.get(self.key) == self.token.encode():
            await self.redis.expire(self.key, 2 * self.heartbeat)

    async def release(self) -> None:
        with contextlib.suppress(*UNREACHABLE):
            if await self.redis.get(self.key) == self.token.encode():
                await self.redis.delete(self.key)


async def existing_output(settings: Settings, task_id: str, order: Order) -> worker.Done | None:
    """The output an earlier run of this job left finished, if one did (its result was lost
    to a sweep, or to Redis): reported, not made again. Only a completed run leaves it."""
    layout = settings.layout
    final = layout.output(task_id, order.output_extension)
    if order.ladder and not await aiofiles.os.path.isdir(layout.ladder(task_id)):
        return None  # a ladder is renamed into place before its MP4: that run did not finish
    try:
        stat = await aiofiles.os.stat(final)
        result = await probing.probe(final, ffmpeg.container_of(final), ffmpeg.Limits.of(settings))
    except (OSError, ffmpeg.FFmpegError):
        return None
    width, height = result.display_size
    thumbnail = layout.thumbnail(task_id)
    log.info("job %s: its output is there already, from an earlier run", task_id)
    return worker.Done(Output(size=stat.st_size, width=width, height=height,
                              duration=result.duration),
                       thumbnail if await aiofiles.os.path.exists(thumbnail) else None,
                       ladder=order.ladder)


def make_job(settings: Settings, ffmpeg_path: str) -> Callable[..., Any]:
    """The job function SAQ runs, for this worker's settings."""
    layout = settings.layout

    async def transcode(ctx: Any, **arguments: Any) -> dict[str, Any]:
        job = TranscodeJob.from_json(arguments)
        task_id = job.task_id
        try:
            # only a file the server itself names for this task, never a path from outside
            source_path = job.source_in(layout)
        except ValueError:
            log.error("job for task %s names an unexpected source %r", task_id, job.source)
            return outcome_to_json(worker.Failed("The job named a file outside the data folder."))
        saq_job = ctx["job"]
        lock = RunLock(saq_job.get_queue().redis, task_id, settings.queue_heartbeat)
        reporter = Reporter(saq_job, settings.queue_heartbeat, lock)
        reporting = asyncio.create_task(reporter.run())  # heartbeats while waiting, too
        try:
            await lock.take()
            outcome: worker.Done | worker.Failed | None = await existing_output(
                settings, task_id, job.order)
            if outcome is None:
                outcome = await worker.transcode_task(
                    task_id, source_path, job.media, job.order, ffmpeg_path, settings, reporter)
        finally:
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting
            await lock.release()
        return outcome_to_json(outcome)

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
    processes.die_with_parent()
    processes.watch_children()
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
