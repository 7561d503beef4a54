"""ffmpeg itself: locate it, describe a file (Media), plan sizes, transcode, thumbnail,
and say in plain words why a run failed.

Each run is a child process (processes.py) started from an argument list, never a shell
string, so a file name can't inject a command. While ffmpeg runs the event loop is
free: we only await its pipes. Whatever way a run ends (success, error, timeout,
cancellation) the process is terminated, killed after a grace period if it ignores
that, and reaped, so none outlives its job.

Uploads are hostile until proven otherwise. Every run that reads one names its
demuxer (from the container the upload was accepted as), may open that one file
and nothing else (the file protocol only, no MOV data references), and may not
decode a picture larger than the pixel budget; each child gets an address-space
cap of its own. The probe's facts come from a structured source (probing.py runs
probe.py), never from text that the file's own metadata can print lines into; an
output's duration comes from its own index (mp4.py).

The readers (`media_from`, `parse_progress`) and the size planner (`output_size`)
are pure functions with their own tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from . import processes
from .config import MIB, Settings
from .layout import SOURCE_EXTENSIONS

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 30.0
# The demuxer that reads each accepted container: named, never guessed from the contents,
# so a manifest or playlist dressed as a video is read as the video it claims to be.
DEMUXERS = {"bmff": "mov", "ebml": "matroska", "riff": "avi", "mpegts": "mpegts"}
MAX_FRAME_RATE = 1000.0  # frames a second; more is no camera's, only a costly trick


@dataclass(frozen=True)
class Limits:
    """What one file may cost to read: the largest picture a decoder may allocate, in
    pixels, and each child's address space, in bytes (0: no cap)."""
    max_pixels: int
    memory_bytes: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(max_pixels=settings.max_pixels, memory_bytes=settings.ffmpeg_memory_mb * MIB)

    @property
    def memory_text(self) -> str:
        return f"{self.memory_bytes // MIB} MiB"


def container_of(stored: Path) -> str:
    """The container of a file we stored, from its extension: an upload keeps the one it
    was accepted under, and our outputs are named for what we wrote."""
    return SOURCE_EXTENSIONS[stored.suffix.lower()]


def input_args(path: Path, container: str, limits: Limits) -> list[str]:
    """ffmpeg's options for reading one upload (or our own output), and nothing else.

    The demuxer is named, so no playlist, manifest, concat script or image pattern
    reader is ever chosen by the contents; only the file protocol is allowed, for this
    one absolute path (no `-` or `x:` can be taken for anything but a file name).
    """
    demuxer = DEMUXERS[container]
    args = ["-f", demuxer, "-protocol_whitelist", "file", "-max_pixels", str(limits.max_pixels)]
    if demuxer == "mov":
        args += ["-enable_drefs", "0"]  # MOV data references would name other files
    return args + ["-i", "file:" + os.path.abspath(path)]


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


class TooCostly(FFmpegError):
    """Reading the file needs more memory than a child may use."""


class Interrupted(FFmpegError):
    """ffmpeg was ended by a signal from outside: the machine, not the video, stopped it."""

    @classmethod
    def by(cls, signum: int) -> Interrupted:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        # SIGKILL cannot be caught: it comes from the kernel's out-of-memory killer as often
        # as from a person, and nothing on the machine says which
        who = ("the system's out-of-memory killer or an operator" if signum == signal.SIGKILL
               else "an operator or the system")
        return cls(f"Stopped: the transcode was ended by {name}, sent by {who}; the video "
                   "itself may well be fine, so Retry may work.",
                   f"ffmpeg was killed by {name} ({signum})")


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
    frame_rate: float | None = None  # average frames a second; None when the file doesn't say

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


def _ratio(value: object) -> Fraction | None:
    """[num, den] from the probe, as a positive fraction; None for anything else."""
    if (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)
            and value[0] > 0 and value[1] > 0):
        return Fraction(value[0], value[1])
    return None


