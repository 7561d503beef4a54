"""Where uploads are probed: a few long-lived probe processes (probe.py, PyAV imported
once) fork a child per file, at most a pool's size at once, so a probe costs a fork, not
a Python start; the facts come back as JSON, and `media_from` reads them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import processes
from .ffmpeg import (DEMUXERS, NO_DECODER, PROBE_TIMEOUT, FFmpegError, Limits, Media, NotAVideo,
                     TooCostly, explain, media_from, out_of_memory, ran_out_of_memory)

log = logging.getLogger(__name__)

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
        proc = await processes.start(args, limits.memory_bytes, stdin=asyncio.subprocess.PIPE, stderr=None)
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
        if ran_out_of_memory(said, limits):
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
