"""`python -m video_async.probe DEMUXER PATH MAX_PIXELS`: what a media file holds, as JSON.

The server runs this in a child process of its own, never in itself: a hostile
file that crashes or bloats the decoder takes down only this child, under the
same memory cap, pool and timeout as any ffmpeg. It reads the file through
FFmpeg's libraries (PyAV), opened only with the named demuxer and the file
protocol, and prints facts from their structures, never from the file's
metadata, which a file can fill with anything, line breaks included.

Printed on stdout, one JSON object:
    {"duration": seconds or null, "streams": [{"type", "codec", "attached_pic",
     "width", "height", "pixel_format", "sample_aspect": [num, den],
     "frame_rate": [num, den]}, ...], "rotation": degrees}
or {"error": "what FFmpeg said"} when the file does not open.
"""

from __future__ import annotations

import json
import re
import sys
from fractions import Fraction
from typing import Any

import av
import av.logging
from av.video.stream import VideoStream


# What FFmpeg logs when a decoder is asked for a picture larger than max_pixels.
OVER_BUDGET = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")


def _pair(value: Fraction | None) -> list[int] | None:
    return [value.numerator, value.denominator] if value else None


def describe(path: str, demuxer: str, max_pixels: int) -> dict[str, Any]:
    container_options = {"protocol_whitelist": "file"}
    if demuxer == "mov":
        container_options["enable_drefs"] = "0"  # no tracks read from other files
    av.logging.set_level(av.logging.ERROR)  # FFmpeg's own words on why a file does not open
    with av.logging.Capture() as said:
        try:
            # "options" reach the decoders that stream-info detection opens: none may allocate
            # a picture larger than the budget, so an oversized file is refused before it costs
            container = av.open("file:" + path, format=demuxer,
                                options={"max_pixels": str(max_pixels)},
                                container_options=container_options)
        except (av.FFmpegError, ValueError, MemoryError) as exc:
            lines = [str(message).strip() for _, _, message in said]
            return {"error": "\n".join([*lines, str(exc)])}
    # A decoder that refused a picture over the budget leaves its stream without a size;
    # its size is in what it said (more may follow in the same stream: the first decides).
    refused = next((match for _, _, message in said
                    if (match := OVER_BUDGET.search(str(message)))), None)
    with container:
        streams = []
        main_video: VideoStream | None = None
        for stream in container.streams:
            # no codec context: FFmpeg has no decoder for this stream's codec
            context = stream.codec_context
            fact: dict[str, Any] = {"type": stream.type, "attached_pic": False,
                                    "codec": context.name if context is not None else None}
            if isinstance(stream, VideoStream) and stream.codec_context is not None:
                video = stream.codec_context
                fact["attached_pic"] = bool(stream.disposition & av.stream.Disposition.attached_pic)
                width, height = video.width, video.height
                if not (width and height) and refused:
                    width, height = int(refused.group(1)), int(refused.group(2))
                fact.update(width=width, height=height,
                            pixel_format=video.format.name if video.format else None,
                            # the container's aspect ratio wins over the codec's, as in ffmpeg's
                            # own transcode (av_guess_sample_aspect_ratio)
                            sample_aspect=_pair(stream.sample_aspect_ratio
                                                or video.sample_aspect_ratio),
                            frame_rate=_pair(stream.average_rate))
                if main_video is None and not fact["attached_pic"]:
                    main_video = stream
            streams.append(fact)
        duration = container.duration / 1_000_000 if container.duration is not None else None
        return {"duration": duration, "streams": streams,
                "rotation": _rotation(container, main_video, max_pixels)}


def _rotation(container: av.container.InputContainer, stream: VideoStream | None,
              max_pixels: int) -> int:
    """The display matrix's rotation, which the decoder attaches to each frame: read from the
    first one, decoded only when the frame fits the budget."""
    if stream is None:
        return 0
    context = stream.codec_context
    if not (0 < context.width * context.height <= max_pixels):
        return 0
    try:
        for frame in container.decode(stream):
            return int(frame.rotation)
    except (av.FFmpegError, MemoryError):  # the transcode will say what it can make of it
        pass
    return 0


def main() -> None:
    demuxer, path, max_pixels = sys.argv[1], sys.argv[2], int(sys.argv[3])
    json.dump(describe(path, demuxer, max_pixels), sys.stdout)


if __name__ == "__main__":
    main()
