"""Step 5: an event-driven worker that drives ffmpeg through a pipe.

    .venv/bin/python steps/05_ffmpeg_worker.py              # 3 jobs of 2 s of video
    .venv/bin/python steps/05_ffmpeg_worker.py --blocking   # break it: subprocess.run

Jobs go into an `asyncio.Queue`; a worker task waits in `await queue.get()`,
which suspends until a job is put (no polling: the put wakes it). For each
job it starts ffmpeg with `asyncio.create_subprocess_exec` and reads the
progress ffmpeg writes to its stdout (`-progress pipe:1`: lines such as
`out_time_us=1000000`) with `await process.stdout.readline()`. The video is
made by ffmpeg itself (lavfi's testsrc), at its real pace (`-re`; recent
ffmpeg reads the first half second at once), so a job of 2 s of video takes
about 1.5 s.

What you will see: the worker, asleep in `queue.get()`, picks each job up
within a millisecond or so of its put, the progress of each job, and a loop that stays free the whole time
(the lag ticker of step 3 runs beside the worker). Break it with --blocking:
the worker runs the same ffmpeg with `subprocess.run`, which waits on the
loop, and the worst lag is the whole job. With --burst, every job is put at once:
one worker takes them one after another, and each later job waits in the queue
for the ones before it (exercise 1 of the guide gives it company).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg

TICK = 0.01
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()  # the binary the app uses by default


def command(seconds: float, output: Path, progress: bool) -> list[str]:
    return [FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-re",
            "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=160x120:rate=10",
            "-c:v", "libx264", "-preset", "ultrafast",
            *(["-progress", "pipe:1", "-stats_period", "0.25"] if progress else []), str(output)]


async def transcode(seconds: float, output: Path) -> list[int]:
    """Run one job; the percentages ffmpeg's progress reports reached."""
    process = await asyncio.create_subprocess_exec(
        *command(seconds, output, progress=True), stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    reached = []
    while line := await process.stdout.readline():  # suspends until ffmpeg writes a line
        key, _, value = line.decode().strip().partition("=")
        if key == "out_time_us" and value.isdigit():
            reached.append(min(100, round(int(value) / 1e6 / seconds * 100)))
        elif key == "progress" and value == "end":
            reached.append(100)
    if await process.wait() != 0:
        raise RuntimeError(f"ffmpeg failed with {process.returncode}")
    return reached


def transcode_blocking(seconds: float, output: Path) -> list[int]:
    subprocess.run(command(seconds, output, progress=False), check=True)  # the loop waits
    return [100]


async def worker(queue: asyncio.Queue[tuple[int, float, float]], folder: Path,
                 blocking: bool) -> None:
    while True:
        number, seconds, put_at = await queue.get()  # asleep until a job is put
        woke = (time.perf_counter() - put_at) * 1000
        output = folder / f"job-{number}.mp4"
        if blocking:
            reached = transcode_blocking(seconds, output)
        else:
            reached = await transcode(seconds, output)
        steps = " ".join(f"{percent}%" for percent in reached)
        print(f"job {number}: picked up {woke:.1f} ms after its put; progress {steps}; "
              f"{output.stat().st_size} bytes", flush=True)
        queue.task_done()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3, help="jobs to run (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="seconds of video per job (default: %(default)s)")
    parser.add_argument("--blocking", action="store_true", help="run ffmpeg with subprocess.run")
    parser.add_argument("--burst", action="store_true",
                        help="put every job at once: the later ones wait in the queue")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            lags.append(max(0.0, loop.time() - before - TICK))

    queue: asyncio.Queue[tuple[int, float, float]] = asyncio.Queue()
    with tempfile.TemporaryDirectory(prefix="step5-") as folder:
        ticking = asyncio.create_task(ticker())
        working = asyncio.create_task(worker(queue, Path(folder), args.blocking))
        started = time.perf_counter()
        for number in range(1, args.jobs + 1):
            if not args.burst:
                await asyncio.sleep(0.05)  # the worker is asleep in queue.get() by now
            queue.put_nowait((number, args.seconds, time.perf_counter()))
            if not args.burst:
                await queue.join()  # until the job is task_done()
        await queue.join()
        elapsed = time.perf_counter() - started
        await asyncio.sleep(TICK * 3)  # the ticker's last wake-up, late if the loop was held
        working.cancel()
        ticking.cancel()
    how = "subprocess.run (blocking)" if args.blocking else "create_subprocess_exec + pipe"
    print(f"\nffmpeg through {how}: {args.jobs} jobs in {elapsed:.1f} s")
    print(f"loop lag while they ran: worst {max(lags) * 1000:.0f} ms, "
          f"{len(lags)} ticker wake-ups")


if __name__ == "__main__":
    asyncio.run(main())
