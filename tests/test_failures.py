"""Failure reasons in plain words, with ffmpeg's own line kept as the detail.

Each common failure is caused for real, by a file made for it. (Disk full, the
job time limit and a stall are caused in test_never_stuck.py.)
"""

from __future__ import annotations

from pathlib import Path

from .support.clips import Clips
from .support.uploading import AppClient, upload, upload_ok, wait_for_state


def with_unknown_codec(clips: Clips, folder: Path) -> Path:
    """A good MP4 whose sample entry names a codec no decoder knows ('zzzz')."""
    data = clips.make("video_only.mp4", audio=False).read_bytes()
    entry = data.index(b"avc1", data.index(b"stsd"))
    path = folder / "unknown_codec.mp4"
    path.write_bytes(data[:entry] + b"zzzz" + data[entry + 4:])
    return path


def noise_behind_a_good_index(clips: Clips, folder: Path) -> Path:
    data = clips.make("faststart.mp4", seconds=2, extra=("-movflags", "+faststart")).read_bytes()
    mdat = data.index(b"mdat") + 4
    path = folder / "noise.mp4"
    path.write_bytes(data[:mdat] + bytes((i * 151 + 7) % 251 for i in range(len(data) - mdat)))
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


async def test_unknown_codec(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    done = await failed_with(client, with_unknown_codec(clips, tmp_path))
    assert done["error"] == "The video is in a format (codec) this server cannot decode."
    assert "decoder" in done["error_detail"]
    assert done["display"]["detail"] == f"ffmpeg said: {done['error_detail']}"


async def test_no_decodable_picture(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    done = await failed_with(client, noise_behind_a_good_index(clips, tmp_path))
    assert done["error"] == ("No picture could be decoded from the video: its data is "
                             "damaged or missing.")
    assert done["error_detail"]


async def test_cut_short_is_refused_at_upload(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    response = await upload(client, cut_before_its_index(clips, tmp_path), "480")
    assert response.status == 415
    message = (await response.json())["error"]["message"]
    assert message.startswith("This is not a playable video. The file is cut short")
    assert "(ffmpeg: moov atom not found)" in message


async def test_a_retry_that_fails_again_says_so(client: AppClient, clips: Clips, tmp_path: Path) -> None:
    first = await failed_with(client, with_unknown_codec(clips, tmp_path))
    assert first["retries"] == 0
    for attempt in (1, 2):
        response = await client.post(f"/tasks/{first['id']}/retry")
        assert response.status == 200
        again = await wait_for_state(client, first["id"], "FAILED")
        assert again["retries"] == attempt
    assert again["display"]["status"] == f"Retried twice, failed again: {first['error']}"
