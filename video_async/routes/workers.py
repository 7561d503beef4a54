"""The worker routes: what a queue worker that shares no folder with the web process asks
of it (remote_worker.py, through jobs.ServerFiles). Only with --worker-token, and only
for that token: the users' token opens none of them, and the worker token nothing else.

- GET /worker/hello: the server's version and job contract, for the worker's start-up check.
- GET /worker/tasks/{id}/source: a running task's upload; Range is honoured, so a broken
  download goes on from where it stopped. Its length and SHA-256 come as headers.
- HEAD and PATCH /worker/tasks/{id}/output (or /thumbnail, or /ladder/NAME for each file of
  an all-sizes ladder, by the names ffmpeg gives them): what the worker made, sent
  back in pieces that each say where they start (Upload-Offset), as tus does; HEAD says
  how much has arrived, so a broken send goes on from there. The file is written by the
  same receive-to-disk piece as uploads, and once all of it is there, and its SHA-256 is
  the one the worker announced, it takes its final name, durably: before the job
  returns, so before the task says COMPLETED.
- POST /worker/tasks/{id}/ladder: every file of the ladder is there: its folder takes its
  final name, durably, as one file does.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from pathlib import Path

import aiofiles.os
from aiohttp import web

from ..errors import ApiError
from ..jobs import CONTRACT, VERSION, WORKER_PREFIX, file_sha256
from ..keys import SETTINGS, STORE
from ..receive import TooLarge, rename, receive
from ..store import State, Task
from ..worker import remove

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    """The worker routes, behind the worker token (with none set, there are none)."""
    if app[SETTINGS].worker_token:
        app.router.add_routes(routes)


def _check_token(request: web.Request) -> None:
    token = request.app[SETTINGS].worker_token
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                            token.encode()):
        raise ApiError(401, "worker_token_required",
                       "This route is for queue workers: send 'Authorization: Bearer <worker "
                       "token>', the server's --worker-token.")


def _running_task(request: web.Request) -> Task:
    """The task a worker names, if it is one the queue has given a worker to run."""
    _check_token(request)
    task = request.app[STORE].get(request.match_info["task_id"])
    if task is None or task.state not in (State.QUEUED, State.PROCESSING):
        raise ApiError(404, "no_running_task", "No task of that id is waiting or running.")
    return task


@routes.get(WORKER_PREFIX + "hello")
async def hello(request: web.Request) -> web.Response:
    _check_token(request)
    return web.json_response({"version": VERSION, "contract": CONTRACT})


@routes.get(WORKER_PREFIX + "tasks/{task_id:[0-9a-f]{32}}/source")
async def source(request: web.Request) -> web.StreamResponse:
    task = _running_task(request)
    digest = await file_sha256(task.source_path)
    # aiohttp's FileResponse answers Range itself, from the file, in the executor
    return web.FileResponse(task.source_path, headers={
        "X-Content-SHA256": digest, "X-Content-Length": str(task.size),
        "Content-Type": "application/octet-stream"})


def partial(final: Path) -> Path:
    """outputs/ID.mp4 -> outputs/ID.partial.mp4 (layout.partial_output), and so for the .jpg"""
    return final.with_name(final.name.replace(".", ".partial.", 1))


def _sent_paths(request: web.Request) -> tuple[Task, Path, Path]:
    task = _running_task(request)
    kind = request.match_info["kind"]
    layout = request.app[SETTINGS].layout
    if kind.startswith("ladder/"):  # into the ladder's partial folder, until all is there
        try:
            name = layout.ladder_file(task.id, kind.removeprefix("ladder/")).name
        except ValueError:
            raise ApiError(404, "not_a_ladder_file", "That is no name of a ladder's file.") from None
        final = layout.partial_ladder(task.id) / name
    elif kind == "output":
        final = layout.output(task.id, task.output_extension)
    else:
        final = layout.thumbnail(task.id)
    return task, final, partial(final)


async def _size(path: Path) -> int:
    try:
        return (await aiofiles.os.stat(path)).st_size
    except FileNotFoundError:
        return 0


SENT = WORKER_PREFIX + "tasks/{task_id:[0-9a-f]{32}}/{kind:output|thumbnail|ladder/[a-z0-9.]+}"


@routes.head(SENT)
async def sent_so_far(request: web.Request) -> web.Response:
    _, _, partial = _sent_paths(request)
    return web.Response(headers={"Upload-Offset": str(await _size(partial)),
                                 "Cache-Control": "no-store"})


@routes.patch(SENT)
async def send_piece(request: web.Request) -> web.Response:
    task, final, partial = _sent_paths(request)
    try:
        offset = int(request.headers["Upload-Offset"])
        length = int(request.headers["Upload-Length"])
        checksum = request.headers["Upload-SHA256"].strip().lower()
    except (KeyError, ValueError):
        raise ApiError(400, "bad_piece", "Send Upload-Offset, Upload-Length and "
                                         "Upload-SHA256 with each piece.") from None
    if length > request.app[SETTINGS].max_upload_bytes * 4:  # an output is smaller than its source
        raise ApiError(413, "too_large", "That is larger than any output of this server.")
    await aiofiles.os.makedirs(partial.parent, exist_ok=True)  # a ladder's partial folder
    if offset != await _size(partial):
        raise ApiError(409, "wrong_offset", "That piece does not start where the file ends: "
                                            "ask with HEAD where to go on from.",
                       headers={"Upload-Offset": str(await _size(partial))})
    try:
        await receive(request.content.iter_chunked(256 * 1024), partial, length, offset)
    except TooLarge:
        raise ApiError(413, "too_large", "More bytes than Upload-Length said.") from None
    received = await _size(partial)
    if received < length:
        return web.Response(status=204, headers={"Upload-Offset": str(received)})
    if not hmac.compare_digest(await file_sha256(partial), checksum):
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(partial)
        log.warning("task %s: its %s came back damaged (checksum); sent again",
                    task.id, request.match_info["kind"])
        raise ApiError(422, "checksum_mismatch", "The file's SHA-256 is not the one announced; "
                                                 "it has been dropped: send it again.")
    await rename(partial, final)  # durable: the name survives a power cut too
    return web.Response(status=204, headers={"Upload-Offset": str(received)})



@routes.post(WORKER_PREFIX + "tasks/{task_id:[0-9a-f]{32}}/ladder")
async def ladder_complete(request: web.Request) -> web.Response:
    """Every file of the ladder has come: the folder takes its final name, durably."""
    task = _running_task(request)
    layout = request.app[SETTINGS].layout
    folder = layout.partial_ladder(task.id)
    if not await aiofiles.os.path.isdir(folder):
        raise ApiError(409, "no_ladder_sent", "No file of this task's ladder has come.")
    await remove(layout.ladder(task.id))  # an earlier run's, if one got this far
    await rename(folder, layout.ladder(task.id))
    return web.Response(status=204)
