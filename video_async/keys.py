"""The core's shared objects, each under a typed key: `request.app[STORE]` is a TaskStore.

Typed `web.AppKey`s (rather than string keys) let a type checker follow them; the types
are named for it alone, so importing the keys imports none of the modules that define them.
Everything here is made in `create_app`, except FFMPEG and PROBES, which only exist once
start-up has run ffmpeg; no request is served before that. A wing keeps its own keys in
its own module, and may set the hooks below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from typing import Any

    import jinja2

    from .config import Resolution, Settings
    from .ffmpeg import FFmpegInfo
    from .loop_lag import LagMonitor
    from .probing import ProbePool
    from .snapshot import SnapshotWriter
    from .store import Task, TaskStore

    # Runs an upload's receiving (the coroutine it is given) and returns its task.
    UploadGuard = Callable[[web.Request, Callable[[], Awaitable[Task]]], Awaitable[Task]]
    # Runs the QUEUED tasks until cancelled at shutdown.
    JobRunner = Callable[[], Coroutine[Any, Any, None]]

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
STORE: web.AppKey[TaskStore] = web.AppKey("store")
SNAPSHOT: web.AppKey[SnapshotWriter] = web.AppKey("snapshot")
LAG: web.AppKey[LagMonitor] = web.AppKey("lag")
PAGE: web.AppKey[jinja2.Template] = web.AppKey("page")
FFMPEG: web.AppKey[FFmpegInfo] = web.AppKey("ffmpeg")
PROBES: web.AppKey[ProbePool] = web.AppKey("probes")  # where uploads are probed

# Hooks a wing may set or extend, each read by the core where it acts:
# the paths whose handlers read a big body as a stream (every other route refuses one)
STREAMING_PATHS: web.AppKey[list[str]] = web.AppKey("streaming_paths")
# what runs each upload's receiving: the limits admit it first, and watch it
UPLOAD_GUARD: web.AppKey[UploadGuard] = web.AppKey("upload_guard")
# what runs the QUEUED tasks: the in-process workers, unless queue mode takes them
JOB_RUNNER: web.AppKey[JobRunner] = web.AppKey("job_runner")
# sections a wing adds to /healthz and the page's heartbeat, each made when asked
HEALTH: web.AppKey[dict[str, Callable[[], Any]]] = web.AppKey("health")
# whether a request may see what only the token's holders see (/healthz's details):
# without the access wing, everyone may
TRUSTED: web.AppKey[Callable[[web.Request], bool]] = web.AppKey("trusted")
# a wing's uploads that are not tasks yet (resumable ones still receiving): sets the
# resolution the task of the one with this id will be made at; False if there is none
UNFINISHED_RESOLUTION: web.AppKey[Callable[[str, Resolution], bool]] = web.AppKey("unfinished_resolution")
