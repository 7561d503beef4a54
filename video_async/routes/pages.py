"""GET / (the page, rendered server-side so the task list shows on first paint) and GET /healthz."""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web

from .. import access
from ..config import RESOLUTIONS, asset_dir
from . import FFMPEG, LAG, RECOVERY, SETTINGS, STORE, UPLOADS

routes = web.RouteTableDef()
PAGE = web.AppKey("page", jinja2.Template)
STATE_LABELS = {"QUEUED": "Queued", "PROCESSING": "Processing", "COMPLETED": "Completed", "FAILED": "Failed"}
# What the template draws for a task app.js has not received yet: the blank card it clones.
EMPTY_TASK: dict[str, Any] = {"id": "", "filename": "", "resolution": "", "state": "", "progress": 0,
                              "size": 0, "media": None, "output": None, "error": None,
                              "queue_position": None, "download_url": None, "thumbnail_url": None}
# What /healthz shows to a caller without the token, when one is required.
COUNTS_ONLY = ("status", "tasks", "uploads_in_progress", "jobs_running", "event_loop_lag_ms")


def human_size(size: float) -> str:
    """209715200 -> "200 MB" (binary units, as file managers count): app.js's humanSize matches."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    text = f"{size:.0f}" if unit == "bytes" else f"{size:.1f}".removesuffix(".0")
    return f"{text} {unit}"


def clock(seconds: float) -> str:
    """62.5 -> "1:02"."""
    whole = int(seconds)
    hours, minutes, secs = whole // 3600, whole // 60 % 60, whole % 60
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def load_page() -> jinja2.Template:
    """The page template, read from disk once, when the app is built, never in a request."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(asset_dir("templates")),
                             autoescape=True, auto_reload=False)
    env.filters.update(size=human_size, clock=clock, state_label=lambda s: STATE_LABELS.get(s, s))
    return env.get_template("index.html")


def heartbeat(app: web.Application) -> dict[str, Any]:
    """What the server is doing right now; /healthz and the page's heartbeat panel show it."""
    store, lag = app[STORE], app[LAG]
    counts = store.counts()
    return {
        "status": "ok",
        "tasks": counts,
        "uploads_in_progress": app[UPLOADS].active,
        "jobs_running": counts["PROCESSING"],
        "event_loop_lag_ms": {"last": round(lag.last * 1000, 2), "max_1m": round(lag.max * 1000, 2)},
        "ffmpeg": {"path": app[FFMPEG].path, "version": app[FFMPEG].version},
        "persist": app[SETTINGS].persist,
        # finished files that no task refers to, found at start-up: kept, for a person to look at
        "unreferenced_files": app[RECOVERY].unreferenced,
    }


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    health = heartbeat(request.app)
    if not access.has_token(request):  # open to monitors, so nothing that names a file or task
        health = {key: health[key] for key in COUNTS_ONLY}
    return web.json_response(health, headers={"Cache-Control": "no-store"})


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    # Rendering is pure CPU over data already in memory: nothing here waits on I/O.
    html = request.app[PAGE].render(
        tasks=request.app[STORE].all_json(),
        resolutions=RESOLUTIONS,
        max_upload_bytes=request.app[SETTINGS].max_upload_bytes,
        heartbeat=heartbeat(request.app),
        empty_task=EMPTY_TASK,
    )
    return web.Response(text=html, content_type="text/html")
