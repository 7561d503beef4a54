"""`make bench`: the performance figures of video_async, as ratios to same-run references.

The machines are shared and noisy, so each figure is taken over several runs
(median, min and max) and compared with a reference measured in the same run,
interleaved with it. Every server is its own process on loopback, started
here and stopped here; every loop is bounded in count and in time. The upload
references are aiohttp handlers taking the raw body (bench/sink_server.py):
discarded, stored with blocking writes, and stored then fdatasync'ed.

    python -m bench.run [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import media, tus
from bench.client import (delete, elapsed_ms, finished, get_seconds, health, latencies, own_lag,
                          started, upload, wait_task, watch_lag)
from bench.many_uploads import COUNTS as MANY_COUNTS
from bench.ladder import bench_ladder
from bench.many_uploads import bench_many
from bench.queue_mode import bench_queue
from bench.servers import ROOT, Server, proc_status, running, stop, timed_exec
from bench.stats import Summary, percentile, ratios
from video_async import ffmpeg, probing
from video_async.config import Settings

log = logging.getLogger("bench")

MB = 1_000_000  # throughput is in MB/s, decimal, as disks and networks quote it
MIB = 1024 * 1024
RESULTS = Path(__file__).resolve().parent / "results.json"
TOTAL_TIMEOUT = 1500.0  # about 13 minutes when all is well (item 10 is 5 of them); this bound is for a stuck run
# what the server reads an upload with when started with no flags: the direct runs match it
LIMITS = ffmpeg.Limits.of(Settings())
IDLE_SAMPLES = 300  # GET /tasks per run with nothing else happening (1.5 s at the probe pace)
BUSY_SAMPLES = 5000  # upper bound while uploads run; the uploads end it first
PICKUP_UPLOADS = 20
BURSTS = 5
LIST_SIZES = (10, 1_000, 10_000)
# Item 6's page polls: one task's progress moves every PROGRESS_STEP s, and a page asks
# every POLL_PACE s, so each poll finds that one task changed (the real page asks every
# 0.7 s, ffmpeg reports every 0.5 s: the same one task per poll).
PROGRESS_STEP = 0.02
POLL_PACE = 0.05
PAGE_POLLS = 40  # per run; the original client's way costs far more, so fewer of those
PLAIN_POLLS = 8
PAGE_POLL_BAR_MS = 2.0
PACED_RATE = 25 * MB  # bytes/s per upload: three clients on fast links, not loopback
ALL_ITEMS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Report:
    """Everything measured, in the order it is printed."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    bars: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # the samples behind the figures

    def figure(self, item: str, name: str, unit: str, values: list[float], digits: int = 2) -> Summary:
        summary = Summary.of(values)
        self.rows.append({"item": item, "figure": name, "unit": unit, "digits": digits,
                          **summary.to_json(4)})
        return summary

    def bar(self, item: str, text: str, value: float, limit: float, higher_is_better: bool = False) -> None:
        met = value >= limit if higher_is_better else value <= limit
        self.bars.append({"item": item, "bar": text, "value": round(value, 4), "limit": limit,
                          "met": met})


# -- helpers -------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far: steadier than wall time on a busy machine."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def loop_cpu_seconds(pid: int) -> float:
    """CPU time of a server's main thread, the one its event loop runs on: the loop's own
    busy time, in nanoseconds from schedstat (far finer than /proc/PID/stat's ticks)."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[0]) / 1e9


def children_cpu_seconds(pid: int) -> float:
    """CPU time of a process's children that have ended and been reaped (its ffmpeg runs)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / CLOCK_TICKS


def own_children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reset_peak(pid: int) -> bool:
    """Restart VmHWM from the current RSS (Linux clear_refs 5); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


async def copy_and_fsync(source: Path, target: Path) -> float:
    """The disk's reference for item 1: `cp` then fsync of the copy, wall seconds."""
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("cp", str(source), str(target))
    try:
        if await proc.wait() != 0:
            raise RuntimeError("cp failed")
    finally:
        await stop(proc)  # only does something if we were interrupted while it ran

    def fsync() -> None:
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    await asyncio.to_thread(fsync)
    seconds = time.perf_counter() - began
    await asyncio.to_thread(target.unlink)
    return seconds


def rotated(steps: list[Callable[[], Awaitable[None]]], run: int) -> list[Callable[[], Awaitable[None]]]:
    """Each run starts with a different step, so none always gets the warm (or cold) machine."""
    shift = run % len(steps)
    return steps[shift:] + steps[:shift]


# -- 1 and 3: one upload at a time ------------------------------------------------

