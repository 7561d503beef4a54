"""Shared fixtures: real clips made by ffmpeg's lavfi sources, the app under test, waiting helpers.

Clips are generated once per test session (nothing binary is committed) and
kept tiny, except the long one that tests interrupt mid-transcode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import imageio_ffmpeg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from video_async.app import create_app
from video_async.config import MIB, Settings

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(*args: str) -> None:
    """Test-side ffmpeg (blocking is fine in a fixture: no server loop is running yet)."""
    subprocess.run([FFMPEG, "-hide_banner", "-v", "error", "-y", *args], check=True, timeout=120)


def describe(path: Path) -> str:
    """What `ffmpeg -i` says about a file: the oracle the tests check outputs against."""
    done = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True, timeout=30)
    return done.stderr


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


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return Clips(tmp_path_factory.mktemp("clips"))


BOUNDARY = "testboundary1234"
PART_HEAD = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
             "Content-Type: video/mp4\r\n\r\n").encode()  # a video part, up to its first byte


async def open_upload(host: str, port: int, first_bytes: bytes, length: int | None = 10 * MIB
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw upload that has sent its headers and first_bytes of its body, and now waits."""
    reader, writer = await asyncio.open_connection(host, port)
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    writer.write((f"POST /videos/upload HTTP/1.1\r\nHost: localhost\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{size}\r\n").encode()
                 + first_bytes)
    await writer.drain()
    return reader, writer


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def address(client: AppClient) -> tuple[str, int]:
    """Host and port of a test client's server, for open_upload."""
    return str(client.server.host), int(client.server.port or 0)


async def uploads_in_progress(client: AppClient, count: int) -> bool:
    return (await (await client.get("/healthz")).json())["uploads_in_progress"] == count


class EndlessUpload:
    """A chunked multipart upload (no Content-Length): a real clip, then zeros until `until` bytes.

    `sent` counts what the server has pulled, so a test can tell that it stopped reading.
    """

    def __init__(self, clip: Path, chunk: int, until: int) -> None:
        self.clip, self.chunk, self.until, self.sent = clip, chunk, until, 0

    async def _bytes(self) -> AsyncIterator[bytes]:
        yield self.clip.read_bytes()
        while self.sent < self.until:
            self.sent += self.chunk
            yield bytes(self.chunk)

    def body(self) -> aiohttp.MultipartWriter:
        with aiohttp.MultipartWriter("form-data") as writer:
            part = writer.append(self._bytes(), {"Content-Type": "video/mp4"})
            part.set_content_disposition("form-data", name="video", filename="big.mp4")
        return writer


def pad_to(source: Path, target: Path, size: int) -> Path:
    """Copy an MP4 and append a 'free' box so the file is exactly `size` bytes and still valid."""
    data = source.read_bytes()
    gap = size - len(data)
    assert gap >= 8, "clip already larger than the wanted size"
    target.write_bytes(data + struct.pack(">I", gap) + b"free" + bytes(gap - 8))
    return target


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", port=0)


AppClient = TestClient[aiohttp.web.Request, aiohttp.web.Application]
MakeClient = Callable[..., Awaitable[AppClient]]
Serve = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def serve(aiohttp_server: Any, settings: Settings) -> Serve:
    """create_app(settings) listening on loopback, with any settings overridden."""
    async def make(**overrides: Any) -> TestServer:
        return await aiohttp_server(create_app(replace(settings, **overrides)))
    return make


@pytest.fixture
def make_client(aiohttp_client: Any, serve: Serve) -> MakeClient:
    """A test client of serve(), with any settings overridden."""
    async def make(**overrides: Any) -> AppClient:
        return await aiohttp_client(await serve(**overrides))
    return make


@pytest.fixture
async def client(make_client: MakeClient) -> AppClient:
    return await make_client()


async def upload(client: AppClient, path: Path, resolution: str | None = "720",
                 filename: str | None = None, headers: dict[str, str] | None = None
                 ) -> aiohttp.ClientResponse:
    # quote_fields=False: send the name as raw UTF-8, as browsers do
    form = aiohttp.FormData(quote_fields=False)
    if resolution is not None:
        form.add_field("resolution", resolution)
    with path.open("rb") as video:  # a file, not bytes: aiohttp streams it from disk
        form.add_field("video", video, filename=filename or path.name,
                       content_type="application/octet-stream")
        return await client.post("/videos/upload", data=form, headers=headers)


async def upload_ok(client: AppClient, path: Path, resolution: str = "720",
                    filename: str | None = None) -> dict[str, Any]:
    response = await upload(client, path, resolution, filename)
    assert response.status == 201, await response.text()
    return await response.json()


async def wait_until(condition: Callable[[], Awaitable[Any]], timeout: float = 60,
                     what: str = "condition") -> Any:
    """Re-check an async condition until it returns something truthy, or fail after timeout."""
    try:
        async with asyncio.timeout(timeout):
            while not (result := await condition()):
                await asyncio.sleep(0.02)
            return result
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def wait_for_state(client: AppClient, task_id: str, *states: str,
                         timeout: float = 60) -> dict[str, Any]:
    async def current() -> dict[str, Any] | None:
        task = await (await client.get(f"/tasks/{task_id}")).json()
        return task if task["state"] in states else None
    return await wait_until(current, timeout, f"task {task_id} to reach {states}")


def ffmpeg_pids(folder: Path) -> list[int]:
    """Running ffmpeg processes whose command line mentions folder (i.e. ours)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.split(") ", 1)[-1].startswith("Z"):
            continue  # a zombie is dead already; the point is that it is also reaped
        if cmdline and b"ffmpeg" in cmdline[0] and any(str(folder).encode() in arg for arg in cmdline):
            pids.append(int(entry.name))
    return pids


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".gitkeep") if folder.exists() else []


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



# -- the real program as a process ------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`python -m video_async` on a free port; its output goes to a log file, read by tests."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, data_dir: Path,
                 log: Path) -> None:
        self.proc, self.port, self.data_dir, self.log = proc, port, data_dir, log
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as in a crash or the OOM killer."""
        self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
        async with asyncio.timeout(15):
            return await self.proc.wait()


async def start_server(data_dir: Path, *flags: str) -> Server:
    port = free_port()
    log = data_dir.parent / f"server-{port}.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "video_async", "--port", str(port), "--data-dir", str(data_dir),
            *flags, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    async def listening() -> bool:
        if proc.returncode is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as r:
                return r.status == 200
        except aiohttp.ClientConnectionError:
            return False
    await wait_until(listening, 20, "the server to listen")
    return Server(proc, port, data_dir, log)
