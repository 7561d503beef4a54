"""Failure reasons in plain words, with ffmpeg's own line kept as the detail.

Each common failure is caused for real, by a file made for it. (Disk full, the
job time limit and a stall are caused in test_never_stuck.py.)
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from .support.checks import assert_error, assert_next_job_completes, assert_nothing_left, files_in, partials
from .support.clips import Clips, faststart, noise_in_samples
from .support.internals import Settings
from .support.processes import ffmpeg_pids
from .support.uploading import AppClient, upload, upload_ok, wait_for_state


def with_unknown_codec(clips: Clips, folder: Path) -> Path:
    """A good MP4 whose sample entry names a codec no decoder knows ('zzzz')."""
    data = clips.make("video_only.mp4", audio=False).read_bytes()
    entry = data.index(b"avc1", data.index(b"stsd"))
    path = folder / "unknown_codec.mp4"
    path.write_bytes(data[:entry] + b"zzzz" + data[entry + 4:])
    return path


def cut_inside_its_samples(clips: Clips, folder: Path) -> Path:
    """Index first, then only the first 2,000 bytes of the samples: an upload cut off early."""
    data = faststart(clips).read_bytes()
    path = folder / "cut_early.mp4"
    path.write_bytes(data[: data.index(b"mdat") + 4 + 2000])
    return path


def cut_before_its_index(clips: Clips, folder: Path) -> Path:
    """Index at the end (no faststart), and the end missing: an interrupted recording."""
    data = clips.make("index_last.mp4", seconds=2).read_bytes()
    assert data.index(b"moov") > data.index(b"mdat")
    path = folder / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


async def failed_with(client: AppClient, path: Path) -> dict[str, str]:
    task = await upload_ok(client, path, "480")
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "FAILED"
    return done


async def test_unknown_codec_is_refused_at_upload(client: AppClient, clips: Clips, settings: Settings,
                                                  tmp_path: Path) -> None:
    """The probe reads streams through FFmpeg's decoders: one it has none for is no usable
    video, and is told so at once rather than failing later in the queue."""
    await assert_error(await upload(client, with_unknown_codec(clips, tmp_path), "480"), 415, "not_video")
    response = await upload(client, with_unknown_codec(clips, tmp_path), "480")
    assert (await response.json())["error"]["message"] == (
        "This is not a playable video. The video is in a format (codec) this server cannot decode.")
    await assert_nothing_left(client, settings)


async def test_no_decodable_picture(client: AppClient, clips: Clips, settings: Settings,
                                    tmp_path: Path) -> None:
    """A good index over samples that are all noise: FAILED, nothing left, the worker goes on."""
    path = noise_in_samples(faststart(clips), tmp_path / "noise.mp4")
    done = await failed_with(client, path)
    assert done["error"] == ("No picture could be decoded from the video: its data is "
                             "damaged or missing.")
    assert "received no packets" in done["error_detail"]
    assert done["display"]["detail"] == f"ffmpeg said: {done['error_detail']}"
    # 320x240 asked for at 480: nothing was made, so nothing is "kept at 240p"
    assert done["display"]["resolution"] == "480p"
    assert str(settings.data_dir) not in done["error_detail"]
    assert files_in(settings.layout.outputs_dir) == []
    assert partials(settings.data_dir) == []
    assert ffmpeg_pids(settings.data_dir) == []
    await assert_next_job_completes(client, clips)


async def test_damaged_part_way(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    """A quarter decodes, then noise: too many decoding errors for ffmpeg to go on."""
    path = noise_in_samples(faststart(clips, seconds=4), tmp_path / "damaged.mp4", start=0.25)
    done = await failed_with(client, path)
    assert done["error"] == "The file's data is damaged, so ffmpeg could not read it."
    assert "Invalid data found when processing input" in done["error_detail"]
    assert "@ 0x" not in done["error_detail"]  # ffmpeg's log prefixes are not the user's business


async def test_cut_short_inside_its_samples(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    done = await failed_with(client, cut_inside_its_samples(clips, tmp_path))
    assert done["error"] == ("The file is cut short: too little of the video is there to make "
                             "anything from.")
    assert "partial file" in done["error_detail"]
    assert done["display"]["detail"] == f"ffmpeg said: {done['error_detail']}"


async def test_cut_short_is_refused_at_upload(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    response = await upload(client, cut_before_its_index(clips, tmp_path), "480")
    assert response.status == 415
    message = (await response.json())["error"]["message"]
    assert message.startswith("This is not a playable video. The file is cut short")
    assert "(ffmpeg: moov atom not found)" in message


async def test_a_retry_that_fails_again_says_when(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    first = await failed_with(client, noise_in_samples(faststart(clips), tmp_path / "noise.mp4"))
    assert first["retries"] == 0 and first["retried_at"] is None
    for attempt, nth in ((1, "1st"), (2, "2nd")):
        response = await client.post(f"/tasks/{first['id']}/retry")
        assert response.status == 200
        again = await wait_for_state(client, first["id"], "FAILED")
        assert again["retries"] == attempt
        # the server's local time of the last retry, as its clock reads
        at = datetime.fromisoformat(again["retried_at"]).astimezone().strftime("%H:%M")
        assert again["display"]["status"] == f"Retried at {at} ({nth} retry), failed again: {first['error']}"
    page = await (await client.get("/")).text()
    assert f"Retried at {at} (2nd retry), failed again:" in page
