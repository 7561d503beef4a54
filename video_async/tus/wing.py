"""The tus wing's one call: `setup(app)` plugs resumable uploads into the core app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from aiohttp import web

from ..config import Resolution
from ..display import human_size
from ..keys import HEALTH, SETTINGS, STREAMING_PATHS, UNFINISHED_RESOLUTION
from .handlers import OVERRIDES, routes
from .protocol import PREFIX, tus_protocol, tus_resumable_header
from .uploads import RESUMABLE, ResumableUploads


def setup(app: web.Application) -> None:
    """The routes under /files, their middleware and version header, the upload store,
    the expiry of abandoned uploads, and their section of the heartbeat."""
    settings = app[SETTINGS]
    app[RESUMABLE] = ResumableUploads(settings.layout, settings.upload_expiry,
                                      settings.reserve_idle)
    app[STREAMING_PATHS].append(PREFIX)
    app.add_routes(routes)
    app.middlewares.append(tus_protocol(OVERRIDES))  # innermost: after the access checks
    app.on_response_prepare.append(tus_resumable_header)
    app.cleanup_ctx.append(_expiring)
    app[HEALTH]["unfinished_uploads"] = lambda: unfinished_uploads(app[RESUMABLE])
    app[UNFINISHED_RESOLUTION] = lambda upload_id, resolution: change_resolution(
        app[RESUMABLE], upload_id, resolution)


def change_resolution(uploads: ResumableUploads, upload_id: str, resolution: Resolution) -> bool:
    """PATCH /tasks/{id} for an upload still receiving: its task, made when the last byte is
    in, is made at this resolution. Kept in memory only (its sidecar keeps the one it was
    created with): a page sends its choice again when it resumes an upload."""
    upload = uploads.get(upload_id)
    if upload is None:
        return False
    upload.order = replace(upload.order, resolution=resolution)
    return True


def unfinished_uploads(uploads: ResumableUploads) -> dict[str, Any]:
    """The heartbeat's section: resumable uploads waiting for more bytes, streaming or not,
    and what they hold on disk; its text reads '2 (63.5 MB)', or '0'."""
    count, held = uploads.count(), uploads.held()
    return {"count": count, "bytes": held,
            "text": f"{count} ({human_size(held)})" if count else "0"}


async def _expiring(app: web.Application) -> AsyncIterator[None]:
    expiry = asyncio.create_task(app[RESUMABLE].run_expiry(), name="upload-expiry")
    yield
    expiry.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await expiry
