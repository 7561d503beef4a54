"""Never stuck: a stalled ffmpeg, a job over its time limit, a full disk; the next job runs at once."""

from __future__ import annotations

import os
from pathlib import Path

from .support.checks import assert_next_job_completes, files_in
from .support.clips import Clips, hanging_ffmpeg
from .support.failing import queue_held
from .support.internals import Settings
from .support.processes import ffmpeg_pids, pids_of
from .support.servers import MakeClient
from .support.uploading import upload_ok, wait_for_state


async def test_stalled_ffmpeg_is_stopped(make_client: MakeClient, clips: Clips, settings: Settings,
                                         tmp_path: Path) -> None:
    stand_in = hanging_ffmpeg(tmp_path)
    client = await make_client(ffmpeg=str(stand_in), stall_timeout=3.0)
    stuck = await upload_ok(client, clips.small(), "480")
    behind = await upload_ok(client, clips.small(), "480")
    failed = await wait_for_state(client, stuck["id"], "FAILED", "COMPLETED", timeout=20)
    assert failed["state"] == "FAILED"
    assert failed["error"] == ("Stopped: ffmpeg made no progress for 3 s, so the job was given up "
                               "rather than left hanging.")
    # the one behind it is taken at once and completes
    done = await wait_for_state(client, behind["id"], "COMPLETED", "FAILED", timeout=20)
    assert done["state"] == "COMPLETED", done["error"]
    assert pids_of(stand_in) == [] and ffmpeg_pids(settings.data_dir) == []
    assert files_in(settings.layout.outputs_dir) == [f"{behind['id']}.jpg", f"{behind['id']}.mp4"]
    # retried, it runs normally this time (the stand-in hangs only once)
    assert (await client.post(f"/tasks/{stuck['id']}/retry")).status == 200
    assert (await wait_for_state(client, stuck["id"], "COMPLETED", "FAILED"))["state"] == "COMPLETED"


async def test_job_over_its_time_limit_is_stopped(make_client: MakeClient, clips: Clips,
                                                  settings: Settings, tmp_path: Path) -> None:
    stand_in = hanging_ffmpeg(tmp_path)
    client = await make_client(ffmpeg=str(stand_in), job_timeout=2.0, stall_timeout=60.0)
    stuck = await upload_ok(client, clips.small(), "480")
    failed = await wait_for_state(client, stuck["id"], "FAILED", "COMPLETED", timeout=20)
    assert failed["state"] == "FAILED"
    assert failed["error"] == "Stopped: the transcode took longer than the job time limit of 2 s."
    assert pids_of(stand_in) == []
    assert files_in(settings.layout.outputs_dir) == []
    await assert_next_job_completes(client, clips)


async def test_disk_full_during_transcode(make_client: MakeClient, clips: Clips, settings: Settings,
                                          tmp_path: Path) -> None:
    """A real ENOSPC, without root: the job's output path is made to point at /dev/full."""
    client = await make_client(ffmpeg=str(hanging_ffmpeg(tmp_path)))  # the blocker runs until deleted
    async with queue_held(client, clips):
        victim = await upload_ok(client, clips.small(), "480")
        partial = settings.layout.outputs_dir / f"{victim['id']}.partial.mp4"
        os.symlink("/dev/full", partial)  # every write ffmpeg makes there fails with ENOSPC
    failed = await wait_for_state(client, victim["id"], "FAILED", "COMPLETED")
    assert failed["state"] == "FAILED"
    assert failed["error"] == "The server's disk is full, so the video could not be written."
    assert not os.path.lexists(partial)
    assert files_in(settings.layout.outputs_dir) == [] and ffmpeg_pids(settings.data_dir) == []
    assert os.path.exists("/dev/full")  # the link was removed, not what it pointed to
    await assert_next_job_completes(client, clips)
