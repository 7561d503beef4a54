"""Item 10 of `make bench`: all sizes at once.

An "all sizes" task decodes its upload once and encodes every rung of the ladder from that
one decode (ffmpeg.ladder_args: split, then one encoder a rung). Its reference is what it
saves: the same rungs encoded one by one, each by its own direct ffmpeg with the very same
arguments for that rung alone, so each decodes the source again. Both run in the same
run, interleaved, on the 10 s 1080p clip.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import shutil
from pathlib import Path

import aiohttp

from bench.client import delete, elapsed_ms, finished, upload, wait_task
from bench.queue_mode import Reporting
from bench.servers import Server, timed_exec
from bench.stats import ratios
from video_async import ffmpeg, probing

log = logging.getLogger("bench")

BAR = 0.8  # the ladder task's wall time against its rungs encoded one by one


def _children_cpu() -> float:
    """CPU seconds of this process's finished children: on a shared machine wall time swings
    with the neighbours' load, CPU time barely does."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


async def bench_ladder(session: aiohttp.ClientSession, app: Server, clip: Path, scratch: Path,
                       runs: int, limits: ffmpeg.Limits, report: Reporting) -> None:
    exe = ffmpeg.locate(None)  # the server's own choice when given no --ffmpeg
    media = await probing.probe(clip, "bmff", limits)
    rungs = ffmpeg.ladder_rungs(media)
    has_audio = media.audio_codec is not None
    ladder_s: list[float] = []  # the whole ladder, one direct ffmpeg
    one_by_one_s: list[float] = []  # its rungs, one direct ffmpeg each, summed
    task_s: list[float] = []  # an "all sizes" task: ladder, its top rung's MP4, thumbnail
    ladder_cpu: list[float] = []
    one_by_one_cpu: list[float] = []

    async def ladder() -> None:
        folder = _fresh(scratch / "ladder")
        cpu = _children_cpu()
        ladder_s.append(await timed_exec(ffmpeg.ladder_args(exe, clip, folder, rungs, has_audio, limits)))
        ladder_cpu.append(_children_cpu() - cpu)

    async def one_by_one() -> None:
        total = 0.0
        cpu = _children_cpu()
        for n, rung in enumerate(rungs):
            folder = _fresh(scratch / f"rung-{n}")
            total += await timed_exec(ffmpeg.ladder_args(exe, clip, folder, [rung], has_audio, limits))
        one_by_one_s.append(total)
        one_by_one_cpu.append(_children_cpu() - cpu)

    async def through_server() -> None:
        _, task = await upload(session, app, clip, resolution="all")
        task = await wait_task(session, app, task["id"], finished, timeout=300, interval=0.05)
        if task["state"] != "COMPLETED":
            raise RuntimeError(f"the ladder task failed: {task['error']}")
        task_s.append(elapsed_ms(task, "started_at", "finished_at") / 1000)
        await delete(session, app, task["id"])

    steps = [ladder, one_by_one, through_server]
    for run in range(runs):
        for step in steps[run % len(steps):] + steps[:run % len(steps)]:
            await step()
        log.info("ladder run %d: task %.2f s, ladder %.2f s, rungs one by one %.2f s",
                 run + 1, task_s[-1], ladder_s[-1], one_by_one_s[-1])

    item = "10 ladder"
    sizes = ", ".join(f"{rung.width}x{rung.height}" for rung in rungs)
    report.figure(item, f"all sizes task started -> finished ({sizes})", "s", task_s)
    report.figure(item, "ladder, one direct ffmpeg", "s", ladder_s)
    report.figure(item, "its rungs one by one, direct ffmpeg each (sum)", "s", one_by_one_s)
    report.figure(item, "ladder ffmpeg / rungs one by one (paired)", "x",
                  ratios(ladder_s, one_by_one_s), 3)
    report.figure(item, "ffmpeg CPU, ladder", "s", ladder_cpu)
    report.figure(item, "ffmpeg CPU, rungs one by one (sum)", "s", one_by_one_cpu)
    report.figure(item, "ladder CPU / rungs one by one CPU (paired)", "x",
                  ratios(ladder_cpu, one_by_one_cpu), 3)
    task_ratio = report.figure(item, "task / rungs one by one (paired)", "x",
                               ratios(task_s, one_by_one_s), 3)
    report.bar(item, f"all sizes task <= {BAR}x its rungs one by one", task_ratio.median, BAR)
    report.raw["ladder"] = {"rungs": sizes, "task_s": task_s, "ladder_s": ladder_s,
                            "one_by_one_s": one_by_one_s, "ladder_cpu_s": ladder_cpu,
                            "one_by_one_cpu_s": one_by_one_cpu}
