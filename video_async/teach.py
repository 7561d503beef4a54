"""The teaching switch (--teach, a loopback server only): block the loop on purpose, from the page.

Turned on (PUT /teach {"block_the_loop": true}, or the switch in the page's
heartbeat), every upload's chunks, of uploads already running too, are followed by
what a naive handler does on the event loop: the file flushed to the disk with
fsync, and a SLOW_DISK wait that stands for a busy disk (on a RAM-backed data dir, or a fast
SSD, fsync alone may cost next to nothing, and the lesson would depend on the
machine). While an upload runs, the heartbeat's lag and the page's request time
then show what that costs every user of the server; turned off, the next
chunks go to the disk threads again (receive.py) and the figures recover.
Run the server with PYTHONASYNCIODEBUG=1 and asyncio's log names the slow step
(docs/how-it-works.md, "Break it from the page").

The wing exists only when --teach was given, and config refuses --teach with a
host others can reach: the switch slows down the whole server for everyone.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

from aiohttp import web

from . import receive
from .errors import ApiError
from .keys import HEALTH, SETTINGS

# The stand-in for a slow disk, per chunk written with the switch on.
SLOW_DISK = 0.1
BLOCKING: web.AppKey[list[bool]] = web.AppKey("block_the_loop")  # [on]: one flag, shared

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    if not app[SETTINGS].on_loopback:  # config refuses the flag already; never offer it anyway
        raise ValueError("--teach is for a server on loopback only")
    app[BLOCKING] = [False]
    app.add_routes(routes)
    app[HEALTH]["teach"] = lambda: {"block_the_loop": app[BLOCKING][0]}
    app.cleanup_ctx.append(_switched_off_at_the_end)


async def _switched_off_at_the_end(app: web.Application) -> AsyncIterator[None]:
    yield
    receive.block_the_loop = None


@routes.get("/teach")
async def state(request: web.Request) -> web.Response:
    return web.json_response({"block_the_loop": request.app[BLOCKING][0]})


@routes.put("/teach")
async def switch(request: web.Request) -> web.Response:
    try:
        wanted = (await request.json())["block_the_loop"]
    except (ValueError, KeyError, TypeError):
        wanted = None
    if not isinstance(wanted, bool):
        raise ApiError(400, "bad_switch", 'Send {"block_the_loop": true} or false.')
    request.app[BLOCKING][0] = wanted
    receive.block_the_loop = flush_on_the_loop if wanted else None
    return web.json_response({"block_the_loop": wanted})


def flush_on_the_loop(fd: int) -> None:
    """What a naive handler does after each chunk it writes, done where it would do it, on
    the loop: wait for the disk (fsync), and for the slow disk SLOW_DISK stands for."""
    os.fsync(fd)
    time.sleep(SLOW_DISK)
