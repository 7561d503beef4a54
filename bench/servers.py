"""Start a server as its own process on loopback, wait until it answers, and always stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent  # servers run from here, so `-m bench....` imports
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Server:
    name: str
    pid: int
    url: str  # http://127.0.0.1:PORT, no trailing slash


def proc_status(pid: int) -> dict[str, int]:
    """A server process's Threads, VmRSS (now) and VmHWM (peak, in bytes), from /proc."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key == "Threads":
                found[key] = int(value)
            elif key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found


def free_port() -> int:
    """A port nobody listens on now: the kernel's pick for a socket bound to port 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until_up(session: aiohttp.ClientSession, url: str,
                        proc: asyncio.subprocess.Process, timeout: float) -> None:
    """Poll url until it answers 200, the process dies, or the deadline passes."""
    async with asyncio.timeout(timeout):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"server exited with status {proc.returncode} before answering")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)  # polling interval, not a synchronisation


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the server then stops its own ffmpeg runs), wait, SIGKILL if it hangs."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        log.warning("pid %s ignored SIGTERM; killing it", proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def running(name: str, module: str, args: Sequence[str], log_file: Path,
                  session: aiohttp.ClientSession, ready_path: str = "/healthz") -> AsyncIterator[Server]:
    """Run `python -m module --port P *args` until the block ends, whatever way it ends."""
    port = free_port()
    with log_file.open("wb") as log_out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, "--port", str(port), *args,
            cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=log_out, stderr=log_out)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            await wait_until_up(session, url + ready_path, proc, START_TIMEOUT)
        except (TimeoutError, RuntimeError) as exc:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} did not start ({exc or 'timed out'}):\n{tail}") from None
        log.info("%s up at %s (pid %s)", name, url, proc.pid)
        yield Server(name, proc.pid, url)
    finally:
        await stop(proc)


async def timed_exec(args: list[str]) -> float:
    """Run a command to its end (ffmpeg, directly), its output dropped; its wall time."""
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await proc.communicate()
    finally:
        await stop(proc)  # only does something if we were interrupted while it ran
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - began
