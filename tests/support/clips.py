"""Media for the tests: clips made by ffmpeg's lavfi sources, stand-in ffmpegs, and the
oracle (what `ffmpeg -i` says) that outputs are checked against.

Clips are generated at test time (nothing binary is committed) and kept tiny,
except the long one that tests interrupt mid-transcode.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(*args: str) -> None:
    """Test-side ffmpeg (blocking is fine while making inputs: no server loop waits on it)."""
    subprocess.run([FFMPEG, "-hide_banner", "-v", "error", "-y", *args], check=True, timeout=120)


class Clips:
    """Makes each named clip once, into a session-wide folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def make(self, name: str, *, size: str = "320x240", seconds: float = 1, audio: bool = True,
             rate: int = 25, vcodec: tuple[str, ...] = ("-c:v", "libx264", "-preset", "ultrafast"),
             pix_fmt: str = "yuv420p", source: str = "testsrc2", extra: tuple[str, ...] = ()) -> Path:
        path = self.folder / name
        if path.exists():
            return path
        args = ["-f", "lavfi", "-i", f"{source}=size={size}:rate={rate}:duration={seconds}"]
        if audio:
            args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a",
                     "libopus" if name.endswith(".webm") else "aac"]
        args += [*vcodec, "-pix_fmt", pix_fmt, *extra, "-shortest", str(path)]
        run_ffmpeg(*args)
        return path

    def small(self) -> Path:
        return self.make("small.mp4")

    def long(self) -> Path:
        """12 s of 1080p: only 2-3 s to transcode to 480 on 2 cores. A test that needs the job
        still running later runs it with hanging_ffmpeg() or realtime_ffmpeg()."""
        return self.make("long.mp4", size="1920x1080", seconds=12, rate=25, audio=True,
                         vcodec=("-c:v", "libx264", "-preset", "ultrafast", "-crf", "35"))


def faststart(clips: Clips, seconds: float = 2) -> Path:
    """The index (moov) first: ffmpeg can describe the file from its first kilobytes."""
    return clips.make(f"faststart-{seconds:g}s.mp4", seconds=seconds,
                      extra=("-movflags", "+faststart"))


def noise_in_samples(source: Path, target: Path, start: float = 0.0) -> Path:
    """source with its samples (the mdat box's contents) overwritten by noise from `start`
    (a fraction of them) on. The length stays the same, so the index at the front still
    matches and ffmpeg opens the file; what it then decodes is garbage."""
    data = source.read_bytes()
    mdat = data.index(b"mdat") + 4
    assert data.index(b"moov") < mdat, "the index must come first"
    begin = mdat + int((len(data) - mdat) * start)
    target.write_bytes(data[:begin] + bytes((i * 151 + 7) % 251 for i in range(len(data) - begin)))
    return target


def pad_to(source: Path, target: Path, size: int) -> Path:
    """Copy an MP4 and append a 'free' box so the file is exactly `size` bytes and still valid."""
    data = source.read_bytes()
    gap = size - len(data)
    assert gap >= 8, "clip already larger than the wanted size"
    target.write_bytes(data + struct.pack(">I", gap) + b"free" + bytes(gap - 8))
    return target


# -- stand-in ffmpegs: only where a test must control timing -----------------------------

STAND_IN = '''#!{python}
"""Stand-in for ffmpeg, written by a test: runs the real ffmpeg, but {doc}"""
import os, signal, sys
args = sys.argv[1:]
if "-progress" in args:  # a transcode; probes and thumbnails run as they are
    if {hang_first!r} and not os.path.exists({marker!r}):
        open({marker!r}, "w").close()
        for micros in (100000, 200000):
            print(f"out_time_us={{micros}}", "progress=continue", sep="\\n", flush=True)
        signal.pause()  # no more output and no exit, until it is stopped
    if {realtime!r}:
        args.insert(args.index("-i"), "-re")  # read the input no faster than it plays
os.execv({real!r}, [{real!r}, *args])
'''


def _stand_in(folder: Path, name: str, doc: str, *, hang_first: bool = False,
              realtime: bool = False) -> Path:
    path = folder / name
    path.write_text(STAND_IN.format(python=sys.executable, doc=doc, hang_first=hang_first,
                                    realtime=realtime, marker=str(folder / f"{name}-hung-once"),
                                    real=FFMPEG))
    path.chmod(0o755)
    return path


def hanging_ffmpeg(folder: Path) -> Path:
    """An ffmpeg whose first transcode reports a little progress, then hangs until stopped."""
    return _stand_in(folder, "hanging-ffmpeg", "the first transcode hangs, as a wedged ffmpeg would.",
                     hang_first=True)


def realtime_ffmpeg(folder: Path) -> Path:
    """An ffmpeg that transcodes no faster than the video plays: clips.long() takes 12 s on
    any machine, so a test can count on a job still running, whatever the machine's speed."""
    return _stand_in(folder, "realtime-ffmpeg", "each transcode reads at the video's own speed.",
                     realtime=True)


# -- the oracle -----------------------------------------------------------------------------

def describe(path: Path) -> str:
    """What `ffmpeg -i` says about a file: the oracle the tests check outputs against."""
    done = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True, timeout=30)
    return done.stderr


def video_size(description: str) -> tuple[int, int]:
    line = next(line for line in description.splitlines() if "Video:" in line)
    match = re.search(r", (\d+)x(\d+)", line)
    assert match, line
    return int(match.group(1)), int(match.group(2))


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types in file order (moov before mdat means faststart)."""
    boxes = []
    with path.open("rb") as handle:
        while header := handle.read(8):
            size, kind = struct.unpack(">I4s", header)
            header_length = 8
            if size == 1:  # a 64-bit size follows the type
                size, header_length = struct.unpack(">Q", handle.read(8))[0], 16
            boxes.append(kind.decode("latin-1"))
            if size == 0:  # the box runs to the end of the file
                break
            handle.seek(size - header_length, os.SEEK_CUR)
    return boxes


def assert_web_ready(path: Path, audio: bool = True) -> str:
    """H.264 4:2:0, AAC if there is sound, faststart, rotation applied: what `ffmpeg -i` said."""
    description = describe(path)
    video = next(line for line in description.splitlines() if "Video:" in line)
    assert "Video: h264" in video and "yuv420p" in video, video
    assert ("Audio: aac" in description) == audio
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), f"not faststart: {boxes}"
    assert "rotation of" not in description  # rotation is applied to the pixels, not left as metadata
    return description
