"""What a test checks after a request: the JSON error, and that nothing was left behind."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from .clips import Clips
from .internals import Settings
from .uploading import Http, list_tasks, upload_ok, wait_for_state


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".gitkeep") if folder.exists() else []


def partials(data_dir: Path) -> list[str]:
    """Half-written files (uploads or outputs) in a data folder."""
    return [name for folder in ("uploads", "outputs") for name in files_in(data_dir / folder)
            if "partial" in name]


async def assert_error(response: aiohttp.ClientResponse, status: int, code: str) -> None:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]


async def assert_nothing_left(http: Http, settings: Settings) -> None:
    """No task, and no file in uploads/ or outputs/."""
    assert await list_tasks(http) == []
    assert files_in(settings.layout.uploads_dir) == []
    assert files_in(settings.layout.outputs_dir) == []


async def assert_next_job_completes(http: Http, clips: Clips) -> None:
    """The worker goes on: a small upload after whatever went before is transcoded."""
    task = await upload_ok(http, clips.small(), "480")
    done = await wait_for_state(http, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
