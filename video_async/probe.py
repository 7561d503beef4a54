"""`python -m video_async.probe --serve PARENT`: what media files hold, as JSON, one file
after another.

The server never reads an upload's structures in itself: a hostile file that
crashes or bloats the decoder must take down only a process of its own. But
starting Python and importing PyAV costs about 0.1 s of CPU, for each upload;
a class uploading at once would wait for their probes. So this process starts
once, imports PyAV once, and then for each file forks a child that reads that
one file and nothing else, and exits: the child costs a fork, the file keeps a
process of its own, and no file can leave anything behind for the next one.
The server keeps a few of these (probing.ProbePool) under the same memory cap
as any ffmpeg (which the children inherit).

Each request, on stdin, is one JSON line: {"path", "demuxer", "max_pixels"}.
Each answer, on stdout, is one JSON line:
    {"duration": seconds or null, "streams": [{"type", "codec", "attached_pic",
     "width", "height", "pixel_format", "sample_aspect": [num, den],
     "frame_rate": [num, den]}, ...], "rotation": degrees}
or {"error": "what FFmpeg said"} when the file does not open. The file is read
through FFmpeg's libraries (PyAV), opened only with the named demuxer and the
file protocol, and the facts come from their structures, never from the
file's metadata, which a file can fill with anything, line breaks included.
The process and each child are killed when their parent dies (Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
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


def serve(parent: int) -> None:
    """Answer requests from stdin until it closes, each in a child of its own."""
    _die_with(parent)
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    while line := requests.readline():
        answers.write(json.dumps(_in_a_child(json.loads(line))).encode() + b"\n")
        answers.flush()


def _in_a_child(request: dict[str, Any]) -> dict[str, Any]:
    """describe() one file in a forked child; its answer, or an error if it gave none."""
    reading, writing = os.pipe()
    server = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            os.close(reading)
            _die_with(server)
            try:
                answer = describe(str(request["path"]), str(request["demuxer"]),
                                  int(request["max_pixels"]))
            except BaseException as exc:  # MemoryError under the cap, among others
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            data = memoryview(json.dumps(answer).encode())
            while data:
                data = data[os.write(writing, data):]
        finally:
            os._exit(0)  # nothing of the parent's (buffers, exit handlers) runs twice
    os.close(writing)
    with os.fdopen(reading, "rb") as pipe:
        said = pipe.read()
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0 and said:
        with contextlib.suppress(ValueError):
            facts: dict[str, Any] = json.loads(said)
            return facts
    how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    return {"error": f"The probe ended without an answer ({how})."}


_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """Be killed when the process that started this one dies (Linux's parent-death
    signal), and go now if it died already, before the signal was asked for."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def main() -> None:
    if sys.argv[1:2] != ["--serve"] or len(sys.argv) != 3:
        sys.exit("usage: python -m video_async.probe --serve PARENT_PID "
                 "(the server starts this itself)")
    serve(int(sys.argv[2]))


if __name__ == "__main__":
    main()
