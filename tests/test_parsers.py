"""The pure functions: the probe's and progress readers, output size planning, names, signatures."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from .support.internals import (Media, clock, container_of, content_disposition, display_name,
                                human_size, media_from, mp4_duration, output_size, parse_progress)

pytestmark = pytest.mark.unit

def video(codec: str | None = "h264", width: int = 1280, height: int = 720, pixel_format: str = "yuv420p",
          sar: list[int] | None = None, rate: list[int] | None = None,
          attached_pic: bool = False) -> dict[str, Any]:
    """A video stream as the probe child describes it."""
    return {"type": "video", "codec": codec, "attached_pic": attached_pic, "width": width,
            "height": height, "pixel_format": pixel_format, "sample_aspect": sar or [1, 1],
            "frame_rate": rate}


AAC = {"type": "audio", "codec": "aac", "attached_pic": False}
LANDSCAPE = {"duration": 62.5, "rotation": 0, "streams": [video(rate=[30, 1]), AAC]}
PHONE = {"duration": 3.0, "rotation": -90, "streams": [
    video("hevc", 1920, 1080, "yuv420p10le", rate=[30000, 1001]), AAC]}
AUDIO_WITH_COVER = {"duration": 1.0, "rotation": 0, "streams": [
    AAC, video("mjpeg", 64, 64, "yuvj420p", attached_pic=True)]}
# a DV-sized WebM whose container says how wide its pixels are, and a second picture
ANAMORPHIC_WEBM = {"duration": None, "rotation": 0, "streams": [
    video("vp9", 720, 576, sar=[16, 15], rate=[25, 1]), video("vp9", 720, 576, sar=[64, 45])]}


def test_probe_landscape_with_audio() -> None:
    media = media_from(LANDSCAPE)
    assert media == Media(duration=62.5, width=1280, height=720, video_codec="h264",
                          audio_codec="aac", pixel_format="yuv420p", rotation=0, sample_aspect=1.0,
                          frame_rate=30.0)
    assert media.display_size == (1280, 720)


def test_probe_rotated_hevc_10bit_phone_clip() -> None:
    media = media_from(PHONE)
    assert media is not None
    assert (media.video_codec, media.pixel_format, media.rotation) == ("hevc", "yuv420p10le", 270)
    assert media.display_size == (1080, 1920)  # shown portrait
    assert output_size(media, 720) == (720, 1280)


def test_probe_ignores_cover_art_so_audio_is_not_video() -> None:
    assert media_from(AUDIO_WITH_COVER) is None


def test_probe_unknown_duration_and_the_first_video_stream() -> None:
    media = media_from(ANAMORPHIC_WEBM)
    assert media is not None
    assert media.duration is None and media.audio_codec is None
    assert (media.width, media.height, media.video_codec) == (720, 576, "vp9")
    assert media.sample_aspect == 16 / 15  # the first stream's
    assert media.display_size == (768, 576)


@pytest.mark.parametrize("facts", [
    {}, {"streams": "garbage"}, {"streams": [AAC]}, {"streams": [None, 3, "video"]},
    {"streams": [video(width=0, height=0)]},
    {"streams": [video(codec=None)]},  # no decoder for it
    {"streams": [{**video(), "width": "1280"}]},
    {"streams": [{**video(), "height": True}]},
])
def test_probe_without_usable_video(facts: dict[str, Any]) -> None:
    assert media_from(facts) is None


@pytest.mark.parametrize(("field", "value"), [
    ("duration", -1), ("duration", "62.5"), ("rotation", 90.5), ("rotation", "90"),
])
def test_probe_ignores_what_it_cannot_trust(field: str, value: object) -> None:
    media = media_from({**LANDSCAPE, field: value})
    assert media is not None
    assert (media.duration, media.rotation) == ((None, 0) if field == "duration" else (62.5, 0))


@pytest.mark.parametrize(("sar", "rate", "sample_aspect", "frame_rate"), [
    ([0, 1], [0, 0], 1.0, None),  # unknown: square pixels, no rate
    ([1, 0], None, 1.0, None),
    ([-4, 3], [-25, 1], 1.0, None),
    ([4, 3], [60000, 1001], 4 / 3, 60000 / 1001),
])
def test_probe_ratios(sar: list[int], rate: list[int] | None, sample_aspect: float,
                      frame_rate: float | None) -> None:
    media = media_from({"streams": [video(sar=sar, rate=rate)]})
    assert media is not None
    assert (media.sample_aspect, media.frame_rate) == (sample_aspect, frame_rate)


@pytest.mark.parametrize(("line", "seconds"), [
    ("out_time_us=1500000", 1.5),
    ("out_time_ms=2000000\n", 2.0),  # named ms, counted in microseconds
    ("out_time_us=-23220", 0.0),  # ffmpeg starts slightly negative with some audio
    ("out_time_us=N/A", None),
    ("out_time=00:00:01.500000", None),
    ("frame=12", None),
    ("progress=end", None),
    ("", None),
    ("no equals sign", None),
])
def test_parse_progress(line: str, seconds: float | None) -> None:
    assert parse_progress(line) == seconds


def _media(width: int, height: int, rotation: int = 0, sar: float = 1.0) -> Media:
    return Media(duration=1.0, width=width, height=height, video_codec="h264", audio_codec=None,
                 rotation=rotation, sample_aspect=sar)


@pytest.mark.parametrize(("media", "resolution", "expected"), [
    (_media(1920, 1080), 720, (1280, 720)),
    (_media(1920, 1080), 480, (854, 480)),
    (_media(1920, 1080), 1080, (1920, 1080)),
    (_media(1280, 720), 1080, (1280, 720)),  # never upscaled
    (_media(1080, 1920), 720, (720, 1280)),  # portrait: 720 wide
    (_media(1920, 1080, rotation=90), 720, (720, 1280)),  # rotated phone clip
    (_media(321, 241), 720, (320, 240)),  # odd source: both sides even
    (_media(720, 576, sar=64 / 45), 480, (854, 480)),  # anamorphic PAL 16:9
    (_media(2, 1000), 480, (2, 1000)),
])
def test_output_size(media: Media, resolution: int, expected: tuple[int, int]) -> None:
    width, height = output_size(media, resolution)
    assert (width, height) == expected
    assert width % 2 == 0 and height % 2 == 0


@pytest.mark.parametrize(("raw", "shown"), [
    ("clip.mov", "clip.mov"),
    ("../../etc/passwd.mp4", "passwd.mp4"),
    ("C:\\Users\\me\\holiday.MP4", "holiday.MP4"),
    ("new\nline\x00.mp4", "newline.mp4"),
    ('<b onclick=x()>"quoted" $(touch x).mp4', '<b onclick=x()>"quoted" $(touch x).mp4'),
    ("a</b>.mp4", "b>.mp4"),  # a slash is a folder separator, even inside HTML
    ("Überraschung 日本.webm", "Überraschung 日本.webm"),
    ("", "video"),
    ("/", "video"),
])
def test_display_name(raw: str, shown: str) -> None:
    assert display_name(raw) == shown


def test_display_name_caps_length_and_keeps_extension() -> None:
    name = display_name("a" * 1000 + ".mov")
    assert len(name) == 200 and name.endswith(".mov")


@pytest.mark.parametrize(("filename", "header"), [
    ("clip.mov", "attachment; filename=\"clip-720p.mp4\"; filename*=UTF-8''clip-720p.mp4"),
    ('my "best" clip.mp4', "attachment; filename=\"my_best_clip-720p.mp4\"; "
                           "filename*=UTF-8''my%20%22best%22%20clip-720p.mp4"),
    ("Überraschung.webm", "attachment; filename=\"_berraschung-720p.mp4\"; "
                          "filename*=UTF-8''%C3%9Cberraschung-720p.mp4"),
])
def test_content_disposition(filename: str, header: str) -> None:
    assert content_disposition(filename, "720") == header


@pytest.mark.parametrize(("head", "kind"), [
    (b"\x00\x00\x00\x20ftypisom\x00\x00", "bmff"),
    (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "bmff"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "ebml"),
    (b"RIFF\x9a\xb4\x01\x00AVI LIST", "riff"),
    (b"RIFF\x9a\xb4\x01\x00WAVEfmt ", None),  # a RIFF of sound
    ((b"\x47" + bytes(187)) * 3, "mpegts"),
    ((bytes(4) + b"\x47" + bytes(187)) * 3, "mpegts"),  # 192-byte packets (.m2ts, AVCHD)
    (b"\x47" + bytes(187) + b"\x47" + bytes(187), None),  # two packets: too few to tell
    (b"GIF89a" + bytes(500), None),  # a G first, by chance
    (b"hello, this is text", None),
    (b"\x00\x00", None),
    (b"ID3\x03\x00\x00\x00\x00", None),
])
def test_container_of(head: bytes, kind: str | None) -> None:
    assert container_of(head) == kind


@pytest.mark.parametrize(("size", "text"), [(0, "0 bytes"), (1023, "1023 bytes"), (1536, "1.5 KiB"),
                                            (209_715_200, "200 MiB"), (5 * 1024**4, "5120 GiB")])
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (62.5, "1:02"), (3725, "1:02:05")])
def test_clock(seconds: float, text: str) -> None:
    assert clock(seconds) == text


def test_media_survives_its_json_form() -> None:
    media = media_from(PHONE)
    assert media is not None
    assert Media.from_json(media.to_json()) == media


def _mvhd(version: int, timescale: int, duration: int) -> bytes:
    times = struct.pack(">QQ", 1, 2) if version == 1 else struct.pack(">II", 1, 2)
    length = struct.pack(">Q" if version == 1 else ">I", duration)
    body = bytes([version, 0, 0, 0]) + times + struct.pack(">I", timescale) + length + bytes(80)
    return b"\x00\x00\x00\x20ftypisom" + bytes(20) + struct.pack(">I", 8 + len(body)) + b"mvhd" + body


def test_mp4_duration_from_the_index() -> None:
    assert mp4_duration(_mvhd(0, 1000, 4000)) == 4.0
    assert mp4_duration(_mvhd(1, 90000, 90000 * 3 + 45000)) == 3.5
    assert mp4_duration(_mvhd(0, 1000, 4000)[:50]) is None  # cut off inside the box
    assert mp4_duration(b"\x00\x00\x00\x20ftypisom" + bytes(100)) is None  # no index in it
    assert mp4_duration(_mvhd(0, 0, 10)) is None  # a timescale of 0 says nothing
