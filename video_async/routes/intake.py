"""What every upload route does with a video: judge its name and first bytes, probe
it once it is stored, and queue its task.

Both routes use these, so a file is judged the same way whichever door it came
in by: the multipart form (routes/uploads.py) and the resumable uploads (the tus
wing, tus/handlers.py, which hands each finished upload to `accept`). Each raises
the same JSON error for the same fault.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from .. import ffmpeg, probing, receive
from ..config import MIB, Settings
from ..display import made_at, one_of
from ..errors import ApiError
from ..keys import PROBES, SETTINGS, SNAPSHOT, STORE
from ..layout import SOURCE_EXTENSIONS
from ..store import CHOICES, Choice, Order, Task

log = logging.getLogger(__name__)

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
# An ISO BMFF file (MP4, and QuickTime MOV) starts with a box: 4 bytes of size, then
# its type. Modern files open with 'ftyp'; older QuickTime ones with one of the others.
BMFF_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"}
# An AVI is a RIFF file of form type 'AVI ': "RIFF", 4 bytes of size, "AVI ".
RIFF_MAGIC, AVI_FORM = b"RIFF", b"AVI "
# An MPEG transport stream is packets of 188 bytes, each opening with the sync byte;
# an .m2ts or AVCHD .mts puts a 4-byte time code before each, making 192. One sync
# byte is any file's first byte by chance in 256: three, a packet apart, say "TS".
TS_SYNC = 0x47
TS_PACKETS = ((0, 188), (4, 192))  # (where the first sync byte is, the packet's length)
TS_SYNCS_CHECKED = 3
# The first bytes judged: enough for three 192-byte packets' sync bytes.
SIGNATURE_SIZE = 4 + 192 * (TS_SYNCS_CHECKED - 1) + 1
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


def media_type(request: web.Request) -> str:
    """The request's Content-Type without its parameters, lower case. (aiohttp's
    request.content_type parses the header with the email package: a tenth of the
    loop's time under hundreds of uploads.)"""
    return request.headers.get(hdrs.CONTENT_TYPE, "").partition(";")[0].strip().lower()


def container_kind(filename: str) -> str:
    """The container a name's extension promises ('bmff' or 'ebml'); 415 for any other."""
    kind = SOURCE_EXTENSIONS.get(Path(filename).suffix.lower())
    if kind is None:
        raise ApiError(415, "unsupported_type",
                       f"Only {one_of(SOURCE_EXTENSIONS, 'and')} videos are accepted.")
    return kind


# The order's choices by the key an uploader sends them under (a form field, a tus
# metadata key): both upload routes read them through option().
OPTIONS: dict[str, tuple[str, Choice]] = {choice.key: (name, choice) for name, choice in CHOICES.items()}


def option(key: str, text: str) -> tuple[str, Any]:
    """(the Order field, its checked value) for a choice the uploader sent; 400 if bad."""
    name, choice = OPTIONS[key]
    try:
        return name, choice.read(text)
    except ValueError as exc:
        raise ApiError(400, f"bad_{key}", str(exc)) from None


def order(filename: str, sent: Mapping[str, str]) -> Order:
    """The order of an upload whose options came together (tus metadata): each checked,
    the default for any not sent, or sent empty."""
    return Order(filename, **dict(option(key, text) for key, text in sent.items()
                                  if key in OPTIONS and text))


def too_large(settings: Settings) -> ApiError:
    return ApiError(413, "too_large",
                    f"The file is larger than the limit of {settings.max_upload_bytes / MIB:g} MiB.")


def empty_file() -> ApiError:
    return ApiError(415, "empty_file", "The file is empty.")


def container_of(head: bytes) -> str | None:
    """The container ('bmff', 'ebml', 'riff' or 'mpegts') a file's first bytes show,
    None if they show none of them."""
    if head.startswith(EBML_MAGIC):
        return "ebml"
    if len(head) >= 8 and head[4:8] in BMFF_FIRST_BOXES:
        return "bmff"
    if head.startswith(RIFF_MAGIC) and head[8:12] == AVI_FORM:
        return "riff"
    for first, length in TS_PACKETS:
        syncs = [first + length * n for n in range(TS_SYNCS_CHECKED)]
        if len(head) > syncs[-1] and all(head[at] == TS_SYNC for at in syncs):
            return "mpegts"
    return None


def check_signature(head: bytes, expected: str) -> None:
    found = container_of(head)
    if found is None:
        raise ApiError(415, "not_video", "The file's contents are not a video in any of the "
                       "accepted containers (MP4/MOV, WebM/Matroska, AVI, MPEG-TS).")
    if found != expected:
        raise ApiError(415, "type_mismatch", "The file's contents do not match its extension.")


