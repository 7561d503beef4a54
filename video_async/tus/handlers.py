"""The tus layer's handlers: one per verb of tus 1.0.0 (core, creation,
creation-with-upload, termination, expiration) under /files.

A client creates an upload (POST /files, with its length and, as base64
Upload-Metadata, its file name and resolution), then sends its bytes with
PATCH, each starting at the offset the server holds. When a connection
drops, HEAD says how far the server got, and the next PATCH goes on from
there. The bytes stream to disk through the same `receive` as the multipart
route, under the same limits (routes/limits.py), and every PATCH is answered
only once its bytes are on disk, so an offset the server has acknowledged
survives a crash. Bytes that arrived before a client went away are kept.

What every request shares (the version check, the method override, the version
header) is done before and after these, by protocol.py; the uploads themselves
are kept by uploads.py. At the last byte the upload is handed to the core's
intake (routes/intake.py, `accept`), as tusd hands a finished upload to its
host: the file is judged as the multipart route judges it, and becomes a task
under the upload's own id, so the upload URL /files/<id> names the task
/tasks/<id>. From then on, while that task exists, the upload answers as
complete (HEAD: its offset is its length), so a client that lost the answer to
its last PATCH concludes it is done rather than uploading it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .. import receive
from ..config import Settings
from ..errors import ApiError
from ..keys import SETTINGS
from ..layout import TASK_ID
from ..routes import intake, limits
from ..store import new_task_id
from . import protocol
from .protocol import PREFIX, TUS_EXTENSIONS, TUS_VERSION
from .uploads import RESUMABLE, Upload

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


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
    settings = request.app[SETTINGS]
    length = _upload_length(request, settings)
    raw_metadata = request.headers.get("Upload-Metadata", "")
    metadata = protocol.metadata(raw_metadata)
    if "filename" not in metadata:
        raise protocol.no_filename()
    filename = intake.display_name(metadata["filename"])
    intake.container_kind(filename)  # 415, before any byte is stored
    order = intake.order(filename, metadata)
    with_body = protocol.has_body(request)
    if with_body:
        _check_content_type(request)
        if (request.content_length or 0) > length:  # refused before anything is made
            raise protocol.past_length(request.content_length or 0, length)
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
    _check_content_type(request)
    offset = protocol.header_int(request, "Upload-Offset")
    upload = await _current(request)
    if isinstance(upload, Done):
        if offset == upload.length and not protocol.has_body(request):  # nothing left to send
            return web.Response(status=204, headers={"Upload-Offset": str(upload.length)})
        raise protocol.already_complete(upload.length, upload.id)
    if upload.finishing or offset != upload.offset:
        raise protocol.offset_mismatch(upload.offset, offset)
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
    upload = await _current(request)
    if isinstance(upload, Done) or upload.finishing:
        raise protocol.finishing()
    await request.app[RESUMABLE].remove(upload, "terminated")
    return web.Response(status=204)


# What a POST to an upload may stand for (X-HTTP-Method-Override): the middleware
# hands it to one of these.
OVERRIDES = {"HEAD": head, "PATCH": patch, "DELETE": terminate}


@routes.post(PREFIX + "/{upload_id}")
async def post_to_upload(request: web.Request) -> web.Response:
    """Routed so that the middleware sees a POST to an upload, which it hands to the
    handler the request names; reached only if it names none."""
    raise protocol.override_missing(", ".join(OVERRIDES))


# -- receiving ------------------------------------------------------------------------

async def _take_body(request: web.Request, upload: Upload, settings: Settings) -> None:
    """Store the request's body at the upload's offset; at the last byte, hand it over.

    The bytes are written by a task of their own (upload.receiving), so a newer
    request for the same upload can stop this one, and wait until what it
    received is on disk, before answering from the offset it left.
    """
    room = upload.length - upload.offset
    if (request.content_length or 0) > room:
        raise protocol.past_length(request.content_length or 0, room, upload.length)
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
            raise protocol.superseded() from None
        except receive.TooLarge:
            raise protocol.went_past_length(upload.length) from None
        except ApiError as exc:
            if exc.status == 415:  # the first bytes are not the video the name promised
                await request.app[RESUMABLE].remove(upload, "refused")
            raise
        except ConnectionError as exc:
            # the client went away mid-body: what arrived is kept, for the next PATCH
            log.info("PATCH %s cut off at byte %d: %s", upload.id, upload.offset, exc)
            raise protocol.cut_off(upload.offset) from None
        finally:
            if upload.receiving is receiving:
                upload.receiving = None
        if upload.offset == upload.length:
            await _finish(request, upload)


async def _store(request: web.Request, upload: Upload, settings: Settings) -> int:
    """Append the body to the upload's file; the upload's offset is its file's length after."""
    path = settings.layout.resumable(upload.id)
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


async def _finish(request: web.Request, upload: Upload) -> None:
    """Every byte is in: the core's intake takes the file, and makes its task under the
    upload's id. The upload is finishing meanwhile: nothing else may write to it or end it."""
    uploads = request.app[RESUMABLE]
    upload.finishing = True
    try:
        await intake.accept(request, request.app[SETTINGS].layout.resumable(upload.id),
                            upload.id, upload.order, upload.length)
    except ApiError:
        await uploads.remove(upload, "refused")  # a file that fails a check is not kept
        raise
    finally:
        upload.finishing = False
    uploads.finished(upload)
    # The task is on disk: the sidecar has done its job. Were the server to stop just
    # before this, start-up would remove it, seeing the task.
    await asyncio.to_thread(uploads.delete_files, upload.id)


# -- which upload ------------------------------------------------------------------------

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
            accepted = intake.accepted(request, upload_id) if TASK_ID.match(upload_id) else None
            if accepted is not None:
                return Done(id=upload_id, length=accepted)
            if await uploads.ended(upload_id):
                raise protocol.gone()
            raise protocol.not_found()
        if not upload.busy and upload.expires(uploads.expiry) <= time.time():
            await uploads.remove(upload, "expired")
            continue
        earlier = upload.receiving
        if earlier is None or earlier.done():
            return upload  # (a finished one's offset is set: it sets it itself before it ends)
        earlier.cancel()
        await asyncio.wait([earlier])


# -- the request's headers ---------------------------------------------------------------

def _check_content_type(request: web.Request) -> None:
    if intake.media_type(request) != protocol.OFFSET_STREAM:
        raise protocol.not_offset_stream()


def _upload_length(request: web.Request, settings: Settings) -> int:
    if "Upload-Defer-Length" in request.headers:
        raise protocol.length_required()
    length = protocol.header_int(request, "Upload-Length")
    if length > settings.max_upload_bytes:
        raise intake.too_large(settings)
    if length == 0:
        raise intake.empty_file()
    return length


def _expires(upload: Upload, settings: Settings) -> str:
    return protocol.http_date(upload.expires(settings.upload_expiry))
