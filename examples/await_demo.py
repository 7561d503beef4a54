"""Does `await` give the event loop back? Only when what it awaits is not ready yet.

    .venv/bin/python examples/await_demo.py

Each line starts another coroutine (a task that is ready to run at the loop's
next turn), then awaits something, then asks: did the other one get to run
during that await? It does only if the await suspended, i.e. waited for
something that was not there yet. An await on a finished future, on a
coroutine that returns without waiting, or on `read_chunk()` with the bytes
already buffered goes straight on, and the loop runs nothing else meanwhile.

The upload part is aiohttp's own multipart reader, the one the upload route
uses, over the stream class a request body arrives in; here the bytes are fed
by hand instead of by a socket, so which of them are "already there" is certain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import BodyPartReader, MultipartReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader

HEAD = b'--b\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n\r\n'
TAIL = b"\r\n--b--\r\n"


async def returns_at_once() -> int:
    return 42  # async, but it never waits for anything


async def video_part(body: bytes) -> tuple[BodyPartReader, StreamReader]:
    """A multipart part with `body` already buffered, and the stream more bytes go to."""
    loop = asyncio.get_running_loop()
    protocol = BaseProtocol(loop)
    # stands for the socket: the reader only asks whether there is one
    protocol.transport = asyncio.Transport()
    stream = StreamReader(protocol, 2**16, loop=loop)
    stream.feed_data(HEAD + body)
    reader = MultipartReader({"Content-Type": "multipart/form-data; boundary=b"}, stream)
    part = await reader.next()
    assert isinstance(part, BodyPartReader)
    return part, stream


async def did_others_run(label: str, wait: Callable[[], Awaitable[object]]) -> None:
    ran = False

    async def other() -> None:
        nonlocal ran
        ran = True

    other_task = asyncio.create_task(other())  # ready: runs at the loop's next turn
    await wait()
    print(f"{label:<60}{'yes' if ran else 'no'}")
    await other_task


async def main() -> None:
    loop = asyncio.get_running_loop()
    buffered, stream = await video_part(b"x" * 64_000)
    stream.feed_data(TAIL)  # the whole body is in memory
    late, late_stream = await video_part(b"")  # the part's headers only, so far

    def finished_future() -> asyncio.Future[None]:
        future = loop.create_future()
        future.set_result(None)
        return future

    def unfinished_future() -> asyncio.Future[None]:
        future = loop.create_future()
        loop.call_soon(future.set_result, None)  # done a moment later, not yet
        return future

    async def read_all_buffered() -> None:
        while await buffered.read_chunk(64):  # 1,000 chunks, every one already in memory
            pass

    def read_before_arrival() -> Awaitable[bytes]:
        loop.call_soon(late_stream.feed_data, b"x" * 64 + TAIL)  # as a socket delivers them
        return late.read_chunk(64)

    print(f"{'the await':<60}did another coroutine run meanwhile?")
    await did_others_run("await a future that already has its result", finished_future)
    await did_others_run("await returns_at_once()  (never waits inside)", returns_at_once)
    await did_others_run("1,000 x await part.read_chunk(), bytes already buffered",
                         read_all_buffered)
    await did_others_run("await a future that gets its result later", unfinished_future)
    await did_others_run("await part.read_chunk(), bytes not there yet", read_before_arrival)
    await did_others_run("await asyncio.sleep(0)  (suspends on purpose)", lambda: asyncio.sleep(0))


if __name__ == "__main__":
    asyncio.run(main())
