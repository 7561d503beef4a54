"""Item 2's load: N simultaneous uploads from a process of their own, at the lowest priority.

On a 2-core machine a client that pushes three 200 MiB uploads as fast as
loopback allows takes a whole core; in the driver's process it would also
delay the driver's own GET /tasks timings. Here the load comes from a separate,
niced process, as a client on another machine would: the figures then show
the server's responsiveness, not the benchmark's.

    python -m bench.uploader URL FILE COUNT [RATE]

RATE, in bytes per second, paces each upload like a client on a slower link.

Prints one JSON line when the uploads start, then one per finished upload.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

from .client import upload
from .servers import Server


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(url: str, path: Path, count: int, rate: float | None) -> None:
    server = Server("server", 0, url)
    async with aiohttp.ClientSession() as session:
        began = time.perf_counter()

        async def one() -> None:
            seconds, task = await upload(session, server, path, rate=rate)
            say(event="done", id=task["id"], seconds=seconds, since_start=time.perf_counter() - began)

        say(event="start")
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(one())


if __name__ == "__main__":
    os.nice(19)
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]),
                     float(sys.argv[4]) if len(sys.argv) > 4 else None))