async def bench_upload(session: aiohttp.ClientSession, app: Server, sink: Server,
                       store: Server, durable: Server, big: Path, scratch: Path, runs: int,
                       report: Report) -> None:
    size = big.stat().st_size
    route_s: list[float] = []
    sink_s: list[float] = []
    store_s: list[float] = []
    durable_s: list[float] = []
    store_cpu: list[float] = []
    durable_cpu: list[float] = []
    copy_s: list[float] = []
    probe_s: list[float] = []
    route_cpu: list[float] = []
    sink_cpu: list[float] = []
    lags: list[float] = []
    peaks: list[int] = []
    after: list[int] = []
    baseline = proc_status(app.pid)["VmRSS"]
    peak_resets = True
    exe = ffmpeg.locate(None)

    async def route() -> None:
        nonlocal peak_resets
        peak_resets &= reset_peak(app.pid)
        stop = asyncio.Event()
        lag = asyncio.create_task(watch_lag(session, app, stop, timeout=120))
        cpu = cpu_seconds(app.pid)
        try:
            seconds, task = await upload(session, app, big)
        finally:
            stop.set()
            lags.append(await lag)
        route_cpu.append(cpu_seconds(app.pid) - cpu)
        peaks.append(proc_status(app.pid)["VmHWM"])
        # the worker starts transcoding at once; stop it before it disturbs the next step
        await delete(session, app, task["id"])
        after.append(proc_status(app.pid)["VmRSS"])
        route_s.append(seconds)

    async def discard() -> None:
        cpu = cpu_seconds(sink.pid)
        sink_s.append((await upload(session, sink, big))[0])
        sink_cpu.append(cpu_seconds(sink.pid) - cpu)

    async def stored() -> None:
        cpu = cpu_seconds(store.pid)
        store_s.append((await upload(session, store, big))[0])
        store_cpu.append(cpu_seconds(store.pid) - cpu)

    async def stored_durably() -> None:
        cpu = cpu_seconds(durable.pid)
        durable_s.append((await upload(session, durable, big))[0])
        durable_cpu.append(cpu_seconds(durable.pid) - cpu)

    async def copy() -> None:
        copy_s.append(await copy_and_fsync(big, scratch / "copy.mp4"))
        # the route ends with ffmpeg's probe of the whole file: a fixed cost the sink has not
        began = time.perf_counter()
        await probing.probe(big, "bmff", LIMITS)
        probe_s.append(time.perf_counter() - began)

    for run in range(runs):
        for step in rotated([route, discard, stored, stored_durably, copy], run):
            await step()
        log.info("upload run %d: route %.2f s (%.2f s CPU), sink %.2f s, store %.2f s (%.2f s CPU), "
                 "durable store %.2f s, cp+fsync %.2f s", run + 1, route_s[-1], route_cpu[-1],
                 sink_s[-1], store_s[-1], store_cpu[-1], durable_s[-1], copy_s[-1])

    item = "1 upload"
    report.figure(item, "route MB/s", "MB/s", [size / s / MB for s in route_s], 0)
    report.figure(item, "sink MB/s (reference)", "MB/s", [size / s / MB for s in sink_s], 0)
    report.figure(item, "store MB/s (reference)", "MB/s", [size / s / MB for s in store_s], 0)
    report.figure(item, "durable store MB/s (reference)", "MB/s", [size / s / MB for s in durable_s], 0)
    report.figure(item, "cp+fsync MB/s (reference)", "MB/s", [size / s / MB for s in copy_s], 0)
    vs_sink = report.figure(item, "route / sink", "x", ratios(sink_s, route_s))
    # the route answers only once the upload is on disk, so its peer is the durable store
    vs_durable = report.figure(item, "route / durable store", "x", ratios(durable_s, route_s))
    report.figure(item, "route / cp+fsync", "x", ratios(copy_s, route_s))
    report.figure(item, "ffmpeg probe of the file, direct", "ms", [s * 1000 for s in probe_s], 0)
    report.figure(item, "server CPU per upload, route", "s", route_cpu)
    report.figure(item, "server CPU per upload, sink", "s", sink_cpu)
    report.figure(item, "server CPU per upload, store", "s", store_cpu)
    report.figure(item, "server CPU per upload, durable store", "s", durable_cpu)
    report.figure(item, "server CPU per GB, route", "s", [c * 1e9 / size for c in route_cpu])
    report.figure(item, "server CPU per GB, store", "s", [c * 1e9 / size for c in store_cpu])
    cpu_vs_store = report.figure(item, "route CPU / store CPU", "x", ratios(route_cpu, store_cpu))
    report.figure(item, "loop lag, worst per upload", "ms", lags, 1)
    lag_1m = (await health(session, app))["event_loop_lag_ms"]["max_1m"]
    report.figure(item, "loop lag, /healthz max_1m", "ms", [lag_1m], 1)
    report.bar(item, "route >= 0.7x sink", vs_sink.median, 0.7, higher_is_better=True)
    report.bar(item, "durable route >= 1.2x durable store (MB/s)", vs_durable.median, 1.2,
               higher_is_better=True)
    report.bar(item, "route CPU per GB <= 1.3x store", cpu_vs_store.median, 1.3)
    report.raw["upload"] = {"bytes": size, "route_s": route_s, "sink_s": sink_s, "copy_s": copy_s,
                            "store_s": store_s, "durable_s": durable_s, "store_cpu_s": store_cpu,
                            "durable_cpu_s": durable_cpu,
                            "probe_s": probe_s, "route_cpu_s": route_cpu, "sink_cpu_s": sink_cpu,
                            "lag_ms": lags, "lag_max_1m_ms": lag_1m}
    report.raw["memory_single"] = {"baseline": baseline, "peaks": peaks, "after": after,
                                   "peak_resets": peak_resets}


