"""The wings, in the order they plug into the app: the one list create_app reads.

Each is a `setup(app)` that adds a feature's routes, middlewares, background tasks and
hooks to the core app. Recovery comes before resumable uploads so that, at start-up,
the data dir is put right before abandoned uploads are swept.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from . import access, recovery, retention
from .config import Settings
from .routes import limits
from .tus import wing as tus

Wing = Callable[[web.Application], None]


def wings(settings: Settings) -> list[Wing]:
    chosen: list[Wing] = [access.setup, limits.setup, recovery.setup, tus.setup]
    if retention.wanted(settings):
        chosen.append(retention.setup)
    if settings.queue:
        from . import queue  # an optional extra, imported only in queue mode
        chosen.append(queue.setup)
    if settings.teach:  # loopback only (config)
        from . import teach
        chosen.append(teach.setup)
    return chosen
