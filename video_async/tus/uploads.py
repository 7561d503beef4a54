"""The tus layer's upload store: the resumable uploads that have not reached their last
byte, what is known of each, on disk and in memory.

Each upload is two files (layout.py): its bytes, `<id>.tus`, and a sidecar,
`<id>.tus.json`, with what its creation said (its length, and its task's order).
Nothing else is written as bytes arrive: the offset is the length of the bytes'
file, and the last activity is the later of the two files' modification times,
so a restarted server, even after SIGKILL, knows every upload as it was. The
sidecar is written durably (durable.py: a temporary name, flushed, renamed)
before the creation is answered, so a sidecar that exists is whole.

Its bytes' file is made, empty, with the sidecar, before the sidecar's durable
rename: the one flush of the folder keeps both names, so an offset acknowledged
later cannot fall back to nothing after a power cut.

While an upload is active it holds room on the disk for its missing bytes (the
upload routes' disk guard counts them as owed, and routes/limits.py caps them per
client and in all). An upload that has sent nothing for `reserve_idle` seconds holds
only what it has; to go on, it must find room again.

An upload expires `upload_expiry` seconds after its last byte (or its creation):
its files go, and the space it had reserved on the disk goes back to the guard.
Ended uploads (expired, terminated) are remembered for another `upload_expiry`
(an hour at least), across restarts too (in one small file,
`DataLayout.ended_uploads_path`), so a client that asks after one hears 410 Gone
rather than 404.

In memory, a dict held by `ResumableUploads`; as with the task store, no method
awaits in the middle of a change, so it needs no lock. The ended ids are the
exception: each change is written to disk before the next, under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import durable
from ..layout import DataLayout
from ..store import Order

log = logging.getLogger(__name__)

REMEMBER_ENDED = 10_000  # ended upload ids kept for 410 answers (about 50 bytes each on disk)
REMEMBER_ENDED_FOR = 3600.0  # seconds at least, however short the expiry: clients ask late
SWEEP_EVERY = 60.0  # seconds between looks for expired uploads, at most


@dataclass(eq=False)
class Upload:
    id: str
    length: int  # the whole file, as its creation announced
    order: Order  # what its task will be asked to make
    metadata: str = ""  # Upload-Metadata as the client sent it: HEAD answers with it
    client: str = ""  # the address it was created from: caps count per client
    offset: int = 0  # bytes stored so far
    last_active: float = field(default_factory=time.time)  # wall clock: it outlives the process
    # The request writing to it now, if any: a newer request for the same upload stops it
    # (its client has evidently given up on it) and waits for it to end.
    receiving: asyncio.Task[int] | None = field(default=None, repr=False)
    finishing: bool = False  # every byte is in; its checks are running

    @property
    def busy(self) -> bool:
        """A request is writing to it, or its checks are running."""
        return (self.receiving is not None and not self.receiving.done()) or self.finishing

    def expires(self, expiry: float) -> float:
        return self.last_active + expiry

    def sidecar(self) -> dict[str, Any]:
        return {"length": self.length, **self.order.order_json(), "metadata": self.metadata,
                "client": self.client}


@dataclass
class Scan:
    """What start-up found among the resumable uploads' files."""
    live: list[Upload]
    removed: list[str]  # relative to the data dir: expired, finished, or left without a sidecar


@dataclass(frozen=True)
class Reservations:
    """What the active uploads (of one client, or of all) hold room for."""
    count: int
    owed: int  # bytes: their missing bytes, which the disk guard keeps room for
    next_idle: float | None  # seconds until the first one not receiving goes idle


