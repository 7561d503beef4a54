"""The multipart/form-data reader on bodies fed to it in memory, split into buffers
wherever a network might split them: what it hands out, and what it refuses."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from .support.internals import HEAD_LIMIT, BodyTooLarge, Malformed, MultipartReader

pytestmark = pytest.mark.unit

BOUNDARY = "----formBoundary7MA4YWxk"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
VIDEO = bytes(range(256)) * 8 + b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n-- almost"


def form(*parts: tuple[bytes, bytes], preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    """A body of (headers, data) parts."""
    delimiter = b"--" + BOUNDARY.encode()
    body = preamble + (b"\r\n" if preamble else b"")
    for headers, data in parts:
        body += delimiter + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n"
    return body + delimiter + b"--\r\n" + epilogue


VIDEO_PART = (b'Content-Disposition: form-data; name="video"; filename="clip.mp4"\r\n'
              b"Content-Type: video/mp4", VIDEO)
RESOLUTION_PART = (b'Content-Disposition: form-data; name="resolution"', b"480")


def stream(body: bytes, sizes: int | list[int]) -> StreamReader:
    """The body as aiohttp's parser hands it on: buffers of the given sizes (the last one
    repeated), then the end."""
    loop = asyncio.get_running_loop()
    reader = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    sizes = [sizes] if isinstance(sizes, int) else sizes
    position = 0
    for n in range(len(body)):
        if position >= len(body):
            break
        size = sizes[min(n, len(sizes) - 1)]
        reader.feed_data(body[position:position + size])
        position += size
    reader.feed_eof()
    return reader


async def read_all(body: bytes, sizes: int | list[int] = 64 * 1024,
                   limit: int | None = None) -> list[tuple[str | None, str | None, str, bytes]]:
    """Every part as (name, file name, content type, data)."""
    reader = MultipartReader(stream(body, sizes), CONTENT_TYPE, limit)
    parts = []
    while part := await reader.next():
        data = b"".join([bytes(chunk) async for chunk in part])
        parts.append((part.name, part.filename, part.content_type, data))
    return parts


async def test_the_fields_and_the_file_in_either_order() -> None:
    video = ("video", "clip.mp4", "video/mp4", VIDEO)
    resolution = ("resolution", None, "", b"480")
    assert await read_all(form(VIDEO_PART, RESOLUTION_PART)) == [video, resolution]
    assert await read_all(form(RESOLUTION_PART, VIDEO_PART)) == [resolution, video]


async def test_every_split_of_the_body_reads_the_same() -> None:
    """A delimiter (or a blank line after headers) may be cut anywhere between two buffers."""
    body = form(RESOLUTION_PART, VIDEO_PART)
    whole = await read_all(body)
    for first in range(1, 200):
        assert await read_all(body, [first, 97]) == whole, first
    assert await read_all(body, 1) == whole  # a byte at a time


async def test_preamble_and_epilogue_are_not_parts() -> None:
    body = form(RESOLUTION_PART, preamble=b"This is a multipart message.",
                epilogue=b"--" + BOUNDARY.encode() + b"\r\nnot a part")
    assert await read_all(body) == [("resolution", None, "", b"480")]


async def test_a_part_can_be_left_unread() -> None:
    reader = MultipartReader(stream(form(VIDEO_PART, RESOLUTION_PART), 100), CONTENT_TYPE)
    video = await reader.next()
    assert video is not None and video.name == "video"
    resolution = await reader.next()  # skips what is left of the video
    assert resolution is not None and resolution.name == "resolution"
    assert await video.read_chunk() == b""  # the reader has moved on
    assert bytes(await resolution.read_chunk()) == b"480"
    assert await reader.next() is None


@pytest.mark.parametrize("body", [
    form(VIDEO_PART)[:-10],  # cut inside the closing delimiter
    form(VIDEO_PART)[:300],  # cut inside the file
    b"",
])
async def test_a_body_without_its_closing_delimiter(body: bytes) -> None:
    with pytest.raises(Malformed):
        await read_all(body)


@pytest.mark.parametrize("headers", [
    b"Content-Type: video/mp4",  # no Content-Disposition
    b'Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="b"',
    b'Content-Disposition: form-data; name="a"\r\nContent-Type: a/b\r\nContent-Type: c/d',
    b'Content-Disposition: form-data; name="a"\r\nX-Note: a\x00b',
    b'Content-Disposition: form-data; name="a"\r\nX-Note: a\rb',
    b'Content-Disposition: form-data; name="a"\r\nBad Name: x',
    b'Content-Disposition: form-data; name="a"\r\nno colon',
    b'Content-Disposition: form-data; name="a"; x=y.mp4"',  # an unescaped quote
    b"Content-Disposition: form-data",  # names no field
])
async def test_part_headers_that_cannot_be_read(headers: bytes) -> None:
    with pytest.raises(Malformed):
        await read_all(form((headers, b"data")))


async def test_other_bytes_after_a_delimiter_on_its_line() -> None:
    body = form(RESOLUTION_PART).replace(BOUNDARY.encode() + b"\r\n", BOUNDARY.encode() + b"x\r\n", 1)
    with pytest.raises(Malformed):
        await read_all(body)


@pytest.mark.parametrize("size", [1, 7, 1000, 64 * 1024])
async def test_headers_up_to_the_limit_and_past_it(size: int) -> None:
    """The limit counts what follows a delimiter up to the blank line: the line break that
    ends the delimiter's line, and the headers."""
    disposition = b'Content-Disposition: form-data; name="resolution"'
    padding = b"\r\nX-Pad: "
    fits = disposition + padding + b"x" * (HEAD_LIMIT - 2 - len(disposition) - len(padding))
    assert await read_all(form((fits, b"480")), size) == [("resolution", None, "", b"480")]
    with pytest.raises(Malformed):
        await read_all(form((fits + b"x", b"480")), size)


async def test_a_preamble_with_no_boundary_in_it_is_refused_early() -> None:
    with pytest.raises(Malformed):
        await read_all(b"x" * (HEAD_LIMIT + 1) + form(RESOLUTION_PART), 1000)


async def test_a_body_past_the_limit_stops_there() -> None:
    body = form(VIDEO_PART, RESOLUTION_PART)
    assert len(await read_all(body, 100, limit=len(body))) == 2
    with pytest.raises(BodyTooLarge):
        await read_all(body, 100, limit=len(body) - 1)


@pytest.mark.parametrize("content_type", [
    "multipart/form-data", "multipart/form-data; boundary=", f"multipart/form-data; boundary={'b' * 71}"])
async def test_a_content_type_without_a_usable_boundary(content_type: str) -> None:
    with pytest.raises(Malformed):
        MultipartReader(stream(b"", 1), content_type)


async def test_a_file_name_is_given_as_sent() -> None:
    headers = ("Content-Disposition: form-data; name=\"video\"; filename*=UTF-8''%C3%9Cber.mp4"
               .encode())
    [(name, filename, _, _)] = await read_all(form((headers, b"x")))
    assert (name, filename) == ("video", "Über.mp4")