# -- 2 and 3: three uploads at once -------------------------------------------------

async def concurrent_run(session: aiohttp.ClientSession, app: Server, big: Path, tasks_url: str,
                         rate: float | None = None) -> tuple[list[float], list[dict[str, Any]]]:
    """Three uploads from bench.uploader; GET /tasks timings while all three are in flight."""
    paced = [] if rate is None else [str(rate)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.uploader", app.url, str(big), "3", *paced,
        cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(120):
            if json.loads(await proc.stdout.readline() or "{}").get("event") != "start":
                raise RuntimeError("bench.uploader did not start")
            first_done = asyncio.Event()
            # from the start of the uploads to the end of the first one: all three in flight
            probing = asyncio.create_task(
                latencies(session, tasks_url, BUSY_SAMPLES, timeout=60, stop=first_done))
            done: list[dict[str, Any]] = []
            try:
                while len(done) < 3:
                    line = await proc.stdout.readline()
                    if not line:
                        raise RuntimeError(f"bench.uploader ended after {len(done)} uploads")
                    done.append(json.loads(line))
                    first_done.set()
            finally:
                first_done.set()
                busy = await probing
            if await proc.wait() != 0:
                raise RuntimeError(f"bench.uploader exited with status {proc.returncode}")
    finally:
        await stop(proc)
    return busy, done


@dataclass
class LoadRuns:
    """One server's samples over the runs of item 2, at one upload pace."""
    aggregate: list[float] = field(default_factory=list)
    idle_p50: list[float] = field(default_factory=list)
    idle_p99: list[float] = field(default_factory=list)
    busy_p50: list[float] = field(default_factory=list)
    busy_p99: list[float] = field(default_factory=list)
    busy_count: list[int] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    own_lags: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"aggregate_mb_s": self.aggregate, "idle_p50_ms": self.idle_p50,
                "idle_p99_ms": self.idle_p99, "busy_p50_ms": self.busy_p50,
                "busy_p99_ms": self.busy_p99, "busy_samples": self.busy_count,
                "lag_ms": self.lags, "own_lag_ms": self.own_lags}


async def load_run(session: aiohttp.ClientSession, server: Server, big: Path, into: LoadRuns,
                   rate: float | None = None) -> list[dict[str, Any]]:
    """Idle GET /tasks timings, then three uploads with timings and the server's loop lag."""
    size = big.stat().st_size
    tasks_url = server.url + "/tasks"
    # the lag watcher's own requests run in both phases, so idle and busy see the same load
    lag_stop = asyncio.Event()
    lag = asyncio.create_task(watch_lag(session, server, lag_stop, timeout=120))
    control = asyncio.create_task(own_lag(lag_stop, timeout=120))
    try:
        idle = await latencies(session, tasks_url, IDLE_SAMPLES, timeout=20)
        busy, done = await concurrent_run(session, server, big, tasks_url, rate)
    finally:
        lag_stop.set()
        into.lags.append(await lag)
        into.own_lags.append(await control)
    if len(busy) < 20:
        raise RuntimeError(f"only {len(busy)} GET /tasks answered during the uploads")
    into.aggregate.append(3 * size / max(one["since_start"] for one in done) / MB)
    into.idle_p50.append(percentile(idle, 0.5) * 1000)
    into.idle_p99.append(percentile(idle, 0.99) * 1000)
    into.busy_p50.append(percentile(busy, 0.5) * 1000)
    into.busy_p99.append(percentile(busy, 0.99) * 1000)
    into.busy_count.append(len(busy))
    log.info("%s%s: %.0f MB/s, GET p99 %.2f ms busy (%d) vs %.2f ms idle, lag %.1f ms",
             server.name, "" if rate is None else " (paced)", into.aggregate[-1],
             into.busy_p99[-1], len(busy), into.idle_p99[-1], into.lags[-1])
    return done


