"""Acknowledged means on disk: the upload's data and its name are flushed before the 201 goes out.

The probe is the operating system's own flush calls: os.fsync and os.fdatasync
are wrapped so each call is recorded (which file, how big it was, what a
directory held) and then made for real. The app marks the moment its answer
is prepared through aiohttp's on_response_prepare signal. Both land in one
list, in the order they happened.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from .support.clips import Clips
from .support.internals import (BATCH_SIZE, Settings, create_app, receive, rename_durably,
                                 replace_file)
from .support.tus import created, patch
from .support.uploading import upload_ok
from .support.waiting import wait_until


def recording(events: list[dict[str, Any]], name: str,
              flush: Callable[[int], None]) -> Callable[[int], None]:
    def flush_and_record(fd: int) -> None:
        info = os.fstat(fd)
        event: dict[str, Any] = {"call": name, "inode": info.st_ino, "size": info.st_size}
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            event["entries"] = set(os.listdir(fd))
        flush(fd)
        events.append(event)  # after the call: the flush is done when it is recorded
    return flush_and_record


async def test_upload_is_flushed_before_the_answer(aiohttp_client: Any, settings: Settings,
                                                   clips: Clips, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(os, "fsync", recording(events, "fsync", os.fsync))
    monkeypatch.setattr(os, "fdatasync", recording(events, "fdatasync", os.fdatasync))
    app = create_app(settings)

    async def answered(request: web.Request, response: web.StreamResponse) -> None:
        if request.path == "/videos/upload":
            events.append({"call": "answer", "status": response.status})

    app.on_response_prepare.append(answered)
    client = await aiohttp_client(app)
    clip = clips.small()

    task = await upload_ok(client, clip)

    stored = settings.layout.uploads_dir / f"{task['id']}.mp4"
    answer = next(n for n, event in enumerate(events) if event["call"] == "answer")
    assert events[answer]["status"] == 201
    before = events[:answer]
    # the file's own data, all of it, flushed before the answer
    file_inode = stored.stat().st_ino
    assert any(event["inode"] == file_inode and event["size"] == clip.stat().st_size
               for event in before), f"no flush of the upload before the 201: {before}"
    # and the directory, holding the file under its final name
    folder_inode = settings.layout.uploads_dir.stat().st_ino
    assert any(event["inode"] == folder_inode and stored.name in event.get("entries", ())
               for event in before), f"no flush of the uploads folder before the 201: {before}"


async def test_a_receive_cancelled_twice_still_closes_its_file(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled once (the client went away), then again while it waits for its last
    write (the server shutting down): the file is closed all the same."""
    path = tmp_path / "upload.partial"
    arrived = asyncio.Event()
    # The last write's flush waits until the test lets it go, so the second cancel
    # lands while the clean-up is still waiting for it, however fast the machine.
    flush_may_go = threading.Event()
    real_fdatasync = os.fdatasync

    def held_fdatasync(fd: int) -> None:
        flush_may_go.wait(30)
        real_fdatasync(fd)
    monkeypatch.setattr(os, "fdatasync", held_fdatasync)

    async def chunks() -> AsyncIterator[bytes]:
        yield bytes(BATCH_SIZE + 1000)  # a whole batch, handed to a thread, and a bit more
        arrived.set()
        await asyncio.Event().wait()  # then nothing, until cancelled

    def open_on_path() -> bool:
        return any(os.path.realpath(f"/proc/self/fd/{fd}") == str(path)
                   for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}"))

    receiving = asyncio.ensure_future(receive(chunks(), path, limit=10 * BATCH_SIZE))
    await asyncio.wait_for(arrived.wait(), 10)
    assert open_on_path()
    receiving.cancel()
    await asyncio.sleep(0)  # one step: the task is now in its clean-up, waiting for a thread
    assert not receiving.done()
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    flush_may_go.set()

    async def closed() -> bool:
        return not open_on_path()
    await wait_until(closed, 10, "the upload's file to be closed")
    assert path.stat().st_size == BATCH_SIZE + 1000  # and every byte received written


async def test_resumable_upload_is_flushed_before_each_answer(
        aiohttp_client: Any, settings: Settings, clips: Clips,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A tus upload: its two names are on disk before the 201 (else a power cut could take
    an acknowledged upload, or its offset, back to nothing), and its bytes before the 204."""
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(os, "fsync", recording(events, "fsync", os.fsync))
    monkeypatch.setattr(os, "fdatasync", recording(events, "fdatasync", os.fdatasync))
    app = create_app(settings)

    async def answered(request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/files"):
            events.append({"call": "answer", "method": request.method, "status": response.status})

    app.on_response_prepare.append(answered)
    client = await aiohttp_client(app)
    data = clips.small().read_bytes()
    cut = len(data) // 2

    url = await created(client, len(data))
    upload_id = url.rsplit("/", 1)[-1]
    data_file = settings.layout.resumable(upload_id)
    folder_inode = settings.layout.uploads_dir.stat().st_ino
    first = await patch(client, url, 0, data[:cut])
    assert first.status == 204

    answers = [n for n, event in enumerate(events) if event["call"] == "answer"]
    assert [events[n]["status"] for n in answers] == [201, 204]
    before_201, before_204 = events[:answers[0]], events[:answers[1]]
    names = {data_file.name, settings.layout.resumable_info(upload_id).name}
    assert any(event["inode"] == folder_inode and names <= event.get("entries", set())
               for event in before_201), f"no flush of both names before the 201: {before_201}"
    assert any(event.get("inode") == data_file.stat().st_ino and event["size"] == cut
               for event in before_204), f"no flush of the bytes before the 204: {before_204}"


# -- the one way to write a file durably (durable.py), alone -------------------------------

def flushes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(os, "fsync", recording(events, "fsync", os.fsync))
    monkeypatch.setattr(os, "fdatasync", recording(events, "fdatasync", os.fdatasync))
    return events


@pytest.mark.unit
def test_a_file_is_replaced_whole_its_bytes_flushed_before_its_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "tasks.json"
    target.write_bytes(b"the old list")
    events = flushes(monkeypatch)

    replace_file(target, b"the new, longer list")

    assert target.read_bytes() == b"the new, longer list"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tasks.json"]  # no partial left
    inode, folder = target.stat().st_ino, tmp_path.stat().st_ino
    data = next(n for n, event in enumerate(events)
                if event["inode"] == inode and event["size"] == len(b"the new, longer list"))
    name = next(n for n, event in enumerate(events)
                if event["inode"] == folder and event.get("entries") == {"tasks.json"})
    assert data < name  # the bytes are on disk before the name that points at them


@pytest.mark.unit
def test_a_failed_write_leaves_the_old_file_and_no_partial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "resumable-ended.json"
    target.write_bytes(b"{}")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)

    with pytest.raises(OSError, match="No space left"):
        replace_file(target, b'{"an id": 1.0}', tmp_path / "its.partial")
    assert target.read_bytes() == b"{}"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["resumable-ended.json"]


@pytest.mark.unit
def test_a_rename_is_flushed_with_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "upload.partial").write_bytes(b"video")
    events = flushes(monkeypatch)

    rename_durably(tmp_path / "upload.partial", tmp_path / "upload.mp4")

    assert (tmp_path / "upload.mp4").read_bytes() == b"video"
    folder = tmp_path.stat().st_ino
    assert [event.get("entries") for event in events if event["inode"] == folder] == [{"upload.mp4"}]