def media_from(facts: dict[str, Any]) -> Media | None:
    """The Media that probe.py's JSON describes; None if it shows no usable video.

    The first video stream that is not cover art ("attached pic") is the main
    picture: an audio file with an album image is not a video.
    """
    streams = facts.get("streams")
    if not isinstance(streams, list):
        return None
    video = next((s for s in streams if isinstance(s, dict) and s.get("type") == "video"
                  and s.get("codec") and not s.get("attached_pic")), None)
    if video is None:
        return None
    width, height, codec = video.get("width"), video.get("height"), video.get("codec")
    if type(width) is not int or type(height) is not int or width <= 0 or height <= 0:
        return None
    audio = next((s for s in streams if isinstance(s, dict) and s.get("type") == "audio"), None)
    duration = facts.get("duration")
    rotation = facts.get("rotation")
    pixel_format = video.get("pixel_format")
    sample_aspect = _ratio(video.get("sample_aspect"))
    frame_rate = _ratio(video.get("frame_rate"))
    return Media(
        duration=float(duration) if isinstance(duration, (int, float)) and duration >= 0 else None,
        width=width,
        height=height,
        video_codec=codec if isinstance(codec, str) else "unknown",
        audio_codec=str(audio.get("codec")) if audio and audio.get("codec") else None,
        pixel_format=pixel_format if isinstance(pixel_format, str) else None,
        rotation=rotation % 360 if type(rotation) is int else 0,
        sample_aspect=float(sample_aspect) if sample_aspect else 1.0,
        frame_rate=float(frame_rate) if frame_rate else None,
    )


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


def transcode_args(ffmpeg: str, source: Path, target: Path, size: tuple[int, int],
                   has_audio: bool, limits: Limits) -> list[str]:
    """The whole ffmpeg command for one job; the benchmark runs exactly this list too."""
    width, height = size
    args = [
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
        *input_args(source, container_of(source), limits),
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
                    on_progress: Callable[[float], None], limits: Limits,
                    stall_timeout: float = 120.0) -> str:
    """Encode source into target; on_progress gets output seconds as ffmpeg reports them.

    Returns what ffmpeg complained of while it still finished ("" if nothing): a file
    cut short or damaged part way makes an output of what could be read, and exit 0.
    Stalled if the output position does not move forward for stall_timeout seconds.
    """
    args = transcode_args(ffmpeg, source, target, output_size(media, resolution),
                          media.audio_codec is not None, limits)
    code, err = await _run_streaming(args, on_progress, stall_timeout, limits)
    if code < 0:  # asyncio's way of saying that a signal ended the process
        raise Interrupted.by(-code)
    if code != 0:
        if ran_out_of_memory(err, limits):
            raise FFmpegError(out_of_memory(limits), _last_line(err))
        raise FFmpegError(*explain(err, f"ffmpeg could not transcode this video (exit status {code})."))
    return explain(err, "")[1]


# -- the ladder: all sizes at once, as HLS ---------------------------------------

# Each rung's short side and the cap on its video bitrate (kbit/s), top first: about the
# rates HLS authoring guides give H.264 at these sizes.
LADDER = ((1080, 5000), (720, 2800), (480, 1400), (360, 800))
SEGMENT_SECONDS = 2  # a key frame starts each, in every rung alike, so a player can switch


@dataclass(frozen=True)
class Rung:
    width: int
    height: int
    max_kbps: int  # the video's bitrate cap, with a buffer of twice that


def ladder_rungs(media: Media) -> list[Rung]:
    """The ladder for this source, top first: each of LADDER's sizes, never larger than
    the source (a source between two sizes is its own top rung), none twice."""
    caps: dict[tuple[int, int], int] = {}
    for short_side, kbps in LADDER:
        caps[output_size(media, short_side)] = kbps  # a smaller size's cap wins a tie
    return [Rung(width, height, kbps) for (width, height), kbps in caps.items()]


def ladder_threads() -> int:
    """Threads for each of a ladder's encoders: one a core, at most 8 (measured: four
    encoders of 12 threads each fit in 4 GiB, of 24 do not)."""
    return max(1, min(8, os.cpu_count() or 1))


