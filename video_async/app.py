"""create_app(settings): the core's routes and background tasks, then the wings (server.js).

The core is the task store, the in-process worker, the upload route and the task
routes: an app of these alone takes uploads, transcodes them and serves the results.
Every other feature is a wing (features.py lists them) that plugs in through one
`setup(app)` call, adding its routes, middlewares, background tasks and hooks; the core
imports none of them.

The factory is synchronous (its only disk access is reading the page template), so
tests build the exact app the command line runs. Anything that needs the running loop
starts in a cleanup context: the code before `yield` runs at start-up, the code after
it at shutdown. `start_up` (ffmpeg, the data dir) runs before the wings' own
(recovery's among them), and `run` (the lag monitor, the workers, the snapshot writer)
after them, so the worker starts on the tasks recovery put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from . import features, ffmpeg, probing, processes
from .config import Settings
from .display import api_json
from .errors import ApiError
from .keys import (FFMPEG, HEALTH, JOB_RUNNER, LAG, PAGE, PROBES, SETTINGS, SNAPSHOT, STORE,
                   STREAMING_PATHS)
from .loop_lag import LagMonitor
from .routes import pages, tasks, uploads
from .snapshot import SnapshotWriter
from .store import INTERNAL_ERROR, TaskStore
from .worker import run_workers

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Every route but the uploads (which stream) reads at most this much body.
SMALL_BODY = 64 * 1024
BLOCKING_THREADS = 4

# The page: no inline script, nothing from another host. (blob: media is the player's own
# MediaSource, through which hls.js plays a ladder.)
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; media-src 'self' blob:; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def create_app(settings: Settings) -> web.Application:
    if not (settings.on_loopback or settings.token or settings.no_token):
        raise ValueError(f"{settings.host} is reachable by others: give a token, or no_token=True")
    # aiohttp (3.14) has no timer for a request's headers as such; its keep-alive timer
    # is one: started when a connection opens and after each answer, never moved by
    # bytes that arrive, it closes a connection still waiting for a whole request's
    # headers (and an idle one) when it fires.
    app = web.Application(client_max_size=SMALL_BODY,
                          handler_args={"keepalive_timeout": settings.header_timeout},
                          middlewares=[json_errors, small_bodies])
    app[SETTINGS] = settings
    app[STORE] = TaskStore(api_json)
    app[LAG] = LagMonitor()
    app[SNAPSHOT] = SnapshotWriter(app[STORE], settings)
    app[PAGE] = pages.load_page()
    app[STREAMING_PATHS] = [uploads.PATH]
    app[HEALTH] = {}
    app.add_routes(uploads.routes)
    app.add_routes(tasks.routes)
    app.add_routes(pages.routes)
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(start_up)
    for setup in features.wings(settings):
        setup(app)
    app.cleanup_ctx.append(run)
    return app


async def start_up(app: web.Application) -> AsyncIterator[None]:
    """ffmpeg checked once, its probe pool, the data dir made; the pool closed at the end."""
    settings = app[SETTINGS]
    # asyncio.to_thread's pool (tasks.json, the disk's free space, a file's first bytes):
    # of a fixed size, not one that grows with the machine's cores. Uploads' bytes have
    # threads of their own (receive.disk_threads), so neither waits behind the other.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=BLOCKING_THREADS, thread_name_prefix="blocking"))
    processes.watch_children()
    app[FFMPEG] = await ffmpeg.check(settings.ffmpeg)
    app[PROBES] = probing.ProbePool(settings.max_probes, ffmpeg.Limits.of(settings))
    log.info("using %s (%s)", app[FFMPEG].path, app[FFMPEG].version)
    if await asyncio.to_thread(settings.layout.make_private):
        log.info("created the data dir %s", settings.layout.data_dir.resolve())
    yield
    await app[PROBES].close()


async def run(app: web.Application) -> AsyncIterator[None]:
    """The lag monitor, the workers (or a wing's job runner) and the snapshot writer."""
    settings = app[SETTINGS]
    runner = app.get(JOB_RUNNER)
    jobs = runner() if runner else run_workers(app[STORE], app[FFMPEG].path, settings)
    # Strong references: the loop itself only keeps weak ones to running tasks.
    running = [asyncio.create_task(app[LAG].run(), name="loop-lag"),
               asyncio.create_task(jobs, name="jobs")]
    writer = app[SNAPSHOT]  # made before loading: what loading changed is written back at once
    if writer.enabled:
        running.append(asyncio.create_task(writer.run(), name="snapshot"))
    yield
    # Shutdown: cancelling the workers cancels their jobs, and each job stops its
    # ffmpeg and removes its partial output before the cancellation completes. (Queue
    # workers' jobs go on: a restarted server follows them again.)
    await stop(running)
    if writer.enabled:
        try:
            await writer.save()  # the last word: jobs that were running are queued again on start
        except OSError as exc:
            log.error("could not write %s at shutdown: %s", settings.layout.snapshot_path, exc)


async def stop(running: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until each has ended."""
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON, and an unexpected one is logged, never shown as a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        # aiohttp's own errors (unknown route, wrong method, body too large) get our JSON shape
        code = "too_large" if exc.status == 413 else exc.reason.lower().replace(" ", "_")
        raise ApiError(exc.status, code, exc.reason + ".", headers=_kept_headers(exc)) from None
    except asyncio.CancelledError:
        raise
    except ConnectionError as exc:  # the client went away (a cancelled upload): not our error
        log.info("%s %s: client disconnected (%s)", request.method, request.path, exc)
        raise ApiError(400, "client_disconnected", "The connection was closed mid-request.") from None
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        raise ApiError(500, "internal_error",
                         INTERNAL_ERROR) from None


@web.middleware
async def small_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only the upload routes take a big body; the others refuse one from its headers.

    client_max_size caps what a handler reads; this also stops a big body sent to
    a handler that never reads it, before aiohttp would drain it.
    """
    streams = any(request.path == path or request.path.startswith(path + "/")
                  for path in request.app[STREAMING_PATHS])
    if not streams and (request.content_length or 0) > SMALL_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=SMALL_BODY,
                                            actual_size=request.content_length or 0)
    return await handler(request)


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    return {name: value for name, value in exc.headers.items() if name in ("Allow", "Retry-After")}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.content_type == "text/html":
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
