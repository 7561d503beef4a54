"""Everything that talks to ffmpeg: locate, probe, transcode, thumbnail.

Each run is an asyncio subprocess started from an argument list, never a shell
string, so a file name can't inject a command. While ffmpeg runs the event
loop is free: we only await its pipes. Whatever way a run ends (success,
error, timeout, cancellation) the process is terminated, killed after a grace
period if it ignores that, and reaped, so none outlives its job.

Uploads are hostile until proven otherwise. Every run that reads one names its
demuxer (from the container the upload was accepted as), may open that one file
and nothing else (the file protocol only, no MOV data references), and may not
decode a picture larger than the pixel budget; each child gets an address-space
cap of its own. The probe's facts come from a structured source (see probe.py),
never from text that the file's own metadata can print lines into.

The readers (`media_from`, `parse_progress`) and the size planner (`output_size`)
are pure functions with their own tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import resource
import shutil
import signal
import struct
import sys
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVarTuple

import aiofiles.os

from .config import MIB, Settings
from .layout import SOURCE_EXTENSIONS

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 30.0
NICENESS = 10
# The demuxer that reads each accepted container: named, never guessed from the contents,
# so a manifest or playlist dressed as a video is read as the video it claims to be.
DEMUXERS = {"bmff": "mov", "ebml": "matroska"}
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


# How long a probe process may wait for the next file before it is let go: a quiet
# server keeps none of them (each holds PyAV, about 40 MB).
PROBER_IDLE = 30.0


class ProbePool:
    """Where files are probed: at most `size` at once, each in a child that a long-lived
    probe process (probe.py) forks for it, so a probe costs a fork, not a Python start.

    The probe processes are started when work comes, and let go after `idle`
    seconds without any. One that does not answer within PROBE_TIMEOUT, or that
    dies, is killed with the child it forked (they share a process group) and
    replaced at the next probe.
    """

    def __init__(self, size: int, limits: Limits, idle: float = PROBER_IDLE) -> None:
        self.limits = limits
        self.idle = idle
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Prober] = []  # most recently used last
        self._stopping: set[asyncio.Task[None]] = set()

    async def probe(self, path: Path, container: str) -> Media:
        """Describe a media file; NotAVideo if it has no usable video stream, TooCostly if
        reading it went past the memory cap."""
        async with self._slots:
            prober = self._idle.pop() if self._idle else await _Prober.start(self.limits)
            prober.cancel_retirement()
            try:
                facts = await prober.describe(path, container, self.limits)
            except BaseException:
                await prober.stop()
                raise
            prober.retire_after(self.idle, self._retire)
            self._idle.append(prober)
        return _media_of(facts, self.limits)

    def _retire(self, prober: _Prober) -> None:
        if prober in self._idle:
            self._idle.remove(prober)
            stopping = asyncio.create_task(prober.stop(), name="probe-retire")
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        """Stop every probe process (at shutdown)."""
        idle, self._idle = self._idle, []
        for prober in idle:
            prober.cancel_retirement()
            await prober.stop()
        for stopping in list(self._stopping):
            await stopping


class _Prober:
    """One probe process: a request written, one answer read, in turn."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._retirement: asyncio.TimerHandle | None = None

    @classmethod
    async def start(cls, limits: Limits) -> _Prober:
        args = [sys.executable, "-m", "video_async.probe", "--serve", str(os.getpid())]
        # its stderr is the server's: nothing reads a pipe of it between requests
        proc = await _start(args, limits.memory_bytes, stdin=asyncio.subprocess.PIPE, stderr=None)
        return cls(proc)

    async def describe(self, path: Path, container: str, limits: Limits) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"path": os.path.abspath(path), "demuxer": DEMUXERS[container],
                   "max_pixels": limits.max_pixels}
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                self.proc.stdin.write(json.dumps(request).encode() + b"\n")
                await self.proc.stdin.drain()
                line = await self.proc.stdout.readline()
        except TimeoutError:
            raise FFmpegError(f"Reading the file took longer than {PROBE_TIMEOUT:g} s, so it "
                              "was given up: the file may be damaged, or the server too "
                              "busy.") from None
        except ConnectionError:
            line = b""
        try:
            facts = json.loads(line) if line else None
        except ValueError:
            facts = None
        if not isinstance(facts, dict):
            raise FFmpegError("The server's probe process stopped before it answered; "
                              "try the upload again.")
        return facts

    def retire_after(self, seconds: float, retire: Callable[[_Prober], None]) -> None:
        self._retirement = asyncio.get_running_loop().call_later(seconds, retire, self)

    def cancel_retirement(self) -> None:
        if self._retirement is not None:
            self._retirement.cancel()
            self._retirement = None

    async def stop(self) -> None:
        """Kill the process and the child it may have forked (one process group: it was
        started in a session of its own), and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await asyncio.shield(self.proc.wait())


def _media_of(facts: dict[str, Any], limits: Limits) -> Media:
    """The Media a probe's answer describes, or why there is none."""
    if "error" in facts:
        said = str(facts["error"])
        if _out_of_memory(said, limits):
            raise TooCostly(out_of_memory(limits))
        raise NotAVideo(*explain(said, "ffmpeg does not recognise this file as a video."))
    media = media_from(facts)
    if media is None:
        if any(isinstance(s, dict) and s.get("type") == "video" and s.get("codec") is None
               for s in facts.get("streams") or ()):
            raise NotAVideo(NO_DECODER)
        raise NotAVideo("The file has no video stream.")
    return media


