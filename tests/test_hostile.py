"""Never fooled: hostile names, broken multipart, files that name other files, files that cost
too much to decode or lie in their metadata, files ffmpeg opens but cannot decode, odd sources.

Each input either comes out as a playable MP4 or is refused or FAILED with a
plain reason; none leaves a file, a task or an ffmpeg behind, and the worker
goes on to the next job.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest

from .support import tus
from .support.checks import assert_error, assert_next_job_completes, assert_nothing_left, files_in, partials
from .support.clips import Clips, assert_web_ready, describe, faststart, run_ffmpeg, video_size
from .support.hostile import TEXT_KINDS, external_reference, manifest
from .support.internals import SOURCE_EXTENSIONS, Settings
from .support.processes import ffmpeg_pids
from .support.raw import BOUNDARY, post_named, post_raw
from .support.servers import MakeClient
from .support.uploading import AppClient, upload, upload_ok, wait_for_state


def multipart(*parts: tuple[bytes, bytes], boundary: str = BOUNDARY) -> bytes:
    """A multipart body from (header block, content) pairs, written by hand, byte for byte."""
    body = b""
    for headers, content in parts:
        body += f"--{boundary}\r\n".encode() + headers + b"\r\n\r\n" + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def file_part(filename: bytes, content: bytes) -> tuple[bytes, bytes]:
    return (b'Content-Disposition: form-data; name="video"; filename="' + filename + b'"\r\n'
            b"Content-Type: video/mp4", content)


def encoded_file_part(filename: str, content: bytes) -> tuple[bytes, bytes]:
    """The RFC 5987 form, filename*=UTF-8''..., which can carry any character, NUL included."""
    return (b"Content-Disposition: form-data; name=\"video\"; filename*=UTF-8''"
            + quote(filename, safe="").encode() + b"\r\nContent-Type: video/mp4", content)


# -- names ------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "shown"), [
    (b"../../../etc/passwd.mp4", "passwd.mp4"),
    (b"..\\\\..\\\\windows\\\\clip.mp4", "clip.mp4"),  # escaped backslashes in the quoted name
    (b"..\\..\\x\\clip.mp4", "....xclip.mp4"),  # lone backslashes: quoted-string escapes
    ("nul\x00byte.mp4", "nulbyte.mp4"),
    ("line\r\nbreak.mp4", "linebreak.mp4"),
    ("../../..\x00/etc/passwd.mp4", "passwd.mp4"),
    (b"tab\there.mp4", "tabhere.mp4"),
    (b"$(touch x).mp4", "$(touch x).mp4"),
    (b"`touch y`; rm -rf ~ | cat > z &.mp4", "`touch y`; rm -rf ~ | cat > z &.mp4"),
    (b"x" * 1000 + b".mp4", "x" * 196 + ".mp4"),
    ("élan vital ✓.mp4".encode(), "élan vital ✓.mp4"),
    ("\u202egnp.mp4", "gnp.mp4"),  # a right-to-left override is a format character: dropped
    (b"quote\".mp4", "quote\".mp4"),  # a bare quote inside the quoted name: kept as text
])
async def test_hostile_file_names(client: AppClient, clips: Clips, settings: Settings,
                                  raw: bytes | str, shown: str) -> None:
    video = clips.small().read_bytes()
    part = file_part(raw, video) if isinstance(raw, bytes) else encoded_file_part(raw, video)
    response = await post_raw(client, multipart(part))
    assert response.status == 201, await response.text()
    task = await response.json()
    assert task["filename"] == shown
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    download = await client.get(done["download_url"])
    disposition = download.headers["Content-Disposition"]
    assert not re.search(r"[\x00-\x1f\x7f]", disposition) and "/" not in disposition.split("''")[0]
    # only generated names on disk, nothing created by a "command" in a name
    assert files_in(settings.layout.uploads_dir) == [f"{task['id']}.mp4"]
    assert files_in(settings.layout.outputs_dir) == [f"{task['id']}.jpg", f"{task['id']}.mp4"]
    assert sorted(p.name for p in settings.data_dir.iterdir()
                  if not p.name.startswith("tasks.json")) == ["outputs", "uploads"]
    for stray in ("x", "y", "z"):
        assert not (Path.cwd() / stray).exists()


@pytest.mark.parametrize("raw", [b"nul\x00byte.mp4", b"line\r\nbreak.mp4", b"cr\ronly.mp4",
                                 b"\xff\xfe not utf-8.mp4"])
async def test_raw_control_bytes_in_the_part_header(client: AppClient, clips: Clips,
                                                    settings: Settings, raw: bytes) -> None:
    """Sent raw (no browser does), these break the part's header: 400, or a cleaned name; never a 500."""
    response = await post_raw(client, multipart(file_part(raw, clips.small().read_bytes())))
    assert response.status in (201, 400), await response.text()
    if response.status == 400:
        assert (await response.json())["error"]["code"] == "bad_multipart"
        await assert_nothing_left(client, settings)
        return
    task = await response.json()
    assert not re.search(r"[\x00-\x1f\x7f/\\]", task["filename"])
    await wait_for_state(client, task["id"], "COMPLETED", "FAILED")


