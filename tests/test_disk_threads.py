"""The threads that write for every upload: what one turn of the loop gives them goes as
one list, a call the loop waits for goes at once, and nothing waits on a job given
after it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from .support.internals import DiskThreads

pytestmark = pytest.mark.unit


async def test_one_turn_of_the_loop_is_one_hand_over() -> None:
    disk = DiskThreads(4)
    ran_on: list[int] = []
    jobs = [disk.submit(lambda: ran_on.append(threading.get_ident())) for _ in range(50)]
    assert not any(job.done for job in jobs)  # nothing is handed over before the turn ends
    for job in jobs:
        await job.wait()
    assert len(ran_on) == 50 and len(set(ran_on)) == 1  # one list, so one thread, in order


async def test_a_waited_call_goes_at_once_after_what_was_gathered() -> None:
    disk = DiskThreads(2)
    order: list[str] = []
    gathered = disk.submit(order.append, "gathered")
    assert await disk.run(lambda: order.append("waited") or "result") == "result"
    assert gathered.done and order == ["gathered", "waited"]


async def test_an_error_is_raised_where_the_job_is_waited_for() -> None:
    disk = DiskThreads(1)

    def fails() -> None:
        raise OSError(28, "No space left on device")
    job = disk.submit(fails)
    with pytest.raises(OSError, match="No space left"):
        await job.wait()


async def test_a_cancelled_wait_leaves_the_call_running() -> None:
    disk = DiskThreads(1)
    release = threading.Event()
    job = disk.submit(release.wait, 10)
    waiting = asyncio.ensure_future(job.wait())
    await asyncio.sleep(0)  # one step, so that the wait has begun
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not job.done
    release.set()
    assert await asyncio.wait_for(job.wait(), 10) is True  # it went on, and ended
