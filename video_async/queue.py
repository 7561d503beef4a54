"""Queue mode, the web side: each QUEUED task becomes a SAQ job in Redis, run by a
`video-async worker` on any machine that shares the data dir (see remote_worker.py;
what a job carries there and back is jobs.py).

The web process still owns the task store and the whole API; this module is the only
part of it that talks to Redis, and it changes tasks only through the store, so the
API, the page and the snapshot cannot tell where a transcode ran:

- submit: one job per run of a task, keyed by the task id (and the retry count, so a
  Retry is a new job). Enqueuing a key that is already waiting or running does
  nothing, so enqueuing twice is harmless, and a web process restarted after a crash
  finds its running jobs again instead of starting them a second time.
- follow: every job change is published on Redis; each one is read back and applied
  to its task (PROCESSING, progress, COMPLETED, FAILED). A check every second catches
  anything a lost connection missed.
- re-enqueue: a job that Redis no longer has (Redis restarted empty, or was down when
  the task came) is enqueued again once it has been missing for half a heartbeat.
- abort: a task's `job` is a small asyncio task that waits for its SAQ job; DELETE
  cancels it, as it cancels an in-process job, and the cancellation aborts the SAQ
  job and waits (a few seconds at most) for the worker to confirm that its ffmpeg is
  stopped and its partial file removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import aiofiles.os
from saq.job import TERMINAL_STATUSES, Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now as now_ms

from aiohttp import web

from .config import Settings
from .keys import HEALTH, JOB_RUNNER, SETTINGS, STORE
from .jobs import (FUNCTION, QUEUE_NAME, UNREACHABLE, CannotRunHere, RedisWatch,
                   TranscodeJob, outcome_from_json)
from .routes import workers
from .store import State, Task, TaskStore
from .worker import record, remove

log = logging.getLogger(__name__)

RETRIES = 3  # runs of one job: a worker that dies hands it on, twice at most
RESULT_TTL = 7 * 24 * 3600  # seconds Redis keeps a finished job for a web process that was down
CHECK_INTERVAL = 1.0  # seconds between looks at every followed job and the workers
RECONNECT_DELAY = 1.0  # seconds between attempts to reach Redis again
ABORT_WAIT = 5.0  # seconds DELETE waits for a worker to confirm that its job stopped
LOST = "worker lost"  # a job's error when its worker went silent and it was queued again
STOPPED = "cancelled"  # SAQ's error for a job whose worker was stopped (SIGTERM) mid-run


def job_key(task: Task) -> str:
    """The task id for its first run; a Retry gets a key, and so a job, of its own."""
    return task.id if task.retries == 0 else f"{task.id}.retry{task.retries}"


@dataclass
class QueueStatus:
    """What the web process last saw of the job queue, refreshed every second: /healthz
    and the page's heartbeat show it."""
    redis: RedisWatch
    workers: list[dict[str, Any]] = field(default_factory=list)  # host, pid, jobs of each
    jobs_queued: int = 0
    jobs_running: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"url": self.redis.url, "reachable": self.redis.reachable,
                "workers": self.workers,
                "jobs_queued": self.jobs_queued, "jobs_running": self.jobs_running}


def worker_json(worker_id: str, info: Any) -> dict[str, Any]:
    """One worker as /healthz shows it: who it is, and its last sign of life (by its own
    clock). SAQ keeps a worker listed until its entry expires, a few seconds after it last
    wrote it (see remote_worker.serve), so a dead one drops off by itself."""
    metadata = dict(info.get("metadata") or {})
    started = metadata.pop("started_ms", None)
    uptime = (info.get("stats") or {}).get("uptime")
    shown: dict[str, Any] = {"id": worker_id, **metadata}
    if isinstance(started, int) and isinstance(uptime, int):
        seen = datetime.fromtimestamp((started + uptime) / 1000, timezone.utc)
        shown["last_seen"] = seen.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return shown


def setup(app: web.Application) -> None:
    """Plug queue mode in: the QUEUED tasks go to Redis, for workers elsewhere, instead of
    to the in-process workers; /healthz shows what the queue looks like."""
    jobs = JobQueue(app[STORE], app[SETTINGS])
    app[HEALTH]["queue"] = jobs.status.to_json
    app[JOB_RUNNER] = jobs.run
    workers.setup(app)  # with --worker-token: workers that share no folder fetch and send here


@dataclass(eq=False)
class Followed:
    """A task whose job this process submitted and follows."""
    task: Task
    key: str
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # the job reached its end
    deleted: bool = False  # the task is gone: the job's end is awaited, not applied
    missing_since: float | None = None  # loop time Redis was first seen without the job


