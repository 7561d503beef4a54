"""The queue mode's other processes: a Redis of the test's own, and `video_async worker`.

Redis runs on a free loopback port, from a folder of its own, with persistence off: a
restart empties it, as a Redis without a disk would be after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from saq.job import TERMINAL_STATUSES, Job
from saq.queue.redis import RedisQueue

from .clips import Clips, realtime_ffmpeg
from .internals import QUEUE_FUNCTION, QUEUE_NAME
from .servers import Program, Server, free_port, start_server, stopping
from .uploading import Http, get_json, transcoding, upload_ok
from .waiting import wait_until


class Redis:
    def __init__(self, folder: Path, password: str = "") -> None:
        """password: asked of every client (requirepass), as docs/deploy.md's Redis asks."""
        self.folder, self.port, self.password = folder, free_port(), password
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """redis-server on this port (the same one after a restart), once it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server not found: install Debian's redis-server package "
                        "(make test does)")
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.folder),
                *(["--requirepass", self.password] if self.password else []),
                stdout=log, stderr=subprocess.STDOUT)
        await wait_until(self._answers, 20, "redis-server to answer")

    async def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:
            pytest.fail(f"redis-server exited with {self.proc.returncode}:\n"
                        + (self.folder / "redis.log").read_text(errors="replace"))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            if self.password:
                writer.write(f"AUTH {self.password}\r\n".encode())
                if await reader.readline() != b"+OK\r\n":
                    return False
            writer.write(b"PING\r\n")
            return await reader.readline() == b"+PONG\r\n"
        finally:
            writer.close()
            await writer.wait_closed()

    async def kill(self) -> None:
        """SIGKILL: Redis gone at once, and (persistence off) all it held with it."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def restart_empty(self) -> None:
        await self.kill()
        await self.start()


async def run_job_as_written(redis: Redis, **kwargs: Any) -> Any:
    """A job written straight into Redis, as anyone who can reach it could write one, with
    these arguments: its result, once a worker has run it."""
    queue = RedisQueue.from_url(redis.url, name=QUEUE_NAME)
    await queue.connect()
    try:
        # retries, as the server's own jobs have: a worker's first sweep may take a job
        # it has just dequeued for abandoned, and aborts it unless it may run again
        job = await queue.enqueue(Job(function=QUEUE_FUNCTION, key="written-by-hand",
                                      kwargs=kwargs, timeout=0, retries=3))
        assert job is not None

        async def ended() -> Job | None:
            current = await queue.job(job.key)
            return current if current is not None and current.status in TERMINAL_STATUSES else None
        done: Job = await wait_until(ended, 60, "the job written into Redis to end")
        return done.result
    finally:
        await queue.disconnect()


class Worker(Program):
    """`python -m video_async worker` as a process of its own."""

    def completed(self, task_id: str) -> int:
        """How many times this worker finished a transcode of the task."""
        return self.output().count(f"job {task_id} completed")


async def start_worker(data_dir: Path, queue: str, *flags: str, name: str = "worker") -> Worker:
    """A worker process on the shared data dir (started; see workers_ready for registered)."""
    log = data_dir.parent / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "video_async", "worker", "--queue", queue,
            "--data-dir", str(data_dir), *flags, stdout=out, stderr=subprocess.STDOUT)
    return Worker(proc, log)


async def jobs_queued(http: Http, count: int) -> bool:
    """The server reaches Redis, and sees `count` jobs waiting there: a condition for wait_until."""
    health = await get_json(http, "/healthz")
    return bool(health["queue"]["reachable"]) and health["queue"]["jobs_queued"] == count


async def workers_ready(http: Http, count: int) -> list[dict[str, object]]:
    """The workers as the server's /healthz lists them, once `count` have registered."""
    async def registered() -> list[dict[str, object]] | None:
        workers: list[dict[str, object]] = (await get_json(http, "/healthz"))["queue"]["workers"]
        return workers if len(workers) == count else None
    ready: list[dict[str, object]] = await wait_until(registered, 30, f"{count} workers")
    return ready


@dataclass
class JobOnWorker:
    server: Server
    worker: Worker
    session: aiohttp.ClientSession  # the server's
    task: dict[str, Any]  # as GET /tasks/{id} showed it, PROCESSING


@contextlib.asynccontextmanager
async def a_job_mid_transcode(folder: Path, redis: Redis, clips: Clips,
                              *flags: str) -> AsyncIterator[JobOnWorker]:
    """A web process and one worker on `redis`, sharing folder/data, and a task of
    clips.long() whose transcode is running on that worker (at the video's own speed, so
    it still runs for about 12 s)."""
    data_dir = folder / "data"
    server = await start_server(data_dir, "--queue", redis.url, *flags)
    slow = realtime_ffmpeg(folder)
    worker = await start_worker(data_dir, redis.url, "--ffmpeg", str(slow), *flags)
    async with stopping(server, worker), server.session() as session:
        await workers_ready(session, 1)
        task = await upload_ok(session, clips.long(), "480")
        yield JobOnWorker(server, worker, session, await transcoding(session, task["id"]))


class HoldingRelay:
    """A stand-in for the network between workers and the web process: a TCP relay that
    lets `limit` bytes through in one direction ("down": to the workers; "up": to the
    server), counted over all its connections, and then holds the rest. A transfer is
    caught mid-way, whatever the machine's speed; `held` says when."""

    def __init__(self, upstream_port: int, direction: str, limit: int) -> None:
        self.upstream_port, self.direction, self.limit = upstream_port, direction, limit
        self.passed = 0
        self.held = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def release(self, upstream_port: int | None = None) -> None:
        """No more holding; every connection through it so far is cut (as a restarted
        server's would be), and new ones go to upstream_port if given."""
        self.limit = 1 << 62
        if upstream_port is not None:
            self.upstream_port = upstream_port
        for pump in list(self._pumps):
            pump.cancel()
        for writer in self._writers:
            writer.close()

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        down = asyncio.create_task(self._pump(up_reader, writer, self.direction == "down"))
        up = asyncio.create_task(self._pump(reader, up_writer, self.direction == "up"))
        self._pumps |= {down, up}
        for pump in (down, up):
            pump.add_done_callback(self._pumps.discard)
        # one side ended (a process killed, a connection closed): the other side ends too
        await asyncio.wait([down, up], return_when=asyncio.FIRST_COMPLETED)
        for pump in (down, up):
            pump.cancel()
        for end in (writer, up_writer):
            end.close()

    async def _pump(self, source: asyncio.StreamReader, target: asyncio.StreamWriter,
                    counted: bool) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while chunk := await source.read(65536):
                if counted:
                    room = max(0, self.limit - self.passed)
                    if len(chunk) > room:
                        target.write(chunk[:room])
                        self.passed += room
                        await target.drain()
                        self.held.set()
                        await asyncio.Event().wait()  # held until cancelled
                    self.passed += len(chunk)
                target.write(chunk)
                await target.drain()
