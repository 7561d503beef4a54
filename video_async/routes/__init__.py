"""What the route modules share: the typed keys of the app's state, and JSON errors.

Typed `web.AppKey`s (rather than string keys) let a type checker see that
`request.app[STORE]` is a TaskStore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

from ..config import Settings
from ..loop_lag import LagMonitor
from ..recovery import Recovery
from ..snapshot import SnapshotWriter
from ..store import TaskStore


@dataclass
class UploadCounter:
    """Uploads streaming right now, shown in /healthz and the page's heartbeat."""
    active: int = 0


@dataclass
class FFmpegInfo:
    path: str
    version: str = "not checked yet"  # filled in at start-up, when the binary is run once


SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", TaskStore)
UPLOADS = web.AppKey("uploads", UploadCounter)
LAG = web.AppKey("lag", LagMonitor)
FFMPEG = web.AppKey("ffmpeg", FFmpegInfo)
RECOVERY = web.AppKey("recovery", Recovery)
SNAPSHOT = web.AppKey("snapshot", SnapshotWriter)


class ApiError(web.HTTPException):
    """An HTTP error whose body is {"error": {"code": ..., "message": ...}}: raise it.

    One class for every status keeps call sites short and every error shaped
    the same: `raise ApiError(415, "not_video", "...")`.
    """

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        self.status_code = status  # read by HTTPException.__init__
        body = json.dumps({"error": {"code": code, "message": message}})
        super().__init__(text=body, content_type="application/json", headers=headers)


def wants_html(request: web.Request) -> bool:
    """True for a browser's plain form post, which should be sent back to the page."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept
