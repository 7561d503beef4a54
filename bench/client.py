"""The benchmark's HTTP client: streamed multipart uploads, task polling, and latency probes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from .servers import Server

UPLOAD_TIMEOUT = 60.0
TASK_TIMEOUT = 120.0
# Big reads keep the client's thread hops few (aiohttp's own file payload reads
# 256 KiB at a time), so the client never becomes what the figures measure.
READ_SIZE = 4 * 1024 * 1024
PACED_SIZE = 256 * 1024


class FilePayload(Payload):
    """A file streamed from disk: each read runs in a thread while the previous chunk is sent."""

    def __init__(self, path: Path, rate: float | None = None) -> None:
        super().__init__(path, content_type="video/mp4", filename=path.name)
        self._path = path
        self._size = path.stat().st_size
        self._rate = rate  # bytes per second, like a client on a slower link; None: full speed

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a video payload has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        left = self._size if content_length is None else min(self._size, content_length)
        # paced sends go in small pieces, as a real link delivers them
        piece = READ_SIZE if self._rate is None else PACED_SIZE
        loop = asyncio.get_running_loop()
        began, sent = loop.time(), 0
        source: BinaryIO = await asyncio.to_thread(self._path.open, "rb")
        try:
            reading = asyncio.ensure_future(asyncio.to_thread(source.read, min(piece, left)))
            while left > 0:
                chunk = await reading
                if not chunk:
                    break
                left -= len(chunk)
                reading = asyncio.ensure_future(asyncio.to_thread(source.read, min(piece, left)))
                if self._rate is not None:
                    ahead = began + sent / self._rate - loop.time()
                    if ahead > 0:
                        await asyncio.sleep(ahead)  # pacing, not a synchronisation
                await writer.write(chunk)
                sent += len(chunk)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ValueError):
                await reading
            await asyncio.to_thread(source.close)


async def upload(session: aiohttp.ClientSession, server: Server, path: Path,
                 resolution: str = "480", rate: float | None = None) -> tuple[float, dict[str, Any]]:
    """POST one file as multipart, at most `rate` bytes/s if given; (wall seconds, the JSON answer)."""
    with aiohttp.MultipartWriter("form-data") as form:
        form.append(resolution).set_content_disposition("form-data", name="resolution")
        video = form.append_payload(FilePayload(path, rate))
        video.set_content_disposition("form-data", name="video", filename=path.name)
    started = time.perf_counter()
    async with asyncio.timeout(UPLOAD_TIMEOUT):
        async with session.post(server.url + "/videos/upload", data=form) as response:
            body = await response.json()
            seconds = time.perf_counter() - started
    if response.status != 201:
        raise RuntimeError(f"upload to {server.name} answered {response.status}: {body}")
    return seconds, body


async def delete(session: aiohttp.ClientSession, server: Server, task_id: str) -> None:
    async with session.delete(f"{server.url}/tasks/{task_id}") as response:
        if response.status != 200:
            raise RuntimeError(f"DELETE {task_id} answered {response.status}")


async def wait_task(session: aiohttp.ClientSession, server: Server, task_id: str,
                    done: Callable[[dict[str, Any]], bool], timeout: float = TASK_TIMEOUT,
                    interval: float = 0.02) -> dict[str, Any]:
    """Poll GET /tasks/{id} until done(task) holds; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            async with session.get(f"{server.url}/tasks/{task_id}") as response:
                task: dict[str, Any] = await response.json()
            if done(task):
                return task
            await asyncio.sleep(interval)  # polling interval, not a synchronisation


def finished(task: dict[str, Any]) -> bool:
    if task["state"] == "FAILED":
        raise RuntimeError(f"task {task['id']} failed: {task['error']}")
    return bool(task["state"] == "COMPLETED")


def started(task: dict[str, Any]) -> bool:
    return task["started_at"] is not None


def moment(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def elapsed_ms(task: dict[str, Any], since: str, until: str) -> float:
    return (moment(task[until]) - moment(task[since])).total_seconds() * 1000


async def get_seconds(session: aiohttp.ClientSession, url: str,
                      headers: dict[str, str] | None = None, status: int = 200) -> float:
    """Wall time of one GET, body read to the end."""
    began = time.perf_counter()
    async with session.get(url, headers=headers) as response:
        await response.read()
    seconds = time.perf_counter() - began
    if response.status != status:
        raise RuntimeError(f"GET {url} answered {response.status}, expected {status}")
    return seconds


async def latencies(session: aiohttp.ClientSession, url: str, count: int, timeout: float,
                    stop: asyncio.Event | None = None, pace: float = 0.005) -> list[float]:
    """GETs one after another, one every `pace` seconds at most, like a page polling fast.

    Bounded three ways: `count` requests, `timeout` seconds, or `stop` being set.
    A back-to-back probe would itself be a load on a 2-core machine and crowd
    out the uploads it is meant to observe; pacing it keeps it a probe.
    """
    samples: list[float] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(samples) < count and loop.time() < deadline and not (stop and stop.is_set()):
        began = loop.time()
        seconds = await get_seconds(session, url)
        if stop is None or not stop.is_set():  # a request that ended after stop is not "during"
            samples.append(seconds)
        rest = pace - (loop.time() - began)
        if rest > 0:
            if stop is None:
                await asyncio.sleep(rest)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rest)
    return samples


async def health(session: aiohttp.ClientSession, server: Server) -> dict[str, Any]:
    async with session.get(server.url + "/healthz") as response:
        body: dict[str, Any] = await response.json()
    return body


async def watch_lag(session: aiohttp.ClientSession, server: Server, stop: asyncio.Event,
                    timeout: float, interval: float = 0.5) -> float:
    """The worst lag the server saw until stop: its largest overshoot of a 10 ms sleep
    during one run, ms.

    `max_2s` is the worst of the server's current and previous second, so asking
    every half second sees every sample (and one last time after stop, the end's).
    """
    worst = 0.0
    async with asyncio.timeout(timeout):
        while True:
            worst = max(worst, (await health(session, server))["event_loop_lag_ms"]["max_2s"])
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    return worst


async def own_lag(stop: asyncio.Event, timeout: float, interval: float = 0.01) -> float:
    """The worst lag of this process's own loop until stop, ms: a control for the server's.

    When the server and the benchmark stall at the same moment, the machine
    stalled (other work on the shared cores), not the server's loop.
    """
    loop = asyncio.get_running_loop()
    worst = 0.0
    async with asyncio.timeout(timeout):
        while not stop.is_set():
            began = loop.time()
            await asyncio.sleep(interval)
            worst = max(worst, loop.time() - began - interval)
    return worst * 1000
