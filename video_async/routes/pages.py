"""GET / (the page, rendered server-side so the task list shows on first paint) and GET /healthz."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiofiles.os
import jinja2
from aiohttp import web

from ..config import ALL_SIZES, DEFAULT_RESOLUTION, RESOLUTIONS, asset_dir
from ..display import api_json, human_size, one_of
from ..errors import ApiError
from ..keys import FFMPEG, HEALTH, LAG, PAGE, SETTINGS, STORE, TRUSTED
from ..layout import SOURCE_EXTENSIONS
from ..store import Task

routes = web.RouteTableDef()
# The blank card app.js clones for a task the page has not drawn yet.
EMPTY_TASK = api_json(Task(id="", filename="", resolution=DEFAULT_RESOLUTION,
                            source_path=Path(), size=0), None)
STATIC_DIR = asset_dir("static")
STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # a file of that folder, never a path
# What /healthz shows to a caller without the token, when one is required.
COUNTS_ONLY = ("status", "tasks", "uploads_in_progress", "unfinished_uploads", "jobs_running",
               "event_loop_lag_ms", "mode")


def load_page() -> jinja2.Template:
    """The page template, read from disk once, when the app is built, never in a request."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(asset_dir("templates")),
                             autoescape=True, auto_reload=False)
    env.filters.update(size=human_size, one_of=one_of)
    return env.get_template("index.html")


def heartbeat(app: web.Application) -> dict[str, Any]:
    """What the server is doing right now; /healthz and the page's heartbeat panel show it."""
    store, lag = app[STORE], app[LAG]
    counts = store.counts()
    return {
        "status": "ok",
        "tasks": counts,
        "jobs_running": counts["PROCESSING"],
        "event_loop_lag_ms": {"last": round(lag.last * 1000, 2), "max_2s": round(lag.recent * 1000, 2),
                              "max_1m": round(lag.max * 1000, 2)},
        "ffmpeg": {"path": app[FFMPEG].path, "version": app[FFMPEG].version},
        "persist": app[SETTINGS].persist,
        # "in-process": transcodes run in this process; "queue": on the queue's workers
        "mode": "queue" if app[SETTINGS].queue else "in-process",
        "queue": None,
        # what each wing adds: uploads streaming, unfinished resumable uploads, the files
        # recovery found that no task refers to, the queue
        **{name: part() for name, part in app[HEALTH].items()},
    }


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    health = heartbeat(request.app)
    trusted = request.app.get(TRUSTED)
    if trusted and not trusted(request):  # open to monitors, so nothing that names a file or task
        counts = {key: health[key] for key in COUNTS_ONLY if key in health}
        # whether Redis answers, so a monitor sees a stalled queue; never its address or workers
        counts["queue"] = {"reachable": health["queue"]["reachable"]} if health["queue"] else None
        health = counts
    return web.json_response(health, headers={"Cache-Control": "no-store"})


@routes.get("/static/{name}")
async def static(request: web.Request) -> web.FileResponse:
    """The page's script, style sheet and icon; anything else a JSON 404 (aiohttp's own
    static route answers a missing file with an empty body)."""
    name = request.match_info["name"]
    path = STATIC_DIR / name
    if not STATIC_NAME.fullmatch(name) or not await aiofiles.os.path.isfile(path):
        raise ApiError(404, "not_found", f"No such file: /static/{name[:100]}.")
    return web.FileResponse(path)


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    # Rendering is pure CPU over data already in memory: nothing here waits on I/O.
    store = request.app[STORE]
    html = request.app[PAGE].render(
        tasks=store.all_json()[::-1],  # newest first (the API's list stays oldest first)
        # what the list shows, so the page's first poll asks only for what changed since
        tasks_version=store.list_version,
        resolutions=RESOLUTIONS,
        default_resolution=DEFAULT_RESOLUTION,
        all_sizes=ALL_SIZES,
        extensions=list(SOURCE_EXTENSIONS),
        max_upload_bytes=request.app[SETTINGS].max_upload_bytes,
        heartbeat=heartbeat(request.app),
        empty_task=EMPTY_TASK,
    )
    return web.Response(text=html, content_type="text/html")
