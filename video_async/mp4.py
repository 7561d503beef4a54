"""An MP4's duration read from its own index, with no ffmpeg run: our outputs put the
`moov` box first (+faststart), so its `mvhd` is in the file's first kilobytes."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

# How much of a finished output to read for its index: with +faststart the `moov`
# box, and the `mvhd` at its head, come right after the first few dozen bytes.
INDEX_SEARCH = 64 * 1024


def mp4_duration(head: bytes) -> float | None:
    """The movie's duration, as players and ffprobe report it, from an MP4's `mvhd` box
    (None if head does not hold one). The box: size, "mvhd", version, 3 bytes of flags,
    two timestamps (4 bytes each in version 0, 8 in version 1), timescale, duration."""
    at = head.find(b"mvhd")
    if at < 4 or at + 5 > len(head):
        return None
    try:
        if head[at + 4] == 1:
            timescale, duration = struct.unpack_from(">IQ", head, at + 8 + 16)
        else:
            timescale, duration = struct.unpack_from(">II", head, at + 8 + 8)
    except struct.error:  # cut off inside the box
        return None
    return duration / timescale if timescale else None


async def output_duration(path: Path) -> float | None:
    """The finished output's duration from its index, read in a thread (no ffmpeg run)."""
    def read_head() -> bytes:
        with path.open("rb") as video:
            return video.read(INDEX_SEARCH)
    return mp4_duration(await asyncio.to_thread(read_head))
