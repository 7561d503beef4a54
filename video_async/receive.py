"""Receive to disk: stream chunks into a file and return only once they are on disk.

Every upload route ends here. `receive(chunks, path, limit)` appends what the
stream yields to `path` (from `offset`, so an interrupted upload can resume
where its file ends), stops the moment the total passes `limit`, and returns
the number of bytes written only after `fdatasync` has put them on the disk:
an upload acknowledged after `receive` returns survives a power cut, not just
a crash of the process. `rename(partial, final)` does the same for the file's
name: the directory is flushed too.

The loop never touches the disk, and an upload in flight costs little, however
many there are: one small pool of threads (DISK_THREADS) writes for all of
them, and an upload's bytes wait in a batch sized to its pace. Chunks are
copied into the batch, and each is freed as soon as it is copied, as a bare
handler that writes each chunk at once frees it: holding the chunks
themselves kept the memory the socket reads into scattered and growing.
- A slow upload (a phone on a mobile link) fills a batch of SLOW_BATCH bytes
  before it goes to a thread: a few kilobytes held per upload.
- A fast one (FAST_PROOF bytes within FAST_WINDOW seconds, judged again with
  every FAST_PROOF bytes) gets 1 MiB batches, one written while the loop
  fills the next: each hand-off to a thread costs the loop CPU.
Batch buffers are taken from a shared stock and used again and again, so the
copy lands in memory the process already has, not in fresh pages that would
fault on the loop. A write is handed to the pool and not waited for: the loop
only looks whether the previous one has ended before it hands over the next,
so an upload whose disk keeps up never makes a thread wake the loop.

Waiting for 200 MB to reach the disk at the end would take a good part of
the time it took to receive them, so the disk starts early: every few
megabytes a thread asks the kernel to start writing out what is written so
far (posix_fadvise DONTNEED, which does not wait), and the one fdatasync at
the end has only the last few megabytes left. Flushing with fdatasync every
few megabytes instead did the same job, but each one is a journal commit and
a cache flush of the device: under three uploads it slowed the loop's other
requests more (docs/upload-path.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import AsyncIterable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
Chunk = bytes | bytearray | memoryview

# The threads that write every upload's bytes. Writes to the page cache are short
# and the loop never waits for one to start, so a few threads serve hundreds of
# uploads; more would only add threads. Flushes (fdatasync) are the long calls.
DISK_THREADS = 4
# A slow upload's batch. Small, because each upload in flight holds one while it
# fills; big enough that a hand-off to a thread carries a useful write.
SLOW_BATCH = 16 * 1024
# A fast upload's batch. Each hand-off to a thread costs the loop CPU; batches of
# 4 MiB measured no cheaper than 1 MiB.
BATCH_SIZE = 1024 * 1024
# How an upload's pace is judged, again and again: it is fast while each FAST_PROOF
# bytes of it come within FAST_WINDOW seconds (5 MB/s and more). A slow upload that
# was held up (the link stalled, the loop was busy) brings a few tens of KiB at
# once: that proves nothing, since the time is counted from the window's start.
FAST_PROOF = 256 * 1024
FAST_WINDOW = 0.05
# Start writing out to the device once this much has been written since the last
# start: the final flush then has at most this much (plus a batch) left to do.
WRITEOUT_EVERY = 8 * 1024 * 1024
# Buffers kept for the next batches once written, beyond those in use.
SPARE_BUFFERS = {SLOW_BATCH: 256, BATCH_SIZE: 2 * DISK_THREADS}

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_spare_buffers: dict[int, list[bytearray]] = {size: [] for size in SPARE_BUFFERS}  # the loop's thread only


def disk_pool() -> ThreadPoolExecutor:
    """The process's disk threads, started with its first upload."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=DISK_THREADS, thread_name_prefix="disk")
        return _pool


class TooLarge(Exception):
    """The stream went past the limit; what was written stays, the caller decides."""


async def receive(chunks: AsyncIterable[Chunk], path: Path, limit: int, offset: int = 0,
                  check_head: Callable[[bytes], None] | None = None, head_size: int = 16) -> int:
    """Write chunks to path starting at offset; return how many, once they are on disk.

    Raises TooLarge as soon as offset plus the bytes received pass limit.
    check_head, if given, is called once with the stream's first head_size bytes
    (not at all if it ends sooner), and may raise to refuse the stream.
    """
    pool = disk_pool()
    fd = await _result(pool.submit(_open, path, offset))
    batches = _Batches(fd, offset, pool, asyncio.get_running_loop().time)
    closed = False
    head = b""
    try:
        async for chunk in chunks:
            if batches.end + len(chunk) > limit:
                raise TooLarge
            if check_head is not None:  # only until the first bytes are in
                head += bytes(chunk[: head_size - len(head)])
                if len(head) == head_size:
                    check, check_head = check_head, None
                    check(head)
            await batches.add(chunk)
        received = await batches.finish()
        closed = True
        return received - offset
    except BaseException:
        # The stream broke off (the client went away, a check refused it, it was
        # stopped): the bytes that did arrive are written and flushed all the same,
        # after the batch before them, so a resumable upload goes on from the last
        # byte received. (A multipart route removes the file anyway.)
        batches.write_what_is_held()
        raise
    finally:
        if not closed:
            # A thread cannot be stopped mid-call: the file is closed once the calls
            # made for it have ended. The closing is a call of its own, in a thread,
            # so that it happens even if this coroutine is cancelled again while it waits.
            await _result(pool.submit(_close_after, fd, batches.writing, batches.writeout))


