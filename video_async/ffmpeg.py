"""Everything that talks to ffmpeg: locate, probe, transcode, thumbnail.

Each run is an asyncio subprocess started from an argument list, never a shell
string, so a file name can't inject a command. While ffmpeg runs the event
loop is free: we only await its pipes. Whatever way a run ends (success,
error, timeout, cancellation) the process is terminated, killed after a grace
period if it ignores that, and reaped, so none outlives its job.

The parsers (`parse_probe`, `parse_progress`) and the size planner
(`output_size`) are pure functions with their own tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import struct
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiofiles.os

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 30.0
NICENESS = 10


class FFmpegError(Exception):
    """ffmpeg could not do what was asked; str() is a short reason for a person, and
    `detail` the line ffmpeg itself printed, if any, for someone who wants to dig."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.detail = detail


class Stalled(FFmpegError):
    """ffmpeg reported no progress for too long: it is stopped rather than waited for."""


class NotAVideo(FFmpegError):
    """The file opened, or failed to, but holds no video stream we can use."""


# -- locating the binary -----------------------------------------------------

def locate(configured: str | None) -> str:
    """The ffmpeg to use: the configured one, else the static build imageio-ffmpeg ships."""
    if configured:
        found = shutil.which(configured)
        if not found:
            raise FFmpegError(f"ffmpeg not found at {configured!r} (from --ffmpeg / VIDEO_ASYNC_FFMPEG)")
        return found
    try:
        import imageio_ffmpeg
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise FFmpegError(f"no ffmpeg: imageio-ffmpeg has none for this platform ({exc}); "
                          "install ffmpeg and pass --ffmpeg PATH") from exc


@dataclass(frozen=True)
class FFmpegInfo:
    """The binary in use and the version it reports: checked once, at start-up."""
    path: str
    version: str


async def check(configured: str | None) -> FFmpegInfo:
    """Find the binary and run it once; FFmpegError if it is missing or broken."""
    path = locate(configured)
    return FFmpegInfo(path, await version(path))


async def version(ffmpeg: str) -> str:
    """First line of `ffmpeg -version`; raises FFmpegError if the binary is broken."""
    try:
        code, out, err = await _run_to_end([ffmpeg, "-hide_banner", "-version"], timeout=15)
    except OSError as exc:
        raise FFmpegError(f"ffmpeg at {ffmpeg} does not run: {exc}") from exc
    first_line = out.splitlines()[0] if out else ""
    if code != 0 or not first_line.startswith("ffmpeg version"):
        raise FFmpegError(f"{ffmpeg} is not a working ffmpeg: {_last_line(err) or first_line or 'no output'}")
    return first_line


# -- probing -----------------------------------------------------------------

@dataclass(frozen=True)
class Media:
    duration: float | None  # seconds; None when the container doesn't say
    width: int  # coded size, before rotation
    height: int
    video_codec: str
    audio_codec: str | None
    pixel_format: str | None = None
    rotation: int = 0  # degrees, from the display matrix
    sample_aspect: float = 1.0  # pixel width / pixel height

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as a player shows them: aspect ratio and rotation applied."""
        width = round(self.width * self.sample_aspect)
        if self.rotation % 180:
            return self.height, width
        return width, self.height

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["display_width"], data["display_height"] = self.display_size
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Media:
        """The Media that to_json() described (its extra display_* keys are ignored)."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


_DURATION = re.compile(r"Duration: (\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\d+:\d+\S*: Video: (\w+)(.*)")
_AUDIO = re.compile(r"Stream #\d+:\d+\S*: Audio: (\w+)")
_SIZE = re.compile(r",\s(\d{1,5})x(\d{1,5})(?=[\s,\[]|$)")
_SAR = re.compile(r"\[SAR (\d+):(\d+) DAR")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")


def parse_probe(text: str) -> Media | None:
    """Read the stream summary that `ffmpeg -i FILE` prints; None if it shows no video.

    Only the first input is described when ffmpeg runs without outputs, so the
    first Video line is the main picture. Cover art ("attached pic") is skipped:
    an audio file with an album image is not a video.
    """
    video_line = video_rest = video_codec = None
    for line in text.splitlines():
        match = _VIDEO.search(line)
        if match and "(attached pic)" not in line:
            video_line, video_codec, video_rest = line, match.group(1), match.group(2)
            break
    if video_line is None or video_codec is None or video_rest is None:
        return None
    size = _SIZE.search(video_rest)
    if not size:
        return None
    width, height = int(size.group(1)), int(size.group(2))
    if width == 0 or height == 0:
        return None
    # the pixel format is the first comma-separated field after the codec description
    fields = re.sub(r"\([^()]*\)", "", video_rest).split(",")
    pixel_format = fields[1].strip().split(" ")[0] if len(fields) > 1 else None
    sample_aspect = 1.0
    if sar := _SAR.search(video_rest):
        num, den = int(sar.group(1)), int(sar.group(2))
        if num > 0 and den > 0:
            sample_aspect = num / den
    # the display matrix comes in the side-data lines after the Video line
    after_video = text[text.index(video_line) + len(video_line):]
    next_stream = after_video.find("Stream #")
    rotation_match = _ROTATION.search(after_video if next_stream < 0 else after_video[:next_stream])
    rotation = round(float(rotation_match.group(1))) % 360 if rotation_match else 0
    duration = None
    if d := _DURATION.search(text):
        duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
    audio = _AUDIO.search(text)
    return Media(
        duration=duration,
        width=width,
        height=height,
        video_codec=video_codec,
        audio_codec=audio.group(1) if audio else None,
        pixel_format=pixel_format or None,
        rotation=rotation,
        sample_aspect=sample_aspect,
    )


