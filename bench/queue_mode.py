"""Item 7 of `make bench`: the queue mode (--queue), against the single process.

A redis-server of its own (loopback, free port, persistence off), a web process with
--queue, and `video_async worker` processes, all on this machine and one data dir (the
workers of a folder of their own: their own web process, data dir and Redis database):

- pickup: task created -> PROCESSING on an idle worker, through Redis;
- one job's wall time (started -> finished) through the queue against the in-process
  worker, same clip, paired and interleaved: with the worker on the web process's data
  dir, and with a worker in a folder of its own (--server, --worker-token) that fetches
  the source and sends the output back over HTTP;
- for a 199 MiB source, through a worker of its own folder: the seconds it spends
  fetching the source and sending the output back (timed by a pass-through on the
  worker routes, bench/worker_proxy.py), as a share of the job's wall time, and that
  job against the same one without the pass-through, interleaved, to show its cost;
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
from bench.worker_proxy import timing_proxy

log = logging.getLogger("bench")

ITEM = "7 queue"
PICKUPS = 20
BATCH = 4  # clips per batch, uploaded at once
BATCH_RUNS = 3  # per worker count: each run transcodes BATCH clips
HEARTBEAT = "2"
MIB = 1024 * 1024
WORKER_TOKEN = "bench-w0rker-t0ken"


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
async def worker(url: str, data_dir: Path, log_file: Path,
                 server: str | None = None) -> AsyncIterator[None]:
    """A worker on data_dir: the web process's own, or (given server) a folder of its own
    with the files moved over HTTP."""
    remote = ["--server", server, "--worker-token", WORKER_TOKEN] if server else []
    with log_file.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "video_async", "worker", "--queue", url, "--data-dir",
            str(data_dir), "--queue-heartbeat", HEARTBEAT, "--log-level", "WARNING", *remote,
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
    return elapsed_ms(await completed(session, app, clip), "started_at", "finished_at") / 1000


async def completed(session: aiohttp.ClientSession, app: Server, clip: Path) -> dict[str, Any]:
    """One task, uploaded and run to COMPLETED (else RuntimeError); deleted after."""
    _, task = await upload(session, app, clip, resolution="720")
    task = await wait_task(session, app, task["id"], finished, timeout=300, interval=0.05)
    if task["state"] != "COMPLETED":
        raise RuntimeError(f"task {task['id']} ended {task['state']}: {task.get('error')}")
    await delete(session, app, task["id"])
    return task


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
                      small: Path, hd: Path, big: Path, runs: int, report: Reporting) -> None:
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
        # the worker of a folder of its own: a web process of its own on another Redis
        # database, so the shared-folder worker never takes its jobs
        remote_url = url.removesuffix("/0") + "/1"
        remote_app = await start("remote-web", "video_async", [
            "--data-dir", str(folder / "remote-web"), "--queue", remote_url,
            "--worker-token", WORKER_TOKEN, "--queue-heartbeat", HEARTBEAT, *quiet])
        await stack.enter_async_context(worker(remote_url, folder / "remote-worker",
                                               folder / "remote-worker.log", remote_app.url))
        await workers_ready(session, remote_app, 1)

        pickups: list[float] = []
        for _ in range(PICKUPS):
            _, task = await upload(session, app, small)
            task = await wait_task(session, app, task["id"], started, timeout=30)
            pickups.append(elapsed_ms(task, "created_at", "started_at"))
            # finished before the next: the worker is idle again (a Delete would abort the job)
            await wait_task(session, app, task["id"], finished, timeout=60)
            await delete(session, app, task["id"])

        queued_s: list[float] = []
        remote_s: list[float] = []
        single_s: list[float] = []
        for run in range(runs):
            steps = [(queued_s, app), (remote_s, remote_app), (single_s, single)]
            for samples, server in steps[run % 3:] + steps[:run % 3]:  # each first in turn
                samples.append(await job_seconds(session, server, hd))
            log.info("queue run %d: queue %.2f s, over HTTP %.2f s, in-process %.2f s", run + 1,
                     queued_s[-1], remote_s[-1], single_s[-1])

        # a 199 MiB source through a worker of its own folder behind the timing pass-through,
        # on a third Redis database (the direct one above must not take these jobs)
        big_url = url.removesuffix("/0") + "/2"
        big_app = await start("big-web", "video_async", [
            "--data-dir", str(folder / "big-web"), "--queue", big_url,
            "--worker-token", WORKER_TOKEN, "--queue-heartbeat", HEARTBEAT, *quiet])
        proxy_url, timings = await stack.enter_async_context(timing_proxy(big_app.url))
        await stack.enter_async_context(worker(big_url, folder / "big-worker",
                                               folder / "big-worker.log", proxy_url))
        await workers_ready(session, big_app, 1)
        big_wall_s: list[float] = []
        fetch_s: list[float] = []
        send_s: list[float] = []
        sent_mib: list[float] = []
        big_direct_s: list[float] = []  # the same job without the pass-through: what it costs
        for run in range(runs):
            if run % 2:
                big_direct_s.append(await job_seconds(session, remote_app, big))
            task = await completed(session, big_app, big)
            if not run % 2:
                big_direct_s.append(await job_seconds(session, remote_app, big))
            big_wall_s.append(elapsed_ms(task, "started_at", "finished_at") / 1000)
            fetch_s.append(timings.of(task["id"], "source"))
            send_s.append(timings.of(task["id"], "output", "thumbnail"))
            sent_mib.append(task["output"]["size"] / MIB)
            log.info("queue big source run %d: job %.2f s (%.2f s direct), fetch %.2f s, "
                     "send %.2f s (%.0f MiB)", run + 1, big_wall_s[-1], big_direct_s[-1],
                     fetch_s[-1], send_s[-1], sent_mib[-1])

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
    report.figure(ITEM, "job started -> finished, queue over HTTP", "s", remote_s)
    wall = report.figure(ITEM, "queue / in-process (paired)", "x", ratios(queued_s, single_s), 3)
    over_http = report.figure(ITEM, "queue over HTTP / in-process (paired)", "x",
                              ratios(remote_s, single_s), 3)
    big_mib = f"{big.stat().st_size / MIB:.0f} MiB"
    report.figure(ITEM, f"{big_mib} source: job, over HTTP", "s", big_direct_s)
    report.figure(ITEM, f"{big_mib} source: job, through pass-through", "s", big_wall_s)
    report.figure(ITEM, f"{big_mib} source: pass-through / direct", "x",
                  ratios(big_wall_s, big_direct_s), 3)
    report.figure(ITEM, f"{big_mib} source: fetch it", "s", fetch_s)
    report.figure(ITEM, f"{big_mib} source: its output", "MiB", sent_mib, 1)
    report.figure(ITEM, f"{big_mib} source: send output back", "s", send_s)
    report.figure(ITEM, f"{big_mib} source: (fetch + send) / job", "x",
                  ratios([f + s for f, s in zip(fetch_s, send_s, strict=True)], big_wall_s), 3)
    report.figure(ITEM, f"{BATCH} clips, one worker", "s", one_s, 1)
    report.figure(ITEM, f"{BATCH} clips, two workers", "s", two_s, 1)
    report.figure(ITEM, "two workers / one (paired)", "x", ratios(two_s, one_s), 3)
    report.bar(ITEM, "pickup p50 <= 50 ms, via Redis", pickup.median, 50.0)
    report.bar(ITEM, "job via queue <= 1.05x in-process", wall.median, 1.05)
    report.bar(ITEM, "job via queue over HTTP <= 1.10x in-process", over_http.median, 1.10)
    report.notes.append(f"Item 7 runs Redis, the web process and the workers on this machine "
                        f"({BATCH} clips a batch): two workers share the same cores, so they "
                        "gain only what one ffmpeg leaves idle (its start, probe and thumbnail), "
                        "not what a second machine would bring.")
    report.raw["queue"] = {"pickup_ms": pickups, "queue_s": queued_s, "in_process_s": single_s,
                           "over_http_s": remote_s, "big_source_bytes": big.stat().st_size,
                           "big_over_http_s": big_wall_s, "big_fetch_s": fetch_s,
                           "big_send_s": send_s, "big_output_mib": sent_mib,
                           "big_over_http_direct_s": big_direct_s,
                           "batch_one_worker_s": one_s, "batch_two_workers_s": two_s}
