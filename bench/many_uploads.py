"""Item 9, many slow uploads: hundreds of people uploading at once over ordinary links.

N uploads of a 5 MB clip, each paced to 200 KB/s, starting evenly over 5 s
(bench/slow_client.py, a niced process of its own), while a page-like poller
asks for what changed in the task list ten times a second. Transcodes are
stubbed: the server's ffmpeg is a stand-in that sleeps instead of encoding
(probes read the file through PyAV, as always), so the first task stays
PROCESSING and the others QUEUED, and only uploading is measured. Each N runs
against a fresh video_async and against item 1's bare aiohttp handler that
stores the raw body (bench/sink_server.py --mode store), in the same run.

What is counted, not only timed: the server's threads (sampled from /proc
every 20 ms), its peak RSS (VmHWM, reset before the run) per upload, its CPU
per GB received, the loop's worst lag (its own 10 ms sampler, /healthz), the
poll's p99 and max, the time from an upload's last byte to its answer, and
every status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench import media
from bench.client import own_lag, watch_lag
from bench.servers import ROOT, Server, proc_status, running
from bench.stats import percentile

COUNTS = (100, 500, 1000)
BAR_COUNT = 500  # the bars are judged here; at 1,000 every upload must be answered 201
RATE = 200_000  # bytes/s per upload
SPREAD = 5.0  # seconds over which the uploads start
POLL_EVERY = 0.1  # the page's pace
SAMPLE_EVERY = 0.02
RUN_TIMEOUT = 180.0
KIB = 1024


async def sample_threads(pid: int, stop: asyncio.Event) -> int:
    """The most threads the process had at any sample until stop."""
    most = 0
    while not stop.is_set():
        with contextlib.suppress(OSError):
            most = max(most, proc_status(pid)["Threads"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)
    return most


async def poll_like_a_page(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> list[float]:
    """GET /tasks?since=V ten times a second, with the ETag of the last answer, as the page
    does; each request's wall time, in seconds. (The bare handler answers [] to any.)"""
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    etag = ""
    while not stop.is_set():
        began = loop.time()
        since = f"?since={etag.strip(chr(34))}" if etag else ""
        async with session.get(url + "/tasks" + since,
                               headers={"If-None-Match": etag} if etag else {}) as answer:
            await answer.read()
            etag = answer.headers.get("ETag", etag)
        samples.append(loop.time() - began)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, POLL_EVERY - (loop.time() - began)))
    return samples


async def one_run(session: aiohttp.ClientSession, server: Server, clip: Path, count: int,
                  cpu_seconds: Callable[[int], float], reset_peak: Callable[[int], bool]) -> dict[str, Any]:
    """N slow uploads against one server; the figures of that run."""
    port = server.url.rsplit(":", 1)[1]
    before = proc_status(server.pid)
    reset_peak(server.pid)
    cpu_before = cpu_seconds(server.pid)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        threads = group.create_task(sample_threads(server.pid, stop))
        polls = group.create_task(poll_like_a_page(session, server.url, stop))
        lag = group.create_task(watch_lag(session, server, stop, RUN_TIMEOUT + 10))
        control = group.create_task(own_lag(stop, RUN_TIMEOUT + 10))
        try:
            client = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.slow_client", "127.0.0.1", port, str(clip), str(count),
                str(RATE), str(SPREAD), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
            async with asyncio.timeout(RUN_TIMEOUT):
                out, _ = await client.communicate()
        finally:
            stop.set()
    if client.returncode != 0:
        raise RuntimeError(f"the slow-upload client exited with status {client.returncode}")
    result = json.loads(out)
    after = proc_status(server.pid)
    uploads = result["uploads"]
    statuses = Counter(str(upload["status"]) for upload in uploads)
    answered = [upload["answer"] - upload["last_byte"] for upload in uploads
                if "answer" in upload and "last_byte" in upload]
    gigabytes = count * clip.stat().st_size / 1e9
    return {
        "count": count,
        "statuses": dict(statuses),
        "lag_ms": lag.result(),
        "bench_lag_ms": control.result(),
        "poll_p99_ms": percentile(polls.result(), 0.99) * 1000,
        "poll_max_ms": max(polls.result()) * 1000,
        "polls": len(polls.result()),
        "rss_growth_per_upload_kib": (after["VmHWM"] - before["VmRSS"]) / count / KIB,
        "peak_threads": max(threads.result(), before["Threads"]),
        "cpu_per_gb_s": (cpu_seconds(server.pid) - cpu_before) / gigabytes,
        "answer_p99_ms": percentile(answered, 0.99) * 1000 if answered else float("nan"),
        "seconds": result["seconds"],
    }


