"""See a blocked event loop for yourself: the same upload handler, with blocking and non-blocking writes.

    .venv/bin/python examples/blocking_demo.py            # 3 uploads of 64 MiB per variant
    .venv/bin/python examples/blocking_demo.py --mb 128 --uploads 4

An aiohttp server streams multipart uploads to disk, once writing each chunk
the plain way, `open(path, "wb")` and `.write(chunk)` (then flush and
`os.fsync`) on the event loop, once handing the very same calls to a worker
thread with `asyncio.to_thread`: the `open().write()` row of the guide's
"What would block" table, and what we do instead. A LagMonitor (the one
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
from typing import BinaryIO

from aiohttp import ClientSession, MultipartWriter, web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from video_async.loop_lag import LagMonitor  # noqa: E402

CHUNK = 256 * 1024


def write_durably(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.flush()
    os.fsync(out.fileno())


def make_app(folder: Path, blocking: bool) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        reader = await request.multipart()
        part = await reader.next()
        assert part is not None
        # opening is a blocking call too, but one per upload: the writes are what adds up
        with open(folder / f"upload-{id(request)}", "wb") as out:
            while chunk := await part.read_chunk(CHUNK):  # type: ignore[union-attr]
                if blocking:
                    write_durably(out, chunk)  # the loop waits for the disk
                else:
                    await asyncio.to_thread(write_durably, out, chunk)  # a thread waits
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
    results = []
    for blocking in (True, False):
        typical, worst, rate = await run_variant(blocking, args)
        results.append((typical, worst, rate))
        label = "on the event loop (blocking)" if blocking else "in a thread (asyncio.to_thread)"
        print(f"{label:<34}{typical:>9.2f} ms{worst:>9.1f} ms{rate:>9.0f} MB/s")
    (blocked, blocked_worst, blocked_rate), (threaded, threaded_worst, threaded_rate) = results
    print(f"""
What the lag means: it is how late the loop woke up for a timer due every 20 ms, and a
request that arrives meanwhile waits roughly as long before its handler can even start.
With the writes on the loop, that is typically {blocked:.1f} ms added to every request of
every user, uploaders or not (one in a hundred waited {blocked_worst:.0f} ms); with the writes
in threads, {threaded:.1f} ms (one in a hundred: {threaded_worst:.0f} ms).""")
    why = (f"on the loop, each fsync stops everything, so the {args.uploads} uploads take turns "
           "waiting for the disk\nand no socket is read meanwhile; in threads, they wait for the "
           "disk at the same time,\nand the loop goes on reading the next chunks while they do.")
    if threaded_rate > blocked_rate * 1.1:
        faster = threaded_rate / blocked_rate
        print(f"\nThe threaded handler also moved the bytes {faster:.1f}x as fast:\n{why}")
    else:
        print("\nBoth moved the bytes at about the same rate this time: something else (the "
              "disk, or other\nwork on the machine) was the limit. Where the disk can overlap "
              "fsyncs, threads win:\n" + why)


if __name__ == "__main__":
    asyncio.run(main())
