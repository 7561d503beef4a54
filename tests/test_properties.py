"""Property-based tests (hypothesis) for the probe and progress readers and the file-name sanitiser.

Examples are derandomized, so a run is the same on every machine, and kept
to a few hundred per property, so the suite stays quick.
"""

from __future__ import annotations

import unicodedata

import pytest

from hypothesis import example, given, settings
from hypothesis import strategies as st

from .support.internals import Media, content_disposition, display_name, media_from, parse_progress

settings.register_profile("project", derandomize=True, max_examples=300, deadline=None)
settings.load_profile("project")

pytestmark = pytest.mark.unit


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


# -- media_from ------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
STREAM_KEYS = st.sampled_from(["type", "codec", "attached_pic", "width", "height", "pixel_format",
                               "sample_aspect", "frame_rate"])
STREAM_VALUES = st.sampled_from([None, True, False, 0, -1, 1, 720, 1.5, "video", "audio", "h264",
                                 [1, 1], [0, 0], [-1, 2], [16, 9], "x"])


def _usable(media: object) -> None:
    assert media is None or isinstance(media, Media)
    if media is not None:
        assert media.width > 0 and media.height > 0 and min(media.display_size) > 0
        assert 0 <= media.rotation < 360 and media.sample_aspect > 0
        assert media.duration is None or media.duration >= 0
        assert media.frame_rate is None or media.frame_rate > 0


@given(st.dictionaries(st.sampled_from(["duration", "rotation", "streams", "error"]), JSON))
def test_probe_never_raises(facts: dict) -> None:  # type: ignore[type-arg]
    _usable(media_from(facts))


@given(st.lists(st.dictionaries(STREAM_KEYS, STREAM_VALUES), max_size=4),
       st.sampled_from([None, 0, 1.0, -5, "1", 1e9]), st.sampled_from([None, 0, 90, -90, 450, 1.5]))
def test_probe_never_raises_on_plausible_streams(streams: list[dict], duration: object,  # type: ignore[type-arg]
                                                 rotation: object) -> None:
    """The first video stream with a codec that is not cover art decides: its size, or None."""
    media = media_from({"streams": streams, "duration": duration, "rotation": rotation})
    _usable(media)
    first = next((s for s in streams if s.get("type") == "video" and s.get("codec")
                  and not s.get("attached_pic")), None)
    if media is not None:
        assert first is not None and (media.width, media.height) == (first["width"], first["height"])


@given(width=st.integers(1, 65535), height=st.integers(1, 65535),
       codec=st.sampled_from(["h264", "hevc", "vp9", "av1", "prores", "mpeg4"]),
       pixel_format=st.sampled_from(["yuv420p", "yuv420p10le", "yuv444p", "yuvj420p", "gray", None]),
       duration=st.one_of(st.none(), st.floats(0, 1e6)), rotation=st.sampled_from([0, 90, -90, 180, 270]),
       audio=st.sampled_from([None, "aac", "opus"]),
       sar=st.tuples(st.integers(1, 1000), st.integers(1, 1000)))
def test_probe_reads_what_the_probe_prints(width: int, height: int, codec: str, pixel_format: str | None,
                                           duration: float | None, rotation: int, audio: str | None,
                                           sar: tuple[int, int]) -> None:
    streams: list[dict[str, object]] = [
        {"type": "video", "codec": codec, "attached_pic": False, "width": width, "height": height,
         "pixel_format": pixel_format, "sample_aspect": list(sar), "frame_rate": [25, 1]}]
    if audio:
        streams.insert(0, {"type": "audio", "codec": audio, "attached_pic": False})
    media = media_from({"duration": duration, "rotation": rotation, "streams": streams})
    assert media is not None
    assert (media.width, media.height, media.video_codec) == (width, height, codec)
    assert media.pixel_format == pixel_format and media.audio_codec == audio
    assert media.duration == duration
    assert media.rotation == rotation % 360
    assert media.sample_aspect == sar[0] / sar[1] and media.frame_rate == 25.0


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
