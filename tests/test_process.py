"""The real program: `python -m video_async` as its own process, its flags, its shutdown."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from .support.checks import partials
from .support.clips import Clips, realtime_ffmpeg
from .support.internals import MIB, Limits, ProbePool, Settings
from .support.processes import ffmpeg_pids, probe_pids, threads_of
from .support.servers import refused_start, start_server
from .support.tus import TUS, created, patch
from .support.uploading import delete, get_json, transcoding, upload_ok, wait_for_state
from .support.waiting import wait_until

CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_shutdown_mid_transcode_leaves_nothing(tmp_path: Path, clips: Clips, signum: int) -> None:
    server = await start_server(tmp_path / "data", "--ffmpeg", str(realtime_ffmpeg(tmp_path)))  # 12 s job
    try:
        async with server.session() as session:
            task = await upload_ok(session, clips.long(), "720")
            await transcoding(session, task["id"])
        assert len(ffmpeg_pids(server.data_dir)) == 1
        server.proc.send_signal(signum)
        async with asyncio.timeout(10):  # "within a few seconds"
            code = await server.proc.wait()
    finally:
        if server.proc.returncode is None:
            await server.kill()
    assert code == 0
    assert ffmpeg_pids(server.data_dir) == []
    assert partials(server.data_dir) == []
    assert "Traceback" not in server.output()


async def test_help_explains_every_flag() -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "video_async", "--help",
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    text = out.decode()
    for flag in ("--host", "--port", "--data-dir", "--max-upload-mb", "--workers", "--ffmpeg",
                 "--cors-origin", "--job-timeout", "--stall-timeout", "--max-duration",
                 "--max-queued", "--max-uploads", "--min-free-mb", "--upload-idle-timeout",
                 "--no-persist", "VIDEO_ASYNC_"):
        assert flag in text


@pytest.mark.parametrize("ffmpeg", ["/nonexistent/ffmpeg", "/bin/false"])
async def test_broken_ffmpeg_is_a_clear_error(tmp_path: Path, ffmpeg: str) -> None:
    message = await refused_start(tmp_path, "--ffmpeg", ffmpeg)
    assert "video-async:" in message and "ffmpeg" in message


@pytest.mark.unit
async def test_environment_variables_configure_the_app(tmp_path: Path) -> None:
    settings = Settings.from_args([], environ={"VIDEO_ASYNC_PORT": "9001", "VIDEO_ASYNC_WORKERS": "3",
                                               "VIDEO_ASYNC_CORS_ORIGIN": "http://a.test,http://b.test"})
    assert (settings.port, settings.workers) == (9001, 3)
    assert settings.cors_origins == ("http://a.test", "http://b.test")
    assert Settings.from_args(["--port", "9002"], environ={"VIDEO_ASYNC_PORT": "9001"}).port == 9002


@pytest.mark.unit
async def test_reliability_flags_and_variables() -> None:
    defaults = Settings.from_args([], environ={})
    assert (defaults.job_timeout, defaults.stall_timeout, defaults.max_duration) == (3600, 120, 10800)
    assert (defaults.max_queued, defaults.max_uploads, defaults.min_free_bytes) == (100, 1000, 1024 * MIB)
    assert (defaults.upload_idle_timeout, defaults.persist) == (60, True)
    flags = Settings.from_args(["--stall-timeout", "5", "--max-duration", "60", "--max-queued", "3",
                                "--max-uploads", "2", "--min-free-mb", "10",
                                "--upload-idle-timeout", "7", "--no-persist"], environ={})
    assert (flags.stall_timeout, flags.max_duration, flags.max_queued, flags.max_uploads,
            flags.min_free_bytes, flags.upload_idle_timeout, flags.persist) == (
        5, 60, 3, 2, 10 * MIB, 7, False)
    env = Settings.from_args([], environ={"VIDEO_ASYNC_PERSIST": "0", "VIDEO_ASYNC_MAX_QUEUED": "4",
                                          "VIDEO_ASYNC_STALL_TIMEOUT": "9"})
    assert (env.persist, env.max_queued, env.stall_timeout) == (False, 4, 9)
    with pytest.raises(SystemExit):
        Settings.from_args(["--stall-timeout", "0"], environ={})


async def test_unreadable_snapshot_stops_the_start_plainly(tmp_path: Path) -> None:
    """A tasks.json that can't be read (here: a folder) is an error, never "no tasks"."""
    data_dir = tmp_path / "data"
    (data_dir / "tasks.json").mkdir(parents=True)
    message = await refused_start(data_dir)
    assert "video-async: cannot start" in message and "tasks.json" in message
    assert (data_dir / "tasks.json").is_dir()  # left as it was


async def test_the_log_keeps_real_requests_and_drops_the_page_polling(tmp_path: Path,
                                                                      clips: Clips) -> None:
    server = await start_server(tmp_path / "data", "--log-level", "DEBUG")
    try:
        async with server.session() as session:
            for _ in range(3):  # what an open tab does every second or two
                async with session.get("/healthz") as health, session.get("/tasks") as tasks:
                    assert health.status == tasks.status == 200
            task = await upload_ok(session, clips.small(), "480")
            await wait_for_state(session, task["id"], "COMPLETED")

        async def logged() -> bool:
            return f"job {task['id']} completed" in server.output()
        await wait_until(logged, 20, "the completion in the log")
    finally:
        assert await server.stop() == 0
    log = server.output()
    assert '"POST /videos/upload HTTP/1.1" 201' in log
    assert f"task {task['id']} queued" in log
    polls = [line for line in log.splitlines() if "GET /healthz" in line or '"GET /tasks"' in line]
    assert len(polls) >= 6 and all(" DEBUG aiohttp.access:" in line for line in polls), polls