class ResumableUploads:
    def __init__(self, layout: DataLayout, expiry: float, reserve_idle: float) -> None:
        self.layout = layout
        self.expiry = expiry
        self.reserve_idle = reserve_idle
        self._uploads: dict[str, Upload] = {}
        # id -> when it ended, oldest first; read from disk when first needed
        self._ended: OrderedDict[str, float] = OrderedDict()
        self._ended_loaded = False
        self._ended_lock: asyncio.Lock | None = None  # made on the loop, when first needed

    # -- looking ----------------------------------------------------------------------

    def get(self, upload_id: str) -> Upload | None:
        return self._uploads.get(upload_id)

    async def ended(self, upload_id: str) -> bool:
        """Expired or terminated (recently enough to remember), before or after a restart."""
        async with self._ended_file():
            when = self._ended.get(upload_id)
        return when is not None and when + _remembered_for(self.expiry) > time.time()

    def count(self) -> int:
        return len(self._uploads)

    def held(self) -> int:
        """Bytes the unfinished uploads hold on disk."""
        return sum(upload.offset for upload in self._uploads.values())

    def all(self) -> list[Upload]:
        return list(self._uploads.values())

    def active(self, upload: Upload, now: float | None = None) -> bool:
        """Receiving, finishing, or heard from within reserve_idle: it holds room."""
        moment = time.time() if now is None else now
        return upload.busy or moment - upload.last_active < self.reserve_idle

    def reservations(self, client: str | None = None) -> Reservations:
        """The active uploads' hold, of one client or (None) of all."""
        now = time.time()
        held = [upload for upload in self._uploads.values()
                if (client is None or upload.client == client) and self.active(upload, now)]
        idle_in = [upload.last_active + self.reserve_idle - now
                   for upload in held if not upload.busy]
        return Reservations(len(held), sum(upload.length - upload.offset for upload in held),
                            min(idle_in, default=None))

    def reserved(self) -> int:
        """Bytes the active unfinished uploads are still owed: the disk guard keeps room for them."""
        return self.reservations().owed

    def expired(self, now: float | None = None) -> list[Upload]:
        moment = time.time() if now is None else now
        return [upload for upload in self._uploads.values()
                if not upload.busy and upload.expires(self.expiry) <= moment]

    # -- changing -----------------------------------------------------------------------

    def restore(self, uploads: list[Upload]) -> None:
        self._uploads = {upload.id: upload for upload in uploads}

    async def create(self, upload: Upload) -> None:
        """List it, then make its (empty) bytes' file and its sidecar, flushed; rename the
        sidecar into place and flush the folder, which keeps both names.

        Listed before the first await, so that the room it takes counts at once: a burst
        of creations checked against the caps one after another cannot all pass. Its id
        is nobody's until the creation is answered, so nobody asks for it meanwhile.
        """
        self._uploads[upload.id] = upload
        try:
            await asyncio.to_thread(_create_files, self.layout, upload.id,
                                    json.dumps(upload.sidecar()).encode())
        except BaseException:
            self._uploads.pop(upload.id, None)
            await asyncio.to_thread(self.delete_files, upload.id)
            raise

    def finished(self, upload: Upload) -> None:
        """Its task exists now: it is no longer an unfinished upload."""
        self._uploads.pop(upload.id, None)

    async def remove(self, upload: Upload, why: str) -> None:
        """End an upload and delete its files (terminated, expired or refused)."""
        self._uploads.pop(upload.id, None)
        # Written down before its files go: were the server to stop in between, start-up
        # finds an ended id with files, and removes them.
        async with self._ended_file() as ended:
            ended[upload.id] = time.time()
            await asyncio.to_thread(_save_ended, self.layout, dict(_pruned(ended, self.expiry)))
        await asyncio.to_thread(self.delete_files, upload.id)  # even if that could not be saved
        log.info("resumable upload %s removed (%s): %d of %d bytes had arrived",
                 upload.id, why, upload.offset, upload.length)

    async def discard(self, upload: Upload, why: str) -> None:
        """Remove an upload whose creation was refused: its id was never given out, so
        there is nobody to answer 410 to, and nothing is written down."""
        self._uploads.pop(upload.id, None)
        await asyncio.to_thread(self.delete_files, upload.id)
        log.info("resumable upload %s removed at its creation (%s)", upload.id, why)

    def delete_files(self, upload_id: str) -> None:
        """Blocking: run it in a thread. The sidecar goes last: bytes without one are
        removed at start-up as partial, a sidecar without bytes is an upload at 0."""
        for path in (self.layout.resumable(upload_id), self.layout.resumable_info(upload_id)):
            path.unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def _ended_file(self) -> AsyncIterator[OrderedDict[str, float]]:
        """The ended ids, read from disk the first time, one change at a time: a change
        and its writing to disk happen under the lock, so an older list never overwrites
        a newer one."""
        if self._ended_lock is None:
            self._ended_lock = asyncio.Lock()
        async with self._ended_lock:
            if not self._ended_loaded:
                self._ended = await asyncio.to_thread(_load_ended, self.layout)
                self._ended_loaded = True
            yield self._ended

    async def sweep(self) -> None:
        for upload in self.expired():
            await self.remove(upload, "expired")

    async def run_expiry(self) -> None:
        """Remove expired uploads as they expire, for as long as the server runs."""
        pause = min(SWEEP_EVERY, max(0.05, self.expiry / 4))
        while True:
            await asyncio.sleep(pause)
            try:
                await self.sweep()
            except OSError as exc:  # a full or read-only disk: try again next time
                log.error("could not remove an expired upload: %s", exc)


