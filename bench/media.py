"""The clips the benchmark uploads, generated once with ffmpeg and cached in bench/cache/.

Blocking subprocess calls are fine here: this runs before any server or event
loop starts, and only when the cache is empty.
"""

from __future__ import annotations

import logging
import struct
import subprocess
from pathlib import Path

import imageio_ffmpeg

log = logging.getLogger(__name__)

MIB = 1024 * 1024
CACHE = Path(__file__).resolve().parent / "cache"
# Just under the server's default limit of 200 MiB, so a change to how the limit
# is counted can never turn the benchmark's upload into a 413.
BIG_SIZE = 199 * MIB
# Lossless x264 cannot compress per-pixel noise, so each 720p frame costs about
# 2 MB and ~100 frames (4 s at 25 fps) reach the size: quick to make, and short
# to transcode should a task ever run.
NOISE = "color=c=gray:size=1280x720:rate=25,noise=alls=100:allf=t"


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args],
                   check=True, timeout=300)


def _pad(path: Path, size: int) -> None:
    """Append an ISO BMFF 'free' box so the file is exactly `size` bytes and still valid."""
    gap = size - path.stat().st_size
    if gap < 8:
        raise ValueError(f"{path.name} is already {path.stat().st_size} bytes, over {size}")
    with path.open("ab") as out:
        out.write(struct.pack(">I", gap) + b"free")
        remaining = gap - 8
        while remaining:
            step = min(remaining, MIB)
            out.write(bytes(step))
            remaining -= step


def _noise(target: Path, frames: int) -> None:
    # +faststart puts the index first, so the server's probe reads only the head
    _ffmpeg("-f", "lavfi", "-i", NOISE, "-frames:v", str(frames), "-c:v", "libx264",
            "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", str(target))


def big_clip() -> Path:
    """A valid MP4 of exactly BIG_SIZE bytes: a few seconds of lossless 720p noise."""
    target = CACHE / f"noise-{BIG_SIZE}.mp4"
    if target.exists() and target.stat().st_size == BIG_SIZE:
        return target
    CACHE.mkdir(exist_ok=True)
    partial = target.with_suffix(".partial.mp4")
    # measure the cost of a frame on a short sample, then make the real one a little
    # smaller than wanted and pad it to the exact size
    _noise(partial, 20)
    per_frame = partial.stat().st_size / 20
    _noise(partial, int(BIG_SIZE * 0.97 / per_frame))
    _pad(partial, BIG_SIZE)
    partial.replace(target)
    log.info("generated %s", target.name)
    return target


def _cached(name: str, *ffmpeg_args: str) -> Path:
    """bench/cache/<name>, made by ffmpeg with these arguments the first time only."""
    target = CACHE / name
    if target.exists():
        return target
    CACHE.mkdir(exist_ok=True)
    partial = target.with_suffix(".partial.mp4")
    _ffmpeg(*ffmpeg_args, "-f", "mp4", str(partial))
    partial.replace(target)
    log.info("generated %s", target.name)
    return target


def hd_clip() -> Path:
    """10 s of 1080p test pattern with a tone: the clip whose transcode item 5 times."""
    return _cached("testsrc2-1080p-10s.mp4",
                   "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25:duration=10",
                   "-f", "lavfi", "-i", "sine=frequency=440:duration=10",
                   "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p",
                   "-c:a", "aac", "-shortest")


FIVE_MB = 5_000_000


def five_mb_clip() -> Path:
    """Exactly 5 MB: 20 s of 640x360 test pattern at about 1.9 Mbit/s, padded to the size
    (item 9's upload: a phone clip's size, small enough for a thousand at once)."""
    target = CACHE / f"testsrc2-360p-{FIVE_MB}.mp4"
    if target.exists() and target.stat().st_size == FIVE_MB:
        return target
    CACHE.mkdir(exist_ok=True)
    partial = target.with_suffix(".partial.mp4")
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=20",
            "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "1900k", "-maxrate", "1900k",
            "-bufsize", "1900k", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(partial))
    _pad(partial, FIVE_MB)
    partial.replace(target)
    log.info("generated %s", target.name)
    return target


def small_clip() -> Path:
    """1 s at 320x240: uploads in a blink and transcodes in a fraction of a second."""
    return _cached("testsrc2-240p-1s.mp4",
                   "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1",
                   "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
