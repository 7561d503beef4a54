"""The route's multipart reader, over real HTTP: delimiters split between the body's
buffers, a preamble and an epilogue, bodies that end too soon, headers that never end.

The split tests send the body chunked, one HTTP chunk per piece: the server's body
stream never hands out the bytes of two chunks as one buffer, so each piece ends
exactly where the test says, whatever TCP does with the writes.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import pytest

from .support.checks import assert_error, assert_nothing_left
from .support.clips import Clips
from .support.internals import HEAD_LIMIT, MIB, Settings
from .support.raw import BOUNDARY, address, chunked, hang_up, open_upload, post_raw, read_answer
from .support.uploading import AppClient

DELIMITER = f"\r\n--{BOUNDARY}".encode()
VIDEO_HEAD = (b'Content-Disposition: form-data; name="video"; filename="a.mp4"\r\n'
              b"Content-Type: video/mp4")


def form(video: bytes, video_head: bytes = VIDEO_HEAD) -> bytes:
    """The body a browser sends: the resolution, then the video, then the closing delimiter."""
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="resolution"\r\n\r\n480'.encode()
            + DELIMITER + b"\r\n" + video_head + b"\r\n\r\n" + video + DELIMITER + b"--\r\n")


def delimiters(body: bytes) -> list[int]:
    """Where each delimiter starts (the first one, at the very start, has no line break)."""
    found, at = [], (b"\r\n" + body).find(DELIMITER)
    while at >= 0:
        found.append(max(at - 2, 0))
        at = (b"\r\n" + body).find(DELIMITER, at + 1)
    return found


def cut(body: bytes, points: set[int]) -> list[bytes]:
    ends = sorted(point for point in points if 0 < point < len(body))
    return [body[start:end] for start, end in zip([0, *ends], [*ends, len(body)])]


async def send_chunked(client: AppClient, pieces: list[bytes]) -> tuple[int, Any]:
    reader, writer = await open_upload(*address(client), chunked(pieces), length=None)
    try:
        async with asyncio.timeout(30):
            return await read_answer(reader)
    finally:
        await hang_up(writer)


async def assert_stored(client: AppClient, settings: Settings, status: int, task: Any,
                        video: bytes) -> None:
    """201, the resolution read, and the file on disk byte for byte what was sent."""
    assert status == 201, task
    assert task["resolution"] == "480"
    assert (settings.layout.uploads_dir / f"{task['id']}.mp4").read_bytes() == video


@pytest.mark.parametrize("split", [1, 2, 10, len(DELIMITER) - 1, "every byte"])
async def test_a_delimiter_split_between_buffers(client: AppClient, clips: Clips, settings: Settings,
                                                 split: int | str) -> None:
    """Every delimiter, and the headers after it, cut at the same place: the split is found."""
    video = clips.small().read_bytes()
    body = form(video)
    starts = delimiters(body)
    assert len(starts) == 3
    if split == "every byte":  # one-byte buffers from just before each delimiter to past its headers
        points = {start + offset for start in starts for offset in range(-3, len(DELIMITER) + 120)}
    else:
        assert isinstance(split, int)
        points = {start + split for start in starts}
    status, task = await send_chunked(client, cut(body, points))
    await assert_stored(client, settings, status, task, video)


async def test_a_file_of_several_batches_arrives_byte_for_byte(client: AppClient, clips: Clips,
                                                               settings: Settings) -> None:
    """The writer gathers the file into 1 MiB batches; pieces of an odd size straddle them."""
    noise = os.urandom(3 * MIB + 12345)  # random: a batch written twice, or out of place, shows
    video = clips.small().read_bytes() + struct.pack(">I", 8 + len(noise)) + b"free" + noise
    body = form(video)
    status, task = await send_chunked(client, cut(body, set(range(0, len(body), 100_003))))
    await assert_stored(client, settings, status, task, video)


async def test_a_delimiter_cut_short_is_data(client: AppClient, clips: Clips, settings: Settings) -> None:
    """Bytes that start like a delimiter at the end of a buffer and then go on otherwise are
    the file's own: held back to be sure, then handed on."""
    almost = DELIMITER[:-1] + b"X"  # all but the delimiter's last byte
    # at the end of the file, in a box MP4 readers skip ('free'), so ffmpeg still reads it
    padding = b"x" * 100 + almost + b"y" * 100
    video = clips.small().read_bytes() + struct.pack(">I", 8 + len(padding)) + b"free" + padding
    body = form(video)
    at = body.index(almost)
    status, task = await send_chunked(client, cut(body, {at + len(almost) - 1}))
    await assert_stored(client, settings, status, task, video)


