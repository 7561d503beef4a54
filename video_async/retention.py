"""Retention: finished tasks' uploads, or whole finished tasks, deleted a number of days
after they finished (--delete-sources-after, --delete-tasks-after). Off by default:
everything is kept until a person deletes it.

Only COMPLETED and FAILED tasks age; a queued or running one is never touched. A task
whose upload is gone keeps its video and thumbnail (a FAILED one can no longer be
retried: Retry says the upload is gone); a task deleted whole goes as Delete takes it,
its files first removed from disk, then the snapshot written, durably.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aiofiles.os
from aiohttp import web

from .config import Settings
from .keys import SETTINGS, SNAPSHOT, STORE
from .store import State, Task, utc_now

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
FINISHED = (State.COMPLETED, State.FAILED)


def wanted(settings: Settings) -> bool:
    return settings.delete_sources_after > 0 or settings.delete_tasks_after > 0


def setup(app: web.Application) -> None:
    """Plug retention in: a look over the finished tasks at start-up, then every
    retention_sweep seconds (or sooner, for a retention shorter than that)."""
    app.cleanup_ctx.append(_sweeping)


async def _sweeping(app: web.Application) -> AsyncIterator[None]:
    sweeper = asyncio.create_task(_sweep_forever(app), name="retention")
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper


async def _sweep_forever(app: web.Application) -> None:
    settings = app[SETTINGS]
    shortest = min(days for days in (settings.delete_sources_after, settings.delete_tasks_after)
                   if days > 0)
    pause = min(settings.retention_sweep, shortest * DAY / 4)
    sources_gone: set[str] = set()  # ids whose upload this process has already removed
    while True:
        try:
            await sweep(app, utc_now(), sources_gone)
        except OSError as exc:  # a disk fault: said, and tried again next time
            log.error("retention: %s", exc)
        await asyncio.sleep(pause)


def _older(task: Task, days: float, now: datetime) -> bool:
    return (days > 0 and task.state in FINISHED and task.finished_at is not None
            and now - task.finished_at >= timedelta(days=days))


async def sweep(app: web.Application, now: datetime, sources_gone: set[str]) -> None:
    """Delete what is older than the settings keep, as of now."""
    settings, store = app[SETTINGS], app[STORE]
    removed = 0
    for task in store.all():
        if _older(task, settings.delete_tasks_after, now):
            store.remove(task.id)
            for path in task.files():
                with contextlib.suppress(FileNotFoundError):
                    await aiofiles.os.remove(path)
            removed += 1
            log.info("task %s deleted: finished %s, kept %g days (--delete-tasks-after)",
                     task.id, task.finished_at, settings.delete_tasks_after)
        elif task.id not in sources_gone and _older(task, settings.delete_sources_after, now):
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(task.source_path)
                log.info("task %s: upload deleted, kept %g days (--delete-sources-after)",
                         task.id, settings.delete_sources_after)
            sources_gone.add(task.id)
    if removed:
        await app[SNAPSHOT].durable()  # a deleted task never comes back after a crash
