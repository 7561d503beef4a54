"""Load: 20 uploads at once while 50 clients poll the task list, against the real server process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from .support.clips import Clips
from .support.processes import rss_mib
from .support.servers import start_server
from .support.uploading import list_tasks, upload
from .support.waiting import wait_until

UPLOADS = 20
POLLERS = 50


async def test_concurrent_uploads_while_many_clients_poll(tmp_path: Path, clips: Clips) -> None:
    # short limits: any upload over them must be a clean 503 (test_limits.py forces those)
    server = await start_server(tmp_path / "data", "--max-queued", "10", "--max-uploads", "6")
    pid = server.proc.pid
    clip = clips.small()
    before = rss_mib(pid)
    peak = before
    failures: list[str] = []
    polls = 0
    stop = asyncio.Event()

    async def one_upload(session: aiohttp.ClientSession, number: int) -> tuple[int, dict[str, Any]]:
        response = await upload(session, clip, "480", filename=f"clip-{number}.mp4")
        body = await response.json()
        if response.status == 503:
            assert body["error"]["code"] in ("busy", "queue_full")
            assert int(response.headers["Retry-After"]) > 0
        return response.status, body

    async def poller(session: aiohttp.ClientSession) -> None:
        nonlocal polls, peak
        etag = ""
        while not stop.is_set():
            try:
                async with session.get("/tasks", headers={"If-None-Match": etag}) as r:
                    if r.status == 200:
                        etag = r.headers["ETag"]
                        await r.json()
                    elif r.status != 304:
                        failures.append(f"GET /tasks: {r.status}")
                polls += 1
            except aiohttp.ClientError as exc:
                failures.append(f"GET /tasks: {exc!r}")
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.01)

    connector = aiohttp.TCPConnector(limit=0)  # no client-side queueing: all 70 at once
    async with server.session(connector=connector) as session:
        polling = [asyncio.create_task(poller(session)) for _ in range(POLLERS)]
        try:
            results = await asyncio.gather(*(one_upload(session, n) for n in range(UPLOADS)))
            accepted = [body["id"] for status, body in results if status == 201]
            assert {status for status, _ in results} <= {201, 503}
            assert accepted, "every upload was refused"

            async def all_completed() -> bool:
                tasks = {t["id"]: t for t in await list_tasks(session)}
                assert not [t for t in tasks.values() if t["state"] == "FAILED"]
                return all(tasks[task_id]["state"] == "COMPLETED" for task_id in accepted)
            await wait_until(all_completed, 60, "every accepted upload to complete")
        finally:
            stop.set()
            await asyncio.gather(*polling)
    after = rss_mib(pid)
    assert await server.stop() == 0
    assert failures == []
    assert polls > POLLERS * 5
    # bounded: uploads stream to disk and the task list is small; nothing grows with traffic
    assert peak - before < 150, f"RSS went from {before:.0f} MiB to a peak of {peak:.0f} MiB"
    assert after < before + 100
    assert "Traceback" not in server.output()
    print(f"{len(accepted)} of {UPLOADS} accepted, {polls} polls, RSS {before:.0f} -> "
          f"peak {peak:.0f} -> {after:.0f} MiB")
