"""The upload routes' limits: never flooded, never filled up, never held open by a silent client.

`admitted` runs before a byte of the body is read: too many uploads at once or a
full queue is a 503 with Retry-After, a body that would eat into the disk
reserve a 507. `watched` runs the upload itself under a watcher that drops it
when the client sends nothing for `upload_idle_timeout` seconds, and stops it
with 507 when the disk's free space falls to the reserve. Both work from the
outside (the request's byte counter and the disk's free space), so the read
loop in uploads.py stays as simple as it is.

Hundreds of uploads at once must cost the loop little: the watcher is a timer
that looks at its upload four times a second (sooner near the reserve), not a
task of its own, and the disk's free space is asked of the kernel (in a thread) at
most every FREE_SPACE_MAX_AGE seconds for all uploads together; in between, what
the uploads received is taken off the last reading.

`hold_room` caps what unfinished resumable uploads may hold room for, per client
(429) and in all (503), so that one client's unfinished uploads cannot leave the
disk guard no room for anyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from ..config import MIB, Settings
from ..display import human_size
from ..errors import ApiError
from ..keys import HEALTH, SETTINGS, STORE, UPLOAD_GUARD
from ..store import Task
from ..tus.uploads import RESUMABLE, Reservations, Upload

log = logging.getLogger(__name__)


@dataclass
class UploadCounter:
    """Uploads streaming right now, shown in /healthz and the page's heartbeat, and the
    disk's free space as last seen (asked for at most four times a second, however many
    uploads there are)."""
    active: int = 0
    free_bytes: int | None = None
    free_seen_at: float = float("-inf")  # loop time
    free_asking: asyncio.Task[int] | None = None
    # What the watched uploads have received in all, as their watchers counted it, and
    # how much of that the disk had already been handed when free_bytes was asked for.
    received: int = 0
    received_at_reading: int = 0

    def fresh_free_bytes(self, now: float) -> int | None:
        """free_bytes if it was seen less than FREE_SPACE_MAX_AGE seconds ago, else None."""
        return self.free_bytes if now - self.free_seen_at < FREE_SPACE_MAX_AGE else None

    def free_bytes_now(self) -> int | None:
        """The free space as last seen, less what uploads have received since: a fast
        upload cannot run far past the reserve between two readings."""
        if self.free_bytes is None:
            return None
        return self.free_bytes - (self.received - self.received_at_reading)


UPLOADS = web.AppKey("uploads", UploadCounter)
T = TypeVar("T")


def setup(app: web.Application) -> None:
    """Plug the limits in: every multipart upload admitted first, then watched."""
    settings = app[SETTINGS]
    app[UPLOADS] = UploadCounter()
    app[HEALTH]["uploads_in_progress"] = lambda: app[UPLOADS].active

    async def guarded(request: web.Request, receiving: Callable[[], Awaitable[Task]]) -> Task:
        async with admitted(request, settings):  # 503 or 507 before any byte is stored
            return await watched(request, settings, receiving)

    app[UPLOAD_GUARD] = guarded

RETRY_BUSY = 5  # seconds: an upload slot frees up as soon as any upload ends
RETRY_QUEUE_FULL = 60  # seconds: the queue drains one transcode at a time


FREE_SPACE_MAX_AGE = 0.25  # seconds: at 100 MB/s of uploads, 25 MB it may not have seen
MIN_TICK = 0.01  # seconds: the soonest a watcher looks again, however close to the reserve


async def free_bytes(app: web.Application, folder: Path) -> int:
    """The disk's free space, as seen at most FREE_SPACE_MAX_AGE seconds ago."""
    counter = app[UPLOADS]
    if (fresh := counter.fresh_free_bytes(asyncio.get_running_loop().time())) is not None:
        return fresh
    return await asyncio.shield(_ask_free_space(app, folder))


