"""The real app with N finished tasks already in its store, for item 6 (scale of the list).

Uploading 10,000 videos would take far longer than the whole benchmark may, so
this bench-only entry point builds the app exactly as `python -m video_async`
does (`create_app(settings)`) and fills `app[STORE]` before serving. The tasks
are COMPLETED or FAILED: a QUEUED one would send the worker looking for a file
that does not exist. Nothing else differs from the real server.

With `--progressing SECONDS` one more task is PROCESSING, and its progress moves
every SECONDS through the store's set_progress(), as the worker moves it on each
report of ffmpeg's: the list changes all the time, as it does while a job runs.

    python -m bench.seeded_server --port P --data-dir D --tasks 10000 [--progressing 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from video_async.app import create_app
from video_async.config import Settings
from video_async.keys import SETTINGS, STORE
from video_async.ffmpeg import Media
from video_async.store import Output, State, Task, TaskStore, new_task_id, utc_now

# What a probed 1080p upload looks like, so each task serialises to a realistic size.
MEDIA = Media(duration=10.0, width=1920, height=1080, video_codec="h264", audio_codec="aac",
              pixel_format="yuv420p")
OUTPUT = Output(size=2_500_000, width=1280, height=720, duration=10.0)


def seed(store: TaskStore, count: int, data_dir: Path) -> None:
    start = utc_now() - timedelta(seconds=count)
    for n in range(count):
        task_id = new_task_id()
        created = start + timedelta(seconds=n)
        started = created + timedelta(milliseconds=3)
        task = Task(id=task_id, filename=f"holiday clip {n}.mp4", resolution=720,
                    source_path=data_dir / "uploads" / f"{task_id}.mp4", size=50_000_000,
                    media=MEDIA, state=State.COMPLETED, progress=100,
                    created_at=created, started_at=started,
                    finished_at=started + timedelta(seconds=4),
                    output=OUTPUT, output_path=data_dir / "outputs" / f"{task_id}.mp4",
                    thumbnail_path=data_dir / "outputs" / f"{task_id}.jpg")
        if n % 10 == 9:  # some failures, so the list holds both kinds of finished task
            task.state, task.progress, task.error = State.FAILED, 0, "Invalid data found"
            task.output = task.output_path = task.thumbnail_path = None
        store.add(task)


def progressing(interval: float) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that adds one PROCESSING task and moves its progress every interval."""
    async def context(app: web.Application) -> AsyncIterator[None]:
        store = app[STORE]
        task = store.add(Task(id=new_task_id(), filename="running.mp4", resolution=720,
                              source_path=app[SETTINGS].layout.uploads_dir / "running.mp4",
                              size=50_000_000, media=MEDIA, state=State.PROCESSING,
                              started_at=utc_now()))

        async def move() -> None:
            for step in itertools.count():
                await asyncio.sleep(interval)
                store.set_progress(task, 1 + step % 98, 1000.0 - step % 1000)

        mover = asyncio.create_task(move())
        yield
        mover.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await mover
    return context


def main() -> None:
    parser = argparse.ArgumentParser(description="the real app, pre-filled with finished tasks")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--progressing", type=float, metavar="SECONDS",
                        help="one more task, PROCESSING, its progress moved every SECONDS")
    parser.add_argument("--no-persist", dest="persist", action="store_false",
                        help="no tasks.json, as the real server's --no-persist")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(port=args.port, data_dir=args.data_dir, log_level="WARNING",
                        persist=args.persist)
    app = create_app(settings)
    if args.progressing:
        app.cleanup_ctx.append(progressing(args.progressing))
    # Seeded before the loop starts: store.add() sets the worker's wake-up event, but
    # the worker then finds nothing QUEUED, because every task is already finished.
    seed(app[STORE], args.tasks, args.data_dir)
    # the same run_app call as video_async.__main__, so only the store's contents differ
    web.run_app(app, host=settings.host, port=settings.port, shutdown_timeout=2.0, print=None)


if __name__ == "__main__":
    main()