async def bench_concurrent(session: aiohttp.ClientSession, app: Server, sink: Server, big: Path,
                           runs: int, report: Report) -> None:
    full, reference, paced, reference_paced = LoadRuns(), LoadRuns(), LoadRuns(), LoadRuns()
    peaks: list[int] = []
    after: list[int] = []
    baseline = proc_status(app.pid)["VmRSS"]
    peak_resets = True

    async def route() -> None:
        nonlocal peak_resets
        peak_resets &= reset_peak(app.pid)
        done = await load_run(session, app, big, full)
        peaks.append(proc_status(app.pid)["VmHWM"])
        for finished_upload in done:
            await delete(session, app, finished_upload["id"])
        after.append(proc_status(app.pid)["VmRSS"])

    async def discard() -> None:
        await load_run(session, sink, big, reference)

    async def route_paced() -> None:
        done = await load_run(session, app, big, paced, rate=PACED_RATE)
        for finished_upload in done:
            await delete(session, app, finished_upload["id"])

    async def discard_paced() -> None:
        await load_run(session, sink, big, reference_paced, rate=PACED_RATE)

    for run in range(runs):
        for step in rotated([route, discard, route_paced, discard_paced], run):
            await step()

    item = "2 concurrent"
    report.figure(item, "3 uploads, aggregate MB/s", "MB/s", full.aggregate, 0)
    report.figure(item, "3 uploads to the sink, aggregate MB/s", "MB/s", reference.aggregate, 0)
    report.figure(item, "GET /tasks p50 idle", "ms", full.idle_p50)
    report.figure(item, "GET /tasks p50 during", "ms", full.busy_p50)
    report.figure(item, "GET /tasks p99 idle", "ms", full.idle_p99)
    report.figure(item, "GET /tasks p99 during", "ms", full.busy_p99)
    report.figure(item, "sink: GET /tasks p99 during", "ms", reference.busy_p99)
    p99_ratio = report.figure(item, "p99 during / p99 idle", "x", ratios(full.busy_p99, full.idle_p99))
    p99_vs_sink = report.figure(item, "p99 during / sink's p99 during", "x",
                                ratios(full.busy_p99, reference.busy_p99))
    lag_runs = report.figure(item, "loop lag, worst per run", "ms", full.lags, 1)
    report.figure(item, "sink: loop lag, worst per run", "ms", reference.lags, 1)
    lag_vs_sink = report.figure(item, "loop lag / sink's loop lag", "x", ratios(full.lags, reference.lags))
    report.figure(item, "bench's own loop lag (control)", "ms", full.own_lags, 1)
    report.figure(item, f"paced to {PACED_RATE / MB:g} MB/s each: p99 idle", "ms", paced.idle_p99)
    report.figure(item, f"paced to {PACED_RATE / MB:g} MB/s each: p99 during", "ms", paced.busy_p99)
    paced_ratio = report.figure(item, "paced: p99 during / p99 idle", "x",
                                ratios(paced.busy_p99, paced.idle_p99))
    report.figure(item, "paced: loop lag, worst per run", "ms", paced.lags, 1)
    # the same measure on the discard handler: what any aiohttp upload handler pays
    report.figure(item, "sink paced: p99 during / p99 idle", "x",
                  ratios(reference_paced.busy_p99, reference_paced.idle_p99))
    report.figure(item, "paced: p99 during / sink's paced p99 during", "x",
                  ratios(paced.busy_p99, reference_paced.busy_p99))
    # a fresh server for this item, so its one-minute window holds these runs only
    lag_1m = (await health(session, app))["event_loop_lag_ms"]["max_1m"]
    report.figure(item, "loop lag, /healthz max_1m", "ms", [lag_1m], 1)
    report.bar(item, "p99 during <= 3x p99 idle", p99_ratio.median, 3.0)
    # judged like every other figure, on the median run; the worst sample is in the table above
    report.bar(item, "max loop lag <= 10 ms (median run)", lag_runs.median, 10.0)
    report.bar(item, "max loop lag <= 1.5x the sink's", lag_vs_sink.median, 1.5)
    report.bar(item, "p99 during <= 1.25x the sink's", p99_vs_sink.median, 1.25)
    report.bar(item, f"paced ({PACED_RATE / MB:g} MB/s each): p99 during <= 1.5x idle",
               paced_ratio.median, 1.5)
    report.raw["concurrent"] = {**full.to_json(), "lag_max_1m_ms": lag_1m}
    report.raw["concurrent_sink"] = reference.to_json()
    report.raw["concurrent_paced"] = {**paced.to_json(), "rate_bytes_s": PACED_RATE}
    report.raw["concurrent_sink_paced"] = reference_paced.to_json()
    report.raw["memory_concurrent"] = {"baseline": baseline, "peaks": peaks, "after": after,
                                       "peak_resets": peak_resets}


