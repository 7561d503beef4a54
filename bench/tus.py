"""Item 8 of `make bench`: resumable uploads (tus, /files/) against the multipart route.

The same 200 MB file, on the same server, interleaved run by run: once through
POST /videos/upload, once as one tus upload sent in a single PATCH, once in
8 MiB PATCHes (what a client that must survive a dropped connection sends; each
PATCH waits for its bytes to be on disk before the next one goes). Each time runs
from the first request to the answer that queues the task.

    python -m bench.run --items 8
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import aiohttp

from .client import FilePayload, delete, upload
from .servers import Server
from .stats import Summary, ratios

log = logging.getLogger("bench")

MB = 1_000_000
MIB = 1024 * 1024
PIECE = 8 * MIB  # the chunked client's PATCH size
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
UPLOAD_TIMEOUT = 120.0


class Report(Protocol):
    def figure(self, item: str, name: str, unit: str, values: list[float],
               digits: int = 2) -> Summary: ...

    def bar(self, item: str, text: str, value: float, limit: float,
            higher_is_better: bool = False) -> None: ...


async def create(session: aiohttp.ClientSession, server: Server, path: Path) -> str:
    name = base64.b64encode(path.name.encode()).decode()
    async with session.post(server.url + "/files", headers={
            **TUS, "Upload-Length": str(path.stat().st_size),
            "Upload-Metadata": f"filename {name},resolution {base64.b64encode(b'480').decode()}"}) as response:
        if response.status != 201:
            raise RuntimeError(f"POST /files: {response.status} {await response.text()}")
        return server.url + response.headers["Location"]


async def patch(session: aiohttp.ClientSession, url: str, offset: int, body: Any) -> int:
    async with session.patch(url, data=body, headers={
            **TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET_STREAM}) as response:
        if response.status != 204:
            raise RuntimeError(f"PATCH: {response.status} {await response.text()}")
        return int(response.headers["Upload-Offset"])


async def tus_upload(session: aiohttp.ClientSession, server: Server, path: Path,
                     piece: int | None) -> tuple[float, str]:
    """One tus upload, in one PATCH (piece None) or in PATCHes of `piece` bytes:
    (wall seconds, task id)."""
    size = path.stat().st_size
    began = time.perf_counter()
    async with asyncio.timeout(UPLOAD_TIMEOUT):
        url = await create(session, server, path)
        if piece is None:
            offset = await patch(session, url, 0, FilePayload(path))  # its Content-Type is ours
        else:
            source: BinaryIO = await asyncio.to_thread(path.open, "rb")
            try:
                offset = 0
                reading = asyncio.ensure_future(asyncio.to_thread(source.read, piece))
                while offset < size:
                    chunk = await reading  # the next piece is read while this one is sent
                    reading = asyncio.ensure_future(asyncio.to_thread(source.read, piece))
                    offset = await patch(session, url, offset, chunk)
                await reading
            finally:
                await asyncio.to_thread(source.close)
    seconds = time.perf_counter() - began
    if offset != size:
        raise RuntimeError(f"the upload ended at {offset} of {size} bytes")
    return seconds, url.rsplit("/", 1)[-1]


async def bench_tus(session: aiohttp.ClientSession, app: Server, big: Path, runs: int,
                    report: Report, *, memory: Callable[[int], dict[str, int]],
                    reset_peak: Callable[[int], bool]) -> None:
    size = big.stat().st_size
    route_s: list[float] = []
    single_s: list[float] = []
    pieces_s: list[float] = []
    growth: list[float] = []
    baseline = memory(app.pid)["VmRSS"]

    async def measured(send: Callable[[], Any], into: list[float]) -> None:
        reset_peak(app.pid)
        seconds, task_id = await send()
        growth.append((memory(app.pid)["VmHWM"] - baseline) / MIB)
        into.append(seconds)
        await delete(session, app, task_id)

    async def route() -> tuple[float, str]:
        seconds, task = await upload(session, app, big)
        return seconds, str(task["id"])

    steps = [(route, route_s), (lambda: tus_upload(session, app, big, None), single_s),
             (lambda: tus_upload(session, app, big, PIECE), pieces_s)]
    for run in range(runs):
        shift = run % len(steps)  # each kind goes first in turn: no kind always meets a cold cache
        for send, into in steps[shift:] + steps[:shift]:
            await measured(send, into)
        log.info("tus run %d: multipart %.2f s, one PATCH %.2f s, 8 MiB PATCHes %.2f s",
                 run + 1, route_s[-1], single_s[-1], pieces_s[-1])

    item = "8 tus"
    report.figure(item, "multipart route MB/s", "MB/s", [size / s / MB for s in route_s], 0)
    report.figure(item, "tus, one PATCH MB/s", "MB/s", [size / s / MB for s in single_s], 0)
    report.figure(item, "tus, 8 MiB PATCHes MB/s", "MB/s", [size / s / MB for s in pieces_s], 0)
    single = report.figure(item, "tus one PATCH / multipart", "x", ratios(route_s, single_s))
    pieces = report.figure(item, "tus 8 MiB PATCHes / multipart", "x", ratios(route_s, pieces_s))
    report.figure(item, "peak RSS growth, per upload", "MiB", growth, 1)
    report.bar(item, "tus one PATCH >= 0.9x multipart", single.median, 0.9, higher_is_better=True)
    report.bar(item, "tus 8 MiB PATCHes >= 0.6x multipart", pieces.median, 0.6,
               higher_is_better=True)
    report.bar(item, "tus peak RSS growth <= 20 MiB (worst run)", max(growth), 20.0)
