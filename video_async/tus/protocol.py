"""The tus 1.0.0 protocol as the handlers see it: what every request under /files shares
(one middleware and one header hook), its named errors, and its headers read.

`tus_protocol` (the middleware, innermost: after the access checks) does, once for
every request under /files that reached a route:
- X-HTTP-Method-Override: a client behind a proxy that lets only GET and POST
  through sends POST to an upload and names the method it means; the protocol
  says to obey it, so the handler of that method answers (405 if it names none of
  PATCH, DELETE and HEAD);
- the version check: every request of the protocol (creation, and any request to
  an upload) must carry `Tus-Resumable: 1.0.0`, else 412 naming the version spoken.
  OPTIONS asks which versions there are, and GET /files is the operator's list:
  neither needs it.

`tus_resumable_header` names the version on every answer under /files: a hook on
the answer rather than the middleware, so that it reaches the answers made before
or outside it too (an access refusal, an unknown path, an unexpected error).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from email.utils import formatdate

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import ApiError

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


def is_tus(request: web.Request) -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


# -- what every request shares --------------------------------------------------------------

def tus_protocol(overrides: Mapping[str, Handler]) -> Middleware:
    """The middleware; `overrides` are the handlers a POST to an upload may name
    (X-HTTP-Method-Override), by method."""
    allowed = ", ".join(overrides)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_tus(request) or request.match_info.http_exception is not None:
            return await handler(request)  # not ours, or no route: the router answers
        to_upload = "upload_id" in request.match_info
        if to_upload and request.method == "POST":
            named = request.headers.get("X-HTTP-Method-Override", "").strip().upper()
            if named not in overrides:
                raise override_missing(allowed)
            handler = overrides[named]
        if to_upload or request.method == "POST":
            check_version(request)
        return await handler(request)

    return middleware


async def tus_resumable_header(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer under /files names the protocol version (an on_response_prepare hook)."""
    if is_tus(request):
        response.headers["Tus-Resumable"] = TUS_VERSION


def check_version(request: web.Request) -> None:
    given = request.headers.get("Tus-Resumable")
    if given != TUS_VERSION:
        raise version_mismatch(given)


# -- the protocol's errors, each named once with its status ---------------------------------

def version_mismatch(given: str | None) -> ApiError:
    return ApiError(412, "tus_version", f"This server speaks tus {TUS_VERSION}: send "
                    f"'Tus-Resumable: {TUS_VERSION}' (got {given!r}).",
                    headers={"Tus-Version": TUS_VERSION})


def override_missing(allowed: str) -> ApiError:
    return ApiError(405, "method_not_allowed", "POST to an upload needs X-HTTP-Method-Override: "
                    "PATCH, DELETE or HEAD.", headers={"Allow": allowed})


def not_found() -> ApiError:
    return ApiError(404, "not_found", "No such upload.")


def gone() -> ApiError:
    return ApiError(410, "upload_gone", "This upload expired or was terminated; start a new one.")


def offset_mismatch(held: int, given: int) -> ApiError:
    """The client's Upload-Offset is not where the upload stands: the answer says where."""
    return ApiError(409, "offset_mismatch", f"This upload is at byte {held}, not {given}: ask "
                    "with HEAD and send from there.", headers={"Upload-Offset": str(held)})


def already_complete(length: int, task_id: str) -> ApiError:
    """Bytes sent to an upload that has all of them (an offset mismatch, as the protocol
    sees it)."""
    return ApiError(409, "offset_mismatch", f"This upload is complete, all {length} bytes; "
                    f"its task is /tasks/{task_id}.", headers={"Upload-Offset": str(length)})


def finishing() -> ApiError:
    return ApiError(409, "finishing", "Every byte of this upload is in and its task is made "
                    "or being made; delete the task instead.")


def superseded() -> ApiError:
    return ApiError(409, "superseded", "A newer request for this upload took over; its bytes "
                    "so far are kept.")


def past_length(size: int, room: int, length: int | None = None) -> ApiError:
    """A body announced longer than what the upload has left (of its whole `length`)."""
    whole = "" if length is None else f" left of its {length}"
    return ApiError(413, "past_length", f"This body is {size} bytes; the upload has only "
                    f"{room}{whole}.")


def went_past_length(length: int) -> ApiError:
    """A body that was not announced as too long, and turned out to be."""
    return ApiError(413, "past_length", f"The body went past the upload's length of {length} bytes.")


def cut_off(offset: int) -> ApiError:
    return ApiError(400, "client_disconnected", "The connection was closed mid-body; the "
                    f"upload is kept at byte {offset}.")


def not_offset_stream() -> ApiError:
    return ApiError(415, "not_offset_stream",
                    f"Send an upload's bytes as Content-Type: {OFFSET_STREAM}.")


def bad_header(name: str) -> ApiError:
    return ApiError(400, "bad_header", f"{name} must be given, as a whole number of bytes.")


def length_required() -> ApiError:
    return ApiError(400, "length_required", "This server needs Upload-Length when the upload "
                    "is created (it does not offer creation-defer-length).")


def no_filename() -> ApiError:
    return ApiError(400, "no_filename", "Upload-Metadata must carry the file's name as "
                    "'filename' (base64), e.g. 'filename aG9saWRheS5tb3Y='.")


def bad_metadata(why: str) -> ApiError:
    return ApiError(400, "bad_metadata", why)


# -- the protocol's headers, read and written -----------------------------------------------

def has_body(request: web.Request) -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "")


def header_int(request: web.Request, name: str) -> int:
    text = request.headers.get(name)
    if text is None or not text.isascii() or not text.isdigit():
        raise bad_header(name)
    return int(text)


def metadata(header: str) -> dict[str, str]:
    """Upload-Metadata: 'key base64value' pairs, comma-separated; a value may be left out."""
    if len(header) > MAX_METADATA:
        raise bad_metadata(f"Upload-Metadata is over {MAX_METADATA} characters.")
    pairs: dict[str, str] = {}
    for item in header.split(","):
        if not item.strip():
            continue
        key, _, value = item.strip().partition(" ")
        if not key or key in pairs:
            raise bad_metadata(f"Upload-Metadata names a key twice or none: {key!r}.")
        try:
            pairs[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise bad_metadata(f"Upload-Metadata's {key!r} is not base64 of UTF-8 text.") from None
    return pairs


def http_date(moment: float) -> str:
    """Upload-Expires, an HTTP date, as the protocol asks: 'Wed, 25 Jun 2014 16:00:00 GMT'."""
    return formatdate(moment, usegmt=True)