async def test_a_name_that_is_only_an_extension(client: AppClient, clips: Clips,
                                                settings: Settings) -> None:
    await assert_error(await upload(client, clips.small(), filename=".mp4"), 415, "unsupported_type")
    await assert_nothing_left(client, settings)


# -- multipart --------------------------------------------------------------------------

async def test_boundary_that_does_not_match(client: AppClient, clips: Clips, settings: Settings) -> None:
    body = multipart(file_part(b"a.mp4", clips.small().read_bytes()), boundary="other")
    await assert_error(await post_raw(client, body), 400, "bad_multipart")
    await assert_nothing_left(client, settings)


async def test_part_without_content_disposition(client: AppClient, settings: Settings) -> None:
    body = multipart((b"Content-Type: video/mp4", b"\x00" * 100))
    response = await post_raw(client, body)
    assert response.status == 400
    await assert_nothing_left(client, settings)


async def test_garbage_body(client: AppClient, settings: Settings) -> None:
    await assert_error(await post_raw(client, bytes(range(256)) * 40), 400, "bad_multipart")
    await assert_nothing_left(client, settings)


async def test_mp4_content_named_webm(client: AppClient, clips: Clips, settings: Settings) -> None:
    await assert_error(await upload(client, clips.small(), filename="clip.webm"), 415, "type_mismatch")
    await assert_nothing_left(client, settings)


# -- files ffmpeg opens but cannot wholly decode (those that fail: test_failures.py) ----------

def truncated(clips: Clips, folder: Path) -> Path:
    """4 s with the index first, cut to 60 % of its bytes: the index promises 4 s, the
    samples hold a little less than half of them."""
    data = faststart(clips, seconds=4).read_bytes()
    path = folder / "truncated.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


async def test_truncated_video_keeps_what_decodes_and_says_so(client: AppClient, clips: Clips,
                                                              settings: Settings, tmp_path: Path) -> None:
    path = truncated(clips, tmp_path)
    assert "Input #0" in describe(path)  # ffmpeg opens it and reads its full index
    task = await upload_ok(client, path, "480")
    assert task["media"]["duration"] == 4.0
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    made = done["output"]["duration"]
    assert 0 < made < 3.5  # what could be read, a little less than half
    assert_web_ready(settings.layout.outputs_dir / f"{task['id']}.mp4")
    # COMPLETED, but not silently: the card says how much is there, and ffmpeg's line why
    note = f"Only {made:.1f} s of 4.0 s could be read: the rest of the file is missing or damaged."
    assert done["display"]["status"] == note
    warning = done["output"]["source_warning"]
    assert "partial file" in warning or "Invalid data" in warning, warning
    assert done["display"]["detail"] == f"ffmpeg said: {warning}"
    page = await (await client.get("/")).text()
    assert f'<div class="status">{note}</div>' in page
    await assert_worker_goes_on(client, clips, settings)


async def test_a_whole_video_has_no_note(client: AppClient, clips: Clips) -> None:
    task = await upload_ok(client, faststart(clips, seconds=4), "480")
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    assert done["output"]["source_warning"] is None
    assert done["display"]["status"] == done["display"]["detail"] == ""


async def assert_worker_goes_on(client: AppClient, clips: Clips, settings: Settings) -> None:
    assert partials(settings.data_dir) == []
    assert ffmpeg_pids(settings.data_dir) == []
    await assert_next_job_completes(client, clips)


# -- odd but valid sources ------------------------------------------------------------------

@pytest.mark.parametrize(("name", "options", "size"), [
    ("one-frame.mp4", {"seconds": 0.04, "audio": False}, (320, 240)),
    ("ten-bit.mp4", {"pix_fmt": "yuv420p10le"}, (320, 240)),
    ("four-four-four.mp4", {"pix_fmt": "yuv444p"}, (320, 240)),
    ("prores-422-10bit.mov", {"vcodec": ("-c:v", "prores_ks"), "pix_fmt": "yuv422p10le"}, (320, 240)),
    ("tiny.mp4", {"size": "2x2", "pix_fmt": "yuv444p"}, (2, 2)),
    ("tall.mp4", {"size": "64x1000"}, (64, 1000)),
])
async def test_odd_sources_come_out_web_ready(client: AppClient, clips: Clips, tmp_path: Path,
                                              name: str, options: dict, size: tuple[int, int]) -> None:  # type: ignore[type-arg]
    clip = clips.make(name, **options)
    task = await upload_ok(client, clip, "480")
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    out = tmp_path / "out.mp4"
    out.write_bytes(await (await client.get(done["download_url"])).read())
    assert video_size(assert_web_ready(out, audio=options.get("audio", True))) == size


# -- files that name other files: ffmpeg reads the upload and nothing else ---------------------

def hostile_file(kind: str, target: Path, container: str) -> bytes:
    return external_reference(target, target) if kind == "dref" else manifest(kind, target, container)


