"""POST /videos/upload: stream a video to disk, check it, queue a task (routes/uploads.js).

The body is read part by part and chunk by chunk (`multipart.Reader`, which
hands out the body's buffers without copying them), not with `request.post()`:
that reads the whole form before the handler sees it, spooling each file to a
temporary file of its own, so a file of the wrong type would be refused only
once every byte had arrived, and the video would then be copied a second time
to where it belongs. Bytes go to disk through `receive` (threads of the
upload's own write and flush them), so the loop keeps serving other requests
while the disk works, and the 201 goes out only once the file and its name
are on disk. Until the task exists the file has a temporary name; on any
error, or if the client goes away, it is deleted, so a failed upload leaves
no file and no task behind. The limits wing, when plugged in, admits each upload and
watches it as it streams (UPLOAD_GUARD).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles.os
from aiohttp import hdrs, web

from .. import multipart, receive
from ..config import Settings
from ..errors import ApiError, wants_html
from ..keys import SETTINGS, STORE, UPLOAD_GUARD
from ..store import Order, Task, new_task_id
from . import intake
from .intake import SIGNATURE_SIZE, display_name

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

PATH = "/videos/upload"

# Room for the multipart boundaries, part headers and the resolution field on top of
# the file itself, when judging a Content-Length before reading anything.
MULTIPART_OVERHEAD = 64 * 1024


@routes.post(PATH)
async def upload(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if intake.media_type(request) != "multipart/form-data":
        raise ApiError(400, "not_multipart",
                         "Send the video as multipart/form-data with a file field named 'video'.")
    # Refuse at once a body that announces it cannot fit, before reading a byte.
    if (request.content_length or 0) > settings.max_upload_bytes + MULTIPART_OVERHEAD:
        raise intake.too_large(settings)

    guard = request.app.get(UPLOAD_GUARD, _unguarded)
    task = await guard(request, lambda: _receive(request, settings))

    await intake.queue(request, task)
    if wants_html(request):  # the no-JavaScript form: back to the page, which lists the task
        raise web.HTTPSeeOther("/")
    return web.json_response(request.app[STORE].to_json(task), status=201, headers={"Location": f"/tasks/{task.id}"})


@dataclass(frozen=True)
class _Form:
    """What the multipart body said, once its video is on disk."""
    order: Order
    size: int


async def _unguarded(request: web.Request, receiving: Callable[[], Awaitable[Task]]) -> Task:
    return await receiving()


async def _receive(request: web.Request, settings: Settings) -> Task:
    """Store the body's video and check it; return its task, or raise a JSON error
    with nothing left on disk."""
    layout = settings.layout
    task_id = new_task_id()
    partial = layout.partial_upload(task_id)  # until every check has passed
    try:
        form = await _read_form(request, partial, settings)
        source, media = await intake.settle(request, partial, task_id, form.order.filename)
    except BaseException:
        # every way out without a task, a client disconnect included, removes the file
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(partial)
        raise
    return Task(**vars(form.order), id=task_id, source_path=source, size=form.size, media=media)


async def _read_form(request: web.Request, target: Path, settings: Settings) -> _Form:
    """Read every part: the order's options, the one video (streamed to target), small extras."""
    filename: str | None = None
    options: dict[str, Any] = {}
    size = 0
    try:
        reader = multipart.Reader(request.content, request.headers.get(hdrs.CONTENT_TYPE, ""),
                                  limit=settings.max_upload_bytes + MULTIPART_OVERHEAD)
        while (part := await reader.next()) is not None:
            if part.is_multipart:
                raise ApiError(400, "bad_multipart", "Nested multipart is not supported.")
            if part.name in intake.OPTIONS:  # sent first (the page does): no wasted upload
                field, value = intake.option(part.name, await _read_small(part))
                options[field] = value
            elif part.name == "video":
                if filename is not None:
                    raise ApiError(400, "bad_multipart", "Send one 'video' file per upload.")
                filename = _video_name(part)
                kind = intake.container_kind(filename)  # 415 before a byte of it is stored
                size = await _stream_to_disk(part, target, kind, settings)
            elif part.filename:
                raise ApiError(400, "no_file", "No file in the 'video' field "
                               f"(got a file in '{part.name}').")
            else:
                await _read_small(part)  # an extra field: tolerated, but only if small
    except multipart.Malformed as exc:  # e.g. no closing boundary, a NUL in a part's headers
        raise ApiError(400, "bad_multipart", f"The multipart body is malformed ({exc}).") from None
    except multipart.BodyTooLarge:  # the file and what came around it, without Content-Length
        raise intake.too_large(settings) from None
    if filename is None:
        raise ApiError(400, "no_file", "No file in the 'video' field.")
    return _Form(Order(filename, **options), size)


def _video_name(part: multipart.Part) -> str:
    """The uploader's name for the file, kept as display text."""
    if not part.filename:
        raise ApiError(400, "no_file", "The 'video' field must be a file.")
    return display_name(part.filename)


async def _read_small(part: multipart.Part, limit: int = 1024) -> str:
    data = b""
    while chunk := await part.read_chunk():
        data += chunk
        if len(data) > limit:
            raise ApiError(400, "field_too_large", f"Field '{part.name}' is too long.")
    return data.decode("utf-8", errors="replace")


async def _stream_to_disk(part: multipart.Part, target: Path, kind: str, settings: Settings) -> int:
    """Copy one file part to target, checking its first bytes and its size as they come;
    return the size once the file is on disk."""
    try:
        size = await receive.receive(part, target, settings.max_upload_bytes,
                                     check_head=intake.signature_check(kind), head_size=SIGNATURE_SIZE)
    except receive.TooLarge:  # raised the moment the stream passes the limit
        raise intake.too_large(settings) from None
    if size < SIGNATURE_SIZE:  # too short for the check on the way in
        await intake.check_stored_signature(target, kind)
    return size