async def probe(ffmpeg: str, path: Path) -> Media:
    """Describe a media file; NotAVideo if it has no usable video stream."""
    # Without an output ffmpeg exits 1 after printing the description: expected.
    _, _, err = await _run_to_end([ffmpeg, "-hide_banner", "-nostdin", "-i", str(path)],
                                  timeout=PROBE_TIMEOUT)
    if "Input #0" not in err:
        raise NotAVideo(*explain(err, "ffmpeg does not recognise this file as a video."))
    media = parse_probe(err)
    if media is None:
        raise NotAVideo("The file has no video stream.")
    return media


# -- planning and transcoding -------------------------------------------------

def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def output_size(media: Media, resolution: int) -> tuple[int, int]:
    """Output width and height: short side = resolution, never upscaled, both even.

    ffmpeg rotates the picture before our scale filter runs, so the size is
    planned on the displayed picture: a portrait phone clip asked for at 720
    comes out 720 wide.
    """
    width, height = media.display_size
    short, long = min(width, height), max(width, height)
    target_short = _even(min(resolution, short))
    target_long = _even(long * target_short / short)
    return (target_short, target_long) if width <= height else (target_long, target_short)


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


def transcode_args(ffmpeg: str, source: Path, target: Path, size: tuple[int, int],
                   has_audio: bool) -> list[str]:
    """The whole ffmpeg command for one job; the benchmark runs exactly this list too."""
    width, height = size
    args = [
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
        "-i", str(source),
        "-map", "0:v:0",
        # setsar=1 after scaling to the display size: square pixels, right aspect ratio;
        # yuv420p because 4:4:4 and 10-bit H.264 won't play in most browsers
        "-vf", f"scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-profile:v", "high",
    ]
    if has_audio:
        args += ["-map", "0:a:0", "-c:a", "aac", "-b:a", "128k", "-ac", "2"]
    args += [
        "-map_metadata", "-1",
        "-movflags", "+faststart",  # index first: playback starts before the download ends
        "-progress", "pipe:1", "-nostats",
        "-f", "mp4", str(target),
    ]
    return args


def parse_progress(line: str) -> float | None:
    """Seconds of output written, from one `-progress` line; None for any other line.

    ffmpeg prints blocks of key=value lines; out_time_us (and out_time_ms, which
    despite its name is also microseconds) say how far the encode has got.
    """
    key, sep, value = line.strip().partition("=")
    if not sep or key not in ("out_time_us", "out_time_ms"):
        return None
    try:
        micros = int(value)
    except ValueError:  # "N/A" before the first frame
        return None
    return max(0.0, micros / 1_000_000)


async def transcode(ffmpeg: str, source: Path, target: Path, media: Media, resolution: int,
                    on_progress: Callable[[float], None], stall_timeout: float = 120.0) -> str:
    """Encode source into target; on_progress gets output seconds as ffmpeg reports them.

    Returns what ffmpeg complained of while it still finished ("" if nothing): a file
    cut short or damaged part way makes an output of what could be read, and exit 0.
    Stalled if the output position does not move forward for stall_timeout seconds.
    """
    args = transcode_args(ffmpeg, source, target, output_size(media, resolution),
                          media.audio_codec is not None)
    code, err = await _run_streaming(args, on_progress, stall_timeout)
    if code != 0:
        raise FFmpegError(*explain(err, f"ffmpeg could not transcode this video (exit status {code})."))
    return explain(err, "")[1]


async def thumbnail(ffmpeg: str, video: Path, target: Path, at_seconds: float) -> None:
    """One JPEG frame, 320 pixels wide, taken at_seconds into the video."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-ss", f"{at_seconds:.3f}", "-i", str(video),
            "-frames:v", "1", "-vf", "scale=320:-2", "-q:v", "4", "-f", "image2", str(target)]
    code, _, err = await _run_to_end(args, timeout=PROBE_TIMEOUT)
    if code != 0 or not await aiofiles.os.path.exists(target):
        raise FFmpegError(*explain(err, "No frame could be taken for a thumbnail."))


# -- running processes --------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = None  # set by die_with_parent()


def die_with_parent() -> None:
    """From now on, every ffmpeg this process starts is killed when it dies (Linux).

    A queue worker calls this at start: a worker killed with SIGKILL then leaves no
    ffmpeg writing into the shared data dir while its job runs again on another worker.
    The single server keeps its ffmpeg instead: recovery at its next start finds and
    stops them.
    """
    global _prctl
    if sys.platform == "linux":
        # looked up here, not in the child, where loading a library after fork is unsafe
        _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _ask_for_death_signal() -> None:
    """Runs in the child between fork and exec."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.asynccontextmanager