def signature_check(kind: str) -> Callable[[bytes], None]:
    """For receive's check_head: refuses a stream (415) the moment its first
    SIGNATURE_SIZE bytes show the wrong container. A stream that ends sooner is
    not judged there: the caller checks the stored file with check_stored_signature."""
    return lambda head: check_signature(head, kind)


async def check_stored_signature(path: Path, kind: str) -> None:
    """check_signature on the first bytes of a stored file (read in a thread)."""
    head = await asyncio.to_thread(_first_bytes, path)
    if not head:
        raise empty_file()
    check_signature(head, kind)


def _first_bytes(path: Path) -> bytes:
    with path.open("rb") as stored:
        return stored.read(SIGNATURE_SIZE)


def hms(seconds: float) -> str:
    """3725 -> '1 h 2 min 5 s': durations as a person reads them."""
    whole = int(seconds)
    parts = []
    for amount, unit in ((whole // 3600, "h"), (whole // 60 % 60, "min"), (whole % 60, "s")):
        if amount:
            parts.append(f"{amount} {unit}")
    return " ".join(parts) or f"{seconds:.2g} s"


def check_cost(media: ffmpeg.Media, settings: Settings) -> None:
    """422 for a file whose declared picture, rate or length would cost too much to decode:
    judged from the probe, before anything decodes it."""
    pixels = media.width * media.height
    if pixels > settings.max_pixels:
        raise ApiError(422, "too_many_pixels",
                       f"The video's frames are {media.width}x{media.height} pixels, "
                       f"{pixels / 1e6:.1f} million; the limit is {settings.max_pixels / 1e6:.1f} "
                       "million (--max-pixels).")
    if media.frame_rate is not None and media.frame_rate > ffmpeg.MAX_FRAME_RATE:
        raise ApiError(422, "frame_rate", f"The video says it has {media.frame_rate:.0f} frames a "
                       f"second; more than {ffmpeg.MAX_FRAME_RATE:g} is not accepted.")
    if media.duration is not None and media.duration > settings.max_duration:
        raise ApiError(422, "too_long", f"The video is {hms(media.duration)} long; "
                       f"the limit is {hms(settings.max_duration)}.")


async def check_video(path: Path, container: str, settings: Settings,
                      probes: probing.ProbePool) -> ffmpeg.Media:
    """The stored file's probe, read as the container it was accepted as: 415 if it holds
    no video, 422 if it would cost too much. Probes wait their turn in a pool of their own,
    so a burst of finishing uploads cannot start any number of them at once."""
    try:
        media = await probes.probe(path, container)
    except ffmpeg.TooCostly as exc:
        raise ApiError(422, "too_costly", str(exc)) from None
    except ffmpeg.FFmpegError as exc:
        said = f" (ffmpeg: {exc.detail})" if exc.detail else ""
        raise ApiError(415, "not_video", f"This is not a playable video. {exc}{said}") from None
    check_cost(media, settings)
    return media


async def settle(request: web.Request, stored: Path, task_id: str,
                 filename: str) -> tuple[Path, ffmpeg.Media]:
    """The last steps of every upload route, once the whole file is stored: its probe
    (415, 422), then its final name, durably. Returns that name and the probe."""
    settings = request.app[SETTINGS]
    media = await check_video(stored, container_kind(filename), settings, request.app[PROBES])
    source = settings.layout.source(task_id, Path(filename).suffix.lower())
    await receive.rename(stored, source)
    return source, media


async def accept(request: web.Request, stored: Path, task_id: str, order: Order,
                 size: int) -> Task:
    """Take a whole upload, stored at `stored`, as the task `task_id`: its first bytes and
    its probe checked (415, 422), its final name, and its task queued, on disk.

    A resumable upload ends here, as a tus server hands a finished upload to its host:
    its protocol never learns what an upload becomes."""
    await check_stored_signature(stored, container_kind(order.filename))
    source, media = await settle(request, stored, task_id, order.filename)
    task = Task(**vars(order), id=task_id, source_path=source, size=size, media=media)
    await queue(request, task)
    return task


def accepted(request: web.Request, task_id: str) -> int | None:
    """The size of the upload accepted as the task `task_id`, while that task exists."""
    task = request.app[STORE].get(task_id)
    return None if task is None else task.size


async def queue(request: web.Request, task: Task) -> None:
    """Add a checked upload's task to the store, and return once that is on disk too."""
    request.app[STORE].add(task)
    await request.app[SNAPSHOT].durable()  # acknowledged means it survives a crash
    made = made_at(task)  # a small source is never upscaled
    asked = (" (all sizes)" if task.ladder else "" if made >= task.top_size
             else f" (asked for {task.resolution}p)")
    log.info("task %s queued: %r, %d bytes, %dp%s", task.id, task.filename, task.size, made, asked)