def bench_memory(report: Report) -> None:
    """Item 3, from the samples items 1 and 2 took: each server against itself before uploading."""
    single, concurrent = report.raw["memory_single"], report.raw["memory_concurrent"]
    item = "3 memory"
    grow_single = [(peak - single["baseline"]) / MIB for peak in single["peaks"]]
    grow_concurrent = [(peak - concurrent["baseline"]) / MIB for peak in concurrent["peaks"]]
    report.figure(item, "peak RSS growth, 1 upload", "MiB", grow_single, 1)
    report.figure(item, "peak RSS growth, 3 uploads", "MiB", grow_concurrent, 1)
    # "No growth from one upload to the next": what each run leaves behind (its tasks
    # deleted) against the run before. A leak shows as a steady step every run; the
    # allocator keeping freed memory for reuse shows as one step, then a plateau,
    # which the last-against-first figure shows.
    steps: list[float] = []
    for sequence in (single["after"], concurrent["after"]):
        steps += [(later - earlier) / MIB for earlier, later in zip(sequence, sequence[1:])]
    kept = report.figure(item, "RSS after a run - after the one before", "MiB", steps, 1)
    report.figure(item, "RSS after the last run - after the first", "MiB",
                  [(sequence[-1] - sequence[0]) / MIB
                   for sequence in (single["after"], concurrent["after"])], 1)
    report.bar(item, "peak RSS growth <= 20 MiB (worst run)", max(grow_single + grow_concurrent), 20.0)
    report.bar(item, "no growth run to run (median, <= 1 MiB)", kept.median, 1.0)
    if not (single["peak_resets"] and concurrent["peak_resets"]):
        report.notes.append("VmHWM could not be reset between runs: each peak counts from start-up.")


# -- 4: from QUEUED to PROCESSING ----------------------------------------------------

async def bench_pickup(session: aiohttp.ClientSession, app: Server, clip: Path, report: Report) -> None:
    sequential: list[float] = []
    for _ in range(PICKUP_UPLOADS):
        _, task = await upload(session, app, clip)
        task = await wait_task(session, app, task["id"], started, timeout=30)
        sequential.append(elapsed_ms(task, "created_at", "started_at"))
        await delete(session, app, task["id"])  # stops the job: the worker is idle again

    first: list[float] = []
    queued: list[float] = []
    for _ in range(BURSTS):
        answers = await asyncio.gather(*(upload(session, app, clip) for _ in range(3)))
        # one worker: the first is picked at once, the others wait for the job before them
        done = [await wait_task(session, app, task["id"], finished, timeout=60) for _, task in answers]
        pickups = sorted(elapsed_ms(task, "created_at", "started_at") for task in done)
        first.append(pickups[0])
        queued.extend(pickups[1:])
        for task in done:
            await delete(session, app, task["id"])

    item = "4 pickup"
    seq = report.figure(item, "created -> PROCESSING, 20 single", "ms", sequential, 0)
    burst = report.figure(item, "burst of 3, first picked", "ms", first, 0)
    report.figure(item, "burst of 3, 2nd/3rd (queue wait)", "ms", queued, 0)
    report.bar(item, "p50 <= 20 ms, idle worker (single)", seq.median, 20.0)
    report.bar(item, "p50 <= 20 ms, idle worker (burst)", burst.median, 20.0)
    report.notes.append("Pickup comes from the task's own timestamps, which have millisecond "
                        "resolution: 0 means under a millisecond.")
    report.raw["pickup"] = {"single_ms": sequential, "burst_first_ms": first, "burst_queued_ms": queued}


# -- 5: the worker's overhead over ffmpeg itself ------------------------------------

async def bench_processing(session: aiohttp.ClientSession, app: Server, clip: Path,
                           scratch: Path, runs: int, report: Report) -> None:
    exe = ffmpeg.locate(None)  # the server's own choice when given no --ffmpeg
    source_media = await probing.probe(clip, "bmff", LIMITS)
    target = scratch / "direct.mp4"
    # exactly the list the worker builds for this clip at 720
    args = ffmpeg.transcode_args(exe, clip, target, ffmpeg.output_size(source_media, 720),
                                 source_media.audio_codec is not None, LIMITS)
    direct_s: list[float] = []
    extras_s: list[float] = []
    task_s: list[float] = []
    # CPU time, unlike wall time, barely moves when other work shares the cores
    direct_cpu: list[float] = []
    task_cpu: list[float] = []

    async def direct() -> None:
        cpu = own_children_cpu_seconds()
        direct_s.append(await timed_exec(args))
        direct_cpu.append(own_children_cpu_seconds() - cpu)
        # what the worker does besides the transcode: a thumbnail of the output
        # (the upload's probe is reused); timed on its own, after the transcode
        began = time.perf_counter()
        await ffmpeg.thumbnail(exe, target, scratch / "thumb.jpg",
                               min(1.0, (source_media.duration or 0) / 3), LIMITS)
        extras_s.append(time.perf_counter() - began)

    async def through_server() -> None:
        _, task = await upload(session, app, clip, resolution="720")
        # from here every ffmpeg the server runs is this task's: transcode, thumbnail
        cpu = children_cpu_seconds(app.pid)
        task = await wait_task(session, app, task["id"], finished, timeout=120, interval=0.05)
        task_cpu.append(children_cpu_seconds(app.pid) - cpu)
        task_s.append(elapsed_ms(task, "started_at", "finished_at") / 1000)
        await delete(session, app, task["id"])

    for run in range(runs):
        for step in rotated([direct, through_server], run):
            await step()
        log.info("processing run %d: task %.2f s, ffmpeg %.2f s", run + 1, task_s[-1], direct_s[-1])

    item = "5 processing"
    report.figure(item, "task started -> finished", "s", task_s)
    report.figure(item, "same ffmpeg args, direct", "s", direct_s)
    report.figure(item, "thumbnail, direct", "s", extras_s)
    overhead = report.figure(item, "task / direct ffmpeg (paired)", "x", ratios(task_s, direct_s), 3)
    report.figure(item, "task / (direct ffmpeg + extras)", "x",
                  ratios(task_s, [a + b for a, b in zip(direct_s, extras_s)]), 3)
    report.figure(item, "ffmpeg CPU, task (all its runs)", "s", task_cpu)
    report.figure(item, "ffmpeg CPU, direct transcode", "s", direct_cpu)
    report.figure(item, "task CPU / direct CPU (paired)", "x", ratios(task_cpu, direct_cpu), 3)
    report.bar(item, "task <= 1.05x direct ffmpeg", overhead.median, 1.05)
    report.raw["processing"] = {"args": [Path(a).name if os.sep in a else a for a in args],
                                "task_s": task_s, "direct_s": direct_s, "extras_s": extras_s,
                                "task_cpu_s": task_cpu, "direct_cpu_s": direct_cpu}


