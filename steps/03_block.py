"""Step 3: block the loop on purpose, and measure the damage.

    .venv/bin/python steps/03_block.py                 # 16 MiB per variant
    .venv/bin/python steps/03_block.py --fsync         # also: a real fsync per chunk

Step 2's server, plus GET /ping, the cheapest request there is. While an upload
streams in, a second client pings every 20 ms and times each answer, and a
ticker in the server's loop asks to sleep 10 ms and notes how late it wakes
(the loop's lag: the same measure as the app's heartbeat). The upload is
written in three ways, each on the event loop:

- "write": `out.write(chunk)` lands in the kernel's page cache, which is memory;
  it seldom waits for the disk. The loop stays free, mostly.
- "write + 5 ms wait": each write then waits 5 ms, as a write does when it must
  reach a busy disk or a network filesystem. `time.sleep` stands for that wait
  here, so the result is the same on every machine.
- "write + fsync" (with --fsync): the real thing. On an SSD it costs a
  millisecond or more per chunk; on a RAM-backed folder, nothing at all.

What you will see: with the waits on the loop, the lag and every ping's wait
grow to about the length of one wait, for every user of the server, not only
for the uploader. The lag also includes time when the OS did not run the
process at all (a busy machine): compare a run on an idle machine.

Step 4 keeps the waits and moves them off the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

from aiohttp import ClientSession, web

CHUNK = 64 * 1024
MIB = 1024 * 1024
DISK_WAIT = 0.005  # seconds a slow disk takes per write, in the stand-in
TICK = 0.01

Write = Callable[[BinaryIO, bytes], None]
Store = Callable[[Write, BinaryIO, bytes], Awaitable[None]]


def write(out: BinaryIO, chunk: bytes) -> None:
    out.write(chunk)


def write_and_wait(out: BinaryIO, chunk: bytes) -> None:
    out.write(chunk)
    time.sleep(DISK_WAIT)  # the stand-in for a disk that makes the write wait


def write_and_fsync(out: BinaryIO, chunk: bytes) -> None:
    out.write(chunk)
    out.flush()
    os.fsync(out.fileno())  # until the disk says the bytes are on it


async def on_the_loop(how: Write, out: BinaryIO, chunk: bytes) -> None:
    how(out, chunk)  # the loop runs nothing else until this returns


def make_app(folder: Path, how: Write, store: Store) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        with open(folder / f"upload-{id(request)}", "wb") as out:
            async for chunk in request.content.iter_chunked(CHUNK):
                await store(how, out, chunk)
        return web.Response(text="ok")

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_put("/upload", upload)
    app.router.add_get("/ping", ping)
    return app


async def ticker(lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(TICK)
        lags.append(max(0.0, loop.time() - before - TICK))


async def measure(how: Write, store: Store, size: int) -> tuple[float, float, float, float]:
    """Serve one upload of `size` bytes; (median lag, worst lag, median ping, MB/s)."""
    lags: list[float] = []
    pings: list[float] = []
    block = os.urandom(CHUNK)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // CHUNK):
            yield block

    with tempfile.TemporaryDirectory(dir=".", prefix="step3-") as folder:
        runner = web.AppRunner(make_app(Path(folder), how, store))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ticking = asyncio.create_task(ticker(lags))
        try:
            async with ClientSession() as uploader, ClientSession() as pinger:
                started = time.perf_counter()
                upload = asyncio.create_task(uploader.put(f"{url}/upload", data=body()))
                while not upload.done():
                    sent = time.perf_counter()
                    async with pinger.get(f"{url}/ping") as answer:
                        await answer.read()
                    pings.append(time.perf_counter() - sent)
                    await asyncio.sleep(0.02)
                response = await upload
                assert response.status == 200
                elapsed = time.perf_counter() - started
        finally:
            ticking.cancel()
            await runner.cleanup()
    return (statistics.median(lags) * 1000, max(lags) * 1000,
            statistics.median(pings) * 1000, size / 1e6 / elapsed)


def table(rows: list[tuple[str, Write, Store]], size: int) -> None:
    print(f"one upload of {size / MIB:g} MiB in {CHUNK // 1024} KiB chunks; "
          f"the ticker wakes every {TICK * 1000:g} ms, a ping goes every 20 ms\n")
    print(f"{'how each chunk is written':<34}{'lag median':>11}{'lag max':>10}"
          f"{'ping median':>13}{'upload':>11}")
    for label, how, store in rows:
        typical, worst, ping, rate = asyncio.run(measure(how, store, size))
        print(f"{label:<34}{typical:>8.1f} ms{worst:>7.1f} ms{ping:>10.1f} ms"
              f"{rate:>6.0f} MB/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=16, help="MiB per upload (default: %(default)s)")
    parser.add_argument("--fsync", action="store_true", help="add a row with a real fsync per chunk")
    args = parser.parse_args()
    rows: list[tuple[str, Write, Store]] = [
        ("on the loop: write", write, on_the_loop),
        ("on the loop: write + 5 ms wait", write_and_wait, on_the_loop)]
    if args.fsync:
        rows.append(("on the loop: write + fsync", write_and_fsync, on_the_loop))
    table(rows, args.mb * MIB)


if __name__ == "__main__":
    main()
