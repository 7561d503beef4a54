"""Property-based tests (hypothesis) for the parsers and the file-name sanitiser.

Examples are derandomized, so a run is the same on every machine, and kept
to a few hundred per property, so the suite stays quick.
"""

from __future__ import annotations

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from .support.internals import content_disposition, display_name, parse_probe, parse_progress

settings.register_profile("project", derandomize=True, max_examples=300, deadline=None)
settings.load_profile("project")


# -- parse_progress ---------------------------------------------------------------------

@given(st.text())
def test_progress_never_raises_and_is_never_negative(line: str) -> None:
    seconds = parse_progress(line)
    assert seconds is None or seconds >= 0


@given(st.sampled_from(["out_time_us", "out_time_ms"]), st.integers(0, 10**14),
       st.sampled_from(["", "\n", "\r\n", " \n"]))
def test_progress_reads_microseconds(key: str, micros: int, ending: str) -> None:
    assert parse_progress(f"{key}={micros}{ending}") == micros / 1_000_000


@given(st.sampled_from(["frame", "fps", "bitrate", "out_time", "speed", "progress", "total_size"]),
       st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_progress_ignores_other_keys(key: str, value: str) -> None:
    assert parse_progress(f"{key}={value}") is None


# -- parse_probe ------------------------------------------------------------------------

@given(st.text())
def test_probe_never_raises(text: str) -> None:
    media = parse_probe(text)
    assert media is None or (media.width > 0 and media.height > 0)


# the Video lines among the fragments, each with the coded size it should give (None: unusable)
VIDEO_LINES = {
    "  Stream #0:0: Video: h264, yuv420p, 0x0": None,
    "  Stream #0:0: Video: vp9, yuv420p, 640x480 [SAR 0:0 DAR 0:0]": (640, 480),
    "  Stream #0:0: Video: h264, 99999x2": (99999, 2),
}


@given(st.lists(st.sampled_from([
    "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':", "  Duration: 00:00:01.00, start: 0",
    "  Stream #0:1: Audio: aac, 44100 Hz", "Side data:", "      Display Matrix: rotation of 1e999 degrees",
    "  Stream #0:2: Video: mjpeg, 64x64 (attached pic)", "  Duration: 99:59:59.99", *VIDEO_LINES,
]), max_size=8).map("\n".join))
def test_probe_never_raises_on_plausible_fragments(text: str) -> None:
    """The first Video line that is not cover art decides: its size, or None when it has none."""
    media = parse_probe(text)
    first = next((line for line in text.splitlines() if line in VIDEO_LINES), None)
    expected = VIDEO_LINES[first] if first is not None else None
    if expected is None:
        assert media is None
    else:
        assert media is not None and (media.width, media.height) == expected
        assert 0 <= media.rotation < 360 and media.sample_aspect > 0
        assert media.duration is None or media.duration >= 0
        assert min(media.display_size) > 0


@given(width=st.integers(1, 16383), height=st.integers(1, 16383),
       codec=st.sampled_from(["h264", "hevc", "vp9", "av1", "prores", "mpeg4"]),
       pixel_format=st.sampled_from(["yuv420p", "yuv420p10le", "yuv444p", "yuvj420p", "gray"]),
       hours=st.integers(0, 99), minutes=st.integers(0, 59), centis=st.integers(0, 5999),
       rotation=st.sampled_from([None, 90, -90, 180, 270]), audio=st.sampled_from([None, "aac", "opus"]))
def test_probe_reads_what_ffmpeg_prints(width: int, height: int, codec: str, pixel_format: str,
                                        hours: int, minutes: int, centis: int, rotation: int | None,
                                        audio: str | None) -> None:
    lines = ["Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'clip.mov':",
             f"  Duration: {hours:02d}:{minutes:02d}:{centis // 100:02d}.{centis % 100:02d}, start: 0.000000",
             f"  Stream #0:0[0x1](und): Video: {codec} (Main) (avc1 / 0x31637661), {pixel_format}(tv, "
             f"progressive), {width}x{height} [SAR 1:1 DAR 16:9], 3027 kb/s, 30 fps (default)"]
    if rotation is not None:
        lines += ["    Side data:", f"      Display Matrix: rotation of {rotation:.2f} degrees"]
    if audio:
        lines.append(f"  Stream #0:1[0x2](und): Audio: {audio}, 48000 Hz, stereo, fltp (default)")
    media = parse_probe("\n".join(lines))
    assert media is not None
    assert (media.width, media.height, media.video_codec) == (width, height, codec)
    assert media.pixel_format == pixel_format and media.audio_codec == audio
    assert media.duration == hours * 3600 + minutes * 60 + centis / 100
    assert media.rotation == (rotation or 0) % 360


# -- display_name and the download's Content-Disposition ----------------------------------

@given(st.text(max_size=2000))
@example("a" * 199 + " b.verylongextension")  # found by reading: the cut left a trailing space
def test_display_name_is_always_safe(raw: str) -> None:
    name = display_name(raw)
    assert 1 <= len(name) <= 200
    assert "/" not in name and "\\" not in name
    assert not any(unicodedata.category(ch)[0] == "C" for ch in name)
    assert name == name.strip()
    assert display_name(name) == name  # cleaning twice changes nothing


@given(st.text(alphabet=st.characters(blacklist_categories=("C",), blacklist_characters="/\\."),
               min_size=1, max_size=1000).filter(lambda stem: stem.strip() == stem),
       st.sampled_from([".mp4", ".MOV", ".webm"]))
def test_display_name_keeps_the_extension(stem: str, extension: str) -> None:
    assert display_name(stem + extension).endswith(extension)


@given(st.text(max_size=500), st.sampled_from(["480", "720", "1080"]))
def test_content_disposition_is_one_header_line(raw: str, resolution: str) -> None:
    header = content_disposition(display_name(raw), resolution)
    assert header.isascii() and header.isprintable()
    assert header.startswith('attachment; filename="') and header.endswith(f"-{resolution}p.mp4")
    assert header.count('"') == 2