# -- 6: the list with many tasks ------------------------------------------------------

async def bench_list(session: aiohttp.ClientSession, servers: dict[int, Server], runs: int,
                     report: Report) -> None:
    full: dict[int, list[float]] = {n: [] for n in servers}
    full_loop: dict[int, list[float]] = {n: [] for n in servers}
    cached: dict[int, list[float]] = {n: [] for n in servers}
    etags: dict[int, str] = {}
    for n, server in servers.items():
        async with session.get(server.url + "/tasks") as response:
            listed = await response.json()
            etags[n] = response.headers["ETag"]
        if len(listed) != n:
            raise RuntimeError(f"seeded server lists {len(listed)} tasks, not {n}")
    sizes = list(servers)
    for run in range(runs):
        for n in sizes[run % len(sizes):] + sizes[:run % len(sizes)]:
            url = servers[n].url + "/tasks"
            # each run's figure is itself a median, of a few requests (many for the cheap ones)
            began = loop_cpu_seconds(servers[n].pid)
            full[n].append(Summary.of([await get_seconds(session, url) for _ in range(9)]).median)
            full_loop[n].append((loop_cpu_seconds(servers[n].pid) - began) / 9)
            not_modified = [await get_seconds(session, url, {"If-None-Match": etags[n]}, status=304)
                            for _ in range(30)]
            cached[n].append(Summary.of(not_modified).median)

    item = "6 list"
    for n in sizes:
        report.figure(item, f"GET /tasks, {n:,} tasks", "ms", [s * 1000 for s in full[n]])
    for n in sizes:
        report.figure(item, f"GET /tasks 304, {n:,} tasks", "ms", [s * 1000 for s in cached[n]])
    for n in sizes:  # the server's side of the full list alone, without the transfer's
        report.figure(item, f"GET /tasks, {n:,} tasks: loop", "ms", [s * 1000 for s in full_loop[n]])
    small, mid, large = sizes
    per_task = [(big / large) / (middle / mid) for big, middle in zip(full[large], full[mid])]
    growth = report.figure(item, f"per-task cost {large:,} / {mid:,}", "x", per_task)
    report.figure(item, f"per-task loop cost {large:,} / {mid:,}", "x",
                  [(big / large) / (middle / mid) for big, middle in zip(full_loop[large], full_loop[mid])])
    ratio_304 = report.figure(item, f"304 at {large:,} / at {small:,}", "x",
                              ratios(cached[large], cached[small]))
    # linear means a per-task cost that stays flat; 10 % leaves room for a noisy machine
    report.bar(item, "full list no worse than linear (<= 1.1)", growth.median, 1.1)
    report.bar(item, "304 at 10,000 <= 2x at 10", ratio_304.median, 2.0)
    report.raw["list"] = {"full_s": {str(n): v for n, v in full.items()},
                          "full_loop_s": {str(n): v for n, v in full_loop.items()},
                          "not_modified_s": {str(n): v for n, v in cached.items()}}


