"""Receive to disk: stream chunks into a file and return only once they are on disk.

Every upload route ends here. `receive(chunks, path, limit)` appends what the
stream yields to `path` (from `offset`, so an interrupted upload can resume
where its file ends), stops the moment the total passes `limit`, and returns
the number of bytes written only after `fdatasync` has put them on the disk:
an upload acknowledged after `receive` returns survives a power cut, not just
a crash of the process. `rename(partial, final)` does the same for the file's
name: the directory is flushed too.

The loop never touches the disk, and an upload in flight costs little, however
many there are: a few threads (DISK_THREADS) write for all of them, and an
upload's bytes wait in a batch sized to its pace. Chunks are
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
fault on the loop.

Handing work to a thread has a price of its own, paid on the loop: with a
standard thread pool, each write made a Future and its lock, and woke a
thread; hundreds of slow uploads spent half the loop's time there. So the
writes of all uploads are gathered for the length of one turn of the loop and
handed to the disk threads together, as one list (`DiskThreads`): one wake-up
for many writes. A write is not waited for: the loop only looks whether it has
ended (a flag the thread sets) when it next needs to, and only a call the loop
really waits for (opening a file, the final flush) makes a thread wake it.

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
import os
import queue
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from typing import Any

from . import durable

Chunk = bytes | bytearray | memoryview
# The teaching switch (teach.py, --teach only): while it is set, receive() calls it on the
# loop after each chunk, with the upload's file, and it blocks the loop as a naive
# handler's write would. Looked at chunk by chunk, so it acts on uploads already running.
block_the_loop: Callable[[int], None] | None = None

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
# Writes of one upload handed over and not yet done, at most: a chunk may fill
# several batches at once, and none of them should wait for another. A disk that
# falls behind stops the upload here (its socket is no longer read), not the
# server's memory.
IN_FLIGHT = 4
# Start writing out to the device once this much has been written since the last
# start: the final flush then has at most this much (plus a batch) left to do.
WRITEOUT_EVERY = 8 * 1024 * 1024
# 1 MiB buffers kept for the next fast batches once written, beyond those in use. (A
# slow batch's buffer is small enough for the allocator to reuse its memory at once;
# a stock of them would only be memory held for uploads that have ended.)
SPARE_BUFFERS = 2 * DISK_THREADS

_spare_buffers: list[bytearray] = []  # the loop's thread only


class TooLarge(Exception):
    """The stream went past the limit; what was written stays, the caller decides."""


# -- the disk threads -------------------------------------------------------------

class Job:
    """One call for the disk threads, and how it ended.

    The loop reads `done` when it needs to know; `wait()` suspends until the call
    has ended, and only then does the thread wake the loop. A thread may wait for
    an earlier job (`wait_in_thread`): the threads take jobs in the order they
    were given, so an earlier job is running on another thread already, or done,
    and the wait cannot hold the threads up for good.
    """

    __slots__ = ("call", "args", "done", "error", "result", "_waiter")

    def __init__(self, call: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.call, self.args = call, args
        self.done = False
        self.error: BaseException | None = None
        self.result: Any = None
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def run(self) -> None:
        """In a disk thread."""
        try:
            self.result = self.call(*self.args)
        except BaseException as exc:  # handed to whoever looks at the job
            self.error = exc
        self.call = self.args = None  # type: ignore[assignment]  # the bytes are free now
        self.done = True
        if _threads_waiting:
            with _job_ended:
                _job_ended.notify_all()
        waiter = self._waiter
        if waiter is not None:
            loop, future = waiter
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass

    async def wait(self) -> Any:
        """The call's result (or its error, raised), once it has ended. Cancelling the
        wait does not cancel the call: a thread cannot be stopped mid-call."""
        if not self.done:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._waiter = (loop, future)
            if not self.done:  # it may have ended before it could see the waiter
                await future
        if self.error is not None:
            raise self.error
        return self.result

    def wait_in_thread(self) -> None:
        global _threads_waiting
        with _job_ended:
            _threads_waiting += 1
            try:
                while not self.done:
                    _job_ended.wait()
            finally:
                _threads_waiting -= 1


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():  # a cancelled wait is done already
        future.set_result(None)


_job_ended = threading.Condition()
_threads_waiting = 0  # threads in wait_in_thread: only then is a job's end announced


class DiskThreads:
    """A few threads that do every upload's file work, handed over in lists.

    Jobs given during one turn of the loop (`submit`: the writes, which nobody
    waits for) go to the threads together, at its end (one call_soon), so a
    hundred uploads' writes cost one thread wake-up, not a hundred. A call the
    loop waits for (`run`: an open, a final flush) goes at once, in a list of its
    own, so that a long fdatasync holds up no other upload's writes; whatever was
    gathered before it goes first, so the threads still take every job in the
    order it was given.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._lists: queue.SimpleQueue[list[Job]] = queue.SimpleQueue()
        # each loop's jobs not handed over yet (tests run many loops, one at a time)
        self._gathering: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Job]] = \
            weakref.WeakKeyDictionary()
        self._started = 0
        self._lock = threading.Lock()

    def submit(self, call: Callable[..., Any], *args: Any) -> Job:
        """The job, handed over at the end of this turn of the loop."""
        job = Job(call, args)
        loop = asyncio.get_running_loop()
        gathering = self._gathering.get(loop)
        if gathering is None:
            gathering = self._gathering[loop] = []
            loop.call_soon(self._hand_over, loop)
        gathering.append(job)
        return job

    async def run(self, call: Callable[..., Any], *args: Any) -> Any:
        """The call's result, from a thread, handed over at once."""
        job = Job(call, args)
        self._hand_over(asyncio.get_running_loop())
        self._put([job])
        return await job.wait()

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._gathering.pop(loop, None)
        if jobs:  # (none when a run() handed them over already)
            self._put(jobs)

    def _put(self, jobs: list[Job]) -> None:
        with self._lock:
            if self._started < self.count:
                self._started += 1
                threading.Thread(target=self._work, name=f"disk-{self._started}", daemon=True).start()
        self._lists.put(jobs)

    def _work(self) -> None:
        while True:
            for job in self._lists.get():
                job.run()


