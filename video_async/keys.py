"""The app's shared objects, each under a typed key: `request.app[STORE]` is a TaskStore.

Typed `web.AppKey`s (rather than string keys) let a type checker follow them.
Everything here is made in `create_app`, except FFMPEG, PROBES and RECOVERY, which
only exist once start-up has run ffmpeg and looked at the data dir; no
request is served before that. QUEUE exists in queue mode only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import jinja2
from aiohttp import web

from .config import Settings
from .ffmpeg import FFmpegInfo, ProbePool
from .loop_lag import LagMonitor
from .recovery import RecoveryReport
from .resumable import ResumableUploads
from .snapshot import SnapshotWriter
from .store import TaskStore


@dataclass
class UploadCounter:
    """Uploads streaming right now, shown in /healthz and the page's heartbeat, and the
    disk's free space as last seen (routes/limits.py asks for it at most four times a second,
    however many uploads there are)."""
    active: int = 0
    free_bytes: int | None = None
    free_seen_at: float = float("-inf")  # loop time
    free_asking: asyncio.Task[int] | None = None


@dataclass
class QueueStatus:
    """What the web process last saw of the job queue (queue mode only), refreshed every
    second: /healthz and the page's heartbeat show it."""
    url: str  # without its password
    reachable: bool = False
    workers: list[dict[str, Any]] = field(default_factory=list)  # host, pid, jobs of each
    jobs_queued: int = 0
    jobs_running: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "reachable": self.reachable, "workers": self.workers,
                "jobs_queued": self.jobs_queued, "jobs_running": self.jobs_running}


SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", TaskStore)
SNAPSHOT = web.AppKey("snapshot", SnapshotWriter)
UPLOADS = web.AppKey("uploads", UploadCounter)
RESUMABLE = web.AppKey("resumable", ResumableUploads)
LAG = web.AppKey("lag", LagMonitor)
PAGE = web.AppKey("page", jinja2.Template)
FFMPEG = web.AppKey("ffmpeg", FFmpegInfo)
PROBES = web.AppKey("probes", ProbePool)  # where uploads are probed
RECOVERY = web.AppKey("recovery", RecoveryReport)
QUEUE = web.AppKey("queue", QueueStatus)
