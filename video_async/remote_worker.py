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
from .job_files import FromServer, JobFiles, SharedFolder, TaskGone
from .jobs import (FUNCTION, QUEUE_NAME, UNREACHABLE, CannotRunHere, QuietWhileRedisIsAway,
                   RedisWatch, TranscodeJob, outcome_to_json, without_password)
from .store import Order, Output

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25  # seconds: at most this often a job's progress goes to Redis


class Reporter:
    """Sends a job's progress to Redis, throttled, and a heartbeat when there is none;
    each one also keeps the task's run lock (see make_job) alive."""

    def __init__(self, job: Any, heartbeat: int, lock: RunLock, redis: RedisWatch) -> None:
        self.job, self.heartbeat, self.lock, self.redis = job, heartbeat, lock, redis
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
                self.redis.lost(exc)
            else:
                self.redis.answered()
            await asyncio.sleep(PROGRESS_INTERVAL)


class RunLock:
    """At most one run of a task at a time, across all workers: a Redis key that expires
    a heartbeat after its holder last renewed it (every quarter heartbeat), so a dead
    worker's lock is gone when the web process finds its job lost and queues it again.

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
        while not await self.redis.set(self.key, self.token, nx=True, ex=self.heartbeat):
            await asyncio.sleep(self.heartbeat / 4)  # another run of this task is on
        self.held = True

    async def keep(self) -> None:
        # only our own: renewing another run's lock would keep a dead worker's for ever
        if self.held and await self.redis.get(self.key) == self.token.encode():
            await self.redis.expire(self.key, self.heartbeat)

    async def release(self) -> None:
        with contextlib.suppress(*UNREACHABLE):
            if await self.redis.get(self.key) == self.token.encode():
                await self.redis.delete(self.key)


async def existing_output(settings: Settings, task_id: str, order: Order) -> worker.Transcoded | None:
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
    return worker.Transcoded(Output(size=stat.st_size, width=width, height=height,
                              duration=result.duration),
                       thumbnail if await aiofiles.os.path.exists(thumbnail) else None,
                       ladder=order.ladder)


def make_job(settings: Settings, ffmpeg_path: str, redis: RedisWatch,
             files: JobFiles) -> Callable[..., Any]:
    """The job function SAQ runs, for this worker's settings; its files come and go
    through `files` (job_files.py: the shared folder, or the server over HTTP)."""
    layout = settings.layout

    async def transcode(ctx: Any, **arguments: Any) -> dict[str, Any]:
        job = TranscodeJob.from_json(arguments)
        task_id = job.task_id
        try:
            # only a file the server itself names for this task, never a path from outside
            job.source_in(layout)
        except ValueError:
            log.error("job for task %s names an unexpected source %r", task_id, job.source)
            return outcome_to_json(worker.Failed("The job named a file outside the data folder."))
        saq_job = ctx["job"]
        lock = RunLock(saq_job.get_queue().redis, task_id, settings.queue_heartbeat)
        reporter = Reporter(saq_job, settings.queue_heartbeat, lock, redis)
        reporting = asyncio.create_task(reporter.run())  # heartbeats while waiting, too
        try:
            await lock.take()
            outcome: worker.Transcoded | worker.Failed | None = await existing_output(
                settings, task_id, job.order)
            if outcome is None:
                source_path = await files.source(job)
                outcome = await worker.transcode_task(
                    task_id, source_path, job.media, job.order, ffmpeg_path, settings, reporter)
            if isinstance(outcome, worker.Transcoded):
                await files.deliver(job, outcome)  # on the server before the job returns
        except TaskGone:  # deleted meanwhile: its abort is on its way
            outcome = worker.Failed("The task is no longer on the server.")
        finally:
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting
            await lock.release()
            await files.clean(job)
        return outcome_to_json(outcome)

    return transcode


async def serve(settings: Settings) -> None:
    """Run jobs until SIGINT or SIGTERM; running jobs are then stopped and queued again."""
    from saq import Worker
    from saq.queue.redis import RedisQueue
    from saq.types import PartialTimersDict

    info = await ffmpeg.check(settings.ffmpeg)
    layout = settings.layout
    files: JobFiles
    if settings.server_url:
        files = FromServer(settings.server_url, settings.worker_token, layout)
        refusal = await files.check()
        if refusal:
            await files.close()
            raise SystemExit(f"video-async worker: {refusal}")
        for folder in (layout.uploads_dir, layout.outputs_dir):  # this worker's own
            await asyncio.to_thread(folder.mkdir, mode=0o700, parents=True, exist_ok=True)
    else:
        files = SharedFolder(layout)
        for folder in (layout.uploads_dir, layout.outputs_dir):
            if not await asyncio.to_thread(folder.is_dir):
                raise SystemExit(f"video-async worker: {folder} is not there: give the server's "
                                 "data dir, shared with this machine, as --data-dir (or the "
                                 "server's URL as --server)")
    processes.die_with_parent()
    processes.watch_children()
    queue = RedisQueue.from_url(settings.queue, name=QUEUE_NAME)
    redis = RedisWatch(settings.queue, log)
    logging.getLogger("saq").addFilter(QuietWhileRedisIsAway(redis))
    heartbeat = settings.queue_heartbeat
    # The web process queues a dead worker's job again a heartbeat after its last sign of
    # life (queue.JobQueue._requeue_lost); a worker's sweep is the fallback when no web
    # process is there. The worker's own entry is written every quarter heartbeat and
    # expires one second after that, so /healthz drops a dead worker sooner still.
    timers: PartialTimersDict = {"schedule": 1, "worker_info": max(1, heartbeat // 4),
                                 "sweep": heartbeat, "abort": 1}
    unfit: list[CannotRunHere] = []

    async def stop_if_unfit(ctx: Any) -> None:
        """After a job SAQ put back because this worker cannot run it: stop taking more."""
        if isinstance(ctx.get("exception"), CannotRunHere):
            unfit.append(ctx["exception"])
            runner.event.set()  # what SIGTERM does: a graceful stop

    runner = Worker(
        queue, functions=[(FUNCTION, make_job(settings, info.path, redis, files))],
        after_process=stop_if_unfit,
        concurrency=settings.workers,
        timers=timers,
        # a cancelled job stops its ffmpeg (terminate, then kill after 3 s) before going back
        cancellation_hard_deadline_s=10.0,
        # started_ms + the uptime SAQ writes with each entry: the worker's last sign of life
        metadata={"host": socket.gethostname(), "pid": os.getpid(), "jobs": settings.workers,
                  "started_ms": queue.started})
    log.info("worker on %s: %d job(s) at a time from %s, %s, %s",
             socket.gethostname(), settings.workers, without_password(settings.queue),
             f"files from {settings.server_url} via {layout.data_dir.resolve()}"
             if settings.server_url else f"shared data dir {layout.data_dir.resolve()}",
             info.version)
    try:
        async with asyncio.timeout(10):
            await queue.connect()
            await queue.redis.ping()  # type: ignore[misc]  # sync or async
    except (*UNREACHABLE, TimeoutError) as exc:
        if isinstance(files, FromServer):
            await files.close()
        raise SystemExit(f"video-async worker: Redis at {without_password(settings.queue)} "
                         f"does not answer ({type(exc).__name__}: {exc}): check --queue") from None
    redis.answered()
    watching = asyncio.create_task(_watch(queue, redis), name="redis-watch")
    try:
        await runner.start()
        if unfit:
            raise SystemExit(f"video-async worker: stopped, its job back in the queue: {unfit[0]}")
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        if isinstance(files, FromServer):
            await files.close()
        with contextlib.suppress(*UNREACHABLE):
            await queue.disconnect()


async def _watch(queue: Any, redis: RedisWatch) -> None:
    """Asks Redis every second whether it answers, so that the log says when it is back
    (SAQ's own loops just try again, silently once QuietWhileRedisIsAway drops their errors)."""
    while True:
        try:
            await queue.redis.ping()
        except UNREACHABLE as exc:
            redis.lost(exc)
        else:
            redis.answered()
        await asyncio.sleep(1.0)


def main(argv: Sequence[str] | None = None) -> None:
    settings = Settings.for_worker(argv)
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except ffmpeg.FFmpegError as exc:
        sys.exit(f"video-async worker: {exc}")
