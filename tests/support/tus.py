"""Resumable uploads spoken by hand, one tus 1.0.0 request at a time, on any `Http`
(a test client or a real server's session), for the cases where a test must
see each status and header. tests/test_resumable.py also uses a real client, tuspy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from .uploading import Http

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"


def metadata(**pairs: str) -> str:
    """Upload-Metadata: each value base64, as the protocol says."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}"
                    for key, value in pairs.items())


async def create(http: Http, length: int, filename: str = "clip.mp4", resolution: str = "480",
                 headers: dict[str, str] | None = None,
                 endpoint: str = "/files") -> aiohttp.ClientResponse:
    """POST /files (or the endpoint given); the answer, whatever it is."""
    response = await http.post(endpoint, headers={
        **TUS, "Upload-Length": str(length),
        "Upload-Metadata": metadata(filename=filename, resolution=resolution), **(headers or {})})
    await response.read()
    return response


async def created(http: Http, length: int, filename: str = "clip.mp4",
                  resolution: str = "480") -> str:
    """An upload that must be created: its path, /files/<id>."""
    response = await create(http, length, filename, resolution)
    assert response.status == 201, await response.text()
    location: str = response.headers["Location"]
    assert location.startswith("/files/")
    return location


async def patch(http: Http, url: str, offset: int, data: bytes | AsyncIterator[bytes],
                headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    body = io.BytesIO(data) if isinstance(data, bytes) else data  # streamed, not copied on the loop
    response = await http.patch(url, data=body, headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET_STREAM, **(headers or {})})
    await response.read()
    return response


async def head(http: Http, url: str) -> aiohttp.ClientResponse:
    response = await http.head(url, headers=TUS)
    await response.read()
    return response


async def offset_of(http: Http, url: str) -> int:
    response = await head(http, url)
    assert response.status == 200, response.status
    return int(response.headers["Upload-Offset"])


class Trickle:
    """A PATCH body sent piece by piece; `sent` counts what left the client, and
    `release` lets the next pieces go, so a test can cut it off part-way."""

    def __init__(self, data: bytes, piece: int) -> None:
        self.data, self.piece, self.sent = data, piece, 0
        self.allowance = asyncio.Semaphore(0)

    def release(self, pieces: int = 1) -> None:
        for _ in range(pieces):
            self.allowance.release()

    async def body(self) -> AsyncIterator[bytes]:
        while self.sent < len(self.data):
            await self.allowance.acquire()
            piece = self.data[self.sent:self.sent + self.piece]
            self.sent += len(piece)
            yield piece


async def raw_patch_cut(host: str, port: int, url: str, offset: int, body: bytes,
                        announced: int, handled: Callable[[], Awaitable[None]]) -> None:
    """A PATCH announcing `announced` bytes that sends only `body`, then hangs up once
    `handled` has returned: the server must be handling the request by then, since
    aiohttp drops a request it has not started on when its connection closes (its
    handler never sees those bytes)."""
    _, writer = await asyncio.open_connection(host, port)
    writer.write((f"PATCH {url} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n"
                  f"Upload-Offset: {offset}\r\nContent-Type: {OFFSET_STREAM}\r\n"
                  f"Content-Length: {announced}\r\n\r\n").encode() + body)
    await writer.drain()
    await handled()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def tus_headers(response: aiohttp.ClientResponse) -> dict[str, Any]:
    return {name: value for name, value in response.headers.items()
            if name.lower().startswith(("tus-", "upload-"))}


async def answer_or_hang_up(
        request: asyncio.Task[aiohttp.ClientResponse]) -> aiohttp.ClientResponse | None:
    """A request the server may answer or may hang up on: its answer, or None when the
    connection closed first (which of the two is a race the test cannot fix in advance)."""
    try:
        return await request
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return None
