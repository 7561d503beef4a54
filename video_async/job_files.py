"""Where a queue worker's files come from and go to (remote_worker.py): one job, two ways.

- SharedFolder: the worker sees the server's data dir (NFS, a mounted volume): the source
  is read where it is, and the output written where the server serves it from.
- FromServer: the worker has a folder of its own and nothing shared but Redis. The source
  is fetched from the web process over HTTP, the output and thumbnail sent back
  (routes/workers.py), and the worker's copies removed. Both ways are streamed, go on
  from where they stopped when the connection breaks, and are checked by length and
  SHA-256.

Either way, a worker that cannot do its part (the source is not where it should be, the
server does not answer or refuses its token) raises CannotRunHere: its job goes back
to the queue, for another worker, and this one stops, saying why in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import aiofiles
import aiofiles.os
import aiohttp

from .jobs import CONTRACT, VERSION, WORKER_PREFIX, CannotRunHere, TranscodeJob, file_sha256
from .layout import SOURCE_EXTENSIONS, DataLayout
from .receive import receive
from .worker import Transcoded, remove

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
PATIENCE = 60.0  # seconds a transfer goes on trying while the server does not answer
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)  # then every 2 s, until PATIENCE has passed


class TaskGone(Exception):
    """The server no longer has the task (deleted, or ended): nothing to fetch or send."""


class JobFiles(Protocol):
    async def source(self, job: TranscodeJob) -> Path:
        """The source as a file on this machine; ValueError for a name not the server's."""

    async def deliver(self, job: TranscodeJob, outcome: Transcoded) -> None:
        """What the transcode made, where the server serves it from (done when this returns)."""

    async def clean(self, job: TranscodeJob) -> None:
        """This machine's copies of the task's files, if they are only copies."""


class SharedFolder:
    def __init__(self, layout: DataLayout) -> None:
        self.layout = layout

    async def source(self, job: TranscodeJob) -> Path:
        path = job.source_in(self.layout)
        if not await aiofiles.os.path.isfile(path):
            raise CannotRunHere(
                f"the source of task {job.task_id} is not at {path}: this worker's "
                f"--data-dir ({self.layout.data_dir}) is not the server's data dir, or the "
                "shared folder is not mounted here")
        return path

    async def deliver(self, job: TranscodeJob, outcome: Transcoded) -> None:
        pass  # written in place

    async def clean(self, job: TranscodeJob) -> None:
        pass  # the server's own files


