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
no file and no task behind.
"""

from __future__ import annotations

import contextlib
import logging
import unicodedata
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

import aiofiles.os
from aiohttp import hdrs, web

from .. import ffmpeg, multipart, receive
from ..config import DEFAULT_RESOLUTION, MIB, RESOLUTIONS, Settings
from ..display import one_of
from ..errors import ApiError, wants_html
from ..keys import FFMPEG, SETTINGS, SNAPSHOT, STORE
from ..layout import SOURCE_EXTENSIONS
from ..store import Task, new_task_id
from . import limits

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# Room for the multipart boundaries, part headers and the resolution field on top of
# the file itself, when judging a Content-Length before reading anything.
MULTIPART_OVERHEAD = 64 * 1024
SIGNATURE_SIZE = 16  # the first bytes, enough to tell an ISO BMFF box from an EBML header

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
# An ISO BMFF file (MP4, and QuickTime MOV) starts with a box: 4 bytes of size, then
# its type. Modern files open with 'ftyp'; older QuickTime ones with one of the others.
BMFF_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"}
# What browsers and curl escape in a multipart file name (HTML's form encoding).
FORM_ESCAPES = {"%22": '"', "%0D": "\r", "%0A": "\n"}


def display_name(raw: str) -> str:
    """The uploader's file name, made safe to keep as display text.

    Folder parts and control characters (NUL, newlines) go; the rest, quotes,
    HTML and non-ASCII letters included, stays as the person typed it: it is
    never used as a path, and the page escapes it.
    """
    for escaped, char in FORM_ESCAPES.items():
        raw = raw.replace(escaped, char).replace(escaped.lower(), char)
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = stem[: 200 - len(ext) - 1] + dot + ext if dot and len(ext) <= 10 else name[:200]
    return name.strip() or "video"  # the cut may have left a space at the end


def container_of(head: bytes) -> str | None:
    """'bmff' or 'ebml' from a file's first bytes, None if it is neither."""
    if head.startswith(EBML_MAGIC):
        return "ebml"
    if len(head) >= 8 and head[4:8] in BMFF_FIRST_BOXES:
        return "bmff"
    return None


