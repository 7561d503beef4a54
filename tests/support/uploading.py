"""Upload and wait, through the HTTP API, as a client of the app would.

Every function takes `http`: either pytest-aiohttp's test client, or an
`aiohttp.ClientSession(base_url=...)` of a real server process (`Server.session()`).
Both take paths like "/tasks", so the same helper serves both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from .waiting import wait_until

AppClient = TestClient[aiohttp.web.Request, aiohttp.web.Application]
Http = AppClient | aiohttp.ClientSession
# What a browser asks for when it follows a link or posts a form: the server answers a page.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def upload(http: Http, path: Path, resolution: str | None = "720", filename: str | None = None,
                 headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    """POST /videos/upload as a browser's form does; the answer, whatever it is."""
    form = aiohttp.FormData(quote_fields=False)  # the name as raw UTF-8, as browsers send it
    if resolution is not None:
        form.add_field("resolution", resolution)
    with path.open("rb") as video:  # a file, not bytes: aiohttp streams it from disk
        form.add_field("video", video, filename=filename or path.name,
                       content_type="application/octet-stream")
        response = await http.post("/videos/upload", data=form, headers=headers)
        await response.read()  # the whole answer, so a real session's connection is free again
        return response


async def form_upload(http: Http, path: Path, resolution: str | None = "720",
                      headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    """The page's upload form without JavaScript: a browser's plain form post (a 303 to
    the page on success, which the client follows unless told not to)."""
    return await upload(http, path, resolution, headers={"Accept": BROWSER_ACCEPT, **(headers or {})})


async def upload_ok(http: Http, path: Path, resolution: str = "720",
                    filename: str | None = None) -> dict[str, Any]:
    """An upload that must be accepted: its task."""
    response = await upload(http, path, resolution, filename)
    assert response.status == 201, await response.text()
    task: dict[str, Any] = await response.json()
    return task


async def get_json(http: Http, path: str, headers: dict[str, str] | None = None) -> Any:
    response = await http.get(path, headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


async def list_tasks(http: Http) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = await get_json(http, "/tasks")
    return listed


async def wait_for_state(http: Http, task_id: str, *states: str, min_progress: int = 0,
                         timeout: float = 60, headers: dict[str, str] | None = None
                         ) -> dict[str, Any]:
    """The task, once it is in one of states (with at least min_progress percent done);
    headers go with each look (the token's, say)."""
    async def current() -> dict[str, Any] | None:
        task = await get_json(http, f"/tasks/{task_id}", headers)
        return task if task["state"] in states and task["progress"] >= min_progress else None
    reached: dict[str, Any] = await wait_until(current, timeout, f"task {task_id} to reach {states}")
    return reached


async def transcoding(http: Http, task_id: str) -> dict[str, Any]:
    """The task once its transcode runs and has reported progress."""
    return await wait_for_state(http, task_id, "PROCESSING", min_progress=1)


async def delete(http: Http, task_id: str) -> None:
    response = await http.delete(f"/tasks/{task_id}")
    assert response.status == 200, await response.text()


async def download(http: Http, task_id: str) -> bytes:
    response = await http.get(f"/tasks/{task_id}/download")
    assert response.status == 200, await response.text()
    return await response.read()


async def uploads_in_progress(http: Http, count: int) -> bool:
    in_progress: int = (await get_json(http, "/healthz"))["uploads_in_progress"]
    return in_progress == count
