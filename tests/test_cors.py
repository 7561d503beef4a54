"""The original React front end, served from another origin, calls the API unchanged."""

from __future__ import annotations

import aiohttp

from .support.clips import Clips
from .support.servers import MakeClient
from .support.uploading import wait_for_state

REACT = "http://localhost:3000"


async def test_react_client_flow(make_client: MakeClient, clips: Clips) -> None:
    client = await make_client(cors_origins=(REACT,))
    preflight = await client.options("/tasks/0123", headers={
        "Origin": REACT, "Access-Control-Request-Method": "DELETE"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == REACT
    assert "DELETE" in preflight.headers["Access-Control-Allow-Methods"]

    form = aiohttp.FormData()  # the original client sends only the file
    with clips.small().open("rb") as video:
        form.add_field("video", video, filename="clip.mp4")
        created = await client.post("/videos/upload", data=form, headers={"Origin": REACT})
    assert created.status == 201
    assert created.headers["Access-Control-Allow-Origin"] == REACT
    task = await created.json()
    assert task["resolution"] == "720"
    listed = await client.get("/tasks", headers={"Origin": REACT})
    assert listed.headers["Access-Control-Allow-Origin"] == REACT
    assert {"id", "filename", "resolution", "state"} <= set((await listed.json())[0])
    await wait_for_state(client, task["id"], "COMPLETED")
    download = await client.get(f"/tasks/{task['id']}/download", headers={"Origin": REACT})
    assert download.status == 200
    missing = await client.get("/tasks/" + "0" * 32, headers={"Origin": REACT})
    assert missing.status == 404 and missing.headers["Access-Control-Allow-Origin"] == REACT
    deleted = await client.delete(f"/tasks/{task['id']}", headers={"Origin": REACT})
    assert deleted.status == 200 and deleted.headers["Access-Control-Allow-Origin"] == REACT


async def test_other_origins_get_no_cors_headers(make_client: MakeClient) -> None:
    client = await make_client(cors_origins=(REACT,))
    response = await client.get("/tasks", headers={"Origin": "http://evil.test"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await client.options("/tasks", headers={
        "Origin": "http://evil.test", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_cors_is_off_by_default(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/tasks", headers={"Origin": REACT})
    assert "Access-Control-Allow-Origin" not in response.headers
