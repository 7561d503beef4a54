"""The containers people record in: each accepted extension, made by ffmpeg as a camera,
phone or screen recorder would make it, completes; a file whose bytes are another
container than its extension promises is refused, whichever kinds the two are."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import tus
from .support.checks import assert_error, assert_nothing_left
from .support.clips import Clips, assert_web_ready, video_size
from .support.internals import SOURCE_EXTENSIONS, Settings
from .support.uploading import AppClient, upload, upload_ok, wait_for_state

# How each kind is made: its name, and what the recorder would have written into it.
RECORDINGS: dict[str, dict] = {  # type: ignore[type-arg]
    ".mp4": {},
    ".mov": {},
    ".m4v": {"extra": ("-f", "ipod")},  # iTunes' flavour of MP4 (brand M4V)
    ".3gp": {"extra": ("-f", "3gp")},  # a phone's (brand 3gp6)
    ".webm": {"vcodec": ("-c:v", "libvpx-vp9", "-deadline", "realtime")},
    ".mkv": {},  # OBS's default: H.264 and AAC in Matroska
    ".avi": {"vcodec": ("-c:v", "mpeg4")},  # MPEG-4 Part 2 in AVI, as older cameras write
    # AVCHD: 192-byte packets, each after a 4-byte time code
    ".mts": {"extra": ("-f", "mpegts", "-mpegts_m2ts_mode", "1")},
    ".m2ts": {"extra": ("-f", "mpegts", "-mpegts_m2ts_mode", "0")},  # plain 188-byte packets
}


def recording(clips: Clips, extension: str) -> Path:
    return clips.make(f"recording{extension}", **RECORDINGS[extension])


def test_every_accepted_extension_has_a_recording() -> None:
    assert set(RECORDINGS) == set(SOURCE_EXTENSIONS)


@pytest.mark.parametrize("extension", [ext for ext in RECORDINGS if ext not in (".mp4", ".mov", ".webm")])
async def test_each_new_container_completes(client: AppClient, clips: Clips, settings: Settings,
                                            tmp_path: Path, extension: str) -> None:
    task = await upload_ok(client, recording(clips, extension), "480")
    assert task["filename"] == f"recording{extension}"
    assert (settings.layout.uploads_dir / f"{task['id']}{extension}").exists()  # kept as it came
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    assert done["media"]["duration"] == pytest.approx(1, abs=0.2)
    out = tmp_path / "out.mp4"
    out.write_bytes(await (await client.get(done["download_url"])).read())
    assert video_size(assert_web_ready(out)) == (320, 240)


@pytest.mark.parametrize("extension", [".mkv", ".mts"])
async def test_a_new_container_through_tus(client: AppClient, clips: Clips, extension: str) -> None:
    data = recording(clips, extension).read_bytes()
    location = await tus.created(client, len(data), f"clip{extension}")
    assert (await tus.patch(client, location, 0, data)).status == 204
    done = await wait_for_state(client, location.rsplit("/", 1)[-1], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]


# One file of each container, named as each other kind: refused by its first bytes.
MISMATCHES = [(made, named) for made in (".mp4", ".mkv", ".avi", ".mts")
              for named in (".mp4", ".mkv", ".avi", ".m2ts")
              if SOURCE_EXTENSIONS[made] != SOURCE_EXTENSIONS[named]]


@pytest.mark.parametrize(("made", "named"), MISMATCHES)
async def test_contents_of_another_container_are_refused(client: AppClient, clips: Clips, settings: Settings,
                                                         made: str, named: str) -> None:
    await assert_error(await upload(client, recording(clips, made), filename=f"clip{named}"),
                       415, "type_mismatch")
    await assert_nothing_left(client, settings)


@pytest.mark.parametrize("extension", [".avi", ".mts"])
async def test_garbage_with_a_new_extension_is_not_a_video(client: AppClient, clips: Clips,
                                                           settings: Settings, tmp_path: Path,
                                                           extension: str) -> None:
    garbage = tmp_path / f"noise{extension}"
    garbage.write_bytes(bytes((i * 151 + 7) % 251 for i in range(20_000)))
    await assert_error(await upload(client, garbage), 415, "not_video")
    await assert_nothing_left(client, settings)


async def test_transport_stream_sync_bytes_without_video_are_refused_by_the_probe(
        client: AppClient, settings: Settings, tmp_path: Path) -> None:
    """Packets that pass the first-bytes check but carry nothing: the mpegts reader finds
    no video stream, so the probe refuses it (415), not the transcode (FAILED)."""
    empty = tmp_path / "empty.mts"
    empty.write_bytes((b"\x47\x1f\xff\x10" + b"\xff" * 184) * 100)  # null packets only
    await assert_error(await upload(client, empty), 415, "not_video")
    await assert_nothing_left(client, settings)
