"""Receive to disk: stream chunks into a file and return only once they are on disk.

Every upload route ends here. `receive(chunks, path, limit)` appends what the
stream yields to `path` (from `offset`, so an interrupted upload can resume
where its file ends), stops the moment the total passes `limit`, and returns
the number of bytes written only after `fdatasync` has put them on the disk:
an upload acknowledged after `receive` returns survives a power cut, not just
a crash of the process. `rename(partial, final)` does the same for the file's
name: the directory is flushed too.

The loop never touches the disk: each upload has two threads of its own.
Chunks are copied into a batch buffer, and one thread writes a batch while
the loop fills the next. The copy looks like waste, but it is what keeps the
loop cheap: the two buffers are used again and again, and each chunk is
freed as soon as it is copied, so the next chunk the socket reads lands in
memory the process already has. Handing the chunks themselves to the thread
kept a few megabytes of them alive at a time, and the socket's next reads
came in fresh pages: page faults on the loop, dearer than the copy.

Waiting for 200 MB to reach the disk at the end would take a good part of
the time it took to receive them, so the disk starts early: every few
megabytes the other thread asks the kernel to start writing out what is
written so far (posix_fadvise DONTNEED, which does not wait), and the one
fdatasync at the end has only the last few megabytes left.
Flushing with fdatasync every few megabytes instead did the same job, but
each one is a journal commit and a cache flush of the device: under three
uploads it slowed the loop's other requests more (docs/upload-path.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Each hand-off to a thread costs the loop CPU, so chunks are gathered into batches;
# one batch is written while the next one fills, so an upload holds two.
# Batches of 4 MiB measured no cheaper than 1 MiB, and would hold 8 MiB per upload.
BATCH_SIZE = 1024 * 1024
# Start writing out to the device once this much has been written since the last
# start: the final flush then has at most this much (plus a batch) left to do.
WRITEOUT_EVERY = 8 * 1024 * 1024


class TooLarge(Exception):
    """The stream went past the limit; what was written stays, the caller decides."""


async def receive(chunks: AsyncIterable[bytes | memoryview], path: Path, limit: int, offset: int = 0) -> int:
    """Write chunks to path starting at offset; return how many, once they are on disk.

    Raises TooLarge as soon as offset plus the bytes received pass limit.
    """
    # Two threads of its own: one writes while the other starts the write-out.
    threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="receive")
    writing: Future[None] | None = None
    writeout: Future[None] | None = None
    try:
        fd = await _result(threads.submit(_open, path, offset))
        try:
            position = offset
            # Two batch buffers, in turn: a thread writes one while the loop fills the other.
            filling, spare = bytearray(BATCH_SIZE), bytearray(BATCH_SIZE)
            batched = 0
            since_writeout = 0
            rest = memoryview(b"")  # what of the current chunk is not in a batch yet
            async for chunk in chunks:
                if position + batched + len(chunk) > limit:
                    raise TooLarge
                rest = memoryview(chunk)
                while len(rest) >= BATCH_SIZE - batched:  # the chunk fills the batch
                    room = BATCH_SIZE - batched
                    filling[batched:] = rest[:room]
                    rest, batched = rest[room:], BATCH_SIZE
                    if writing is not None:
                        await _result(writing)  # the previous batch is written, or its error raised here
                    writing = threads.submit(_write, fd, filling, position)
                    filling, spare = spare, filling  # the one just written is free again
                    position += BATCH_SIZE
                    since_writeout += BATCH_SIZE
                    batched = 0
                    if since_writeout >= WRITEOUT_EVERY and (writeout is None or writeout.done()):
                        if writeout is not None:
                            writeout.result()  # done already: only to raise its error
                        writeout = threads.submit(_start_writeback, fd)
                        since_writeout = 0
                filling[batched : batched + len(rest)] = rest
                batched += len(rest)
                rest = memoryview(b"")
            if writing is not None:
                await _result(writing)
            # the last batch and the final flush in one hand-off
            last, batched = memoryview(filling)[:batched], 0  # handed over: not written again below
            writing = threads.submit(_write_and_flush, fd, last, position)
            await _result(writing)
            return position + len(last) - offset
        except BaseException:
            # The stream broke off (the client went away, a check refused it, it was
            # stopped): the bytes that did arrive are written and flushed all the same,
            # after the batch before them, so a resumable upload goes on from the last
            # byte received. (A multipart route removes the file anyway.)
            if batched or rest:
                received = bytes(memoryview(filling)[:batched]) + bytes(rest)
                writing = threads.submit(_write_after, writing, fd, received, position)
            raise
        finally:
            # A thread cannot be stopped mid-call: on any way out, the file is closed
            # once both have finished (their errors were raised above, or are beside
            # the point now). The closing is a call of its own, in a thread, so that
            # it happens even if this coroutine is cancelled again while it waits.
            await _result(threads.submit(_close_after, fd, writing, writeout))
    finally:
        threads.shutdown(wait=False)  # every call has ended: the threads just exit


async def _result(future: Future[T]) -> T:
    """The result of a call made in a thread.

    A call that has already ended costs nothing more; only when it has not
    does the thread have to wake the loop when it ends. With one batch written
    while the next one fills, the write has usually ended by then.
    """
    if not future.done():
        # shielded: a cancelled wait must not cancel a call that has not started yet
        # (a batch that was never written would leave a hole before the next one)
        return await asyncio.shield(asyncio.wrap_future(future))
    return future.result()


async def rename(source: Path, target: Path) -> None:
    """os.replace, then flush the directory, so the new name survives a power cut too."""
    await asyncio.get_running_loop().run_in_executor(None, rename_durably, source, target)


def _open(path: Path, offset: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, offset)  # anything past offset is from an attempt that was not acknowledged
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write(fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
    view = memoryview(data)
    while view:  # a short write is rare on a regular file, but allowed
        written = os.pwrite(fd, view, position)
        position += written
        view = view[written:]


def _start_writeback(fd: int) -> None:
    # On Linux, DONTNEED starts the write-out of the file's dirty pages without
    # waiting for it, and drops the pages already on disk from the cache (an
    # upload is read again only by the probe, which reads its head, and by one
    # transcode). Without posix_fadvise the final flush does all the work.
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _write_and_flush(fd: int, data: bytes | memoryview, position: int) -> None:
    _write(fd, data, position)
    os.fdatasync(fd)


def _write_after(previous: Future[None] | None, fd: int, data: bytes, position: int) -> None:
    if previous is not None and (previous.cancelled() or previous.exception() is not None):
        return  # the file ends before position: what follows cannot be placed
    _write_and_flush(fd, data, position)


def _close_after(fd: int, *pending: Future[None] | None) -> None:
    for call in pending:
        if call is not None:
            concurrent.futures.wait([call])
    os.close(fd)


def rename_durably(source: Path, target: Path) -> None:
    """Blocking: what `rename` does, for code already in a thread."""
    os.replace(source, target)
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
