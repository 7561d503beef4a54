"""The pure functions: ffmpeg output parsers, output size planning, names and signatures."""

from __future__ import annotations

import struct

import pytest

from .support.internals import (Media, clock, container_of, content_disposition, display_name,
                                human_size, mp4_duration, output_size, parse_probe, parse_progress)

LANDSCAPE = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'clip.mov':
  Metadata:
    major_brand     : qt
  Duration: 00:01:02.50, start: 0.000000, bitrate: 3112 kb/s
  Stream #0:0[0x1]: Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 1280x720 [SAR 1:1 DAR 16:9], 3027 kb/s, 30 fps, 30 tbr, 15360 tbn (default)
    Metadata:
      handler_name    : VideoHandler
  Stream #0:1[0x2]: Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 69 kb/s (default)
At least one output file must be specified
"""

PHONE = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'IMG_0001.MOV':
  Duration: 00:00:03.00, start: 0.000000, bitrate: 9000 kb/s
  Stream #0:0[0x1](und): Video: hevc (Main 10) (hvc1 / 0x31637668), yuv420p10le(tv, bt2020nc/bt2020/arib-std-b67), 1920x1080, 8000 kb/s, 29.97 fps, 30 tbr, 600 tbn (default)
    Side data:
      Display Matrix: rotation of -90.00 degrees
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, fltp, 160 kb/s (default)
"""

AUDIO_WITH_COVER = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'song.mp4':
  Duration: 00:00:01.00, start: 0.000000, bitrate: 100 kb/s
  Stream #0:0[0x1](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 70 kb/s (default)
  Stream #0:1[0x0]: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 64x64 [SAR 1:1 DAR 1:1], 90k tbr, 90k tbn (attached pic)
"""

ANAMORPHIC_WEBM = """\
Input #0, matroska,webm, from 'dv.webm':
  Duration: N/A, start: 0.000000, bitrate: N/A
  Stream #0:0: Video: vp9 (Profile 0), yuv420p(tv, progressive), 720x576, SAR 16:15 DAR 4:3, 25 fps, 25 tbr, 1k tbn
  Stream #0:1: Video: vp9, yuv420p, 720x576 [SAR 64:45 DAR 16:9], 25 fps
"""


def test_probe_landscape_with_audio() -> None:
    media = parse_probe(LANDSCAPE)
    assert media == Media(duration=62.5, width=1280, height=720, video_codec="h264",
                          audio_codec="aac", pixel_format="yuv420p", rotation=0, sample_aspect=1.0)
    assert media.display_size == (1280, 720)


def test_probe_rotated_hevc_10bit_phone_clip() -> None:
    media = parse_probe(PHONE)
    assert media is not None
    assert (media.video_codec, media.pixel_format, media.rotation) == ("hevc", "yuv420p10le", 270)
    assert media.display_size == (1080, 1920)  # shown portrait
    assert output_size(media, 720) == (720, 1280)


def test_probe_ignores_cover_art_so_audio_is_not_video() -> None:
    assert parse_probe(AUDIO_WITH_COVER) is None


def test_probe_unknown_duration_and_the_first_video_stream() -> None:
    media = parse_probe(ANAMORPHIC_WEBM)
    assert media is not None
    assert media.duration is None and media.audio_codec is None
    assert (media.width, media.height, media.video_codec) == (720, 576, "vp9")
    assert media.sample_aspect == 1.0  # this first stream's SAR is not in the [SAR ...] form


@pytest.mark.parametrize("text", ["", "garbage", "Input #0, mp3, from 'a.mp3':\n  Stream #0:0: Audio: mp3\n",
                                  "Stream #0:0: Video: h264, yuv420p, 0x0, 25 fps"])
def test_probe_without_usable_video(text: str) -> None:
    assert parse_probe(text) is None


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
    (b"hello, this is text", None),
    (b"\x00\x00", None),
    (b"ID3\x03\x00\x00\x00\x00", None),
])
def test_container_of(head: bytes, kind: str | None) -> None:
    assert container_of(head) == kind


@pytest.mark.parametrize(("size", "text"), [(0, "0 bytes"), (1023, "1023 bytes"), (1536, "1.5 KB"),
                                            (209_715_200, "200 MB"), (5 * 1024**4, "5120 GB")])
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (62.5, "1:02"), (3725, "1:02:05")])
def test_clock(seconds: float, text: str) -> None:
    assert clock(seconds) == text


def test_media_survives_its_json_form() -> None:
    media = parse_probe(PHONE)
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
