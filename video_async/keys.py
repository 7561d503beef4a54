"""The app's shared objects, each under a typed key: `request.app[STORE]` is a TaskStore.

Typed `web.AppKey`s (rather than string keys) let a type checker follow them.
Everything here is made in `create_app`, except FFMPEG and RECOVERY, which
only exist once start-up has run ffmpeg and looked at the data dir; no
request is served before that.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from aiohttp import web

from .config import Settings
from .ffmpeg import FFmpegInfo
from .loop_lag import LagMonitor
from .recovery import RecoveryReport
from .resumable import ResumableUploads
from .snapshot import SnapshotWriter
from .store import TaskStore


@dataclass
class UploadCounter:
    """Uploads streaming right now, shown in /healthz and the page's heartbeat."""
    active: int = 0


SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", TaskStore)
SNAPSHOT = web.AppKey("snapshot", SnapshotWriter)
UPLOADS = web.AppKey("uploads", UploadCounter)
RESUMABLE = web.AppKey("resumable", ResumableUploads)
LAG = web.AppKey("lag", LagMonitor)
PAGE = web.AppKey("page", jinja2.Template)
FFMPEG = web.AppKey("ffmpeg", FFmpegInfo)
RECOVERY = web.AppKey("recovery", RecoveryReport)