_disk_threads = DiskThreads(DISK_THREADS)


def disk_threads() -> DiskThreads:
    """The process's disk threads (started as work comes, never more than DISK_THREADS)."""
    return _disk_threads


# -- receiving --------------------------------------------------------------------

async def receive(chunks: AsyncIterable[Chunk], path: Path, limit: int, offset: int = 0,
                  check_head: Callable[[bytes], None] | None = None, head_size: int = 16) -> int:
    """Write chunks to path starting at offset; return how many, once they are on disk.

    Raises TooLarge as soon as offset plus the bytes received pass limit.
    check_head, if given, is called once with the stream's first head_size bytes
    (not at all if it ends sooner), and may raise to refuse the stream.
    """
    disk = disk_threads()
    fd = await disk.run(_open, path, offset)
    batches = _Batches(fd, offset, disk, asyncio.get_running_loop().time)
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
            if block_the_loop is not None:  # the teaching switch is on
                block_the_loop(batches.fd)
            # Let go of the chunk now, not when the next one comes: a slow upload waits
            # for its next bytes most of the time, and would hold its last ones meanwhile.
            del chunk
        return await batches.finish() - offset
    except BaseException:
        # The stream broke off (the client went away, a check refused it, it was
        # stopped): the bytes that did arrive are written and flushed all the same,
        # after the batches before them, so a resumable upload goes on from the last
        # byte received. (A multipart route removes the file anyway.)
        batches.write_what_is_held()
        raise
    finally:
        if not batches.closed:
            # A thread cannot be stopped mid-call: the file is closed once the calls
            # made for it have ended. The closing is a job of its own, so that it
            # happens even if this coroutine is cancelled again while it waits.
            await disk.run(_close_after, fd, batches.jobs())


