"""Start-up after a crash: one server per data dir, no stray ffmpeg, no partial file.

A server killed with SIGKILL (or by the OOM killer, or a power cut) leaves
behind what it was doing: an upload half written to `uploads/<id>.partial`,
an output half written to `outputs/<id>.partial.mp4`, and, because ffmpeg runs
in its own session, an ffmpeg still busy writing that output. Before the
worker starts, `recover` stops such ffmpeg processes (Linux: found through
/proc by the data-dir paths on their command line), removes the partial files,
loads the snapshot, and lists finished files that no task refers to. Those
are reported in the log and /healthz, never deleted: they may be someone's
video.

The data dir is locked (flock on tasks.json.lock) so a second server can
never share it, and so recovery never mistakes a live server's ffmpeg for a
stray one. The lock dies with the process, SIGKILL included.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .config import Settings
from .snapshot import load_tasks
from .store import Task, TaskStore

log = logging.getLogger(__name__)

PARTIAL = re.compile(r"^[0-9a-f]{32}\.partial(\.mp4)?$")
GENERATED = re.compile(r"^[0-9a-f]{32}\.")  # every file we write is named <task id>.<something>
STRAY_EXIT_WAIT = 5.0  # seconds to wait for a killed ffmpeg to be gone


class DataDirInUse(Exception):
    """Another server is running on the same data dir."""


@dataclass
class Recovery:
    """What start-up found; /healthz shows `unreferenced`."""
    stray_ffmpeg: list[int] = field(default_factory=list)
    removed_partials: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)  # relative to the data dir
    lock: IO[bytes] | None = field(default=None, repr=False)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()  # closing the file releases the flock
            self.lock = None


async def recover(store: TaskStore, settings: Settings) -> Recovery:
    """Everything between a crash and serving again; runs before the worker starts."""
    recovery = Recovery(lock=await asyncio.to_thread(_lock, settings))
    try:
        recovery.stray_ffmpeg = await asyncio.to_thread(find_stray_ffmpeg, settings.data_dir)
        await _kill_and_wait(recovery.stray_ffmpeg)
        recovery.removed_partials = await asyncio.to_thread(_remove_partials, settings)
        tasks = await asyncio.to_thread(load_tasks, settings) if settings.persist else []
        recovery.unreferenced = await asyncio.to_thread(_unreferenced, settings, tasks)
    except BaseException:
        recovery.release()
        raise
    store.restore(tasks)
    for name in recovery.removed_partials:
        log.info("removed %s, left by an interrupted run", name)
    for name in recovery.unreferenced:
        log.warning("%s belongs to no task; kept, see /healthz", name)
    if tasks:
        log.info("restored %d tasks from %s", len(tasks), settings.snapshot_path.name)
    return recovery


def _lock(settings: Settings) -> IO[bytes]:
    # not a with-block: the file stays open, and the lock held, while the server runs
    handle = open(settings.data_dir / "tasks.json.lock", "wb")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirInUse(f"another video-async server is using {settings.data_dir}") from None
    return handle


def find_stray_ffmpeg(data_dir: Path) -> list[int]:
    """ffmpeg processes working on files in our uploads/ or outputs/ (blocking; Linux only)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    ours = [(data_dir / "uploads").resolve(), (data_dir / "outputs").resolve()]
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
        if any(_inside(cwd / arg, ours) for arg in args[1:]):  # an absolute arg replaces cwd
            found.append(int(entry.name))
    return found


def _inside(path: Path, folders: list[Path]) -> bool:
    try:
        return GENERATED.match(path.name) is not None and path.parent.resolve() in folders
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


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


def _remove_partials(settings: Settings) -> list[str]:
    removed = []
    for folder in (settings.uploads_dir, settings.outputs_dir):
        for path in sorted(folder.iterdir()):
            if PARTIAL.match(path.name):
                path.unlink(missing_ok=True)
                removed.append(path.relative_to(settings.data_dir).as_posix())
    return removed


def _unreferenced(settings: Settings, tasks: list[Task]) -> list[str]:
    referenced = {path.resolve() for task in tasks for path in task.files()}
    unreferenced = []
    for folder in (settings.uploads_dir, settings.outputs_dir):
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.resolve() in referenced:
                continue
            unreferenced.append(path.relative_to(settings.data_dir).as_posix())
    return unreferenced