def _ask_free_space(app: web.Application, folder: Path) -> asyncio.Task[int]:
    """The one question to the kernel in flight, shared by whoever waits for the answer."""
    counter = app[UPLOADS]
    if counter.free_asking is None:
        async def ask() -> int:
            try:
                received = counter.received
                free = (await asyncio.to_thread(shutil.disk_usage, folder)).free
                counter.free_bytes, counter.free_seen_at = free, asyncio.get_running_loop().time()
                counter.received_at_reading = received
                return free
            finally:
                counter.free_asking = None
        counter.free_asking = asyncio.create_task(ask(), name="free-space")
    return counter.free_asking


def disk_full(settings: Settings) -> ApiError:
    return ApiError(507, "disk_full",
                    "The server is short of disk space and cannot take this upload now; "
                    f"it keeps {settings.min_free_bytes / MIB:g} MiB free.")


async def check_room(app: web.Application, settings: Settings, incoming: int) -> None:
    """507 unless `incoming` more bytes fit on the disk above the reserve, besides
    what the unfinished resumable uploads are still owed."""
    owed = app[RESUMABLE].reserved()
    if await free_bytes(app, settings.data_dir) - owed - incoming < settings.min_free_bytes:
        raise disk_full(settings)


def client_of(request: web.Request) -> str:
    """Whom per-client limits count an upload against: its address (behind a trusted
    proxy, the one the proxy names)."""
    return request.remote or ""


def hold_room(request: web.Request, settings: Settings, upload: Upload) -> None:
    """429 if the upload's client, or 503 if all clients together, would hold room for
    more unfinished resumable uploads, or more missing bytes, than allowed once this
    one (not active now) holds room for its own.

    No await: call it just before the upload is made active, so that nothing can
    pass in between.
    """
    uploads = request.app[RESUMABLE]
    owed = upload.length - upload.offset
    mine = uploads.reservations(upload.client)
    room = max(settings.max_reserved_per_client_bytes, settings.max_upload_bytes)
    if mine.count >= settings.max_unfinished_per_client or mine.owed + owed > room:
        raise ApiError(429, "too_many_unfinished",
                       f"This client already has {_uploads(mine.count)} unfinished, holding "
                       f"room for {human_size(mine.owed)} still to come; one client may have "
                       f"{settings.max_unfinished_per_client} and {human_size(room)}. Finish "
                       "or cancel one, or wait: an upload that sends nothing for "
                       f"{settings.reserve_idle:g} s stops holding room.",
                       headers={"Retry-After": _retry_after(mine, settings)})
    everyone = uploads.reservations()
    room = max(settings.max_reserved_bytes, settings.max_upload_bytes)
    if everyone.count >= settings.max_unfinished or everyone.owed + owed > room:
        raise ApiError(503, "unfinished_full",
                       "The server holds as many unfinished resumable uploads as it allows, "
                       "from all its clients together; try again later.",
                       headers={"Retry-After": _retry_after(everyone, settings)})


def _retry_after(held: Reservations, settings: Settings) -> str:
    """When the first of these uploads goes idle, if one is not receiving; else a whole idle period."""
    wait = held.next_idle if held.next_idle is not None else settings.reserve_idle
    return str(max(1, math.ceil(wait)))


