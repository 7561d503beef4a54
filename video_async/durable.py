"""Durable writes: a file, or a file's new name, that survives a power cut, not only a
crash of the process.

Every file the server writes whole and must not lose goes through here: the task
snapshot (tasks.json), a resumable upload's sidecar, the list of ended uploads;
and every upload's rename to its final name (receive.rename, which runs `rename`
in the uploads' own threads).

`replace_file` writes the bytes under a temporary name, flushes them (fsync),
renames the temporary over the target and flushes the folder: a reader, even
after a power cut, finds the old file or the new one, never half of one. The
folder's flush is what keeps a name: a rename is only on disk once the folder
that holds it is.

All of it blocks: call it from a thread (asyncio.to_thread), never from the loop.
"""

from __future__ import annotations

import os
from pathlib import Path


def replace_file(target: Path, data: bytes, temporary: Path | None = None) -> None:
    """Blocking: `target` holds `data`, on disk, once this returns.

    Written first to `temporary` (`<target>.partial` unless given), which is removed
    if anything fails: the old target, if there was one, is then left as it was.
    """
    partial = temporary or target.with_name(target.name + ".partial")
    try:
        with partial.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        rename(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def rename(source: Path, target: Path) -> None:
    """Blocking: os.replace, then flush the folder, so the new name survives a power cut."""
    os.replace(source, target)
    sync_folder(target.parent)


def sync_folder(folder: Path) -> None:
    """Blocking: flush a folder's entries (the names in it) to the disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