async def test_a_missing_data_dir_is_created_and_said(tmp_path: Path) -> None:
    data_dir = tmp_path / "videos"  # tmp_path holds the server log; videos/ is new
    server = await start_server(data_dir)
    try:
        assert (data_dir / "uploads").is_dir() and (data_dir / "outputs").is_dir()
        assert f"created the data dir {data_dir.resolve()}" in server.output()
    finally:
        assert await server.stop() == 0


async def test_running_ffmpegs_cost_no_thread_each(tmp_path: Path, clips: Clips) -> None:
    """Four transcodes at once in the real server: its thread count, read from /proc, does
    not grow with them (each child's exit is watched from the loop, not a thread). The
    server's two small pools start their threads only as work comes, so one more of
    theirs may appear meanwhile; a thread per child would be four."""
    server = await start_server(tmp_path / "data", "--workers", "4",
                                "--ffmpeg", str(realtime_ffmpeg(tmp_path)))  # 12 s jobs
    try:
        async with server.session() as session:
            first = await upload_ok(session, clips.small(), "480")  # the pools' threads start
            await wait_for_state(session, first["id"], "COMPLETED")
            idle = threads_of(server.proc.pid)
            tasks = [await upload_ok(session, clips.long(), "480") for _ in range(4)]
            for task in tasks:
                await transcoding(session, task["id"])
            assert len(ffmpeg_pids(server.data_dir)) == 4
            busy = threads_of(server.proc.pid)
        assert busy - idle < len(tasks), (idle, busy)
    finally:
        await server.stop()
    assert ffmpeg_pids(server.data_dir) == []


async def test_one_probe_process_serves_upload_after_upload(tmp_path: Path, clips: Clips) -> None:
    """Each upload's probe is a child forked by a long-lived probe process, not a Python
    started for it: three uploads, one probe process, the same one throughout."""
    server = await start_server(tmp_path / "data", "--max-probes", "1")
    try:
        seen: set[int] = set()
        async with server.session() as session:
            for _ in range(3):
                await upload_ok(session, clips.small(), "480")
                seen.update(probe_pids(server.proc.pid))
        assert len(seen) == 1, seen
    finally:
        await server.stop()
    assert probe_pids(server.proc.pid) == []  # stopped with the server


async def test_probe_processes_die_with_a_killed_server(tmp_path: Path, clips: Clips) -> None:
    server = await start_server(tmp_path / "data")
    async with server.session() as session:
        await upload_ok(session, clips.small(), "480")
    assert probe_pids(server.proc.pid) != []
    await server.kill()  # SIGKILL: no cleanup of its own

    async def gone() -> bool:
        return probe_pids(server.proc.pid) == []
    await wait_until(gone, 10, "the probe process to die with the server")


async def test_an_idle_probe_process_is_let_go(clips: Clips) -> None:
    pool = ProbePool(1, Limits.of(Settings()), idle=0.2)
    try:
        media = await pool.probe(clips.small(), "bmff")
        assert (media.width, media.height) == (320, 240)
        assert probe_pids(os.getpid()) != []

        async def gone() -> bool:
            return probe_pids(os.getpid()) == []
        await wait_until(gone, 10, "the idle probe process to be let go")
    finally:
        await pool.close()


async def test_what_the_server_writes_into_a_checkout_is_ignored_by_git(tmp_path: Path,
                                                                       clips: Clips) -> None:
    """Run in a copy of this checkout, its data dir the checkout itself (the default, the
    current folder): an upload, resumable uploads finished, ended and left unfinished, a
    delete. Afterwards git sees nothing new and nothing changed."""
    checkout = tmp_path / "checkout"
    await copy_of_this_checkout(checkout)
    server = await start_server(checkout, cwd=checkout)
    try:
        async with server.session() as session:
            task = await upload_ok(session, clips.small(), "480")
            await wait_for_state(session, task["id"], "COMPLETED")
            data = clips.small().read_bytes()
            resumed = await created(session, len(data))
            assert (await patch(session, resumed, 0, data)).status == 204
            ended = await created(session, len(data))
            assert (await session.delete(ended, headers=TUS)).status == 204
            await created(session, len(data))  # left unfinished
            await delete(session, resumed.rsplit("/", 1)[-1])
            assert (await get_json(session, "/healthz"))["unfinished_uploads"]["count"] == 1
    finally:
        assert await server.stop() == 0
    assert (checkout / "resumable-ended.json").is_file() and (checkout / "tasks.json").is_file()
    assert await git(checkout, "status", "--porcelain", "--untracked-files=all") == ""


async def copy_of_this_checkout(target: Path) -> None:
    """The files git tracks here, as they are in the working tree, committed in a new repository."""
    listed = await git(CHECKOUT, "ls-files", "-z")
    for name in filter(None, listed.split("\0")):
        source = CHECKOUT / name
        if source.is_file():  # (a file deleted but not yet committed is not copied)
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    await git(target, "init", "--quiet")
    await git(target, "add", "--all")
    await git(target, "-c", "user.name=test", "-c", "user.email=test@example.invalid",
              "commit", "--quiet", "--no-verify", "--message", "the checkout as it is")


async def git(repository: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "git", "-C", str(repository), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()