async def _spawn(args: Sequence[str], grace: float = 3.0) -> AsyncIterator[asyncio.subprocess.Process]:
    # start_new_session: a Ctrl-C in the terminal reaches the server only; the
    # server then stops ffmpeg itself, in order, instead of ffmpeg racing it.
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
        preexec_fn=_ask_for_death_signal if _prctl is not None else None)
    # ffmpeg would happily take every core; at a lower priority it still does, but
    # the event loop gets the CPU at once when a request comes in.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, proc.pid, NICENESS)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            await _stop(proc, grace)


async def _stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    """terminate, wait up to grace seconds, kill, and always reap, even when cancelled."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
    except asyncio.CancelledError:
        # cancelled again while stopping: still make sure nothing is left running
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    log.debug("stopped ffmpeg pid %s", proc.pid)


async def _run_to_end(args: Sequence[str], timeout: float) -> tuple[int, str, str]:
    """Run a short command; (exit code, stdout, stderr)."""
    async with _spawn(args) as proc:
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            raise FFmpegError(f"Reading the file took longer than {timeout:g} s, so it was given "
                              "up: the file may be damaged, or the server too busy.") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def _run_streaming(args: Sequence[str], on_progress: Callable[[float], None],
                         stall_timeout: float) -> tuple[int, str]:
    """Run ffmpeg, feeding each progress line to on_progress; (exit code, stderr tail).

    stdout and stderr are drained at the same time: if one pipe were left
    unread, ffmpeg would block once its buffer filled, and so would we. The
    stall watchdog is a deadline pushed forward each time the output position
    advances; when it passes, the process is stopped like on any other exit.
    """
    stderr_tail: deque[str] = deque(maxlen=20)
    loop = asyncio.get_running_loop()
    furthest = -1.0

    async def read_progress(stream: asyncio.StreamReader, watchdog: asyncio.Timeout) -> None:
        nonlocal furthest
        async for raw in stream:
            seconds = parse_progress(raw.decode(errors="replace"))
            if seconds is None:
                continue
            if seconds > furthest:
                furthest = seconds
                watchdog.reschedule(loop.time() + stall_timeout)
            on_progress(seconds)

    async def read_errors(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            stderr_tail.append(raw.decode(errors="replace").rstrip())

    async with _spawn(args) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(stall_timeout) as watchdog:
                async with asyncio.TaskGroup() as group:
                    group.create_task(read_progress(proc.stdout, watchdog))
                    group.create_task(read_errors(proc.stderr))
                code = await proc.wait()
        except TimeoutError:
            if not watchdog.expired():
                raise
            raise Stalled(f"Stopped: ffmpeg made no progress for {stall_timeout:g} s, so the "
                          "job was given up rather than left hanging.") from None
    return code, "\n".join(stderr_tail)


# ffmpeg 7+ may put two prefixes on a line: "[vist#0:0/h264 @ 0x..] [dec:h264 @ 0x..] ..."
_NOISE = re.compile(r"^(\[[^\]]+ @ 0x[0-9a-f]+\]\s*)+")


# What ffmpeg says when the common things go wrong, and what a person is told.
PLAIN_REASONS = (
    ("No space left on device", "The server's disk is full, so the video could not be written."),
    ("no decoder found", "The video is in a format (codec) this server cannot decode."),
    ("moov atom not found", "The file is cut short: the end, where an MP4 or MOV keeps its "
                            "index, is missing. Was the upload or the recording interrupted?"),
    ("partial file", "The file is cut short: too little of the video is there to make "
                     "anything from."),
    ("received no packets", "No picture could be decoded from the video: its data is "
                            "damaged or missing."),
    ("Invalid data found when processing input", "The file's data is damaged, so ffmpeg "
                                                 "could not read it."),
)


def explain(stderr: str, fallback: str) -> tuple[str, str]:
    """(a sentence for a person, the line of ffmpeg's that says why) from its stderr; the
    fallback sentence, and ffmpeg's last line, where the failure is not a common one."""
    lines = _meaningful_lines(stderr)
    for said, plain in PLAIN_REASONS:
        for line in lines:
            if said in line:
                return plain, line
    return fallback, lines[-1] if lines else ""


def _last_line(stderr: str) -> str:
    lines = _meaningful_lines(stderr)
    return lines[-1] if lines else ""


def _meaningful_lines(stderr: str) -> list[str]:
    """ffmpeg's lines without its log prefixes, its closing summaries and our own paths."""
    lines = [_NOISE.sub("", line).strip() for line in stderr.splitlines()]
    # ffmpeg names the file it failed on; the path is ours, not the user's business.
    # Two slashes at least, so a fraction like "time base 1/1000" stays as it is.
    return [re.sub(r"(?<![\w.])(/[^\s/:'\"]+){2,}", lambda m: os.path.basename(m.group(0)), line)[:200]
            for line in lines if line and not line.startswith(("Conversion failed",
                                                               "Error opening input file"))]