def ladder_args(ffmpeg: str, source: Path, folder: Path, rungs: Sequence[Rung],
                has_audio: bool, limits: Limits) -> list[str]:
    """One ffmpeg for the whole ladder: the source is decoded once and split, each rung
    scaled and encoded from it, and the HLS muxer writes every rung's fMP4 segments and
    playlist into folder, with a master playlist naming them (layout.LADDER_FILE's names).
    The benchmark runs this list too, for the ladder and, one rung at a time, for its rungs.
    """
    if "%" in str(folder):  # the HLS muxer reads % in its file names as a pattern
        raise FFmpegError("The data folder's path holds a '%', so no ladder can be written there.")
    count = len(rungs)
    graph = f"[0:v:0]split={count}" + "".join(f"[s{n}]" for n in range(count)) + ";" + ";".join(
        f"[s{n}]scale={rung.width}:{rung.height}:flags=bicubic,setsar=1,format=yuv420p[v{n}]"
        for n, rung in enumerate(rungs))
    args = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
            *input_args(source, container_of(source), limits),
            "-filter_complex", graph]
    for n in range(count):
        args += ["-map", f"[v{n}]"]
    if has_audio:
        args += ["-map", "0:a:0"] * count  # decoded once too; each rung carries its own
        args += ["-c:a", "aac", "-b:a", "128k", "-ac", "2"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-profile:v", "high",
             # x264 starts 1.5 threads a core per encoder, each with frames of its own: four
             # 1080p-led encoders at 24 threads each (16 cores) outgrow the 4 GiB memory cap
             "-threads", str(ladder_threads()),
             # key frames at the same moments in every rung, and only there
             "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECONDS})", "-sc_threshold", "0"]
    for n, rung in enumerate(rungs):
        args += [f"-maxrate:v:{n}", f"{rung.max_kbps}k", f"-bufsize:v:{n}", f"{2 * rung.max_kbps}k"]
    streams = " ".join(f"v:{n},a:{n}" if has_audio else f"v:{n}" for n in range(count))
    args += [
        "-map_metadata", "-1",
        "-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod",
        "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
        # the muxer fills in %v here only when there are two rungs or more
        "-hls_fmp4_init_filename", "v%v.init.mp4" if count > 1 else "v0.init.mp4",
        "-hls_segment_filename", str(folder / "v%v.%05d.m4s"),
        "-master_pl_name", "master.m3u8", "-var_stream_map", streams,
        "-progress", "pipe:1", "-nostats",
        str(folder / "v%v.m3u8"),
    ]
    return args


async def transcode_ladder(ffmpeg: str, source: Path, folder: Path, media: Media,
                           on_progress: Callable[[float], None], limits: Limits,
                           stall_timeout: float = 120.0) -> tuple[list[Rung], str]:
    """Encode the source's ladder into folder, which must exist; (its rungs, what ffmpeg
    complained of while it still finished). Progress and failures as transcode()'s."""
    rungs = ladder_rungs(media)
    args = ladder_args(ffmpeg, source, folder, rungs, media.audio_codec is not None, limits)
    code, err = await _run_streaming(args, on_progress, stall_timeout, limits)
    if code != 0:
        if ran_out_of_memory(err, limits):
            raise FFmpegError(out_of_memory(limits), _last_line(err))
        raise FFmpegError(*explain(err, f"ffmpeg could not make the sizes of this video "
                                        f"(exit status {code})."))
    return rungs, explain(err, "")[1]


