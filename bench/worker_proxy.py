"""A timing pass-through for the worker routes (/worker/...), for item 7's transfer share.

A worker started with `--server` pointing here reaches the web process through this
proxy, which streams each request and answer through unchanged and notes how long each
took, from the request's first byte to the answer's last. The proxy adds one loopback
hop, so the times it notes are, if anything, a little longer than the worker's own.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from bench.servers import free_port

CHUNK = 256 * 1024
# set again by aiohttp for each hop, never passed along
HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                         "keep-alive"})


@dataclass
class Timings:
    """Seconds spent per task id and route kind ("source", "output", "thumbnail")."""
    seconds: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def of(self, task_id: str, *kinds: str) -> float:
        return sum(self.seconds.get((task_id, kind), 0.0) for kind in kinds)


def _passed(headers: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key.lower() not in HOP_HEADERS}


@contextlib.asynccontextmanager
async def timing_proxy(upstream: str) -> AsyncIterator[tuple[str, Timings]]:
    """Serve on a free loopback port until the block ends; yields its URL and the timings."""
    timings = Timings()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))

    async def forward(request: web.Request) -> web.StreamResponse:
        began = time.perf_counter()
        body = request.content.iter_chunked(CHUNK) if request.can_read_body else None
        async with session.request(request.method, upstream + request.path_qs,
                                   headers=_passed(request.headers), data=body,
                                   allow_redirects=False) as answer:
            response = web.StreamResponse(status=answer.status, headers=_passed(answer.headers))
            if answer.content_length is not None:
                response.content_length = answer.content_length
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in answer.content.iter_chunked(CHUNK):
                    await response.write(chunk)
            await response.write_eof()
        # /worker/tasks/<id>/<kind>
        parts = request.path.strip("/").split("/")
        if len(parts) == 4 and parts[1] == "tasks":
            timings.seconds[(parts[2], parts[3])] += time.perf_counter() - began
        return response

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{path:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", timings
    finally:
        await runner.cleanup()
        await session.close()
