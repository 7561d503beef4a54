"""Item 7 of `make bench`: the queue mode (--queue), against the single process.

A redis-server of its own (loopback, free port, persistence off), a web process with
--queue, and `video_async worker` processes, all on this machine and one data dir:

- pickup: task created -> PROCESSING on an idle worker, through Redis;
- one job's wall time (started -> finished) through the queue against the in-process
  worker, same clip, paired and interleaved;
- a batch of clips with two worker processes against one, reported as measured: on a
  machine whose cores one ffmpeg already fills, a second worker adds no speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bench.client import delete, elapsed_ms, finished, started, upload, wait_task
from bench.servers import ROOT, Server, free_port, stop
from bench.stats import percentile, ratios

log = logging.getLogger("bench")

ITEM = "7 queue"
PICKUPS = 20
BATCH = 4  # clips per batch, uploaded at once
BATCH_RUNS = 3  # per worker count: each run transcodes BATCH clips
HEARTBEAT = "2"


class Reporting(Protocol):
    """The part of run.Report this item uses (run.py imports this module, not the reverse)."""
    raw: dict[str, Any]
    notes: list[str]

    def figure(self, item: str, name: str, unit: str, values: list[float], digits: int = 2) -> Any: ...
    def bar(self, item: str, text: str, value: float, limit: float,
            higher_is_better: bool = False) -> None: ...


Start = Callable[[str, str, list[str]], Awaitable[Server]]


@contextlib.asynccontextmanager
async def redis_server(folder: Path) -> AsyncIterator[str]:
    """redis-server on a free loopback port until the block ends; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: install Debian's redis-server (make test does)")
    port = free_port()
    with (folder / "redis.log").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
            "no", "--dir", str(folder), stdout=out, stderr=out)
    try:
        async with asyncio.timeout(20):
            while True:
                with contextlib.suppress(OSError):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(b"PING\r\n")
                    answer = await reader.readline()
                    writer.close()
                    await writer.wait_closed()
                    if answer == b"+PONG\r\n":
                        break
                await asyncio.sleep(0.05)  # polling interval, not a synchronisation
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        await stop(proc)


@contextlib.asynccontextmanager
async def worker(url: str, data_dir: Path, log_file: Path) -> AsyncIterator[None]:
    with log_file.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "video_async", "worker", "--queue", url, "--data-dir",
            str(data_dir), "--queue-heartbeat", HEARTBEAT, "--log-level", "WARNING",
            cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        yield
    finally:
        await stop(proc)


async def workers_ready(session: aiohttp.ClientSession, app: Server, count: int) -> None:
    async with asyncio.timeout(30):
        while True:
            async with session.get(app.url + "/healthz") as response:
                queue = (await response.json())["queue"]
            if queue["reachable"] and len(queue["workers"]) == count:
                return
            await asyncio.sleep(0.05)  # polling interval, not a synchronisation


async def job_seconds(session: aiohttp.ClientSession, app: Server, clip: Path) -> float:
    """One task's started -> finished, as its own timestamps say; deleted after."""
    _, task = await upload(session, app, clip, resolution="720")
    task = await wait_task(session, app, task["id"], finished, timeout=120, interval=0.05)
    await delete(session, app, task["id"])
    return elapsed_ms(task, "started_at", "finished_at") / 1000


async def batch_seconds(session: aiohttp.ClientSession, app: Server, clip: Path) -> float:
    """BATCH uploads at once: first upload sent -> last task finished."""
    began = time.perf_counter()
    answers = await asyncio.gather(*(upload(session, app, clip, resolution="720")
                                     for _ in range(BATCH)))
    done = [await wait_task(session, app, task["id"], finished, timeout=300, interval=0.05)
            for _, task in answers]
    seconds = time.perf_counter() - began
    for task in done:
        await delete(session, app, task["id"])
    return seconds


async def bench_queue(session: aiohttp.ClientSession, start: Start, scratch: Path,
                      small: Path, hd: Path, runs: int, report: Reporting) -> None:
    folder = scratch / "queue"
    folder.mkdir()
    data_dir = folder / "data"
    quiet = ["--log-level", "WARNING"]
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(redis_server(folder))
        app = await start("queue-web", "video_async", ["--data-dir", str(data_dir), "--queue", url,
                                                       "--queue-heartbeat", HEARTBEAT, *quiet])
        single = await start("single", "video_async", ["--data-dir", str(folder / "single"),
                                                       *quiet])
        await stack.enter_async_context(worker(url, data_dir, folder / "worker-1.log"))
        await workers_ready(session, app, 1)

        pickups: list[float] = []
        for _ in range(PICKUPS):
            _, task = await upload(session, app, small)
            task = await wait_task(session, app, task["id"], started, timeout=30)
            pickups.append(elapsed_ms(task, "created_at", "started_at"))
            # finished before the next: the worker is idle again (a Delete would abort the job)
            await wait_task(session, app, task["id"], finished, timeout=60)
            await delete(session, app, task["id"])

        queued_s: list[float] = []
        single_s: list[float] = []
        for run in range(runs):
            pair = [(queued_s, app), (single_s, single)]
            for samples, server in pair if run % 2 == 0 else reversed(pair):
                samples.append(await job_seconds(session, server, hd))
            log.info("queue run %d: queue %.2f s, in-process %.2f s", run + 1, queued_s[-1],
                     single_s[-1])

        one_s: list[float] = []
        two_s: list[float] = []
        for run in range(BATCH_RUNS):
            one_s.append(await batch_seconds(session, app, hd))
            async with worker(url, data_dir, folder / f"worker-2-{run}.log"):
                await workers_ready(session, app, 2)
                two_s.append(await batch_seconds(session, app, hd))
            log.info("queue batch run %d: one worker %.1f s, two %.1f s", run + 1, one_s[-1],
                     two_s[-1])

    pickup = report.figure(ITEM, "created -> PROCESSING, via Redis", "ms", pickups, 0)
    report.figure(ITEM, "pickup p90, via Redis", "ms", [percentile(pickups, 0.9)], 0)
    report.figure(ITEM, "job started -> finished, queue", "s", queued_s)
    report.figure(ITEM, "job started -> finished, in-process", "s", single_s)
    wall = report.figure(ITEM, "queue / in-process (paired)", "x", ratios(queued_s, single_s), 3)
    report.figure(ITEM, f"{BATCH} clips, one worker", "s", one_s, 1)
    report.figure(ITEM, f"{BATCH} clips, two workers", "s", two_s, 1)
    report.figure(ITEM, "two workers / one (paired)", "x", ratios(two_s, one_s), 3)
    report.bar(ITEM, "pickup p50 <= 50 ms, via Redis", pickup.median, 50.0)
    report.bar(ITEM, "job via queue <= 1.05x in-process", wall.median, 1.05)
    report.notes.append(f"Item 7 runs Redis, the web process and the workers on this machine "
                        f"({BATCH} clips a batch): two workers share the same cores, so they "
                        "gain only what one ffmpeg leaves idle (its start, probe and thumbnail), "
                        "not what a second machine would bring.")
    report.raw["queue"] = {"pickup_ms": pickups, "queue_s": queued_s, "in_process_s": single_s,
                           "batch_one_worker_s": one_s, "batch_two_workers_s": two_s}
