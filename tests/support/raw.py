"""Uploads written by hand: held open, cut off, endless, or broken in ways no client library sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .internals import MIB
from .uploading import AppClient

BOUNDARY = "testboundary1234"
PART_HEAD = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
             "Content-Type: video/mp4\r\n\r\n").encode()  # a video part, up to its first byte


def address(client: AppClient) -> tuple[str, int]:
    """Host and port of a test client's server, for open_upload."""
    return str(client.server.host), int(client.server.port or 0)


async def open_upload(host: str, port: int, first_bytes: bytes, length: int | None = 10 * MIB
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw upload that has sent its headers and first_bytes of its body, and now waits."""
    reader, writer = await asyncio.open_connection(host, port)
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    writer.write((f"POST /videos/upload HTTP/1.1\r\nHost: localhost\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{size}\r\n").encode()
                 + first_bytes)
    await writer.drain()
    return reader, writer


async def exchange(host: str, port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """A request written byte for byte, as no client library would write it: the status,
    headers (names in lower case) and body of the answer, read until the server closes
    (send `Connection: close`)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(20):
            answer = await reader.read()
    finally:
        await hang_up(writer)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def chunked(pieces: list[bytes]) -> bytes:
    """A chunked request body, one HTTP chunk per piece, then the last (empty) chunk.

    The server's body stream never hands out bytes of two HTTP chunks as one, so the
    pieces are exactly where its multipart reader's buffers may end.
    """
    framed = [f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in pieces if piece]
    return b"".join(framed) + b"0\r\n\r\n"


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, Any]:
    """The status and JSON body of the answer to a raw upload."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, json.loads(await reader.readexactly(length))


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def post_raw(client: AppClient, body: bytes, boundary: str = BOUNDARY) -> aiohttp.ClientResponse:
    """A multipart body sent exactly as given."""
    return await client.post("/videos/upload", data=body,
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


async def post_named(client: AppClient, video: bytes, filename: str) -> aiohttp.ClientResponse:
    """An upload whose file name goes out exactly as given, escapes and all."""
    head = PART_HEAD.replace(b'filename="a.mp4"', f'filename="{filename}"'.encode())
    return await post_raw(client, head + video + f"\r\n--{BOUNDARY}--\r\n".encode())


class EndlessUpload:
    """A chunked multipart upload (no Content-Length): a real clip, then zeros until `until` bytes.

    `sent` counts what the server has pulled, so a test can tell that it stopped reading.
    """

    def __init__(self, clip: Path, chunk: int, until: int) -> None:
        self.clip, self.chunk, self.until, self.sent = clip, chunk, until, 0

    async def _bytes(self) -> AsyncIterator[bytes]:
        yield self.clip.read_bytes()
        while self.sent < self.until:
            self.sent += self.chunk
            yield bytes(self.chunk)

    def body(self) -> aiohttp.MultipartWriter:
        with aiohttp.MultipartWriter("form-data") as writer:
            part = writer.append(self._bytes(), {"Content-Type": "video/mp4"})
            part.set_content_disposition("form-data", name="video", filename="big.mp4")
        return writer

    async def post(self, client: AppClient) -> aiohttp.ClientResponse:
        return await client.post("/videos/upload", data=self.body())

    async def refused(self, client: AppClient, caplog: pytest.LogCaptureFixture) -> tuple[int, str | None]:
        """Send it until the server stops it: the status it answered, and its error code if read.

        The server answers and closes while the body is still coming, so the client may see
        the connection reset before it reads the answer. The status is then taken from the
        server's access log, which records every answer it sent.
        """
        caplog.set_level(logging.INFO, logger="aiohttp.access")
        try:
            response = await self.post(client)
            answer = await response.read()
        except aiohttp.ClientError:
            found = [re.search(r'"POST /videos/upload [^"]*" (\d{3}) ', record.getMessage())
                     for record in caplog.records if record.name == "aiohttp.access"]
            statuses = [int(match.group(1)) for match in found if match]
            assert len(statuses) == 1, f"the server's answers to the upload: {statuses}"
            return statuses[0], None
        assert response.content_type == "application/json", answer
        return response.status, json.loads(answer)["error"]["code"]


class EndlessFields(EndlessUpload):
    """The same, but the clip is a whole video part, and small text fields follow it, each
    within the size the server tolerates, until `until` bytes: a body that never ends."""

    async def _fields(self) -> AsyncIterator[bytes]:
        yield PART_HEAD + self.clip.read_bytes() + b"\r\n"
        field = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n".encode()
                 + b"x" * 1000 + b"\r\n")
        while self.sent < self.until:
            self.sent += len(field) * 64
            yield field * 64

    async def post(self, client: AppClient) -> aiohttp.ClientResponse:
        return await client.post("/videos/upload", data=self._fields(),
                                 headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