async def join_top_rung(ffmpeg: str, folder: Path, joined: Path, target: Path, limits: Limits,
                        stall_timeout: float = 120.0) -> None:
    """The ladder's top rung as one MP4 to download, without encoding it again: its init
    segment and media segments, end to end, are a fragmented MP4 (joined), which ffmpeg
    copies into target with the index at the front."""
    segments = sorted(name for name in await aiofiles.os.listdir(folder)
                      if re.fullmatch(r"v0\.[0-9]{5}\.m4s", name))
    parts = [folder / "v0.init.mp4", *(folder / name for name in segments)]
    async with aiofiles.open(joined, "wb") as out:
        for part in parts:
            async with aiofiles.open(part, "rb") as segment:
                while chunk := await segment.read(MIB):
                    await out.write(chunk)
    args = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
            *input_args(joined, container_of(joined), limits),
            "-map", "0", "-c", "copy", "-map_metadata", "-1", "-movflags", "+faststart",
            "-progress", "pipe:1", "-nostats", "-f", "mp4", str(target)]
    code, err = await _run_streaming(args, lambda seconds: None, stall_timeout, limits)
    if code != 0:
        raise FFmpegError(*explain(err, f"ffmpeg could not join the top size into one MP4 "
                                        f"(exit status {code})."))


async def thumbnail(ffmpeg: str, video: Path, target: Path, at_seconds: float,
                    limits: Limits) -> None:
    """One JPEG frame, 320 pixels wide, taken at_seconds into the video (our own output)."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-ss", f"{at_seconds:.3f}", *input_args(video, container_of(video), limits),
            "-frames:v", "1", "-vf", "scale=320:-2", "-q:v", "4", "-f", "image2", str(target)]
    code, _, err = await _run_to_end(args, timeout=PROBE_TIMEOUT, limits=limits)
    if code != 0 or not await aiofiles.os.path.exists(target):
        raise FFmpegError(*explain(err, "No frame could be taken for a thumbnail."))


# -- running ffmpeg -----------------------------------------------------------

@contextlib.asynccontextmanager
async def _spawn(args: Sequence[str], limits: Limits | None = None,
                 grace: float = 3.0) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await processes.start(args, limits.memory_bytes if limits is not None else 0)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            await processes.stop(proc, grace)


async def _run_to_end(args: Sequence[str], timeout: float,
                      limits: Limits | None = None) -> tuple[int, str, str]:
    """Run a short command; (exit code, stdout, stderr)."""
    async with _spawn(args, limits) as proc:
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            raise FFmpegError(f"Reading the file took longer than {timeout:g} s, so it was given "
                              "up: the file may be damaged, or the server too busy.") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def _run_streaming(args: Sequence[str], on_progress: Callable[[float], None],
                         stall_timeout: float, limits: Limits) -> tuple[int, str]:
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

    async with _spawn(args, limits) as proc:
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
NO_DECODER = "The video is in a format (codec) this server cannot decode."
PLAIN_REASONS = (
    ("No space left on device", "The server's disk is full, so the video could not be written."),
    ("no decoder found", NO_DECODER),
    ("exceeds specified max pixel count", "The video's frames are larger than this server "
                                          "decodes (--max-pixels)."),
    ("moov atom not found", "The file is cut short: the end, where an MP4 or MOV keeps its "
                            "index, is missing. Was the upload or the recording interrupted?"),
    ("partial file", "The file is cut short: too little of the video is there to make "
                     "anything from."),
    ("received no packets", "No picture could be decoded from the video: its data is "
                            "damaged or missing."),
    ("Invalid data found when processing input", "The file's data is damaged, so ffmpeg "
                                                 "could not read it."),
)


# How a child says that an allocation failed: FFmpeg's ENOMEM, Python's and C++'s, and
# FFmpeg's words when a picture buffer or a thread (its stack is address space too)
# could not be had. Which one a capped ffmpeg hits first depends on its threads' timing.
_OUT_OF_MEMORY = ("Cannot allocate memory", "MemoryError", "std::bad_alloc", "out of memory",
                  "get_buffer() failed", "pthread_create() failed")


def ran_out_of_memory(stderr: str, limits: Limits) -> bool:
    """A failure that the memory cap, not the file alone, explains."""
    return bool(limits.memory_bytes) and any(said in stderr for said in _OUT_OF_MEMORY)


def out_of_memory(limits: Limits) -> str:
    return (f"ffmpeg ran out of the memory it may use ({limits.memory_text}, "
            "--ffmpeg-memory-mb), so the video was given up.")


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