SLEEPING_FFMPEG = """#!/bin/sh
# A stand-in for ffmpeg: a transcode (it asks for -progress) sleeps; anything else runs.
case " $* " in *" -progress "*) exec sleep 3600 ;; esac
exec "{real}" "$@"
"""


def sleeping_ffmpeg(folder: Path) -> Path:
    script = folder / "sleeping-ffmpeg"
    script.write_text(SLEEPING_FFMPEG.format(real=media.ffmpeg_exe()))
    script.chmod(0o755)
    return script


def video_async_args(data_dir: Path, ffmpeg: Path) -> list[str]:
    # nothing refused: the limits are the subject of other tests, not of this item
    return ["--data-dir", str(data_dir), "--log-level", "WARNING", "--ffmpeg", str(ffmpeg),
            "--job-timeout", "3600", "--stall-timeout", "3600",
            "--max-uploads", "5000", "--max-queued", "10000", "--min-free-mb", "256"]


async def bench_many(session: aiohttp.ClientSession, scratch: Path, logs: Path, clip: Path,
                     report: Any, cpu_seconds: Callable[[int], float],
                     reset_peak: Callable[[int], bool], counts: tuple[int, ...] = COUNTS) -> None:
    item = "9 many uploads"
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for count in counts:
        for name, module, args in (
                ("bare handler", "bench.sink_server", ["--mode", "store"]),
                ("video_async", "video_async", [])):
            folder = scratch / f"many-{name.replace(' ', '-')}-{count}"
            folder.mkdir()
            args = args + (["--data-dir", str(folder)] if module == "bench.sink_server"
                           else video_async_args(folder, sleeping_ffmpeg(scratch)))
            async with running(f"{name} ({count})", module, args,
                               logs / f"many-{module}-{count}.log", session) as server:
                runs[name, count] = figures = await one_run(session, server, clip, count,
                                                            cpu_seconds, reset_peak)
            report.raw.setdefault("many_uploads", []).append({"server": name, **figures})
    for count in counts:
        for name in ("video_async", "bare handler"):
            figures = runs[name, count]
            for key, label, unit in (
                    ("lag_ms", "worst loop lag", "ms"),
                    ("poll_p99_ms", "GET /tasks p99", "ms"),
                    ("poll_max_ms", "GET /tasks max", "ms"),
                    ("rss_growth_per_upload_kib", "peak RSS growth per upload", "KiB"),
                    ("peak_threads", "peak threads", "n"),
                    ("cpu_per_gb_s", "server CPU per GB", "s"),
                    ("answer_p99_ms", "last byte to answer, p99", "ms"),
                    ("bench_lag_ms", "bench's own loop lag (control)", "ms")):
                report.figure(item, f"{count}, {name}: {label}", unit, [figures[key]], 1)
            report.notes.append(f"item 9, {count} uploads, {name}: statuses {figures['statuses']}, "
                                f"{figures['seconds']:.1f} s from first start to last answer")
    if BAR_COUNT in counts:
        ours, bare = runs["video_async", BAR_COUNT], runs["bare handler", BAR_COUNT]
        at = f"at {BAR_COUNT}: "
        report.bar(item, at + "worst lag <= 2x the bare handler's",
                   ours["lag_ms"] / max(bare["lag_ms"], 0.001), 2.0)
        report.bar(item, at + "worst lag < 50 ms", ours["lag_ms"], 50.0)
        report.bar(item, at + "GET p99 <= 2x the bare handler's",
                   ours["poll_p99_ms"] / max(bare["poll_p99_ms"], 0.001), 2.0)
        report.bar(item, at + "RSS growth per upload <= 64 KiB", ours["rss_growth_per_upload_kib"], 64.0)
        report.bar(item, at + "peak threads <= 16", ours["peak_threads"], 16)
        report.bar(item, at + "CPU per GB <= 1.5x the bare handler's",
                   ours["cpu_per_gb_s"] / bare["cpu_per_gb_s"], 1.5)
    if 1000 in counts:
        answered = runs["video_async", 1000]["statuses"]
        report.bar(item, "at 1000: uploads answered other than 201",
                   sum(n for status, n in answered.items() if status != "201"), 0)