def scan(layout: DataLayout, expiry: float, finished: set[str]) -> Scan:
    """The unfinished uploads in uploads/ (blocking; start-up only).

    Removed: expired uploads (their ids written down as ended), bytes without a
    sidecar (their creation was never answered), the leftovers of uploads whose
    task exists (ids in `finished`) and of ended ones.
    """
    now = time.time()
    found = Scan(live=[], removed=[])
    ended = _load_ended(layout)
    before = dict(ended)
    doomed: list[Path] = []
    ids = sorted({upload_id for path in layout.uploads_dir.iterdir()
                  if (upload_id := layout.resumable_id(path))})
    for upload_id in ids:
        data, info = layout.resumable(upload_id), layout.resumable_info(upload_id)
        gone = upload_id in finished or upload_id in ended
        upload = None if gone else _read(info, upload_id)
        if upload is not None:
            stat = _stat(data)
            upload.offset = stat.st_size if stat else 0
            upload.last_active = max(info.stat().st_mtime, stat.st_mtime if stat else 0)
            if upload.offset <= upload.length and upload.expires(expiry) > now:
                found.live.append(upload)
                continue
            ended[upload_id] = now
        doomed.extend(path for path in (data, info) if path.exists())
    _pruned(ended, expiry, now)
    if ended != before:  # written down before the files go, as remove() does
        _save_ended(layout, ended)
    for path in doomed:
        path.unlink()
        found.removed.append(layout.relative(path))
    return found


def _pruned(ended: OrderedDict[str, float], expiry: float,
            now: float | None = None) -> OrderedDict[str, float]:
    """Forget the ids that ended over an expiry period ago, and the oldest past the cap."""
    moment = time.time() if now is None else now
    while ended and (len(ended) > REMEMBER_ENDED
                     or next(iter(ended.values())) + _remembered_for(expiry) <= moment):
        ended.popitem(last=False)
    return ended


def _remembered_for(expiry: float) -> float:
    return max(expiry, REMEMBER_ENDED_FOR)


def _load_ended(layout: DataLayout) -> OrderedDict[str, float]:
    """Blocking. A missing or unreadable file is an empty list: at worst a client hears
    404 instead of 410 for an upload it cannot have back anyway."""
    try:
        said = json.loads(layout.ended_uploads_path.read_text())
        pairs = sorted((float(when), str(upload_id)) for upload_id, when in said.items())
    except FileNotFoundError:
        return OrderedDict()
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("%s is unreadable (%s); ended uploads will answer 404",
                    layout.ended_uploads_path.name, exc)
        return OrderedDict()
    return OrderedDict((upload_id, when) for when, upload_id in pairs)


def _save_ended(layout: DataLayout, ended: Mapping[str, float]) -> None:
    """Blocking: written whole under a temporary name, flushed, renamed, folder flushed.

    A failure (a full disk) is logged, not raised: removing an upload, which frees
    space, must not depend on it, and a lost entry only turns a 410 into a 404.
    """
    target = layout.ended_uploads_path
    try:
        durable.replace_file(target, json.dumps(ended).encode())
    except OSError as exc:
        log.error("could not write %s (%s): ended uploads may answer 404 after a restart",
                  target.name, exc)


def _read(info: Path, upload_id: str) -> Upload | None:
    try:
        said = json.loads(info.read_text())
        upload = Upload(id=upload_id, length=int(said["length"]), order=Order.from_json(said),
                        metadata=str(said.get("metadata", "")), client=str(said.get("client", "")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s is unreadable (%s); its upload is removed", info.name, exc)
        return None
    if upload.length < 0:
        log.warning("%s holds values no creation accepts; its upload is removed", info.name)
        return None
    return upload


def _stat(path: Path) -> os.stat_result | None:
    with contextlib.suppress(FileNotFoundError):
        return path.stat()
    return None


def _create_files(layout: DataLayout, upload_id: str, sidecar: bytes) -> None:
    """Blocking: an upload's empty bytes' file, then its sidecar, durably: the sidecar's
    rename flushes the folder, which keeps both names."""
    layout.resumable(upload_id).touch()
    durable.replace_file(layout.resumable_info(upload_id), sidecar,
                         layout.partial_resumable_info(upload_id))


RESUMABLE = web.AppKey("resumable", ResumableUploads)