class JobQueue:
    def __init__(self, store: TaskStore, settings: Settings) -> None:
        self.store, self.settings, self.layout = store, settings, settings.layout
        self.queue = RedisQueue.from_url(settings.queue, name=QUEUE_NAME)
        self.status = QueueStatus(RedisWatch(settings.queue, log))
        self._followed: dict[str, Followed] = {}  # by task id
        self._closing = False

    async def run(self) -> None:
        """Submit, follow and check until cancelled at shutdown; the jobs go on without us."""
        await self.queue.connect()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._submit_loop(), name="queue-submit")
                group.create_task(self._listen_loop(), name="queue-listen")
                group.create_task(self._check_loop(), name="queue-check")
        finally:
            self._closing = True  # the waiting tasks' cancellation must not abort their jobs
            waiting = [f.task.job for f in self._followed.values() if f.task.job is not None]
            for job in waiting:
                job.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            with contextlib.suppress(*UNREACHABLE):
                await self.queue.disconnect()

    # -- submitting ------------------------------------------------------------------

    async def _submit_loop(self) -> None:
        while True:
            task = self._next_unsubmitted()
            if task is None:
                await self.store.wait_for_work()  # no await between the look and the wait
                continue
            followed = Followed(task, job_key(task))
            self._followed[task.id] = followed
            # what DELETE cancels, as it cancels an in-process job
            task.job = asyncio.create_task(self._wait_for_job(followed), name=f"job-{task.id}")
            try:
                await self._submit(followed)
            except Exception:  # a bug of ours: the check loop submits it again
                log.exception("could not queue task %s", task.id)

    def _next_unsubmitted(self) -> Task | None:
        """The oldest QUEUED task that has no job yet (or whose job is for an earlier run)."""
        for task in self.store.all():
            followed = self._followed.get(task.id)
            if task.state is State.QUEUED and (followed is None or followed.key != job_key(task)):
                return task
        return None

    async def _submit(self, followed: Followed) -> None:
        """Enqueue the task's job, unless Redis already has it: then follow that one."""
        task = followed.task
        try:
            existing = await self.queue.job(followed.key)
            if existing is not None and existing.status is not Status.ABORTED:
                self._apply(followed, existing)  # waiting, running, or done while we were away
                return
            job = await self.queue.enqueue(Job(
                function=FUNCTION, key=followed.key,
                kwargs=TranscodeJob.of(task, self.layout).to_json(),
                timeout=0,  # the job's own time limit and stall watchdog stop it
                heartbeat=self.settings.queue_heartbeat, retries=RETRIES, ttl=RESULT_TTL))
            if followed.deleted and job is not None:  # deleted while it was being enqueued
                await self.queue.abort(job, "deleted")
            log.info("task %s queued as job %s", task.id, followed.key)
        except UNREACHABLE as exc:
            # the check loop enqueues it once Redis answers again; the task waits QUEUED
            self.status.redis.lost(exc)
            log.info("task %s waits to be queued until Redis answers", task.id)

    # -- following -------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        """Every change of a job, the moment Redis publishes it."""
        pattern = self.queue.job_id("*")
        while True:
            pubsub = self.queue.redis.pubsub()
            try:
                await pubsub.psubscribe(pattern)
                await self._check()  # whatever changed while nobody listened
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=None)
                    if message is None or message["type"] != "pmessage":
                        continue
                    key = self.queue.job_key_from_id(message["channel"].decode())
                    followed = self._by_key(key)
                    if followed is not None:
                        job = await self.queue.job(key)
                        if job is not None:
                            self._apply(followed, job)
            except UNREACHABLE as exc:
                self.status.redis.lost(exc)  # said once; tried again every second
                await asyncio.sleep(RECONNECT_DELAY)
            except Exception:  # a bug of ours: logged, and listening goes on
                log.exception("following the queue's jobs failed; starting again")
                await asyncio.sleep(RECONNECT_DELAY)
            finally:
                with contextlib.suppress(*UNREACHABLE):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis

    def _by_key(self, key: str) -> Followed | None:
        task_id = key.partition(".")[0]
        followed = self._followed.get(task_id)
        return followed if followed is not None and followed.key == key else None

    def _apply(self, followed: Followed, job: Job) -> None:
        """Make the task say what its job says (on the loop, no await: never half-applied)."""
        if job.status in TERMINAL_STATUSES:
            followed.finished.set()
            if self._followed.get(followed.task.id) is followed and not followed.deleted:
                del self._followed[followed.task.id]
        task, store = followed.task, self.store
        if followed.deleted or store.get(task.id) is not task or task.state not in (
                State.QUEUED, State.PROCESSING):
            return
        if job.status in (Status.NEW, Status.QUEUED):
            if task.state is State.PROCESSING:  # its run ended unfinished: it waits to run again
                if job.error == STOPPED:  # SAQ's word for a worker shut down mid-job
                    log.info("task %s: its worker was stopped mid-job; queued again", task.id)
                    store.requeue(task, "Worker stopped: running again")
                elif job.error and CannotRunHere.__name__ in job.error:  # its traceback
                    log.warning("task %s: a worker could not run it (%s); queued again",
                                task.id, job.error.strip().splitlines()[-1])
                    store.requeue(task, "A worker could not run it: running again")
                else:  # lost (see _requeue_lost), or swept by a worker
                    store.requeue(task, "Worker lost: running again")
        elif job.status is Status.ACTIVE:
            if task.state is State.QUEUED:
                store.start(task)
            eta = job.meta.get("eta")
            store.set_progress(task, int(job.progress * 100),
                               float(eta) if isinstance(eta, (int, float)) else None)
        elif job.status is Status.COMPLETE:
            record(store, task, outcome_from_json(job.result, task.id, self.layout), self.layout)
        elif job.status in (Status.FAILED, Status.ABORTED):
            log.error("job %s ended %s: %s", job.key, job.status.value, job.error)
            store.fail(task, "The workers could not finish this job (each one stopped "
                             "answering, or crashed); it has been logged.", job.status.value)

    # -- checking --------------------------------------------------------------------

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            try:
                await self._check()
            except UNREACHABLE as exc:
                self.status.redis.lost(exc)
            except Exception:
                log.exception("checking the queue's jobs failed")

    async def _check(self) -> None:
        """Every followed job as Redis has it now, and the workers: what messages missed."""
        info = await self.queue.info()
        self.status.redis.answered()
        self.status.workers = [worker_json(worker_id, worker)
                               for worker_id, worker in sorted(info["workers"].items())]
        self.status.jobs_queued, self.status.jobs_running = info["queued"], info["active"]
        followed = list(self._followed.values())
        jobs = await self.queue.jobs([f.key for f in followed])
        now = asyncio.get_running_loop().time()
        for one, job in zip(followed, jobs, strict=True):
            if job is not None:
                one.missing_since = None
                if job.status is Status.ACTIVE and job.stuck and not one.deleted:
                    await self._requeue_lost(job)
                self._apply(one, job)
                continue
            if one.deleted:  # nothing left to abort
                one.finished.set()
                continue
            # A running job's worker writes it back within a quarter heartbeat, so one
            # missing for half a heartbeat is gone: Redis lost it.
            if one.missing_since is None:
                one.missing_since = now
            elif now - one.missing_since >= self.settings.queue_heartbeat / 2:
                log.warning("task %s: Redis has no job for it; queued again", one.task.id)
                one.missing_since = None
                if one.task.state is State.PROCESSING:
                    self.store.requeue(one.task)
                await self._submit(one)

    async def _requeue_lost(self, job: Job) -> None:
        """A running job whose worker gave no sign of life for a heartbeat: its worker is
        gone (killed, its machine down or cut off), since a live one reports every quarter
        heartbeat. Queued again at once, by the web process itself: SAQ's own sweep runs
        only on workers, at most once a heartbeat, and not at all when none is left."""
        silent = (now_ms() - job.touched) / 1000
        log.warning("job %s: its worker gave no sign of life for %.1f s; it is lost, and the "
                    "job queued again", job.key, silent)
        if job.retryable:
            # If that worker was only cut off and comes back, the run lock keeps it and the
            # next run from writing at the same time (see remote_worker.RunLock).
            await self.queue.retry(job, LOST)
        else:
            await self.queue.finish(job, Status.ABORTED, error=LOST)
        job.status = Status.QUEUED if job.retryable else Status.ABORTED
        job.error = LOST

    # -- aborting --------------------------------------------------------------------

    async def _wait_for_job(self, followed: Followed) -> None:
        """A task's `job`: done when its SAQ job is; cancelled by DELETE (or shutdown)."""
        try:
            await followed.finished.wait()
        except asyncio.CancelledError:
            if not self._closing:
                await self._abort(followed)
            raise

    async def _abort(self, followed: Followed) -> None:
        """Stop a deleted task's job and wait for its worker to confirm; then its files go."""
        followed.deleted = True
        task_id = followed.task.id
        try:
            async with asyncio.timeout(ABORT_WAIT):
                job = await self.queue.job(followed.key)
                if job is not None and job.status not in TERMINAL_STATUSES:
                    await self.queue.abort(job, "deleted")
                    await followed.finished.wait()  # set when the worker reports it ABORTED
        except TimeoutError:
            log.warning("task %s deleted; its worker has not confirmed that the job stopped",
                        task_id)
        except UNREACHABLE as exc:
            log.warning("task %s deleted; its job could not be aborted (%s)", task_id, exc)
        finally:
            if self._followed.get(task_id) is followed:
                del self._followed[task_id]
        # whatever the job got to write before it stopped (the store never pointed at it)
        made = followed.task.output_extension
        await remove(self.layout.partial_output(task_id, made), self.layout.output(task_id, made),
                     self.layout.thumbnail(task_id), workers.partial(self.layout.thumbnail(task_id)),
                     self.layout.partial_ladder(task_id), self.layout.ladder(task_id))