async def page_polls(session: aiohttp.ClientSession, server: Server, polls: int,
                     since: bool) -> tuple[float, float, list[float]]:
    """A page's polls, one every POLL_PACE s while one task progresses: with `since`, as
    app.js asks; without, as the original client does (the whole list each time).

    (the server loop's busy seconds over the polls, the same over as long without them
    just before, each poll's wall seconds)
    """
    url = server.url + "/tasks"
    async with session.get(url) as response:
        await response.read()
        version = response.headers["ETag"].strip('"')  # the list's version, in quotes
    quiet_began = loop_cpu_seconds(server.pid)
    await asyncio.sleep(polls * POLL_PACE)  # the loop's background: the progress, the lag probe
    quiet = loop_cpu_seconds(server.pid) - quiet_began
    walls: list[float] = []
    began = loop_cpu_seconds(server.pid)
    for _ in range(polls):
        await asyncio.sleep(POLL_PACE)  # pacing: the task's progress moves meanwhile
        query, headers = ({"since": version}, {"If-None-Match": f'"{version}"'}) if since else ({}, {})
        start = time.perf_counter()
        async with session.get(url, params=query, headers=headers) as response:
            answer = await response.json()
        walls.append(time.perf_counter() - start)
        if response.status != 200:
            raise RuntimeError(f"a poll answered {response.status}: the task did not progress")
        if since:
            if answer["full"] or len(answer["tasks"]) != 1:
                raise RuntimeError(f"a poll since {version} did not answer the one task that moved")
            version = answer["version"]
    return loop_cpu_seconds(server.pid) - began, quiet, walls


async def bench_page_poll(session: aiohttp.ClientSession, server: Server, kept: int, runs: int,
                          report: Report) -> None:
    """Item 6, the page's side: what one poll costs the loop with `kept` tasks and one running."""
    loop_ms: list[float] = []
    busy_ms: list[float] = []
    wall_ms: list[float] = []
    plain_ms: list[float] = []
    for run in range(runs):
        order = [True, False] if run % 2 == 0 else [False, True]
        for since in order:
            count = PAGE_POLLS if since else PLAIN_POLLS
            busy, quiet, walls = await page_polls(session, server, count, since)
            net = (busy - quiet) / count * 1000
            if since:
                loop_ms.append(net)
                busy_ms.append(busy / count * 1000)
                wall_ms.append(Summary.of(walls).median * 1000)
            else:
                plain_ms.append(net)
    item = "6 list"
    poll = report.figure(item, f"poll since, {kept:,} + 1 running: loop", "ms", loop_ms)
    report.figure(item, "poll since: loop, background included", "ms", busy_ms)
    report.figure(item, "poll since: wall", "ms", wall_ms)
    report.figure(item, f"plain GET, {kept:,} + 1 running: loop", "ms", plain_ms)
    report.bar(item, f"page poll, {kept:,} kept + 1 running: loop <= {PAGE_POLL_BAR_MS:g} ms",
               poll.median, PAGE_POLL_BAR_MS)
    report.raw["page_poll"] = {"loop_ms": loop_ms, "loop_with_background_ms": busy_ms,
                               "wall_ms": wall_ms, "plain_loop_ms": plain_ms}


# -- the run ----------------------------------------------------------------------------

def app_args(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir), "--log-level", "WARNING"]


# For the upload items the worker stops each job at once: a transcode of the
# noise clip would otherwise take both cores while the next upload is measured.
# The route, the probe and the queuing are all the real ones.
UPLOADS_ONLY = ["--job-timeout", "0.01"]


async def measure(runs: int, items: set[int], report: Report, counts: tuple[int, ...]) -> None:
    big, hd, small = media.big_clip(), media.hd_clip(), media.small_clip()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    with tempfile.TemporaryDirectory(prefix="video-async-bench-") as temp:
        scratch = Path(temp)
        logs = scratch / "logs"
        logs.mkdir()

        def data(name: str) -> Path:
            folder = scratch / name
            folder.mkdir()
            return folder

        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with contextlib.AsyncExitStack() as stack:
                async def start(name: str, module: str, args: list[str]) -> Server:
                    return await stack.enter_async_context(
                        running(name, module, args, logs / f"{name}.log", session))

                if items & {1, 2}:
                    sink = await start("sink", "bench.sink_server", [])
                if 1 in items:
                    app = await start("server-1", "video_async", app_args(data("app-1")) + UPLOADS_ONLY)
                    store = await start("store", "bench.sink_server",
                                        ["--mode", "store", "--data-dir", str(data("store"))])
                    durable = await start("durable", "bench.sink_server",
                                          ["--mode", "durable", "--data-dir", str(data("durable"))])
                    await bench_upload(session, app, sink, store, durable, big, scratch, runs, report)
                if 2 in items:
                    # a fresh server, so its one-minute lag window and its memory hold item 2 alone
                    app = await start("server-2", "video_async", app_args(data("app-2")) + UPLOADS_ONLY)
                    await bench_concurrent(session, app, sink, big, runs, report)
                if {1, 2} <= items:
                    bench_memory(report)
                if items & {4, 5, 10}:
                    app = await start("server-3", "video_async", app_args(data("app-3")))
                    if 4 in items:
                        await bench_pickup(session, app, small, report)
                    if 5 in items:
                        await bench_processing(session, app, hd, scratch, runs, report)
                    if 10 in items:  # all sizes at once: bench/ladder.py
                        await bench_ladder(session, app, hd, scratch, runs, LIMITS, report)
                if 7 in items:  # the queue mode: bench/queue_mode.py
                    await bench_queue(session, start, scratch, small, hd, big, runs, report)
                if 8 in items:  # resumable uploads: bench/tus.py
                    app = await start("server-tus", "video_async", app_args(data("app-tus")) + UPLOADS_ONLY)
                    await tus.bench_tus(session, app, big, runs, report, memory=proc_status,
                                        reset_peak=reset_peak)
                await stack.aclose()  # stop the servers above before item 6 starts three more

                if 9 in items:  # many slow uploads: bench/many_uploads.py, a fresh server per run
                    await bench_many(session, scratch, logs, media.five_mb_clip(), report,
                                     cpu_seconds, reset_peak, counts)

                if 6 in items:
                    seeded = {n: await start(f"seeded-{n}", "bench.seeded_server",
                                             [*app_args(data(f"seeded-{n}"))[:2], "--tasks", str(n)])
                              for n in LIST_SIZES}
                    await bench_list(session, seeded, runs, report)
                    await stack.aclose()
                    kept = LIST_SIZES[-1]
                    # no tasks.json: its writes of the whole list, twice a second while a
                    # task progresses, are the snapshot's cost, not a poll's
                    running_one = await start(f"seeded-{kept}-progressing", "bench.seeded_server",
                                              [*app_args(data(f"seeded-{kept}-progressing"))[:2],
                                               "--tasks", str(kept), "--no-persist",
                                               "--progressing", str(PROGRESS_STEP)])
                    await bench_page_poll(session, running_one, kept, runs, report)


