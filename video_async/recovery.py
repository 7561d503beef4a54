"""Start-up after a crash: one server per data dir, no stray ffmpeg, no partial file.

A server killed with SIGKILL (or by the OOM killer, or a power cut) leaves
behind what it was doing: an upload half written to `uploads/<id>.partial`,
an output half written under its partial name (layout.py), and, because ffmpeg runs
in its own session, an ffmpeg still busy writing that output. Before the
worker starts, `recover` stops such ffmpeg processes (Linux: found through
/proc by the data-dir paths on their command line), removes the partial files,
loads the snapshot, takes stock of the unfinished resumable uploads (kept, to
go on from where they stopped, unless they expired), and lists finished files
that no task refers to. Those are reported in the log and /healthz, never
deleted: they may be someone's video.

The data dir is locked (flock on tasks.json.lock) so a second server can
never share it, and so recovery never mistakes a live server's ffmpeg for a
stray one. The lock dies with the process, SIGKILL included.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import AsyncIterator
from typing import IO

from aiohttp import web

from .config import Settings
from .keys import HEALTH, SETTINGS, STORE
from .layout import DataLayout
from .snapshot import load_tasks
from .store import Task, TaskStore
from .tus.uploads import RESUMABLE, ResumableUploads, scan

log = logging.getLogger(__name__)

STRAY_EXIT_WAIT = 5.0  # seconds to wait for a killed ffmpeg to be gone


class DataDirInUse(Exception):
    """Another server is running on the same data dir."""


class DataDirLock:
    """An flock on tasks.json.lock, held while the server runs; it dies with the process."""

    def __init__(self, layout: DataLayout) -> None:
        self.path = layout.lock_path
        self._handle: IO[bytes] | None = None

    def acquire(self) -> None:
        """Blocking (a file open): run it in a thread. DataDirInUse if another server has it."""
        # not a with-block: the file stays open, and the lock held, while the server runs
        handle = open(self.path, "wb")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            folder = self.path.parent.resolve()
            raise DataDirInUse(f"another video-async server is using {folder}; stop it, or "
                               "give this one a folder of its own with --data-dir") from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the flock
            self._handle = None


@dataclass
class RecoveryReport:
    """What start-up found; /healthz shows `unreferenced`."""
    stray_ffmpeg: list[int] = field(default_factory=list)
    removed_partials: list[str] = field(default_factory=list)
    removed_uploads: list[str] = field(default_factory=list)  # expired resumable uploads' files
    unreferenced: list[str] = field(default_factory=list)  # relative to the data dir


RECOVERY = web.AppKey("recovery", RecoveryReport)


def setup(app: web.Application) -> None:
    """Plug recovery in: at start-up, before the worker, the data dir is locked and
    whatever a crash left is put right (it needs the resumable uploads' wing)."""
    app.cleanup_ctx.append(_locked_and_recovered)
    # finished files that no task refers to, found at start-up: kept, for a person to look at
    app[HEALTH]["unreferenced_files"] = lambda: app[RECOVERY].unreferenced


async def _locked_and_recovered(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    lock = DataDirLock(settings.layout)
    await asyncio.to_thread(lock.acquire)
    try:
        # Before the worker starts: stray ffmpeg stopped, partial files gone, tasks loaded.
        app[RECOVERY] = await recover(app[STORE], app[RESUMABLE], settings)
        yield
    finally:
        lock.release()  # after the last snapshot is written: the core's context ends first


async def recover(store: TaskStore, resumable: ResumableUploads, settings: Settings) -> RecoveryReport:
    """Everything between a crash and serving again; runs, under the data-dir lock,
    before the worker starts."""
    layout = settings.layout
    report = RecoveryReport()
    # With a queue, the ffmpeg processes and partial outputs in the data dir are the
    # workers' (on this machine or another): their jobs go on, and are followed again.
    if not settings.queue:
        report.stray_ffmpeg = await asyncio.to_thread(find_stray_ffmpeg, layout)
        await _kill_and_wait(report.stray_ffmpeg)
    report.removed_partials = await asyncio.to_thread(_remove_partials, layout,
                                                      not settings.queue)
    loaded = await asyncio.to_thread(load_tasks, layout) if settings.persist else []
    tasks = [entry.task for entry in loaded]
    found = await asyncio.to_thread(scan, layout, settings.upload_expiry, {task.id for task in tasks})
    report.removed_uploads = found.removed
    resumable.restore(found.live)
    report.unreferenced = await asyncio.to_thread(_unreferenced, layout, tasks, resumable)
    store.restore(tasks)
    for entry in loaded:  # what the disk called for, made through the store like any change
        if entry.interrupted:
            log.info("task %s was interrupted mid-transcode; queued again", entry.task.id)
            store.requeue(entry.task)
        if entry.missing:
            log.warning("task %s: %s after a restart; marked FAILED", entry.task.id, entry.missing)
            store.fail(entry.task, f"{entry.missing} (found at restart)")
    for name in report.removed_partials:
        log.info("removed %s, left by an interrupted run", name)
    for name in report.removed_uploads:
        log.info("removed %s: its resumable upload had expired or was finished", name)
    if found.live:
        log.info("%d unfinished resumable uploads can go on", len(found.live))
    for name in report.unreferenced:
        log.warning("%s belongs to no task; kept, see /healthz", name)
    if tasks:
        log.info("restored %d tasks from %s", len(tasks), layout.snapshot_path.name)
    return report


def find_stray_ffmpeg(layout: DataLayout) -> list[int]:
    """ffmpeg processes working on files in our uploads/ or outputs/ (blocking; Linux only)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = [arg.decode(errors="replace") for arg in
                    (entry / "cmdline").read_bytes().split(b"\0") if arg]
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue  # gone meanwhile, or not ours to look at
        if not args or "ffmpeg" not in Path(args[0]).name:
            continue
        if any(layout.is_generated(cwd / arg) for arg in args[1:]):  # an absolute arg replaces cwd
            found.append(int(entry.name))
    return found


async def _kill_and_wait(pids: list[int]) -> None:
    for pid in pids:
        log.warning("stopping ffmpeg pid %d left running by a previous run", pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    try:
        async with asyncio.timeout(STRAY_EXIT_WAIT):
            while any(map(_alive, pids)):
                await asyncio.sleep(0.05)
    except TimeoutError:
        log.error("ffmpeg processes %s did not exit", [pid for pid in pids if _alive(pid)])


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for its new parent to reap it.

    Read on the loop: a few bytes from /proc, only at start-up, before serving.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rsplit(") ", 1)[-1].startswith(("Z", "X"))


def _remove_partials(layout: DataLayout, outputs: bool = True) -> list[str]:
    removed = []
    for folder in (layout.uploads_dir, layout.outputs_dir) if outputs else (layout.uploads_dir,):
        for path in sorted(folder.iterdir()):
            if layout.is_partial(path):
                if path.is_dir():  # a ladder's folder
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(layout.relative(path))
    return removed


def _unreferenced(layout: DataLayout, tasks: list[Task], resumable: ResumableUploads) -> list[str]:
    referenced = {path.resolve() for task in tasks for path in task.files()}
    unreferenced = []
    for folder in (layout.uploads_dir, layout.outputs_dir):
        for path in sorted(folder.iterdir()):
            # a partial file here is a queue worker's job still running
            if path.name.startswith(".") or layout.is_partial(path) or path.resolve() in referenced:
                continue
            upload_id = layout.resumable_id(path)
            if upload_id is not None and resumable.get(upload_id) is not None:
                continue  # an unfinished upload's: it will go on
            unreferenced.append(layout.relative(path))
    return unreferenced
