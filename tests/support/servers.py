"""The app as a server: in the test's own loop (the conftest fixtures' types), or the
real program, `python -m video_async`, as a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from .uploading import AppClient
from .waiting import wait_until

MakeClient = Callable[..., Awaitable[AppClient]]
Serve = Callable[..., Awaitable[TestServer]]


def session_from(address: str, url: str, **options: Any) -> aiohttp.ClientSession:
    """A client of the server at url whose connections leave from another address of this
    machine (127.0.0.2, say): to the server, another client, as it would see one on the
    network, with no header to believe."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    return aiohttp.ClientSession(base_url=url, connector=connector, **options)


def url_of(server: TestServer) -> str:
    return f"http://{server.host}:{server.port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Program:
    """A program of ours running as its own process; its output goes to a log file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as in a crash or the OOM killer."""
        self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
        async with asyncio.timeout(20):
            return await self.proc.wait()

    async def printed(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """The first match of a (multi-line) pattern in the output, once it is there."""
        async def found() -> re.Match[str] | None:
            return re.search(pattern, self.output(), re.MULTILINE)
        match: re.Match[str] = await wait_until(found, timeout, f"{pattern!r} in the output")
        return match


@contextlib.asynccontextmanager
async def stopping(*programs: Program) -> AsyncIterator[None]:
    """Stops every program still running on the way out, whatever happened inside."""
    try:
        yield
    finally:
        for program in programs:
            if program.proc.returncode is None:
                await program.stop()


class Server(Program):
    """`python -m video_async` on a free port."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, data_dir: Path,
                 log: Path) -> None:
        super().__init__(proc, log)
        self.port, self.data_dir = port, data_dir
        self.url = f"http://127.0.0.1:{port}"

    def session(self, **options: Any) -> aiohttp.ClientSession:
        """A client of this server that takes paths ("/tasks"), as the test client does."""
        return aiohttp.ClientSession(base_url=self.url, **options)


async def start_server(data_dir: Path, *flags: str, python: str = sys.executable,
                       cwd: Path | None = None, umask: int = -1) -> Server:
    """The program, started by python (this test's own unless given) in cwd (under umask,
    if given), once it listens."""
    port = free_port()
    log = data_dir.parent / f"server-{port}.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            python, "-m", "video_async", "--port", str(port), "--data-dir", str(data_dir), *flags,
            stdout=out, stderr=subprocess.STDOUT, cwd=cwd, umask=umask)
    server = Server(proc, port, data_dir, log)

    async def listening() -> bool:
        if proc.returncode is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{server.output()}")
        try:
            async with server.session() as session, session.get("/healthz") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False
    await wait_until(listening, 20, "the server to listen")
    return server


@contextlib.asynccontextmanager
async def running_server(data_dir: Path, *flags: str, umask: int = -1) -> AsyncIterator[Server]:
    """start_server() for the length of the block, stopped on the way out."""
    server = await start_server(data_dir, *flags, umask=umask)
    async with stopping(server):
        yield server


async def refused_start(data_dir: Path, *flags: str) -> str:
    """Start the program where it must refuse to: what it said, once it exited non-zero, plainly."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "video_async", "--port", str(free_port()), "--data-dir", str(data_dir),
        *flags, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        _, err = await proc.communicate()
    assert proc.returncode != 0
    message = err.decode()
    assert "Traceback" not in message
    return message
