"""Step 2: a server that streams an upload to disk, chunk by chunk.

    .venv/bin/python steps/02_stream_upload.py            # one upload of 32 MiB
    .venv/bin/python steps/02_stream_upload.py --whole    # break it: read the whole body first

An aiohttp server takes PUT /upload and writes the request body to a file as it
arrives: `request.content.iter_chunked(CHUNK)` suspends until the socket has
brought more bytes (step 1: an await suspends only when nothing is there yet),
and each chunk is written and let go before the next one is read. A client in
the same process sends the upload. The server measures, with tracemalloc, the
most memory Python held at once while the handler ran.

What you will see: the file has every byte, and the memory held at once stays
near a few chunks, whatever the upload's size. Break it with --whole: the
handler does `await request.read()`, and the memory held is the whole upload.
A hundred such uploads of 200 MB would want 20 GB.

Not yet right: the writes run on the event loop. Into the page cache they are
short; step 3 shows what happens when a write has to wait for the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import ClientSession, web

CHUNK = 64 * 1024
MIB = 1024 * 1024


def make_app(folder: Path, whole: bool, peaks: list[int]) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        tracemalloc.start()
        try:
            with open(folder / "upload.bin", "wb") as out:
                if whole:
                    out.write(await request.read())  # every byte in memory at once
                else:
                    async for chunk in request.content.iter_chunked(CHUNK):
                        out.write(chunk)  # into the page cache: short (step 3)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        return web.json_response({"bytes": (folder / "upload.bin").stat().st_size})

    app = web.Application(client_max_size=2**40)  # --whole needs a body limit above the size
    app.router.add_put("/upload", upload)
    return app


async def send(port: int, size: int) -> int:
    block = b"v" * CHUNK  # made once: the client's memory is not what we measure

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // CHUNK):
            yield block

    async with ClientSession() as session:
        async with session.put(f"http://127.0.0.1:{port}/upload", data=body()) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
            return int(answer["bytes"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=32, help="MiB to upload (default: %(default)s)")
    parser.add_argument("--whole", action="store_true", help="read the whole body, then write it")
    args = parser.parse_args()
    size = args.mb * MIB
    peaks: list[int] = []
    with tempfile.TemporaryDirectory(dir=".", prefix="step2-") as folder:
        runner = web.AppRunner(make_app(Path(folder), args.whole, peaks))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            written = await send(runner.addresses[0][1], size)
        finally:
            await runner.cleanup()
    how = "await request.read(), then write" if args.whole else "iter_chunked(64 KiB), write each"
    print(f"handler: {how}")
    print(f"uploaded:          {size / MIB:8.1f} MiB")
    print(f"file on disk:      {written / MIB:8.1f} MiB")
    print(f"memory held, peak: {peaks[0] / MIB:8.1f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