@routes.post("/videos/upload")
async def upload(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if request.content_type != "multipart/form-data":
        raise ApiError(400, "not_multipart",
                         "Send the video as multipart/form-data with a file field named 'video'.")
    # Refuse at once a body that announces it cannot fit, before reading a byte.
    if (request.content_length or 0) > settings.max_upload_bytes + MULTIPART_OVERHEAD:
        raise _too_large(settings)

    async with limits.admitted(request, settings):  # 503 or 507 before any byte is stored
        task = await limits.watched(request, settings, lambda: _receive(request, settings))

    store = request.app[STORE]
    store.add(task)
    await request.app[SNAPSHOT].durable()  # acknowledged means it survives a crash
    log.info("task %s queued: %r, %d bytes, %sp", task.id, task.filename, task.size, task.resolution)
    if wants_html(request):  # the no-JavaScript form: back to the page, which lists the task
        raise web.HTTPSeeOther("/")
    return web.json_response(store.to_json(task), status=201, headers={"Location": f"/tasks/{task.id}"})


def _hms(seconds: float) -> str:
    """3725 -> '1 h 2 min 5 s': durations as a person reads them."""
    whole = int(seconds)
    parts = []
    for amount, unit in ((whole // 3600, "h"), (whole // 60 % 60, "min"), (whole % 60, "s")):
        if amount:
            parts.append(f"{amount} {unit}")
    return " ".join(parts) or f"{seconds:.2g} s"


def _too_large(settings: Settings) -> web.HTTPException:
    return ApiError(413, "too_large",
                    f"The file is larger than the limit of {settings.max_upload_bytes / MIB:g} MiB.")


@dataclass(frozen=True)
class _Form:
    """What the multipart body said, once its video is on disk."""
    filename: str
    resolution: int
    size: int


async def _receive(request: web.Request, settings: Settings) -> Task:
    """Store the body's video and check it; return its task, or raise a JSON error
    with nothing left on disk."""
    layout = settings.layout
    task_id = new_task_id()
    partial = layout.partial_upload(task_id)  # until every check has passed
    try:
        form = await _read_form(request, partial, settings)
        media = await _check_video(request.app[FFMPEG].path, partial, settings)
        source = layout.source(task_id, Path(form.filename).suffix.lower())
        await receive.rename(partial, source)
    except BaseException:
        # every way out without a task, a client disconnect included, removes the file
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(partial)
        raise
    return Task(id=task_id, filename=form.filename, resolution=form.resolution,
                source_path=source, size=form.size, media=media)


async def _read_form(request: web.Request, target: Path, settings: Settings) -> _Form:
    """Read every part: the resolution, the one video (streamed to target), small extras."""
    filename: str | None = None
    resolution, size = DEFAULT_RESOLUTION, 0
    try:
        reader = multipart.Reader(request.content, request.headers.get(hdrs.CONTENT_TYPE, ""))
        while (part := await reader.next()) is not None:
            if part.is_multipart:
                raise ApiError(400, "bad_multipart", "Nested multipart is not supported.")
            if part.name == "resolution":  # sent first (the page does): no wasted upload
                resolution = _resolution(await _read_small(part))
            elif part.name == "video":
                if filename is not None:
                    raise ApiError(400, "bad_multipart", "Send one 'video' file per upload.")
                filename = _video_name(part)
                kind = SOURCE_EXTENSIONS[Path(filename).suffix.lower()]
                size = await _stream_to_disk(part, target, kind, settings)
            elif part.filename:
                raise ApiError(400, "no_file", "No file in the 'video' field "
                               f"(got a file in '{part.name}').")
            else:
                await _read_small(part)  # an extra field: tolerated, but only if small
    except multipart.Malformed as exc:  # e.g. no closing boundary, a NUL in a part's headers
        raise ApiError(400, "bad_multipart", f"The multipart body is malformed ({exc}).") from None
    if filename is None:
        raise ApiError(400, "no_file", "No file in the 'video' field.")
    return _Form(filename, resolution, size)


def _resolution(text: str) -> int:
    try:
        resolution = int(text.strip())
    except ValueError:
        resolution = 0
    if resolution not in RESOLUTIONS:
        raise ApiError(400, "bad_resolution", f"resolution must be one of {one_of(RESOLUTIONS)}.")
    return resolution


def _video_name(part: multipart.Part) -> str:
    """The uploader's name for the file, if its extension is one we take."""
    if not part.filename:
        raise ApiError(400, "no_file", "The 'video' field must be a file.")
    filename = display_name(part.filename)
    if Path(filename).suffix.lower() not in SOURCE_EXTENSIONS:
        raise ApiError(415, "unsupported_type",
                       f"Only {one_of(SOURCE_EXTENSIONS, 'and')} videos are accepted.")
    return filename


async def _check_video(ffmpeg_path: str, path: Path, settings: Settings) -> ffmpeg.Media:
    """The stored file's probe: 415 if ffmpeg finds no video in it, 422 if it is too long."""
    try:
        media = await ffmpeg.probe(ffmpeg_path, path)
    except ffmpeg.FFmpegError as exc:
        said = f" (ffmpeg: {exc.detail})" if exc.detail else ""
        raise ApiError(415, "not_video", f"This is not a playable video. {exc}{said}") from None
    if media.duration is not None and media.duration > settings.max_duration:
        raise ApiError(422, "too_long", f"The video is {_hms(media.duration)} long; "
                       f"the limit is {_hms(settings.max_duration)}.")
    return media


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
    async with contextlib.aclosing(_checked_chunks(part, kind, settings)) as chunks:
        try:
            return await receive.receive(chunks, target, settings.max_upload_bytes)
        except receive.TooLarge:  # raised the moment the stream passes the limit
            raise _too_large(settings) from None


async def _checked_chunks(part: multipart.Part, kind: str,
                          settings: Settings) -> AsyncGenerator[bytes | memoryview, None]:
    """The part's chunks as they come, its first bytes checked against its extension."""
    head = b""
    while chunk := await part.read_chunk():
        if len(head) < SIGNATURE_SIZE:
            head += chunk[: SIGNATURE_SIZE - len(head)]
            if len(head) == SIGNATURE_SIZE:
                _check_signature(head, kind)
        yield chunk
    if not head:
        raise ApiError(415, "empty_file", "The file is empty.")
    if len(head) < SIGNATURE_SIZE:
        _check_signature(head, kind)


def _check_signature(head: bytes, expected: str) -> None:
    found = container_of(head)
    if found is None:
        raise ApiError(415, "not_video",
                         "The file's contents are not an MP4, MOV or WebM video.")
    if found != expected:
        raise ApiError(415, "type_mismatch",
                         "The file's contents do not match its extension.")
