"""A task that has FAILED, made the way a real one fails: its upload damaged on disk.

The damage has to land while the task waits, before the worker reads the file, so the
queue is held first by a job that runs until it is deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clips import Clips
from .uploading import Http, delete, transcoding, upload_ok, wait_for_state


@contextlib.asynccontextmanager
async def queue_held(http: Http, clips: Clips) -> AsyncIterator[dict[str, Any]]:
    """While inside, a job runs and every new task waits behind it; deleted on the way out.

    The server's ffmpeg must keep that job running until it is deleted: hanging_ffmpeg()
    when no transcode ran before on it, realtime_ffmpeg() (12 s for clips.long()) otherwise.
    """
    blocker = await upload_ok(http, clips.long(), "480")
    # Its ffmpeg reporting progress, not only the task PROCESSING: deleted before its
    # ffmpeg had started, the blocker would leave hanging_ffmpeg's one hang to the next
    # transcode, the very one the caller waits for.
    yield await transcoding(http, blocker["id"])
    await delete(http, blocker["id"])


@dataclass
class FailedTask:
    task: dict[str, Any]  # as GET /tasks/{id} showed it, FAILED
    source: Path  # its upload on disk, damaged
    good: bytes  # what the upload was before the damage

    def repair(self) -> None:
        self.source.write_bytes(self.good)


async def failed_task(http: Http, clips: Clips, uploads_dir: Path, *, resolution: str = "480",
                      filename: str | None = None) -> FailedTask:
    """clips.small() uploaded, cut to its first 40 bytes while it waits, run, and FAILED.

    See queue_held() for the ffmpeg the server needs.
    """
    good = clips.small().read_bytes()
    async with queue_held(http, clips):
        victim = await upload_ok(http, clips.small(), resolution, filename)
        source = uploads_dir / f"{victim['id']}.mp4"
        source.write_bytes(good[:40])
    failed = await wait_for_state(http, victim["id"], "FAILED", "COMPLETED")
    assert failed["state"] == "FAILED", failed
    return FailedTask(failed, source, good)