async def probe(path: Path, container: str, limits: Limits) -> Media:
    """Describe one media file in a probe process of its own, started and stopped for it:
    for the rare probe outside an upload (an output, a task restored without its facts).
    Uploads share an app's ProbePool."""
    pool = ProbePool(1, limits)
    try:
        return await pool.probe(path, container)
    finally:
        await pool.close()


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
    if code != 0:
        if _out_of_memory(err, limits):
            raise FFmpegError(out_of_memory(limits), _last_line(err))
        raise FFmpegError(*explain(err, f"ffmpeg could not transcode this video (exit status {code})."))
    return explain(err, "")[1]


async def thumbnail(ffmpeg: str, video: Path, target: Path, at_seconds: float,
                    limits: Limits) -> None:
    """One JPEG frame, 320 pixels wide, taken at_seconds into the video (our own output)."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-ss", f"{at_seconds:.3f}", *input_args(video, container_of(video), limits),
            "-frames:v", "1", "-vf", "scale=320:-2", "-q:v", "4", "-f", "image2", str(target)]
    code, _, err = await _run_to_end(args, timeout=PROBE_TIMEOUT, limits=limits)
    if code != 0 or not await aiofiles.os.path.exists(target):
        raise FFmpegError(*explain(err, "No frame could be taken for a thumbnail."))


# -- running processes --------------------------------------------------------

_death_signal: list[str] = []  # the launcher die_with_parent() puts before each command


@functools.cache
def _tool(name: str) -> str | None:
    """A util-linux program (setpriv, prlimit), looked up once."""
    return shutil.which(name)


def die_with_parent() -> None:
    """From now on, every ffmpeg this process starts is killed when it dies (Linux).

    A queue worker calls this at start: a worker killed with SIGKILL then leaves no
    ffmpeg writing into the shared data dir while its job runs again on another worker.
    The single server keeps its ffmpeg instead: recovery at its next start finds and
    stops them.

    util-linux's `setpriv --pdeathsig KILL` asks for the signal and then execs the
    command, which keeps it: no code of ours runs between fork and exec, so Python can
    start children with vfork instead of copying the whole process. (A worker killed
    in the microseconds between the vfork and setpriv's prctl would miss it.)
    """
    setpriv = _tool("setpriv")
    if setpriv is None:
        log.warning("setpriv (util-linux) not found: an ffmpeg may outlive a killed worker")
        return
    _death_signal[:] = [setpriv, "--pdeathsig", "KILL", "--"]


def _launcher(memory_bytes: int) -> list[str]:
    """What runs before the command: the death signal, then the memory cap, each of
    which execs the next, so the cap is in force before ffmpeg's first instruction."""
    launcher = list(_death_signal)
    if memory_bytes and (prlimit := _tool("prlimit")):
        launcher += [prlimit, f"--as={memory_bytes}", "--"]
    return launcher


_Ts = TypeVarTuple("_Ts")


class _PidfdWatcher(asyncio.AbstractChildWatcher):
    """Python 3.12's child watcher, for 3.11: each child's exit is read from a pidfd on
    the loop that started it. 3.11's default starts a thread per child, and its own
    PidfdChildWatcher is tied to one loop."""

    def add_child_handler(self, pid: int, callback: Callable[[int, int, *_Ts], object],
                          *args: *_Ts) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, self._reap, loop, pid, pidfd, callback, args)

    @staticmethod
    def _reap(loop: asyncio.AbstractEventLoop, pid: int, pidfd: int,
              callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped by someone else
            code = 255
        callback(pid, code, *args)

    def remove_child_handler(self, pid: int) -> bool:
        return True  # asyncio never calls it

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        pass

    def close(self) -> None:
        pass

    def is_active(self) -> bool:
        return True

    def __enter__(self) -> _PidfdWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def watch_children() -> None:
    """Reap children without a thread each (on 3.12 and later, asyncio already does)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    with warnings.catch_warnings():  # get_child_watcher is deprecated from 3.12 on
        warnings.simplefilter("ignore", DeprecationWarning)
        if not isinstance(asyncio.get_child_watcher(), _PidfdWatcher):
            asyncio.set_child_watcher(_PidfdWatcher())


async def _start(args: Sequence[str], memory: int, stdin: int = asyncio.subprocess.DEVNULL,
                 stderr: int | None = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    """A child under the launcher (death signal, memory cap), at a lower priority."""
    # start_new_session: a Ctrl-C in the terminal reaches the server only; the
    # server then stops ffmpeg itself, in order, instead of ffmpeg racing it.
    proc = await asyncio.create_subprocess_exec(
        *_launcher(memory), *args, stdin=stdin,
        stdout=asyncio.subprocess.PIPE, stderr=stderr, start_new_session=True)
    if memory and _tool("prlimit") is None:
        # no prlimit to launch through: capped a moment after the start, before the
        # child has read much of anything
        with contextlib.suppress(OSError):
            resource.prlimit(proc.pid, resource.RLIMIT_AS, (memory, memory))
    # ffmpeg would happily take every core; at a lower priority it still does, but
    # the event loop gets the CPU at once when a request comes in.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, proc.pid, NICENESS)
    return proc


@contextlib.asynccontextmanager
async def _spawn(args: Sequence[str], limits: Limits | None = None,
                 grace: float = 3.0) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await _start(args, limits.memory_bytes if limits is not None else 0)
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


def _out_of_memory(stderr: str, limits: Limits) -> bool:
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
