"""The app's shared objects, each under a typed key: `request.app[STORE]` is a TaskStore.

Typed `web.AppKey`s (rather than string keys) let a type checker follow them; the types
are named for it alone, so importing the keys imports none of the modules that define them.
Everything here is made in `create_app`, except FFMPEG, PROBES and RECOVERY, which
only exist once start-up has run ffmpeg and looked at the data dir; no
request is served before that. QUEUE exists in queue mode only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    import jinja2

    from .config import Settings
    from .ffmpeg import FFmpegInfo, ProbePool
    from .loop_lag import LagMonitor
    from .queue import QueueStatus
    from .recovery import RecoveryReport
    from .resumable import ResumableUploads
    from .routes.limits import UploadCounter
    from .snapshot import SnapshotWriter
    from .store import TaskStore

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
STORE: web.AppKey[TaskStore] = web.AppKey("store")
SNAPSHOT: web.AppKey[SnapshotWriter] = web.AppKey("snapshot")
UPLOADS: web.AppKey[UploadCounter] = web.AppKey("uploads")
RESUMABLE: web.AppKey[ResumableUploads] = web.AppKey("resumable")
LAG: web.AppKey[LagMonitor] = web.AppKey("lag")
PAGE: web.AppKey[jinja2.Template] = web.AppKey("page")
FFMPEG: web.AppKey[FFmpegInfo] = web.AppKey("ffmpeg")
PROBES: web.AppKey[ProbePool] = web.AppKey("probes")  # where uploads are probed
RECOVERY: web.AppKey[RecoveryReport] = web.AppKey("recovery")
QUEUE: web.AppKey[QueueStatus] = web.AppKey("queue")
