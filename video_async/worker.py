"""The background worker: QUEUED -> PROCESSING -> COMPLETED | FAILED (worker.js).

`run_workers` starts N identical loops; each takes the oldest QUEUED task the
moment the store says one was queued (no timer polling), runs it as its own
asyncio task so DELETE can cancel just that job, and goes on to the next
whatever happened to the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiofiles.os

from . import ffmpeg, mp4, probing
from .config import Settings
from .layout import DataLayout
from .store import INTERNAL_ERROR, Order, Output, State, Task, TaskStore

log = logging.getLogger(__name__)


async def run_workers(store: TaskStore, ffmpeg_path: str, settings: Settings) -> None:
    """Run settings.workers job loops until cancelled (at app shutdown)."""
    async with asyncio.TaskGroup() as group:
        for number in range(settings.workers):
            group.create_task(_job_loop(store, ffmpeg_path, settings), name=f"worker-{number}")


async def _job_loop(store: TaskStore, ffmpeg_path: str, settings: Settings) -> None:
    while True:
        task = store.claim_next()
        if task is None:
            await store.wait_for_work()
            continue
        # A task of its own, referenced from the Task, so DELETE can cancel this
        # one job without stopping the loop.
        job = asyncio.create_task(run_job(task, store, ffmpeg_path, settings), name=f"job-{task.id}")
        task.job = job
        try:
            await job
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the app is shutting down: the job was cancelled with us
            log.info("job %s cancelled (task deleted)", task.id)
        except Exception:  # run_job fails tasks itself; this is the last line of defence
            log.exception("job %s crashed the worker loop; going on with the next task", task.id)
            if task.state is State.PROCESSING:
                store.fail(task, INTERNAL_ERROR)
        finally:
            if task.job is job:  # a retried task may already have a newer job
                task.job = None


async def run_job(task: Task, store: TaskStore, ffmpeg_path: str, settings: Settings) -> None:
    """Run one task's job here, in this process: its outcome goes straight into the store."""
    outcome = await transcode_task(task.id, task.source_path, task.media, task, ffmpeg_path,
                                   settings,
                                   lambda progress, eta: store.set_progress(task, progress, eta))
    record(store, task, outcome, settings.layout)


def record(store: TaskStore, task: Task, outcome: Transcoded | Failed, layout: DataLayout) -> None:
    """A job's outcome into the store, wherever the job ran (here, or on a queue worker)."""
    if isinstance(outcome, Failed):
        store.fail(task, outcome.reason, outcome.detail)
    else:
        store.complete(task, layout.output(task.id, task.output_extension), outcome.output,
                       outcome.thumbnail, layout.ladder(task.id) if outcome.ladder else None)


@dataclass(frozen=True)
class Transcoded:
    output: Output
    thumbnail: Path | None  # None: the video is fine, but no frame could be taken
    ladder: bool = False  # an HLS ladder was made too (layout.ladder names its folder)


@dataclass(frozen=True)
class Failed:
    reason: str  # the sentence a FAILED task shows
    detail: str = ""  # ffmpeg's own words


