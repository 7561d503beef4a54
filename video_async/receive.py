"""Receive to disk: stream chunks into a file and return only once they are on disk.

Every upload route ends here. `receive(chunks, path, limit)` appends what the
stream yields to `path` (from `offset`, so an interrupted upload can resume
where its file ends), stops the moment the total passes `limit`, and returns
the number of bytes written only after `fdatasync` has put them on the disk:
an upload acknowledged after `receive` returns survives a power cut, not just
a crash of the process. `rename(partial, final)` does the same for the file's
name: the directory is flushed too.

The loop never touches the disk. Chunks are gathered into batches and each
batch goes to a thread in one hand-off, while the loop reads the next. Waiting
for 200 MB to reach the disk at the end would take as long again as receiving
them, so the flush starts early: a second thread flushes whatever has been
written so far, over and over, while the writes go on, and the final flush
only has the last few megabytes left to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable
from pathlib import Path

# One hand-off to a thread costs the loop about as much as copying a few hundred
# KiB, so chunks are gathered into batches of this size (see docs/upload-path.md);
# one batch is written while the next one fills, so an upload holds about two.
BATCH_SIZE = 1024 * 1024
# Start a background flush once this much has been written since the last one began.
FLUSH_EVERY = 8 * 1024 * 1024
IOV_MAX = os.sysconf("SC_IOV_MAX")  # the most pieces one pwritev takes (1024 on Linux)


class TooLarge(Exception):
    """The stream went past the limit; what was written stays, the caller decides."""


async def receive(chunks: AsyncIterable[bytes], path: Path, limit: int, offset: int = 0) -> int:
    """Write chunks to path starting at offset; return how many, once they are on disk.

    Raises TooLarge as soon as offset plus the bytes received pass limit.
    """
    loop = asyncio.get_running_loop()
    fd = await loop.run_in_executor(None, _open, path, offset)
    position = offset
    batch: list[bytes] = []
    batched = 0
    writing: asyncio.Future[None] | None = None
    flushing: asyncio.Future[None] | None = None
    unflushed = 0
    try:
        async for chunk in chunks:
            if position + batched + len(chunk) > limit:
                raise TooLarge
            batch.append(chunk)
            batched += len(chunk)
            if batched < BATCH_SIZE:
                continue
            if writing is not None:
                await writing  # the previous batch is written, or its error raised here
            writing = loop.run_in_executor(None, _write, fd, batch, position)
            position += batched
            unflushed += batched
            batch, batched = [], 0
            if unflushed >= FLUSH_EVERY and (flushing is None or flushing.done()):
                if flushing is not None:
                    await flushing  # done already: only to raise its error
                flushing = loop.run_in_executor(None, os.fdatasync, fd)
                unflushed = 0
        if writing is not None:
            await writing
        # the last batch and the final flush in one hand-off
        writing = loop.run_in_executor(None, _write_and_flush, fd, batch, position)
        position += batched
        await writing
        return position - offset
    finally:
        # A thread cannot be stopped mid-call: on any way out, let both finish
        # before the file is closed (their errors were raised above, or are
        # beside the point now).
        for pending in (writing, flushing):
            if pending is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending)
        await loop.run_in_executor(None, os.close, fd)


async def rename(source: Path, target: Path) -> None:
    """os.replace, then flush the directory, so the new name survives a power cut too."""
    await asyncio.get_running_loop().run_in_executor(None, _rename_durably, source, target)


def _open(path: Path, offset: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, offset)  # anything past offset is from an attempt that was not acknowledged
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write(fd: int, batch: list[bytes], position: int) -> None:
    # pwritev takes the chunks as they are: joining them first would copy every byte again
    while batch:
        written = os.pwritev(fd, batch[:IOV_MAX], position)
        position += written
        while batch and written >= len(batch[0]):
            written -= len(batch[0])
            batch = batch[1:]
        if written:  # a short write that ended inside a chunk
            batch[0] = batch[0][written:]


def _write_and_flush(fd: int, batch: list[bytes], position: int) -> None:
    _write(fd, batch, position)
    os.fdatasync(fd)


def _rename_durably(source: Path, target: Path) -> None:
    os.replace(source, target)
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