class FromServer:
    def __init__(self, server_url: str, token: str, layout: DataLayout) -> None:
        self.url, self.layout = server_url, layout
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the loop that uses it
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=60))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def check(self) -> str | None:
        """The start-up check: None if the server answers, takes the token and runs the same
        version; else the one line that says what is wrong."""
        where = f"the server at {self.url}"
        try:
            async with self.session.get(self.url + WORKER_PREFIX + "hello") as response:
                if response.status == 401:
                    return (f"{where} refused the worker token: give the one it was started "
                            "with (--worker-token, or VIDEO_ASYNC_WORKER_TOKEN)")
                if response.status == 404:
                    return (f"{where} has no worker routes: start it with --worker-token, or is "
                            "it another program?")
                if response.status != 200:
                    return f"{where} answered {response.status} to the worker's hello"
                said: dict[str, Any] = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return f"{where} does not answer ({type(exc).__name__}: {exc}): check --server"
        if said.get("version") != VERSION or said.get("contract") != CONTRACT:
            return (f"{where} runs video_async {said.get('version')} (job contract "
                    f"{said.get('contract')}), this worker {VERSION} (contract {CONTRACT}): "
                    "install the same version on both")
        return None

    async def source(self, job: TranscodeJob) -> Path:
        target = job.source_in(self.layout)  # where the server keeps it, in our own folder
        url = f"{self.url}{WORKER_PREFIX}tasks/{job.task_id}/source"

        async def attempt() -> bool:
            have = await _size(target)
            headers = {"Range": f"bytes={have}-"} if have else {}
            async with self.session.get(url, headers=headers) as response:
                self._refused(response)
                if response.status == 416:  # nothing after what we have: start again
                    await _remove(target)
                    return False
                response.raise_for_status()
                offset = have if response.status == 206 else 0
                length = int(response.headers["X-Content-Length"])
                checksum = response.headers["X-Content-SHA256"]
                await receive(response.content.iter_chunked(CHUNK), target, length, offset)
            if await _size(target) < length:
                return False  # the body ended short: go on from there
            if await file_sha256(target) != checksum:
                log.warning("task %s: its source came damaged; fetching it again", job.task_id)
                await _remove(target)
                return False
            return True

        await self._until_done(f"fetching the source of task {job.task_id}", attempt)
        return target

    async def deliver(self, job: TranscodeJob, outcome: Transcoded) -> None:
        task_id = job.task_id
        await self._send(task_id, "output", self.layout.output(task_id, job.order.output_extension))
        if outcome.thumbnail is not None:
            await self._send(task_id, "thumbnail", outcome.thumbnail)
        if outcome.ladder:  # each file of the folder, then the word that all are there
            for path in sorted(await asyncio.to_thread(lambda: list(self.layout.ladder(task_id).iterdir()))):
                await self._send(task_id, f"ladder/{path.name}", path)
            url = f"{self.url}{WORKER_PREFIX}tasks/{task_id}/ladder"

            async def finish() -> bool:
                async with self.session.post(url) as response:
                    self._refused(response)
                    response.raise_for_status()
                    return True
            await self._until_done(f"completing the ladder of task {task_id}", finish)

    async def _send(self, task_id: str, kind: str, path: Path) -> None:
        url = f"{self.url}{WORKER_PREFIX}tasks/{task_id}/{kind}"
        length, checksum = await _size(path), await file_sha256(path)

        async def attempt() -> bool:
            async with self.session.head(url) as response:
                self._refused(response)
                response.raise_for_status()
                offset = int(response.headers["Upload-Offset"])
            if offset == length:
                return True  # all there (from an attempt whose answer was lost)
            headers = {"Upload-Offset": str(offset), "Upload-Length": str(length),
                       "Upload-SHA256": checksum, "Content-Type": "application/octet-stream"}
            async with self.session.patch(url, data=_read_from(path, offset),
                                          headers=headers) as response:
                self._refused(response)
                if response.status in (409, 422):  # elsewhere than we thought, or damaged
                    return False
                response.raise_for_status()
                return int(response.headers["Upload-Offset"]) == length

        await self._until_done(f"sending the {kind} of task {task_id}", attempt)

    async def clean(self, job: TranscodeJob) -> None:
        layout, task_id, made = self.layout, job.task_id, job.order.output_extension
        for path in (*(layout.source(task_id, ext) for ext in SOURCE_EXTENSIONS),
                     layout.partial_output(task_id, made), layout.output(task_id, made),
                     layout.thumbnail(task_id)):
            await _remove(path)
        await remove(layout.partial_ladder(task_id), layout.ladder(task_id))

    def _refused(self, response: aiohttp.ClientResponse) -> None:
        if response.status == 401:
            raise CannotRunHere(f"the server at {self.url} refused the worker token")
        if response.status == 404:
            raise TaskGone

    async def _until_done(self, doing: str, attempt: Callable[[], Awaitable[bool]]) -> None:
        """Try until attempt() says it is done. What arrived before the network broke stays
        on disk (the receiving side's too), and the next try goes on from it; after
        PATIENCE seconds without an answer from the server, CannotRunHere."""
        loop = asyncio.get_running_loop()
        given_up_at = loop.time() + PATIENCE
        failures = 0
        while True:
            try:
                if await attempt():
                    return
                continue
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if loop.time() >= given_up_at:
                    raise CannotRunHere(f"{doing}: the server at {self.url} has not answered "
                                        f"for {PATIENCE:g} s ({type(exc).__name__})") from exc
                if failures == 0:
                    log.warning("%s: %s; trying again", doing, exc or type(exc).__name__)
            await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
            failures += 1


async def _read_from(path: Path, offset: int) -> AsyncIterator[bytes]:
    async with aiofiles.open(path, "rb") as file:
        await file.seek(offset)
        while chunk := await file.read(CHUNK):
            yield chunk


async def _size(path: Path) -> int:
    try:
        return (await aiofiles.os.stat(path)).st_size
    except FileNotFoundError:
        return 0


async def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        await aiofiles.os.remove(path)