async def transcode_task(task_id: str, source: Path, media: ffmpeg.Media | None, order: Order,
                         ffmpeg_path: str, settings: Settings,
                         on_progress: Callable[[int, float | None], None]) -> Transcoded | Failed:
    """Transcode with progress, thumbnail, then Transcoded; any failure is Failed, never raised.

    The one job, whoever runs it: the in-process worker (run_job) or a queue worker on
    another machine. It makes what the order asks for (a Task is one), touches only files
    named after the task in settings' data dir, and reports progress (percent, seconds
    left) through on_progress.

    The upload was probed before the task existed, so the job starts ffmpeg's
    transcode at once; the output needs no probe either: its size is the one
    planned, and its duration is read from its own index (the `mvhd` box at its
    head), so it is what any player reports, not how far the last progress line
    got. Every ffmpeg run saved is time the user doesn't wait.
    """
    layout = settings.layout
    final = layout.output(task_id, order.output_extension)
    # written under a temporary name and renamed when whole: a download never sees half a file
    partial = layout.partial_output(task_id, order.output_extension)
    thumb = layout.thumbnail(task_id)
    # all sizes: the ladder's folder, likewise renamed when whole
    ladder, partial_ladder = layout.ladder(task_id), layout.partial_ladder(task_id)
    loop = asyncio.get_running_loop()
    started = loop.time()
    encoded = 0.0  # seconds of output written, as ffmpeg last reported

    def progress(seconds_done: float, duration: float) -> None:
        nonlocal encoded
        encoded = max(encoded, seconds_done)
        fraction = min(1.0, seconds_done / duration) if duration > 0 else 0.0
        elapsed = loop.time() - started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.01 and elapsed > 0.5 else None
        on_progress(int(fraction * 100), eta)

    limits = ffmpeg.Limits.of(settings)
    try:
        async with asyncio.timeout(settings.job_timeout):
            # a tasks.json from before probing was kept has no media: probe now
            media = media or await probing.probe(source, ffmpeg.container_of(source), limits)
            duration = media.duration or 0.0
            if isinstance(order.resolution, int):
                warning = await ffmpeg.transcode(ffmpeg_path, source, partial, media,
                                                 order.resolution,
                                                 lambda seconds: progress(seconds, duration),
                                                 limits, settings.stall_timeout)
                width, height = ffmpeg.output_size(media, order.resolution)
            else:
                width, height, warning = await _make_ladder(
                    ffmpeg_path, source, media, partial_ladder, partial, settings,
                    lambda seconds: progress(seconds, duration))
                await remove(ladder)  # an earlier run's, whose result was lost (a queue job)
                await aiofiles.os.rename(partial_ladder, ladder)
            await aiofiles.os.replace(partial, final)
            stat = await aiofiles.os.stat(final)
            length = await mp4.output_duration(final) or encoded or None
            # from the output: smaller than the upload, so cheaper to decode
            thumbnail = await _make_thumbnail(ffmpeg_path, final, thumb, length, limits)
    except BaseException as exc:
        # any way out but success leaves nothing behind
        await remove(partial, final, thumb, partial_ladder, ladder)
        if not isinstance(exc, Exception):
            raise  # cancelled (DELETE, shutdown): the task did not fail
        return Failed(*_failure(task_id, exc, settings))
    # what was made, which for a small source is less than what was asked
    log.info("job %s completed in %.1f s: %dx%d (%dp)", task_id, loop.time() - started,
             width, height, min(width, height))
    if warning:
        log.info("job %s: ffmpeg finished, but said: %s", task_id, warning)
    return Transcoded(Output(size=stat.st_size, width=width, height=height, duration=length,
                             source_warning=warning or None), thumbnail, ladder=order.ladder)


async def _make_ladder(ffmpeg_path: str, source: Path, media: ffmpeg.Media, folder: Path,
                       mp4_target: Path, settings: Settings,
                       on_progress: Callable[[float], None]) -> tuple[int, int, str]:
    """All sizes: the ladder into folder (made afresh), and its top rung as an MP4 into
    mp4_target; (the top rung's width, height, what ffmpeg complained of)."""
    limits = ffmpeg.Limits.of(settings)
    await remove(folder)  # an interrupted run's rungs are not this run's
    await aiofiles.os.mkdir(folder)
    rungs, warning = await ffmpeg.transcode_ladder(ffmpeg_path, source, folder, media,
                                                   on_progress, limits, settings.stall_timeout)
    joined = folder / "joined.mp4"  # not a name the ladder's route serves
    await ffmpeg.join_top_rung(ffmpeg_path, folder, joined, mp4_target, limits,
                               settings.stall_timeout)
    await aiofiles.os.remove(joined)
    log.info("ladder of %s: %s", source.name, ", ".join(f"{r.width}x{r.height}" for r in rungs))
    return rungs[0].width, rungs[0].height, warning


def _failure(task_id: str, exc: Exception, settings: Settings) -> tuple[str, str]:
    """(the sentence a FAILED task shows, ffmpeg's own words); logged as loudly as it deserves."""
    if isinstance(exc, TimeoutError):
        log.warning("job %s timed out", task_id)
        return (f"Stopped: the transcode took longer than the job time limit of "
                f"{settings.job_timeout:g} s."), ""
    if isinstance(exc, ffmpeg.FFmpegError):
        log.info("job %s failed: %s (%s)", task_id, exc, exc.detail)
        return str(exc), exc.detail
    # a bug of ours: keep the worker alive, say what happened
    log.error("job %s crashed", task_id, exc_info=exc)
    return INTERNAL_ERROR, type(exc).__name__


async def _make_thumbnail(ffmpeg_path: str, video: Path, target: Path, duration: float | None,
                          limits: ffmpeg.Limits) -> Path | None:
    """A thumbnail is a nicety: a video that encoded fine is COMPLETED even without one."""
    at = min(1.0, (duration or 0.0) / 3)
    try:
        await ffmpeg.thumbnail(ffmpeg_path, video, target, at, limits)
    except ffmpeg.FFmpegError as exc:
        log.warning("no thumbnail for %s: %s", video.name, exc)
        return None
    return target


async def remove(*paths: Path) -> None:
    """Remove each file, or folder with what it holds (a ladder), that exists."""
    for path in paths:
        if await aiofiles.os.path.isdir(path):
            # a ladder's many files: removed off the loop, all in one go
            await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)
            continue
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(path)
