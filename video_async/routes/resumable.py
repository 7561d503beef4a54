"""Resumable uploads under /files/: the tus 1.0.0 protocol (core, creation,
creation-with-upload, termination, expiration).

A client creates an upload (POST /files, with its length and, as base64
Upload-Metadata, its file name and resolution), then sends its bytes with
PATCH, each starting at the offset the server holds. When a connection
drops, HEAD says how far the server got, and the next PATCH goes on from
there. The bytes stream to disk through the same `receive` as the multipart
route, under the same limits (routes/limits.py), and every PATCH is answered
only once its bytes are on disk, so an offset the server has acknowledged
survives a crash. Bytes that arrived before a client went away are kept.

At the last byte the file is judged as the multipart route judges it
(routes/intake.py) and its task is queued under the upload's own id: the
upload URL /files/<id> names the task /tasks/<id>. From then on, while its
task exists, the upload answers as complete (HEAD: its offset is its length),
so a client that lost the answer to its last PATCH concludes it is done
rather than uploading it again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from email.utils import formatdate
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import receive
from ..config import Settings
from ..errors import ApiError
from ..display import human_size
from ..keys import HEALTH, SETTINGS, STORE, STREAMING_PATHS, UNFINISHED_RESOLUTION
from ..resumable import RESUMABLE, ResumableUploads, Upload
from ..layout import TASK_ID
from ..store import Task, new_task_id
from . import intake, limits

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

PREFIX = "/files"
TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,expiration"
OFFSET_STREAM = "application/offset+octet-stream"
MAX_METADATA = 4096  # characters of Upload-Metadata kept with an upload
# What a front end on another origin (--cors-origin) may send and read.
CORS_REQUEST_HEADERS = ("Tus-Resumable", "Upload-Length", "Upload-Metadata", "Upload-Offset",
                        "X-HTTP-Method-Override", "X-Requested-With")
CORS_EXPOSED_HEADERS = ("Location", "Upload-Offset", "Upload-Length", "Upload-Expires",
                        "Upload-Metadata", "Tus-Resumable", "Tus-Version", "Tus-Extension",
                        "Tus-Max-Size")


def setup(app: web.Application) -> None:
    """Plug resumable uploads in: the routes under /files, their upload store, the
    version header on every answer, and the expiry of abandoned uploads."""
    settings = app[SETTINGS]
    app[RESUMABLE] = ResumableUploads(settings.layout, settings.upload_expiry,
                                      settings.reserve_idle)
    app[STREAMING_PATHS].append(PREFIX)
    app.add_routes(routes)
    app.on_response_prepare.append(tus_resumable_header)
    app.cleanup_ctx.append(_expiring)
    app[HEALTH]["unfinished_uploads"] = lambda: unfinished_uploads(app[RESUMABLE])
    app[UNFINISHED_RESOLUTION] = lambda upload_id, resolution: change_resolution(
        app[RESUMABLE], upload_id, resolution)


def change_resolution(uploads: ResumableUploads, upload_id: str, resolution: int) -> bool:
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


def is_tus(request: web.Request) -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


async def tus_resumable_header(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer under /files/ names the protocol version (an on_response_prepare hook)."""
    if is_tus(request):
        response.headers["Tus-Resumable"] = TUS_VERSION


