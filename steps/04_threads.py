"""Step 4: the fix, with threads. The same waits, off the loop.

    .venv/bin/python steps/04_threads.py               # 16 MiB per variant
    .venv/bin/python steps/04_threads.py --fsync       # with a real fsync per chunk

Step 3's server and measurements (this file imports them), with one line
changed: the handler awaits `asyncio.to_thread(how, out, chunk)` instead of
calling `how(out, chunk)`. The write, and the wait behind it, now happen in a
thread of the default pool; the loop hands it over, suspends the handler, and
runs pings and other uploads until the thread is done.

What you will see: the same 5 ms waits per chunk, and the lag and the pings
back near the "write" row of step 3. The upload itself is no faster: one
upload's chunks still wait one after the other. What threads bought is that
nobody else waits with it.

One way to break it: in `in_a_thread`, call `how(out, chunk)` without
`asyncio.to_thread`. The function is still `async`, the handler still awaits
it, and the lag is step 3's again: `async def` moves nothing off the loop.

`--cpu` adds a row whose thread hashes each chunk 50 times: CPU work, not a
wait. hashlib lets go of the GIL while it hashes a large buffer, so the loop
keeps running; Python code that holds the GIL would take turns with it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
step3 = importlib.import_module("03_block")  # the server and the measurements of step 3
Write = Callable[[BinaryIO, bytes], None]  # as in step 3
Store = Callable[[Write, BinaryIO, bytes], Awaitable[None]]


async def in_a_thread(how: Write, out: BinaryIO, chunk: bytes) -> None:
    await asyncio.to_thread(how, out, chunk)  # the loop runs others meanwhile


def write_and_hash(out: BinaryIO, chunk: bytes) -> None:
    out.write(chunk)
    for _ in range(50):
        hashlib.sha256(chunk).digest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=16, help="MiB per upload (default: %(default)s)")
    parser.add_argument("--fsync", action="store_true", help="add rows with a real fsync per chunk")
    parser.add_argument("--cpu", action="store_true", help="add a row that hashes in the thread")
    args = parser.parse_args()
    rows: list[tuple[str, Write, Store]] = [
        ("on the loop: write + 5 ms wait", step3.write_and_wait, step3.on_the_loop),
        ("in a thread: write + 5 ms wait", step3.write_and_wait, in_a_thread)]
    if args.fsync:
        rows += [("on the loop: write + fsync", step3.write_and_fsync, step3.on_the_loop),
                 ("in a thread: write + fsync", step3.write_and_fsync, in_a_thread)]
    if args.cpu:
        rows.append(("in a thread: write + 50 hashes", write_and_hash, in_a_thread))
    step3.table(rows, args.mb * step3.MIB)


if __name__ == "__main__":
    main()
