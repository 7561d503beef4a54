"""create_app(settings): routes, middlewares, and the background tasks' lifecycle (server.js).

The factory is synchronous (its only disk access is reading the page
template), so tests build the exact app the command line runs. Anything that needs the
running loop (the one-time ffmpeg check, the data-dir lock, recovery after a crash, the worker,
the lag monitor, the snapshot writer) starts in `background_tasks`, a cleanup
context: the code before `yield` runs at start-up, the code after it at
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from aiohttp.typedefs import Middleware

from . import access, ffmpeg
from .config import Settings
from .display import api_json
from .errors import ApiError
from .keys import (FFMPEG, LAG, PAGE, PROBES, QUEUE, RECOVERY, RESUMABLE, SETTINGS, SNAPSHOT,
                   STORE, UPLOADS)
from .loop_lag import LagMonitor
from .recovery import DataDirLock, recover
from .resumable import ResumableUploads
from .routes import pages, resumable, tasks, uploads
from .routes.limits import UploadCounter
from .snapshot import SnapshotWriter
from .store import INTERNAL_ERROR, TaskStore
from .worker import run_workers

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Every route but the uploads (which stream) reads at most this much body.
SMALL_BODY = 64 * 1024
BLOCKING_THREADS = 4

# The page: no inline script, nothing from another host.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; media-src 'self'; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def create_app(settings: Settings) -> web.Application:
    if not (settings.on_loopback or settings.token or settings.no_token):
        raise ValueError(f"{settings.host} is reachable by others: give a token, or no_token=True")
    # A trusted proxy's word on scheme and client first; then the Host check; CORS next,
    # so the refusals after it still reach an allowed front end as responses it can read.
    # aiohttp (3.14) has no timer for a request's headers as such; its keep-alive timer
    # is one: started when a connection opens and after each answer, never moved by
    # bytes that arrive, it closes a connection still waiting for a whole request's
    # headers (and an idle one) when it fires.
    app = web.Application(
        client_max_size=SMALL_BODY,
        handler_args={"keepalive_timeout": settings.header_timeout},
        middlewares=[access.forwarded(settings), access.host_check(settings),
                     cors(settings.cors_origins), access.same_origin(settings),
                     access.token_check(settings), json_errors, small_bodies])
    app[SETTINGS] = settings
    app[STORE] = TaskStore(api_json)
    app[UPLOADS] = UploadCounter()
    app[RESUMABLE] = ResumableUploads(settings.layout, settings.upload_expiry,
                                        settings.reserve_idle)
    app[LAG] = LagMonitor()
    app[SNAPSHOT] = SnapshotWriter(app[STORE], settings)
    app[PAGE] = pages.load_page()
    app.add_routes(uploads.routes)
    app.add_routes(resumable.routes)
    app.add_routes(tasks.routes)
    app.add_routes(pages.routes)
    app.cleanup_ctx.append(background_tasks)
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(resumable.tus_resumable_header)
    return app


async def background_tasks(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # asyncio.to_thread's pool (tasks.json, the disk's free space, a file's first bytes):
    # of a fixed size, not one that grows with the machine's cores. Uploads' bytes have
    # threads of their own (receive.disk_threads), so neither waits behind the other.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=BLOCKING_THREADS, thread_name_prefix="blocking"))
    layout = settings.layout
    ffmpeg.watch_children()
    app[FFMPEG] = await ffmpeg.check(settings.ffmpeg)
    app[PROBES] = ffmpeg.ProbePool(settings.max_probes, ffmpeg.Limits.of(settings))
    log.info("using %s (%s)", app[FFMPEG].path, app[FFMPEG].version)
    if await asyncio.to_thread(layout.make_private):
        log.info("created the data dir %s", layout.data_dir.resolve())
    lock = DataDirLock(layout)
    await asyncio.to_thread(lock.acquire)
    try:
        # Before the worker starts: stray ffmpeg stopped, partial files gone, tasks loaded.
        app[RECOVERY] = await recover(app[STORE], app[RESUMABLE], settings)
    except BaseException:
        lock.release()
        raise
    # Strong references: the loop itself only keeps weak ones to running tasks.
    running = [asyncio.create_task(app[LAG].run(), name="loop-lag"),
               asyncio.create_task(app[RESUMABLE].run_expiry(), name="upload-expiry")]
    if settings.queue:
        # Queue mode: workers elsewhere transcode; an optional extra, imported only here.
        from .queue import JobQueue
        jobs = JobQueue(app[STORE], settings)
        app[QUEUE] = jobs.status
        running.append(asyncio.create_task(jobs.run(), name="queue"))
    else:
        running.append(asyncio.create_task(run_workers(app[STORE], app[FFMPEG].path, settings),
                                           name="workers"))
    writer = app[SNAPSHOT]  # made before loading: what loading changed is written back at once
    if writer.enabled:
        running.append(asyncio.create_task(writer.run(), name="snapshot"))
    yield
    # Shutdown: cancelling the workers cancels their jobs, and each job stops its
    # ffmpeg and removes its partial output before the cancellation completes. (Queue
    # workers' jobs go on: a restarted server follows them again.)
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await app[PROBES].close()
    if writer.enabled:
        try:
            await writer.save()  # the last word: jobs that were running are queued again on start
        except OSError as exc:
            log.error("could not write %s at shutdown: %s", layout.snapshot_path, exc)
    lock.release()


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
    streams = request.path == "/videos/upload" or resumable.is_tus(request)
    if not streams and (request.content_length or 0) > SMALL_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=SMALL_BODY,
                                            actual_size=request.content_length or 0)
    return await handler(request)


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    return {name: value for name, value in exc.headers.items() if name in ("Allow", "Retry-After")}


def cors(origins: tuple[str, ...]) -> Middleware:
    """Let the listed origins (e.g. the original React app) call the API; no one else."""
    allowed = frozenset(origin.rstrip("/") for origin in origins)
    exposed = ", ".join(dict.fromkeys(("Location", "ETag", *resumable.CORS_EXPOSED_HEADERS)))

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin not in allowed:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204, headers={
                "Access-Control-Allow-Methods": "GET, HEAD, POST, PATCH, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": ", ".join(
                    ("Authorization", "Content-Type", "If-None-Match",
                     *resumable.CORS_REQUEST_HEADERS)),
                "Access-Control-Max-Age": "600",
            })
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                exc.headers["Access-Control-Allow-Origin"] = origin
                exc.headers["Access-Control-Expose-Headers"] = exposed  # e.g. a 409's Upload-Offset
                exc.headers["Vary"] = "Origin"
                raise
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = exposed
        response.headers["Vary"] = "Origin"
        return response

    return middleware


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.content_type == "text/html":
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
