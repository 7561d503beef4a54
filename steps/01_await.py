"""Does `await` give the event loop back? Only when what it awaits is not ready yet.

    .venv/bin/python steps/01_await.py

Each line starts another coroutine (a task that is ready to run at the loop's
next turn), then awaits something, then asks: did the other one get to run
during that await? It does only if the await suspended, i.e. waited for
something that was not there yet. An await on a finished future, on a
coroutine that returns without waiting, or on `read_chunk()` with the bytes
already buffered goes straight on, and the loop runs nothing else meanwhile.

The upload part is the project's own multipart reader (`video_async.multipart.
Reader`), the one the upload route uses, over aiohttp's `StreamReader`, the
class a request body arrives in; here the bytes are fed by hand instead of by
a socket, so which of them are "already there" is certain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader

from video_async.multipart import Part, Reader

HEAD = b'--b\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n\r\n'
TAIL = b"\r\n--b--\r\n"


async def returns_at_once() -> int:
    return 42  # async, but it never waits for anything


async def video_part(*buffers: bytes) -> tuple[Part, StreamReader]:
    """A multipart part with `buffers` already received, and the stream more bytes go to."""
    loop = asyncio.get_running_loop()
    # The one piece of aiohttp's connection machinery kept: a StreamReader needs a
    # protocol, which it asks whether the connection is open (a transport is set)
    # before it waits for more bytes, and asks to pause reading past twice its limit
    # (never reached here). A bare Transport stands for the socket.
    protocol = BaseProtocol(loop)
    protocol.transport = asyncio.Transport()
    stream = StreamReader(protocol, 2**16, loop=loop)
    for data in (HEAD, *buffers):
        stream.feed_data(data)  # one buffer each, as a socket's reads arrive
    reader = Reader(stream, "multipart/form-data; boundary=b")
    part = await reader.next()
    assert part is not None
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
    buffered, _ = await video_part(*[b"x" * 64] * 600, TAIL)  # the whole body is in memory
    late, late_stream = await video_part()  # the part's headers only, so far

    def finished_future() -> asyncio.Future[None]:
        future = loop.create_future()
        future.set_result(None)
        return future

    def unfinished_future() -> asyncio.Future[None]:
        future = loop.create_future()
        loop.call_soon(future.set_result, None)  # done a moment later, not yet
        return future

    async def read_all_buffered() -> None:
        for _ in range(1000):  # every one already in memory
            assert await buffered.read_chunk()

    def read_before_arrival() -> Awaitable[bytes | memoryview]:
        loop.call_soon(late_stream.feed_data, b"x" * 64 + TAIL)  # as a socket delivers them
        return late.read_chunk()

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
