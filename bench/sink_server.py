"""The references for items 1 and 2: an aiohttp handler that takes the raw request body.

Three modes, one per reference, each its own process like the real server:

- `discard`: reads the body and throws it away. No multipart parsing and no
  disk, so no upload route served by aiohttp can be faster.
- `store`: writes the body to a file with plain blocking 1 MiB writes, on the
  loop: the least an upload that keeps its bytes can cost.
- `durable`: the same, plus one `fdatasync` before answering (blocking too):
  the least an upload whose acknowledgement survives a power cut can cost.

It also answers GET /tasks (an empty list, as the real server's is between
runs) and /healthz with its own loop lag, so the benchmark can watch it under
load exactly as it watches the real server.

    python -m bench.sink_server --port P [--mode discard|store|durable] [--data-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from video_async.loop_lag import LagMonitor

# Big reads (aiohttp then lets up to twice this wait in its buffer) mean few trips
# through the loop: the references should be as fast as an aiohttp handler can be.
READ_SIZE = 1024 * 1024
MODES = ("discard", "store", "durable")
LAG = web.AppKey("lag", LagMonitor)
FOLDER = web.AppKey("folder", Path)


async def discard(request: web.Request) -> web.Response:
    received = 0
    while chunk := await request.content.read(READ_SIZE):
        received += len(chunk)
    return web.json_response({"id": uuid.uuid4().hex, "received": received}, status=201)


async def store(request: web.Request, durable: bool) -> web.Response:
    # blocking on purpose: this is the baseline the real route is compared with
    upload_id = uuid.uuid4().hex
    path = request.app[FOLDER] / upload_id
    received = 0
    with path.open("wb", buffering=0) as out:
        try:
            while chunk := await request.content.read(READ_SIZE):
                received += len(chunk)
                out.write(chunk)
            if durable:
                os.fdatasync(out.fileno())
        finally:
            path.unlink()  # the benchmark uploads hundreds of megabytes per round
    return web.json_response({"id": upload_id, "received": received}, status=201)


async def tasks(request: web.Request) -> web.Response:
    return web.json_response([])


async def healthz(request: web.Request) -> web.Response:
    lag = request.app[LAG]
    return web.json_response({"status": "ok", "event_loop_lag_ms": {
        "last": round(lag.last * 1000, 2), "max_2s": round(lag.recent * 1000, 2),
        "max_1m": round(lag.max * 1000, 2)}})


async def lag_monitor(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[LAG].run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main() -> None:
    parser = argparse.ArgumentParser(description="aiohttp upload references for the benchmark")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="discard")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # as video_async and Node do: a thousand uploads at once need more than 1024 descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = web.Application()
    app[LAG] = LagMonitor()
    app[FOLDER] = args.data_dir
    app.cleanup_ctx.append(lag_monitor)
    if args.mode == "discard":
        app.router.add_post("/videos/upload", discard)
    else:
        durable = args.mode == "durable"

        async def handler(request: web.Request) -> web.Response:
            return await store(request, durable)

        app.router.add_post("/videos/upload", handler)
    app.router.add_get("/tasks", tasks)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
