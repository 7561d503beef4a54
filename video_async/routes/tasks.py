"""The task API: list, show, download, thumbnail, delete, retry (routes/tasks.js)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiofiles.os
from aiohttp import web

from ..config import Resolution
from ..layout import LADDER_TYPES, OUTPUT_TYPES, TASK_ID
from ..store import State, Task, TaskStore
from ..errors import ApiError, wants_html
from ..keys import SETTINGS, SNAPSHOT, STORE, UNFINISHED_RESOLUTION
from .intake import option
from ..worker import remove

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

PAGE_SIZE = 100  # tasks in a page of GET /tasks?after=... that gives no limit
MAX_PAGE_SIZE = 1000


def content_disposition(filename: str, resolution: int, extension: str = ".mp4") -> str:
    """`attachment` naming the download "<stem>-<res>p.mp4" (or the output's own extension),
    safe for any original name.

    Old clients read the ASCII `filename`; RFC 6266 clients read `filename*`,
    which keeps non-ASCII letters, percent-encoded so quotes or newlines in
    the name can never break out of the header.
    """
    stem = Path(filename).stem or "video"
    name = f"{stem}-{resolution}p{extension}"
    ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _find(request: web.Request) -> Task:
    task_id = request.match_info["task_id"]
    task = request.app[STORE].get(task_id) if TASK_ID.match(task_id) else None
    if task is None:
        raise ApiError(404, "not_found", "No task with this id.")
    return task


@routes.get("/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    """Every task as a JSON array (the original client's way); with `since`, only what
    changed after that version; with `limit` or `after`, one page of the list."""
    store = request.app[STORE]
    query = request.query
    since = _since(query.get("since"), store)
    paged = "limit" in query or "after" in query
    if since is not None and paged:
        raise ApiError(400, "bad_query", "Ask for changes (since) or for a page (limit, after), "
                                         "not both.")
    if paged:
        limit = _whole_number(query.get("limit", str(PAGE_SIZE)), "limit", 1, MAX_PAGE_SIZE)
        after = _whole_number(query.get("after", "0"), "after", 0, None)
    version = store.list_version
    # The version changes with every change to any task, so an unchanged list
    # costs the client a 304 and us no JSON at all.
    etag = f'"{version}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    wanted = [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]
    if etag in wanted or "*" in wanted:
        return web.Response(status=304, headers=headers)
    if since is not None:
        changes = store.changes_since(since)
        if changes is None:  # the store cannot tell: the page starts again from everything
            body = _object(store, {"version": version, "full": True, "removed": []}, store.all())
        else:
            changed, removed = changes
            body = _object(store, {"version": version, "full": False, "removed": removed}, changed)
    elif paged:
        tasks, following = store.page(after, limit)
        body = _object(store, {"version": version, "next": following}, tasks)
    else:
        body = _array(store, store.all())
    return web.Response(body=body, headers=headers, content_type="application/json",
                        charset="utf-8")


def _since(text: str | None, store: TaskStore) -> int | None:
    """The store version a `since` names, None when there is none."""
    if text is None:
        return None
    try:
        return store.version_named(text)
    except ValueError:
        raise ApiError(400, "bad_since", "since must be a version this server gave: the "
                                         "`version` of an earlier answer, or the list's ETag "
                                         "without its quotes.") from None


def _whole_number(text: str, name: str, least: int, most: int | None) -> int:
    number = int(text) if re.fullmatch(r"[0-9]{1,18}", text) else -1
    if number < least or (most is not None and number > most):
        bound = f"from {least} to {most}" if most is not None else f"{least} or more"
        raise ApiError(400, f"bad_{name}", f"{name} must be a whole number {bound}.")
    return number


def _array(store: TaskStore, tasks: Iterable[Task]) -> bytes:
    """A JSON array of the tasks, made of each one's encoded JSON as the store keeps it:
    byte for byte what json.dumps would make of their dicts."""
    return b"[" + b", ".join(store.encoded(task) for task in tasks) + b"]"


def _object(store: TaskStore, fields: dict[str, Any], tasks: Iterable[Task]) -> bytes:
    """fields as a JSON object, with the tasks' array added as its last member, "tasks"."""
    head = json.dumps(fields).removesuffix("}").encode()
    return b"".join((head, b', "tasks": ', _array(store, tasks), b"}"))


@routes.get("/tasks/{task_id}")
async def show_task(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.Response(body=store.encoded(_find(request)), content_type="application/json",
                        charset="utf-8")


@routes.patch("/tasks/{task_id}")
async def change_task(request: web.Request) -> web.Response:
    """{"resolution": 1080}: the size a task is made at, changed until its transcode starts
    (QUEUED, or FAILED before a Retry). For a resumable upload still receiving, the task it
    will become: 202, and the task is made at that size when the last byte is in."""
    asked = await _asked_resolution(request)
    task_id = request.match_info["task_id"]
    store = request.app[STORE]
    task = store.get(task_id) if TASK_ID.match(task_id) else None
    if task is None:
        unfinished = request.app.get(UNFINISHED_RESOLUTION)
        if TASK_ID.match(task_id) and unfinished is not None and unfinished(task_id, asked):
            return web.json_response({"id": task_id, "resolution": str(asked)}, status=202)
        raise ApiError(404, "not_found", "No task with this id.")
    if task.state not in (State.QUEUED, State.FAILED):
        raise ApiError(409, "already_started", f"The task is {task.state.value}; its size can "
                                               "change only until its transcode starts.")
    if request.app[SETTINGS].queue and task.state is State.QUEUED:
        # its job, order and all, is with the queue's workers already
        raise ApiError(409, "already_queued", "The task is queued for a worker already; its "
                                              "size can no longer change.")
    if task.resolution != asked:
        store.change_resolution(task, asked)
        await request.app[SNAPSHOT].durable()
        log.info("task %s: resolution changed to %s", task.id, asked)
    return web.json_response(store.to_json(task))


async def _asked_resolution(request: web.Request) -> Resolution:
    """The resolution a change asks for: 400 for a body that is not {"resolution": ...}."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or set(body) != {"resolution"}:
        raise ApiError(400, "bad_change", 'Send a JSON object with the resolution only, '
                                          'e.g. {"resolution": 1080}.')
    value = body["resolution"]
    # 1080 or "1080"; not true, 1080.0 or a list
    chosen: Resolution = option("resolution", str(value) if type(value) in (int, str) else "")[1]
    return chosen


@routes.get("/tasks/{task_id}/download")
async def download(request: web.Request) -> web.FileResponse:
    task = _find(request)
    if task.state is not State.COMPLETED or task.output_path is None:
        raise ApiError(409, "not_completed",
                         f"The task is {task.state.value}; only COMPLETED tasks can be downloaded.")
    if not await aiofiles.os.path.exists(task.output_path):
        raise ApiError(404, "file_missing", "The output file is gone from disk.")
    # FileResponse sends the file with sendfile() off the loop and answers Range requests.
    extension = task.output_path.suffix
    return web.FileResponse(task.output_path, headers={
        "Content-Type": OUTPUT_TYPES[extension],
        # named by what it is: a 360p source asked for at 1080 downloads as ...-360p.mp4
        "Content-Disposition": content_disposition(
            task.filename, task.output.short_side if task.output else task.top_size, extension),
    })


@routes.get("/tasks/{task_id}/ladder/{name}")
async def ladder_file(request: web.Request) -> web.FileResponse:
    """A file of an "all sizes" task's HLS ladder: its master playlist, a rung's playlist,
    init segment or media segment, by the name the playlists give it (checked by the
    layout; a request never names a path). Range requests are answered as for downloads.
    """
    task = _find(request)
    if task.state is not State.COMPLETED or task.ladder_path is None:
        raise ApiError(404, "no_ladder", "This task has no finished set of sizes.")
    try:
        path = request.app[SETTINGS].layout.ladder_file(task.id, request.match_info["name"])
    except ValueError:
        raise ApiError(404, "not_found", "No such file in this task's sizes.") from None
    if not await aiofiles.os.path.isfile(path):
        raise ApiError(404, "not_found", "No such file in this task's sizes.")
    # A finished ladder never changes (a task id is never reused, and only a failed task,
    # which has none, is run again), so a player may keep what it fetched.
    return web.FileResponse(path, headers={"Content-Type": LADDER_TYPES[path.suffix],
                                           "Cache-Control": "private, max-age=31536000, immutable"})


@routes.get("/tasks/{task_id}/thumbnail")
async def thumbnail(request: web.Request) -> web.FileResponse:
    task = _find(request)
    if task.thumbnail_path is None or not await aiofiles.os.path.exists(task.thumbnail_path):
        raise ApiError(404, "no_thumbnail", "This task has no thumbnail yet.")
    return web.FileResponse(task.thumbnail_path, headers={"Content-Type": "image/jpeg",
                                                          "Cache-Control": "max-age=3600"})


@routes.delete("/tasks/{task_id}")
async def delete_task(request: web.Request) -> web.Response:
    task = await _delete(request, _find(request))
    return web.json_response({"success": True, "id": task.id})


@routes.post("/tasks/{task_id}/delete")
async def delete_task_form(request: web.Request) -> web.Response:
    """The same for the page's plain HTML form, which can only POST; back to the page."""
    await _delete(request, _find(request))
    raise web.HTTPSeeOther("/")


async def _delete(request: web.Request, task: Task) -> Task:
    request.app[STORE].remove(task.id)
    if task.job is not None:
        # Cancelling the job makes ffmpeg.py terminate and reap its process and the
        # worker remove the partial output; wait for that before answering.
        task.job.cancel()
        await asyncio.wait({task.job})
    await remove(*task.files())  # a ladder's folder with every rung in it
    await request.app[SNAPSHOT].durable()  # a deleted task never comes back after a crash
    log.info("task %s deleted", task.id)
    return task


@routes.post("/tasks/{task_id}/retry")
async def retry_task(request: web.Request) -> web.Response:
    task = _find(request)
    if task.state is not State.FAILED:
        raise ApiError(409, "not_failed",
                         f"The task is {task.state.value}; only FAILED tasks can be retried.")
    if not await aiofiles.os.path.exists(task.source_path):
        raise ApiError(409, "upload_missing", "The uploaded file is gone; upload it again.")
    store = request.app[STORE]
    # Checked again after the await: a second Retry or a DELETE may have come first,
    # and requeueing a task twice would give it two jobs.
    if store.get(task.id) is not task or task.state is not State.FAILED:
        raise ApiError(409, "not_failed", "The task changed meanwhile; it was not retried.")
    store.retry(task)
    await request.app[SNAPSHOT].durable()
    if wants_html(request):  # the page's plain form
        raise web.HTTPSeeOther("/")
    return web.json_response(store.to_json(task))