async def test_preamble_and_epilogue_are_ignored(client: AppClient, clips: Clips,
                                                 settings: Settings) -> None:
    """RFC 2046 allows text before the first delimiter and after the closing one."""
    video = clips.small().read_bytes()
    preamble = f"This is a preamble. --{BOUNDARY[:-1]}\r\n-- not yet\r\n".encode()
    epilogue = (f"This is the epilogue.\r\n--{BOUNDARY}\r\n".encode()
                + b'Content-Disposition: form-data; name="video"; filename="b.mp4"\r\n\r\nnot read\r\n')
    response = await post_raw(client, preamble + b"\r\n" + form(video) + epilogue)
    await assert_stored(client, settings, response.status, await response.json(), video)


@pytest.mark.parametrize("where", ["in the file", "in the closing delimiter",
                                   "after a delimiter line", "in a part's headers"])
async def test_a_body_without_its_closing_delimiter(client: AppClient, clips: Clips,
                                                    settings: Settings, where: str) -> None:
    body = form(clips.small().read_bytes())
    last = delimiters(body)[-1]
    ends = {"in the file": last - 10,
            "in the closing delimiter": last + len(DELIMITER) - 3,
            "after a delimiter line": last + len(DELIMITER)}
    if where == "in a part's headers":
        truncated = body[: body.index(b"Content-Type: video/mp4")]
    elif where == "after a delimiter line":
        truncated = body[:ends[where]] + b"\r\n"
    else:
        truncated = body[:ends[where]]
    await assert_error(await post_raw(client, truncated), 400, "bad_multipart")
    await assert_nothing_left(client, settings)


async def test_part_headers_up_to_the_limit(client: AppClient, clips: Clips, settings: Settings) -> None:
    video = clips.small().read_bytes()
    padding = b"\r\nX-Padding: " + b"p" * (HEAD_LIMIT - 200 - len(VIDEO_HEAD))
    response = await post_raw(client, form(video, VIDEO_HEAD + padding))
    await assert_stored(client, settings, response.status, await response.json(), video)


async def test_part_headers_over_the_limit(client: AppClient, clips: Clips, settings: Settings) -> None:
    padding = b"\r\nX-Padding: " + b"p" * HEAD_LIMIT
    response = await post_raw(client, form(clips.small().read_bytes(), VIDEO_HEAD + padding))
    await assert_error(response, 400, "bad_multipart")
    await assert_nothing_left(client, settings)


@pytest.mark.parametrize("start", [
    f"--{BOUNDARY}\r\n".encode() + VIDEO_HEAD + b"\r\nX-Padding: ",  # headers with no end
    b"A preamble that goes on: ",  # and never reaches a delimiter
])
async def test_endless_headers_are_refused_before_the_body_ends(client: AppClient, settings: Settings,
                                                                start: bytes) -> None:
    """The server answers 400 while the body still comes: it does not wait for a blank line
    (or a delimiter) that never arrives, holding what it read meanwhile."""
    reader, writer = await open_upload(*address(client), chunked([start])[:-5], length=None)
    try:
        for _ in range(2 * HEAD_LIMIT // 1024):
            writer.write(chunked([b"p" * 1024])[:-5])  # the last chunk's "0" never sent
        await writer.drain()
        async with asyncio.timeout(30):
            status, answer = await read_answer(reader)
    finally:
        await hang_up(writer)
    assert (status, answer["error"]["code"]) == (400, "bad_multipart")
    await assert_nothing_left(client, settings)


@pytest.mark.parametrize("header", [b"X-Note: a\x00b", b"X-Note: a\rb", b"X-Note: a\nb",
                                    b"X-Note: a\x7fb", b"X Note: ab", b"no colon", b" X-Note: folded"])
async def test_invalid_part_header(client: AppClient, clips: Clips, settings: Settings,
                                   header: bytes) -> None:
    body = form(clips.small().read_bytes(), VIDEO_HEAD + b"\r\n" + header)
    await assert_error(await post_raw(client, body), 400, "bad_multipart")
    await assert_nothing_left(client, settings)