@contextlib.asynccontextmanager
async def admitted(request: web.Request, settings: Settings,
                   incoming: int | None = None) -> AsyncIterator[None]:
    """Refuse an upload the server cannot take, before any byte is stored; else count
    it among the uploads in progress for as long as the block runs.

    `incoming` is the bytes it may add to the disk beyond what is already reserved
    for it (the request's Content-Length unless given).

    The disk is checked first because that check awaits a thread; the counters
    are then checked and the upload counted with no await in between, so a
    burst of uploads arriving together cannot all slip past the limits.
    """
    await check_room(request.app, settings,
                     request.content_length or 0 if incoming is None else incoming)
    counter = request.app[UPLOADS]
    active = counter.active
    if active >= settings.max_uploads:
        raise ApiError(503, "busy",
                       f"The server is taking as many uploads at once as it allows "
                       f"({settings.max_uploads}); try again in a few seconds.",
                       headers={"Retry-After": str(RETRY_BUSY)})
    # uploads in progress count too: each may become a queued task a moment later
    if request.app[STORE].queued_count() + active >= settings.max_queued:
        raise ApiError(503, "queue_full",
                       f"The server already holds {_uploads(settings.max_queued)} in progress "
                       f"or waiting to be transcoded, as many as it allows; try again later.",
                       headers={"Retry-After": str(RETRY_QUEUE_FULL)})
    counter.active += 1
    try:
        yield
    finally:
        counter.active -= 1


def _uploads(count: int) -> str:
    return f"{count} upload" if count == 1 else f"{count} uploads"


async def watched(request: web.Request, settings: Settings,
                  receive: Callable[[], Awaitable[T]]) -> T:
    """await receive(), dropping it if the client goes silent or the disk reaches the reserve.

    Once the whole body is in, there is no deadline (probing has its own time limit).
    """
    try:
        async with asyncio.timeout(None) as deadline:
            watch = _Watch(request, settings, deadline)
            try:
                return await receive()
            finally:
                watch.stop()
    except TimeoutError:
        if not watch.expired:
            raise  # not ours
        if watch.disk_full:
            log.warning("upload stopped: free disk space reached the reserve")
            raise disk_full(settings) from None
        log.info("upload dropped: nothing received for %g s", settings.upload_idle_timeout)
        raise ApiError(408, "idle_timeout",
                       f"The upload sent nothing for {settings.upload_idle_timeout:g} s "
                       "and was dropped.") from None


class _Watch:
    """Looks at one upload every `tick` seconds from a timer (no task of its own): the
    upload is stopped, through its deadline, once it has sent nothing for
    upload_idle_timeout seconds (so at most a tick later than that), or as soon as the
    disk's free space, as last seen less what uploads received since, is below the
    reserve. Near the reserve it looks sooner, as the upload's rate requires."""

    def __init__(self, request: web.Request, settings: Settings, deadline: asyncio.Timeout) -> None:
        self.app = request.app
        self.content = request.content
        self.settings = settings
        self.deadline = deadline
        self.loop = asyncio.get_running_loop()
        self.tick = min(0.25, settings.upload_idle_timeout / 4)
        self.seen = self.content.total_bytes
        self.last_sent = self.looked_at = self.loop.time()
        self.expired = self.disk_full = False
        self.timer = self.loop.call_later(MIN_TICK * 5, self.look)  # soon: its rate is not known yet

    def look(self) -> None:
        if self.content.is_eof():
            return
        now = self.loop.time()
        delay = self.tick
        if self.content.total_bytes != self.seen:
            received = self.content.total_bytes - self.seen
            counter = self.app[UPLOADS]
            counter.received += received
            self.seen, self.last_sent = self.content.total_bytes, now
            if counter.fresh_free_bytes(now) is None:
                _ask_free_space(self.app, self.settings.data_dir)  # seen at a later look
            free = counter.free_bytes_now()
            if free is not None:
                room = free - self.settings.min_free_bytes
                if room < 0:
                    self.disk_full = True
                    self._expire(now)
                    return
                # Close to the reserve, look again before this upload can reach it at
                # the rate it just went.
                rate = received / max(now - self.looked_at, 1e-3)
                delay = max(MIN_TICK, min(self.tick, room / rate))
        elif now - self.last_sent >= self.settings.upload_idle_timeout:
            self._expire(now)
            return
        self.looked_at = now
        self.timer = self.loop.call_later(delay, self.look)

    def _expire(self, now: float) -> None:
        self.expired = True
        self.deadline.reschedule(now)

    def stop(self) -> None:
        self.timer.cancel()