def table(report: Report) -> str:
    lines = [f"{'item':<13} {'figure':<40} {'median':>9} {'min':>9} {'max':>9}  unit"]
    previous = ""
    for row in report.rows:
        fmt = f"{{:>9,.{row['digits']}f}}"
        item = row["item"] if row["item"] != previous else ""
        previous = row["item"]
        lines.append(f"{item:<13} {row['figure']:<40} {fmt.format(row['median'])} "
                     f"{fmt.format(row['min'])} {fmt.format(row['max'])}  {row['unit']}")
    lines.append("")
    lines.append(f"{'bar':<54} {'value':>9} {'limit':>9}  met")
    for bar in report.bars:
        lines.append(f"{bar['item'][:1]}. {bar['bar']:<51} {bar['value']:>9,.2f} {bar['limit']:>9,.2f}  "
                     f"{'yes' if bar['met'] else 'NO'}")
    return "\n".join(lines)


async def main_async(runs: int, items: set[int], counts: tuple[int, ...]) -> Report:
    report = Report()
    async with asyncio.timeout(TOTAL_TIMEOUT):
        await measure(runs, items, report, counts)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="video_async benchmark: every figure a ratio to a reference measured in the same run")
    parser.add_argument("--runs", type=int, default=7, help="runs per figure, at least 5 (default: 7)")
    parser.add_argument("--many", default=",".join(map(str, MANY_COUNTS)),
                        help="item 9's numbers of uploads at once, comma-separated "
                             "(default: %(default)s; its bars are judged at 500)")
    parser.add_argument("--items", default="1,2,3,4,5,6,7,8,9,10",
                        help="which items to run, comma-separated (default: all; 3 needs 1 and 2)")
    args = parser.parse_args(argv)
    try:
        items = {int(item) for item in args.items.split(",")}
    except ValueError:
        parser.error("--items takes numbers from 1 to 10, comma-separated")
    if not items <= ALL_ITEMS:
        parser.error("--items takes numbers from 1 to 10, comma-separated")
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    began = time.perf_counter()
    media.big_clip(), media.hd_clip(), media.small_clip(), media.five_mb_clip()
    generated = time.perf_counter() - began
    try:
        counts = tuple(int(count) for count in args.many.split(","))
    except ValueError:
        parser.error("--many takes numbers of uploads, comma-separated")
    report = asyncio.run(main_async(args.runs, items, counts))
    total = time.perf_counter() - began
    text = table(report)
    print()
    print(text)
    for note in report.notes:
        print(f"note: {note}")
    print(f"\n{args.runs} runs per figure; {total:.0f} s in all, of which {generated:.0f} s "
          f"generating clips (0 when cached)")
    if items != ALL_ITEMS:
        # bench/results.json is the record of a whole run; a partial one must not replace it
        print(f"items {args.items} only: bench/{RESULTS.name} left as it was")
        return 0
    print(f"written to bench/{RESULTS.name}")
    RESULTS.write_text(json.dumps({
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "aiohttp": aiohttp.__version__, "system": platform.system()},
        "runs": args.runs,
        "seconds": {"total": round(total, 1), "generating_clips": round(generated, 1)},
        "figures": [{k: v for k, v in row.items() if k != "digits"} for row in report.rows],
        "bars": report.bars,
        "notes": report.notes,
        "table": text,
        "samples": report.raw,
    }, indent=2) + "\n")
    # a missed bar is a finding, printed above, not a failure of the benchmark itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