class _Batches:
    """One upload's file, and the batch of its bytes that waits to be written to it.

    Only the loop's thread uses this object; the pool's threads get a file
    descriptor, the bytes and a position, and end a Future. At most one write
    is in flight: a new batch goes only once the previous one has ended, so a
    disk that falls behind slows the upload (the socket stops being read), not
    the server's memory. A call in the pool may wait for an earlier call of
    the same upload (the close waits for the last write): the pool takes its
    calls in the order they came, so an earlier one is already running on
    another thread, or done, and the wait cannot hold up the pool for good.
    """

    def __init__(self, fd: int, position: int, pool: ThreadPoolExecutor,
                 clock: Callable[[], float]) -> None:
        self.fd = fd
        self.position = position  # where the next batch goes in the file
        self.pool = pool
        self.clock = clock
        self.size = SLOW_BATCH  # of the next batch
        self.window, self.window_began = 0, clock()  # bytes since the pace was last judged
        self.buffer: bytearray | None = None  # the batch being filled
        self.held = 0  # bytes in it
        self.writing: Future[None] | None = None  # the last write handed over
        self.written_buffer: bytearray | None = None  # its buffer, free again once it ends
        self.writeout: Future[None] | None = None
        self.since_writeout = 0

    @property
    def end(self) -> int:
        """Where the file will end once what is held is written."""
        return self.position + self.held

    async def add(self, chunk: Chunk) -> None:
        """Copy the chunk into batches, handing each full one to a thread."""
        self.window += len(chunk)
        if self.window >= FAST_PROOF:  # time to judge the pace again
            now = self.clock()
            size = BATCH_SIZE if now - self.window_began < FAST_WINDOW else SLOW_BATCH
            self.window, self.window_began = 0, now
            if size != self.size:
                self.size = size
                if self.buffer is not None:  # the batch goes in the size it has
                    await self._hand_over()
        rest = memoryview(chunk)
        while rest:
            if self.buffer is None:
                spare = _spare_buffers[self.size]
                self.buffer = spare.pop() if spare else bytearray(self.size)
            taken = rest[: len(self.buffer) - self.held]
            self.buffer[self.held: self.held + len(taken)] = taken
            self.held += len(taken)
            rest = rest[len(taken):]
            if self.held == len(self.buffer):
                await self._hand_over()

    async def _hand_over(self) -> None:
        """Write the batch in a thread, once the previous write has ended."""
        assert self.buffer is not None
        await self._previous_ended()
        self.writing = self.pool.submit(_write, self.fd, memoryview(self.buffer)[: self.held],
                                        self.position)
        self.written_buffer, self.buffer = self.buffer, None
        self.position += self.held
        self.since_writeout += self.held
        self.held = 0
        if self.since_writeout >= WRITEOUT_EVERY and (self.writeout is None or self.writeout.done()):
            if self.writeout is not None:
                self.writeout.result()  # done already: only to raise its error
            self.writeout = self.pool.submit(_start_writeback, self.fd)
            self.since_writeout = 0

    async def _previous_ended(self) -> None:
        if self.writing is not None:
            await _result(self.writing)  # its error, if any, is raised here
        if self.written_buffer is not None:
            spare = _spare_buffers[len(self.written_buffer)]
            if len(spare) < SPARE_BUFFERS[len(self.written_buffer)]:
                spare.append(self.written_buffer)
            self.written_buffer = None

    async def finish(self) -> int:
        """Write what is held, flush and close the file; where the file ends, once on disk."""
        await self._previous_ended()
        self.writing = self.pool.submit(_write_flush_close, self.fd, self._held_bytes(),
                                        self.position, self.writeout)
        self.written_buffer, self.buffer = self.buffer, None
        self.position += self.held
        self.held = 0
        await self._previous_ended()
        return self.position

    def write_what_is_held(self) -> None:
        """After a break in the stream: what arrived is written and flushed after the
        previous write, in a thread, not waited for here."""
        if self.held:
            self.writing = self.pool.submit(_write_after, self.writing, self.fd, self._held_bytes(),
                                            self.position)
            self.buffer, self.held = None, 0  # not given back: a thread holds it

    def _held_bytes(self) -> memoryview:
        return memoryview(self.buffer or b"")[: self.held]


async def _result(future: Future[T]) -> T:
    """The result of a call made in a thread.

    A call that has already ended costs nothing more; only when it has not
    does the thread have to wake the loop when it ends.
    """
    if not future.done():
        # shielded: a cancelled wait must not cancel a call that has not started yet
        # (a batch that was never written would leave a hole before the next one)
        return await asyncio.shield(asyncio.wrap_future(future))
    return future.result()


async def rename(source: Path, target: Path) -> None:
    """os.replace, then flush the directory, so the new name survives a power cut too."""
    await _result(disk_pool().submit(rename_durably, source, target))


def _open(path: Path, offset: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, offset)  # anything past offset is from an attempt that was not acknowledged
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write(fd: int, data: Chunk, position: int) -> None:
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


def _write_flush_close(fd: int, data: Chunk, position: int, writeout: Future[None] | None) -> None:
    try:
        _write(fd, data, position)
        os.fdatasync(fd)
    finally:
        if writeout is not None:
            concurrent.futures.wait([writeout])
        os.close(fd)


def _write_after(previous: Future[None] | None, fd: int, data: Chunk, position: int) -> None:
    if previous is not None:
        concurrent.futures.wait([previous])
        if previous.cancelled() or previous.exception() is not None:
            return  # the file ends before position: what follows cannot be placed
    _write(fd, data, position)
    os.fdatasync(fd)


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