# The collection answers at /files and at /files/: tus clients are configured with either
# (tusd's and the tus Node server's examples end the endpoint with a slash).
@routes.route("OPTIONS", PREFIX)
@routes.route("OPTIONS", PREFIX + "/")
async def options(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return web.Response(status=204, headers={
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(settings.max_upload_bytes),
    })


@routes.post(PREFIX)
@routes.post(PREFIX + "/")
async def create(request: web.Request) -> web.Response:
    _check_version(request)
    settings = request.app[SETTINGS]
    length = _upload_length(request, settings)
    raw_metadata = request.headers.get("Upload-Metadata", "")
    metadata = _metadata(raw_metadata)
    if "filename" not in metadata:
        raise ApiError(400, "no_filename", "Upload-Metadata must carry the file's name as "
                       "'filename' (base64), e.g. 'filename aG9saWRheS5tb3Y='.")
    filename = intake.display_name(metadata["filename"])
    intake.container_kind(filename)  # 415, before any byte is stored
    order = intake.order(filename, metadata)
    with_body = _has_body(request)
    if with_body:
        _check_content_type(request)
        if (request.content_length or 0) > length:  # refused before anything is made
            raise _past_length(request.content_length or 0, length)
    await limits.check_room(request.app, settings, length)  # 507
    upload = Upload(id=new_task_id(), length=length, order=order, metadata=raw_metadata,
                    client=limits.client_of(request))
    limits.hold_room(request, settings, upload)  # 429, 503
    uploads = request.app[RESUMABLE]
    await uploads.create(upload)
    log.info("resumable upload %s created: %r, %d bytes, %sp, from %s", upload.id, filename,
             length, order.resolution, upload.client)
    headers = {"Location": f"{PREFIX}/{upload.id}"}
    if with_body:  # creation-with-upload: the first bytes come with the creation
        try:
            await _take_body(request, upload, settings)
        except ApiError:
            # No Location went out, so no client can go on with it: nothing is kept.
            await uploads.discard(upload, "its creation was refused")
            raise
        headers["Upload-Offset"] = str(upload.offset)
    headers["Upload-Expires"] = _expires(upload, settings)
    return web.Response(status=201, headers=headers)


@routes.get(PREFIX)
@routes.get(PREFIX + "/")
async def unfinished(request: web.Request) -> web.Response:
    """The unfinished uploads, oldest activity first, for an operator to look at; any of
    them can be ended with DELETE /files/{id}."""
    settings = request.app[SETTINGS]
    uploads = request.app[RESUMABLE]
    now = time.time()
    listed = [{"id": upload.id, "url": f"{PREFIX}/{upload.id}", "filename": upload.order.filename,
               "offset": upload.offset, "length": upload.length, "client": upload.client,
               "receiving": upload.busy,
               "idle_seconds": 0.0 if upload.busy else round(max(0.0, now - upload.last_active), 1),
               "holds_room": uploads.active(upload, now), "expires": _expires(upload, settings)}
              for upload in sorted(uploads.all(), key=lambda upload: upload.last_active)]
    return web.json_response(listed, headers={"Cache-Control": "no-store"})


@routes.head(PREFIX + "/{upload_id}")
async def head(request: web.Request) -> web.Response:
    _check_version(request)
    upload = await _current(request)
    if isinstance(upload, Done):
        return web.Response(status=200, headers={
            "Upload-Offset": str(upload.length), "Upload-Length": str(upload.length),
            "Cache-Control": "no-store"})
    headers = {
        "Upload-Offset": str(upload.offset),
        "Upload-Length": str(upload.length),
        "Upload-Expires": _expires(upload, request.app[SETTINGS]),
        "Cache-Control": "no-store",
    }
    if upload.metadata:
        headers["Upload-Metadata"] = upload.metadata
    return web.Response(status=200, headers=headers)


@routes.patch(PREFIX + "/{upload_id}")
async def patch(request: web.Request) -> web.Response:
    _check_version(request)
    _check_content_type(request)
    offset = _header_int(request, "Upload-Offset")
    upload = await _current(request)
    if isinstance(upload, Done):
        if offset == upload.length and not _has_body(request):  # nothing left to send
            return web.Response(status=204, headers={"Upload-Offset": str(upload.length)})
        raise ApiError(409, "offset_mismatch", f"This upload is complete, all {upload.length} "
                       f"bytes; its task is /tasks/{upload.id}.",
                       headers={"Upload-Offset": str(upload.length)})
    if upload.finishing or offset != upload.offset:
        raise ApiError(409, "offset_mismatch",
                       f"This upload is at byte {upload.offset}, not {offset}: ask with HEAD "
                       "and send from there.", headers={"Upload-Offset": str(upload.offset)})
    settings = request.app[SETTINGS]
    uploads = request.app[RESUMABLE]
    if not uploads.active(upload):  # idle, it holds only what it has: room to go on, first
        await limits.check_room(request.app, settings, upload.length - upload.offset)  # 507
        upload.client = limits.client_of(request)  # whoever sends it now (a phone moves)
        limits.hold_room(request, settings, upload)  # 429, 503
        upload.last_active = time.time()
    await _take_body(request, upload, settings)
    return web.Response(status=204, headers={"Upload-Offset": str(upload.offset),
                                             "Upload-Expires": _expires(upload, settings)})


@routes.delete(PREFIX + "/{upload_id}")
async def terminate(request: web.Request) -> web.Response:
    _check_version(request)
    upload = await _current(request)
    if isinstance(upload, Done) or upload.finishing:
        raise ApiError(409, "finishing", "Every byte of this upload is in and its task is "
                       "made or being made; delete the task instead.")
    await request.app[RESUMABLE].remove(upload, "terminated")
    return web.Response(status=204)


@routes.post(PREFIX + "/{upload_id}")
async def overridden(request: web.Request) -> web.StreamResponse:
    """X-HTTP-Method-Override: a client behind a proxy that lets only GET and POST
    through sends POST and names the method it means; the protocol says to obey it."""
    method = request.headers.get("X-HTTP-Method-Override", "").strip().upper()
    handler = {"PATCH": patch, "DELETE": terminate, "HEAD": head}.get(method)
    if handler is None:
        raise ApiError(405, "method_not_allowed", "POST to an upload needs X-HTTP-Method-Override: "
                       "PATCH, DELETE or HEAD.", headers={"Allow": "HEAD, PATCH, DELETE"})
    return await handler(request)


# -- receiving ------------------------------------------------------------------------

async def _take_body(request: web.Request, upload: Upload, settings: Settings) -> None:
    """Store the request's body at the upload's offset; at the last byte, make its task.

    The bytes are written by a task of their own (upload.receiving), so a newer
    request for the same upload can stop this one, and wait until what it
    received is on disk, before answering from the offset it left.
    """
    room = upload.length - upload.offset
    if (request.content_length or 0) > room:
        raise _past_length(request.content_length or 0, room, upload.length)
    async with limits.admitted(request, settings, incoming=0):  # its room is reserved already
        receiving = asyncio.create_task(_store(request, upload, settings),
                                        name=f"receive-{upload.id}")
        upload.receiving = receiving
        try:
            await limits.watched(request, settings, lambda: receiving)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this request itself is being stopped (shutdown)
            raise ApiError(409, "superseded", "A newer request for this upload took over; "
                           "its bytes so far are kept.") from None
        except receive.TooLarge:
            raise ApiError(413, "past_length", f"The body went past the upload's length of "
                           f"{upload.length} bytes.") from None
        except ApiError as exc:
            if exc.status == 415:  # the first bytes are not the video the name promised
                await request.app[RESUMABLE].remove(upload, "refused")
            raise
        except ConnectionError as exc:
            # the client went away mid-body: what arrived is kept, for the next PATCH
            log.info("PATCH %s cut off at byte %d: %s", upload.id, upload.offset, exc)
            raise ApiError(400, "client_disconnected", "The connection was closed mid-body; "
                           f"the upload is kept at byte {upload.offset}.") from None
        finally:
            if upload.receiving is receiving:
                upload.receiving = None
        if upload.offset == upload.length:
            await _finish(request, upload, settings)


async def _store(request: web.Request, upload: Upload, settings: Settings) -> int:
    """Append the body to the upload's file; the upload's offset is its file's length after."""
    path = request.app[SETTINGS].layout.resumable(upload.id)
    start = upload.offset
    # its first bytes are judged as they come, as the multipart route does
    check = intake.signature_check(intake.container_kind(upload.order.filename)) if start == 0 else None
    try:
        received = await receive.receive(request.content.iter_chunked(settings.upload_chunk),
                                         path, upload.length, start, check_head=check,
                                         head_size=intake.SIGNATURE_SIZE)
    except BaseException:
        # receive keeps what arrived before the stream broke off: the file says how much
        upload.offset = await asyncio.to_thread(_size, path)
        raise
    finally:
        upload.last_active = time.time()
    upload.offset = start + received
    log.info("PATCH %s: %d bytes at %d, now %d of %d", upload.id, received, start,
             upload.offset, upload.length)
    return received


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def _finish(request: web.Request, upload: Upload, settings: Settings) -> None:
    """Every byte is in: the multipart route's checks, then the task, under the upload's id."""
    layout = settings.layout
    uploads = request.app[RESUMABLE]
    path = layout.resumable(upload.id)
    upload.finishing = True
    try:
        await intake.check_stored_signature(path, intake.container_kind(upload.order.filename))
        source, media = await intake.settle(request, path, upload.id, upload.order.filename)
    except ApiError:
        await uploads.remove(upload, "refused")  # a file that fails a check is not kept
        raise
    finally:
        upload.finishing = False
    uploads.finished(upload)
    await intake.queue(request, Task(**vars(upload.order), id=upload.id, source_path=source,
                                     size=upload.length, media=media))
    # The task is on disk: the sidecar has done its job. Were the server to stop just
    # before this, start-up would remove it, seeing the task.
    await asyncio.to_thread(uploads.delete_files, upload.id)


# -- reading the protocol's headers ------------------------------------------------------

@dataclass(frozen=True)
class Done:
    """An upload that reached its last byte: its task exists now, under the same id."""
    id: str
    length: int


async def _current(request: web.Request) -> Upload | Done:
    """The upload the path names, with no other request writing to it: 404 or 410 if gone,
    Done if finished and its task is still there.

    A request still receiving for it belongs to a client that has moved on (it asks
    again only after losing that connection): it is stopped, and what it received
    is on disk before this request goes on.
    """
    upload_id = request.match_info["upload_id"]
    uploads = request.app[RESUMABLE]
    while True:
        upload = uploads.get(upload_id) if TASK_ID.match(upload_id) else None
        if upload is None:
            task = request.app[STORE].get(upload_id) if TASK_ID.match(upload_id) else None
            if task is not None:
                return Done(id=task.id, length=task.size)
            if await uploads.ended(upload_id):
                raise ApiError(410, "upload_gone", "This upload expired or was terminated; "
                               "start a new one.")
            raise ApiError(404, "not_found", "No such upload.")
        if not upload.busy and upload.expires(uploads.expiry) <= time.time():
            await uploads.remove(upload, "expired")
            continue
        earlier = upload.receiving
        if earlier is None or earlier.done():
            return upload  # (a finished one's offset is set: it sets it itself before it ends)
        earlier.cancel()
        await asyncio.wait([earlier])


def _past_length(size: int, room: int, length: int | None = None) -> ApiError:
    whole = "" if length is None else f" left of its {length}"
    return ApiError(413, "past_length", f"This body is {size} bytes; the upload has only "
                    f"{room}{whole}.")


def _check_version(request: web.Request) -> None:
    given = request.headers.get("Tus-Resumable")
    if given != TUS_VERSION:
        raise ApiError(412, "tus_version", f"This server speaks tus {TUS_VERSION}: send "
                       f"'Tus-Resumable: {TUS_VERSION}' (got {given!r}).",
                       headers={"Tus-Version": TUS_VERSION})


def _check_content_type(request: web.Request) -> None:
    if intake.media_type(request) != OFFSET_STREAM:
        raise ApiError(415, "not_offset_stream",
                       f"Send an upload's bytes as Content-Type: {OFFSET_STREAM}.")


def _has_body(request: web.Request) -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "")


