"""The load of the "many slow uploads" item: N uploads paced like ordinary links.

Each upload is one HTTP/1.1 connection written by hand (asyncio streams, no
client library), so the client stays cheap at a thousand connections: a
multipart body, the resolution field first, then the clip, sent in small
pieces at RATE bytes per second. The uploads start evenly over SPREAD seconds.
The process runs niced, like item 2's uploader, so the figures show the
server's behaviour, not the client's.

    python -m bench.slow_client HOST PORT FILE COUNT RATE SPREAD

Prints one JSON line at the end: for each upload its status, when its last
byte went out and when its answer came (seconds since the first upload began).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
import uuid
from pathlib import Path

PIECE = 32 * 1024  # what one send carries: a link delivers a paced stream in small pieces
ANSWER_TIMEOUT = 120.0  # for the answer after the last byte: a stuck server ends the run


def raise_open_files() -> None:
    """A thousand connections need more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def multipart(video: bytes, name: str) -> tuple[bytes, bytes, bytes]:
    """(the headers' boundary parameter, what comes before the file, what comes after it)."""
    boundary = uuid.uuid4().hex.encode()
    head = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="resolution"\r\n\r\n480\r\n'
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="video"; filename="'
            + name.encode() + b'"\r\nContent-Type: video/mp4\r\n\r\n')
    tail = b"\r\n--" + boundary + b"--\r\n"
    return boundary, head, tail


async def one_upload(host: str, port: int, video: bytes, name: str, rate: float,
                     began: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    boundary, head, tail = multipart(video, name)
    body_length = len(head) + len(video) + len(tail)
    record: dict[str, object] = {"start": loop.time() - began}
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return {**record, "status": f"connect: {exc.__class__.__name__}"}
    try:
        writer.write(b"POST /videos/upload HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                     b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
                     b"Content-Length: " + str(body_length).encode() + b"\r\n"
                     b"Connection: close\r\n\r\n" + head)
        started, sent = loop.time(), 0
        view = memoryview(video)
        while sent < len(video):
            piece = view[sent: sent + PIECE]
            writer.write(piece)
            sent += len(piece)
            await writer.drain()
            ahead = started + sent / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing, not a synchronisation
        writer.write(tail)
        await writer.drain()
        record["last_byte"] = loop.time() - began
        async with asyncio.timeout(ANSWER_TIMEOUT):
            status_line = await reader.readline()
        record["answer"] = loop.time() - began
        parts = status_line.split()
        record["status"] = int(parts[1]) if len(parts) > 1 else "no answer"
    except (OSError, TimeoutError) as exc:
        record["status"] = f"{exc.__class__.__name__}"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return record


async def main(host: str, port: int, path: Path, count: int, rate: float, spread: float) -> None:
    video = path.read_bytes()  # before the clock starts: the client holds one copy for all
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def delayed(index: int) -> dict[str, object]:
        await asyncio.sleep(spread * index / count)  # the uploads start evenly over `spread`
        return await one_upload(host, port, video, f"clip-{index}.mp4", rate, began)

    records = await asyncio.gather(*(delayed(index) for index in range(count)))
    print(json.dumps({"uploads": records, "seconds": loop.time() - began,
                      "wall_clock_end": time.time()}), flush=True)


if __name__ == "__main__":
    os.nice(19)
    raise_open_files()
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]),
                     float(sys.argv[5]), float(sys.argv[6])))
