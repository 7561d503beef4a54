"""See a blocked event loop for yourself: the same upload handler, with blocking and non-blocking writes.

    .venv/bin/python examples/blocking_demo.py            # 3 uploads of 64 MiB per variant
    .venv/bin/python examples/blocking_demo.py --mb 128 --uploads 4

An aiohttp server streams multipart uploads to disk, once writing each chunk
with plain `os.write()` + `os.fsync()` on the event loop, once handing the very
same calls to a worker thread with `asyncio.to_thread`. A LagMonitor (the one
video_async shows in /healthz) runs in the server's loop the whole time, and the
uploads come from a separate client process, so the lag measured is the
server's alone. fsync makes the cost of a write visible (it waits for the
disk, as a server that promises durable uploads must); without it, writes land
in the page cache and the difference shrinks, but never goes away.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import ClientSession, MultipartWriter, web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from video_async.loop_lag import LagMonitor  # noqa: E402

CHUNK = 256 * 1024


def write_durably(handle: int, data: bytes) -> None:
    os.write(handle, data)
    os.fsync(handle)


def make_app(folder: Path, blocking: bool) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        reader = await request.multipart()
        part = await reader.next()
        assert part is not None
        handle = os.open(folder / f"upload-{id(request)}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            while chunk := await part.read_chunk(CHUNK):  # type: ignore[union-attr]
                if blocking:
                    write_durably(handle, chunk)  # the loop waits for the disk
                else:
                    await asyncio.to_thread(write_durably, handle, chunk)  # a thread waits
        finally:
            os.close(handle)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/upload", upload)
    return app


async def run_variant(blocking: bool, args: argparse.Namespace) -> tuple[float, float, float]:
    """Serve, let the client process upload, return (median lag, 99th percentile lag, MB/s)."""
    # in the current folder, i.e. on the disk the app would use (/tmp may be memory)
    with tempfile.TemporaryDirectory(dir=".", prefix="blocking-demo-") as folder:
        app = make_app(Path(folder), blocking)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        monitor = LagMonitor(interval=0.02)
        samples: list[float] = []
        record: Callable[[float, float], None] = monitor.record

        def keep(now: float, lag: float) -> None:
            samples.append(lag)
            record(now, lag)
        monitor.record = keep  # type: ignore[method-assign]
        watching = asyncio.create_task(monitor.run())
        started = time.perf_counter()
        client = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", str(port), "--mb", str(args.mb),
            "--uploads", str(args.uploads))
        await client.wait()
        elapsed = time.perf_counter() - started
        watching.cancel()
        await runner.cleanup()
    total_mb = args.mb * args.uploads * 1024 * 1024 / 1e6
    p99 = statistics.quantiles(samples, n=100)[98]
    return statistics.median(samples) * 1000, p99 * 1000, total_mb / elapsed


async def client(port: int, mb: int, uploads: int) -> None:
    async def body() -> AsyncIterator[bytes]:
        block = os.urandom(CHUNK)
        for _ in range(mb * 1024 * 1024 // CHUNK):
            yield block

    async def one(session: ClientSession) -> None:
        with MultipartWriter("form-data") as writer:
            part = writer.append(body(), {"Content-Type": "video/mp4"})
            part.set_content_disposition("form-data", name="video", filename="demo.mp4")
            async with session.post(f"http://127.0.0.1:{port}/upload", data=writer) as response:
                assert response.status == 200, response.status

    async with ClientSession() as session:
        await asyncio.gather(*(one(session) for _ in range(uploads)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=64, help="MiB per upload (default: %(default)s)")
    parser.add_argument("--uploads", type=int, default=3, help="uploads at once (default: %(default)s)")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        await client(args.client, args.mb, args.uploads)
        return
    print(f"{args.uploads} concurrent uploads of {args.mb} MiB each, written with fsync per "
          f"{CHUNK // 1024} KiB chunk; the lag monitor wakes every 20 ms\n")
    print(f"{'handler writes':<34}{'median lag':>12}{'p99 lag':>12}{'throughput':>13}")
    for blocking in (True, False):
        typical, worst, rate = await run_variant(blocking, args)
        label = "on the event loop (blocking)" if blocking else "in a thread (asyncio.to_thread)"
        print(f"{label:<34}{typical:>9.2f} ms{worst:>9.1f} ms{rate:>9.0f} MB/s")


if __name__ == "__main__":
    asyncio.run(main())