def _header_int(request: web.Request, name: str) -> int:
    text = request.headers.get(name)
    if text is None or not text.isascii() or not text.isdigit():
        raise ApiError(400, "bad_header", f"{name} must be given, as a whole number of bytes.")
    return int(text)


def _upload_length(request: web.Request, settings: Settings) -> int:
    if "Upload-Defer-Length" in request.headers:
        raise ApiError(400, "length_required", "This server needs Upload-Length when the "
                       "upload is created (it does not offer creation-defer-length).")
    length = _header_int(request, "Upload-Length")
    if length > settings.max_upload_bytes:
        raise intake.too_large(settings)
    if length == 0:
        raise intake.empty_file()
    return length


def _metadata(header: str) -> dict[str, str]:
    """Upload-Metadata: 'key base64value' pairs, comma-separated; a value may be left out."""
    if len(header) > MAX_METADATA:
        raise ApiError(400, "bad_metadata", f"Upload-Metadata is over {MAX_METADATA} characters.")
    pairs: dict[str, str] = {}
    for item in header.split(","):
        if not item.strip():
            continue
        key, _, value = item.strip().partition(" ")
        if not key or key in pairs:
            raise ApiError(400, "bad_metadata", f"Upload-Metadata names a key twice or none: {key!r}.")
        try:
            pairs[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(400, "bad_metadata", f"Upload-Metadata's {key!r} is not base64 of "
                           "UTF-8 text.") from None
    return pairs


def _expires(upload: Upload, settings: Settings) -> str:
    """An HTTP date, as the protocol asks: 'Wed, 25 Jun 2014 16:00:00 GMT'."""
    return formatdate(upload.expires(settings.upload_expiry), usegmt=True)
