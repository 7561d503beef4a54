"""The reference for item 1: an aiohttp handler that reads the raw request body and discards it.

No multipart parsing and no disk, so no upload route served by aiohttp can be
faster: the benchmark reports the real route as a fraction of this ceiling.
Run as its own process, like the real server: `python -m bench.sink_server --port P`.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

# Big reads (aiohttp then lets up to twice this wait in its buffer) mean few trips
# through the loop: the sink should be as fast as an aiohttp handler can be.
READ_SIZE = 1024 * 1024


async def sink(request: web.Request) -> web.Response:
    received = 0
    while chunk := await request.content.read(READ_SIZE):
        received += len(chunk)
    return web.json_response({"received": received}, status=201)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description="aiohttp upload sink for the benchmark")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = web.Application()
    app.router.add_post("/videos/upload", sink)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