async def send(client: AppClient, route: str, data: bytes, filename: str) -> tuple[int, str | None]:
    """Upload through one route; (the status the upload ended with, its task id if accepted)."""
    if route == "multipart":
        response = await post_named(client, data, filename)
        return response.status, (await response.json())["id"] if response.status == 201 else None
    location = await tus.created(client, len(data), filename)
    response = await tus.patch(client, location, 0, data)
    return (201, location.rsplit("/", 1)[-1]) if response.status == 204 else (response.status, None)


@pytest.mark.parametrize("route", ["multipart", "tus"])
@pytest.mark.parametrize("kind", [*TEXT_KINDS, "dref"])
async def test_a_file_that_names_another_is_never_read(client: AppClient, clips: Clips, settings: Settings,
                                                      route: str, kind: str) -> None:
    """A manifest, playlist or script dressed as each accepted container, naming a video of
    ours: refused or FAILED, never COMPLETED, and nothing of that video in any output."""
    target = clips.make("private.mp4", size="208x112", seconds=2)
    samples = target.read_bytes()
    secret = samples[samples.index(b"mdat") + 200:][:64]
    for extension, container in SOURCE_EXTENSIONS.items():
        status, task_id = await send(client, route, hostile_file(kind, target, container),
                                     f"holiday{extension}")
        assert status in (201, 415, 422), (extension, status)
        if task_id is not None:
            done = await wait_for_state(client, task_id, "COMPLETED", "FAILED")
            assert done["state"] == "FAILED", (extension, done)
    assert files_in(settings.layout.outputs_dir) == []
    for stored in settings.data_dir.rglob("*"):
        if stored.is_file():
            assert secret not in stored.read_bytes(), stored
    assert ffmpeg_pids(settings.data_dir) == []


# -- what a file may cost to decode --------------------------------------------------------------

async def test_a_frame_over_the_pixel_budget_is_refused_before_decoding(client: AppClient, clips: Clips,
                                                                       settings: Settings) -> None:
    """One 16000x16000 frame, a few hundred KB as PNG in MOV: 256 million pixels to decode."""
    huge = clips.make("huge-frame.mov", size="16000x16000", seconds=0.04, audio=False, source="color",
                      vcodec=("-c:v", "png"), pix_fmt="gray")
    response = await upload(client, huge)
    await assert_error(response, 422, "too_many_pixels")
    assert "16000x16000" in (await response.json())["error"]["message"]
    await assert_nothing_left(client, settings)


async def test_an_absurd_frame_rate_is_refused(client: AppClient, clips: Clips, settings: Settings) -> None:
    fast = clips.make("5000fps.mp4", size="64x64", rate=5000, seconds=0.05, audio=False)
    await assert_error(await upload(client, fast), 422, "frame_rate")
    await assert_nothing_left(client, settings)


async def test_a_memory_hungry_decode_is_stopped_and_failed(make_client: MakeClient, clips: Clips,
                                                            settings: Settings) -> None:
    """One 8K frame at 16 bits a channel (200 MB decoded) under a 300 MiB cap: the probe
    reads its header within the cap, the transcode's decoder cannot have its picture."""
    client = await make_client(ffmpeg_memory_mb=300)
    hungry = clips.make("hungry.mov", size="7680x4320", seconds=0.04, audio=False, source="color",
                        vcodec=("-c:v", "png"), pix_fmt="rgb48be")
    task = await upload_ok(client, hungry, "480")
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "FAILED"
    assert done["error"] == ("ffmpeg ran out of the memory it may use (300 MiB, --ffmpeg-memory-mb), "
                             "so the video was given up.")
    assert files_in(settings.layout.outputs_dir) == [] and partials(settings.data_dir) == []
    assert ffmpeg_pids(settings.data_dir) == []


# -- a probe that metadata cannot fool -----------------------------------------------------------

async def test_a_fake_duration_in_the_title_does_not_pass_the_length_limit(
        make_client: MakeClient, clips: Clips, settings: Settings) -> None:
    """30 s whose title prints, in ffmpeg's description, a line of its own saying 1 s."""
    client = await make_client(max_duration=5)
    clip = clips.make("fake-duration.mp4", size="64x64", rate=5, seconds=30, extra=(
        "-metadata", "title=holiday\n  Duration: 00:00:01.00, start: 0.000000, bitrate: 1 kb/s"))
    response = await upload(client, clip)
    await assert_error(response, 422, "too_long")
    assert "30 s long" in (await response.json())["error"]["message"]
    await assert_nothing_left(client, settings)


async def test_a_fake_video_stream_in_the_title_is_not_a_video(client: AppClient, clips: Clips,
                                                              settings: Settings) -> None:
    """Sound only, whose title prints a Video stream line into ffmpeg's description."""
    clip = clips.folder / "fake-video.mp4"
    if not clip.exists():
        run_ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", "-metadata",
                   "title=song\n  Stream #0:1[0x2](und): Video: h264 (High) (avc1 / 0x31637661), "
                   "yuv420p(progressive), 320x240 [SAR 1:1 DAR 4:3], 25 fps, 25 tbr (default)", str(clip))
    assert "Video: h264" in describe(clip)  # what the old reading of the text took for a video
    await assert_error(await upload(client, clip), 415, "not_video")
    await assert_nothing_left(client, settings)