class _Batches:
    """One upload's file, and the batch of its bytes that waits to be written to it.

    Only the loop's thread uses this object; the disk threads get a file
    descriptor, the bytes and a position.
    """

    def __init__(self, fd: int, position: int, disk: DiskThreads,
                 clock: Callable[[], float]) -> None:
        self.fd = fd
        self.position = position  # where the next batch goes in the file
        self.disk = disk
        self.clock = clock
        self.size = SLOW_BATCH  # of the next batch
        self.window, self.window_began = 0, clock()  # bytes since the pace was last judged
        self.buffer: bytearray | None = None  # the batch being filled
        self.held = 0  # bytes in it
        self.writing: deque[tuple[Job, bytearray]] = deque()  # handed over, oldest first
        self.writeout: Job | None = None
        self.since_writeout = 0
        self.closed = False

    @property
    def end(self) -> int:
        """Where the file will end once what is held is written."""
        return self.position + self.held

    def jobs(self) -> list[Job]:
        """Every job given for this file that may not have ended yet."""
        return [job for job, _ in self.writing] + ([self.writeout] if self.writeout else [])

    async def add(self, chunk: Chunk) -> None:
        """Copy the chunk into batches, handing each full one to the disk threads."""
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
                fast = self.size == BATCH_SIZE and _spare_buffers
                self.buffer = _spare_buffers.pop() if fast else bytearray(self.size)
            taken = rest[: len(self.buffer) - self.held]
            self.buffer[self.held: self.held + len(taken)] = taken
            self.held += len(taken)
            rest = rest[len(taken):]
            if self.held == len(self.buffer):
                await self._hand_over()
        self._take_back_buffers()

    async def _hand_over(self) -> None:
        """Give the batch to the disk threads, once fewer than IN_FLIGHT are being written."""
        assert self.buffer is not None
        await self._ended(IN_FLIGHT - 1)
        job = self.disk.submit(_write, self.fd, memoryview(self.buffer)[: self.held], self.position)
        self.writing.append((job, self.buffer))
        self.buffer = None
        self.position += self.held
        self.since_writeout += self.held
        self.held = 0
        if self.since_writeout >= WRITEOUT_EVERY and (self.writeout is None or self.writeout.done):
            if self.writeout is not None:
                await self.writeout.wait()  # done already: only to raise its error
            self.writeout = self.disk.submit(_start_writeback, self.fd)
            self.since_writeout = 0

    async def _ended(self, at_most: int) -> None:
        """Wait for the oldest writes until at most `at_most` are still being written,
        and take back the buffers of those that have ended; a write's error is raised here."""
        self._take_back_buffers()
        while len(self.writing) > at_most:
            await self.writing[0][0].wait()
            self._take_back_buffers()

    def _take_back_buffers(self) -> None:
        """Let go of the buffers of the writes that have ended (a fast one's goes back to the
        stock); a failed write stays, for _ended to raise its error."""
        while self.writing and self.writing[0][0].done and self.writing[0][0].error is None:
            _, buffer = self.writing.popleft()
            if len(buffer) == BATCH_SIZE and len(_spare_buffers) < SPARE_BUFFERS:
                _spare_buffers.append(buffer)

    async def finish(self) -> int:
        """Write what is held, flush and close the file; where the file ends, once on disk."""
        await self._ended(0)
        last, position = self._held_bytes(), self.position
        self.position += self.held
        self.buffer, self.held = None, 0
        self.closed = True  # by that job, however it ends: never closed twice
        await self.disk.run(_write_flush_close, self.fd, last, position, self.writeout)
        return self.position

    def write_what_is_held(self) -> None:
        """After a break in the stream: what arrived is written and flushed after the
        writes before it, in a thread, not waited for here."""
        if self.held:
            job = self.disk.submit(_write_after, self.jobs(), self.fd, self._held_bytes(),
                                   self.position)
            self.writing.append((job, bytearray()))  # its buffer is not given back
            self.buffer, self.held = None, 0

    def _held_bytes(self) -> memoryview:
        return memoryview(self.buffer or b"")[: self.held]


async def rename(source: Path, target: Path) -> None:
    """durable.rename in the uploads' threads: os.replace, then flush the directory, so
    the new name survives a power cut too."""
    await disk_threads().run(durable.rename, source, target)


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


def _write_flush_close(fd: int, data: Chunk, position: int, writeout: Job | None) -> None:
    try:
        _write(fd, data, position)
        os.fdatasync(fd)
    finally:
        if writeout is not None:
            writeout.wait_in_thread()
        os.close(fd)


def _write_after(previous: Iterable[Job], fd: int, data: Chunk, position: int) -> None:
    for job in previous:
        job.wait_in_thread()
        if job.error is not None:
            return  # the file may end before position: what follows cannot be placed
    _write(fd, data, position)
    os.fdatasync(fd)


def _close_after(fd: int, pending: Iterable[Job]) -> None:
    for job in pending:
        job.wait_in_thread()
    os.close(fd)
