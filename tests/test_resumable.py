"""Resumable uploads (tus 1.0.0 under /files/): a real third-party client, each status of the
protocol, bytes kept when a client goes away, termination, expiry, the method override,
CORS, and a server killed with SIGKILL mid-PATCH."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import shutil
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp
import pytest
from tusclient.client import TusClient
from tusclient.storage.filestorage import FileStorage

from .support.checks import assert_error, files_in
from .support.clips import Clips, pad_to
from .support.internals import MAX_METADATA, MIB, ApiError, Settings, read_tus_metadata
from .support.raw import PART_HEAD, address, hang_up, open_upload
from .support.servers import MakeClient, start_server
from .support.tus import (OFFSET_STREAM, TUS, Trickle, answer_or_hang_up, create, created, head,
                          metadata, offset_of, patch, raw_patch_cut)
from .support.uploading import (AppClient, Http, download, get_json, uploads_in_progress,
                                wait_for_state)
from .support.waiting import wait_until

REACT = "http://localhost:3000"


class KeptOpen(io.BytesIO):
    """A file's bytes that stay readable when closed: tuspy closes the stream it is given
    after taking its fingerprint, then reads it again."""

    def close(self) -> None:
        pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tus_files(settings_or_dir: Settings | Path) -> list[str]:
    folder = (settings_or_dir.layout.uploads_dir if isinstance(settings_or_dir, Settings)
              else settings_or_dir / "uploads")
    return [name for name in files_in(folder) if ".tus" in name]


async def unfinished(http: Http) -> dict[str, int]:
    counted: dict[str, int] = (await get_json(http, "/healthz"))["unfinished_uploads"]
    return counted


# -- a real client ---------------------------------------------------------------------------

async def test_tuspy_stops_part_way_and_a_new_client_resumes(
        client: AppClient, settings: Settings, clips: Clips, tmp_path: Path) -> None:
    clip = pad_to(clips.small(), tmp_path / "holiday.mp4", 13 * MIB)
    storage_file = tmp_path / "tus-urls.json"
    endpoint = str(client.make_url("/files"))

    # A stream of our own, not a path: given a path, tuspy opens it anew for each chunk
    # and leaves each one open.
    def first_client() -> str:
        storage = FileStorage(str(storage_file))  # type: ignore[no-untyped-call]
        try:
            with KeptOpen(clip.read_bytes()) as stream:
                uploader = TusClient(endpoint).uploader(
                    file_stream=stream, chunk_size=5 * MIB, store_url=True, url_storage=storage,
                    metadata={"filename": clip.name, "resolution": "480"})
                uploader.upload(stop_at=6 * MIB)  # 5 MiB, then 1 MiB, then it stops
                return str(uploader.url)
        finally:
            storage.close()  # type: ignore[no-untyped-call]

    def second_client() -> int:
        storage = FileStorage(str(storage_file))  # type: ignore[no-untyped-call]
        try:
            with KeptOpen(clip.read_bytes()) as stream:
                uploader = TusClient(endpoint).uploader(  # finds its URL in the storage, asks HEAD
                    file_stream=stream, chunk_size=5 * MIB, store_url=True, url_storage=storage)
                resumed_at = uploader.offset
                uploader.upload()
                return int(resumed_at)
        finally:
            storage.close()  # type: ignore[no-untyped-call]

    # tuspy is a blocking client: in a thread, so this loop goes on serving it
    url = await asyncio.to_thread(first_client)
    path = "/" + url.split("/", 3)[3]
    assert await offset_of(client, path) == 6 * MIB
    assert await unfinished(client) == {"count": 1, "bytes": 6 * MIB, "text": "1 (6 MiB)"}
    resumed_at = await asyncio.to_thread(second_client)
    assert resumed_at == 6 * MIB  # it went on from the server's offset, not from zero

    task_id = path.rsplit("/", 1)[-1]
    source = settings.layout.source(task_id, ".mp4")
    assert sha256(source.read_bytes()) == sha256(clip.read_bytes())
    done = await wait_for_state(client, task_id, "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    assert done["filename"] == "holiday.mp4" and done["resolution"] == "480"
    assert tus_files(settings) == []
    assert (await unfinished(client))["count"] == 0


async def test_tuspy_with_the_endpoint_written_with_a_slash(client: AppClient, settings: Settings,
                                                             clips: Clips) -> None:
    """As tusd's and the tus Node server's examples write it: /files/."""
    data = clips.small().read_bytes()
    endpoint = str(client.make_url("/files/"))

    def upload() -> str:
        with KeptOpen(data) as stream:
            uploader = TusClient(endpoint).uploader(
                file_stream=stream, chunk_size=MIB, metadata={"filename": "slash.mp4",
                                                              "resolution": "480"})
            uploader.upload()
            return str(uploader.url)

    url = await asyncio.to_thread(upload)
    task_id = url.rsplit("/", 1)[-1]
    assert url == str(client.make_url(f"/files/{task_id}"))
    task = await get_json(client, f"/tasks/{task_id}")
    assert (task["filename"], task["resolution"], task["size"]) == ("slash.mp4", "480", len(data))
    assert settings.layout.source(task_id, ".mp4").read_bytes() == data


# -- the protocol, request by request ---------------------------------------------------------

@pytest.mark.parametrize("endpoint", ["/files", "/files/"])
async def test_options_says_what_the_server_speaks(client: AppClient, settings: Settings,
                                                   endpoint: str) -> None:
    response = await client.options(endpoint)
    assert response.status == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {
        "creation", "creation-with-upload", "termination", "expiration"}
    assert int(response.headers["Tus-Max-Size"]) == settings.max_upload_bytes


async def test_create_head_patch_to_a_queued_task(client: AppClient, settings: Settings,
                                                  clips: Clips) -> None:
    data = clips.small().read_bytes()
    response = await create(client, len(data), "beach.mp4", "720")
    assert response.status == 201
    assert response.headers["Tus-Resumable"] == "1.0.0"
    url = response.headers["Location"]
    expires = parsedate_to_datetime(response.headers["Upload-Expires"])  # an HTTP date
    assert abs(expires.timestamp() - (time.time() + settings.upload_expiry)) < 60

    first = await patch(client, url, 0, data[:1000])
    assert first.status == 204 and first.headers["Upload-Offset"] == "1000"
    assert first.headers["Tus-Resumable"] == "1.0.0" and "Upload-Expires" in first.headers
    state = await head(client, url)
    assert state.status == 200
    assert state.headers["Upload-Offset"] == "1000"
    assert state.headers["Upload-Length"] == str(len(data))
    assert state.headers["Cache-Control"] == "no-store"
    assert state.headers["Upload-Metadata"] == metadata(filename="beach.mp4", resolution="720")
    assert await unfinished(client) == {"count": 1, "bytes": 1000, "text": "1 (1000 bytes)"}
    assert (await client.get(f"/tasks/{url.rsplit('/', 1)[-1]}")).status == 404  # not yet

    last = await patch(client, url, 1000, data[1000:])
    assert last.status == 204 and last.headers["Upload-Offset"] == str(len(data))
    task_id = url.rsplit("/", 1)[-1]  # the upload's id is its task's
    task = await get_json(client, f"/tasks/{task_id}")
    assert task["filename"] == "beach.mp4" and task["resolution"] == "720"
    assert task["size"] == len(data) and task["media"] is not None
    assert files_in(settings.layout.uploads_dir) == [f"{task_id}.mp4"]
    assert await unfinished(client) == {"count": 0, "bytes": 0, "text": "0"}
    done = await wait_for_state(client, task_id, "COMPLETED")
    assert done["error"] is None
    # finished, while its task exists: complete, so a client whose last answer was lost
    # concludes it is done instead of uploading it again
    state = await head(client, url)
    assert state.status == 200
    assert state.headers["Upload-Offset"] == state.headers["Upload-Length"] == str(len(data))
    nothing_left = await patch(client, url, len(data), b"")
    assert nothing_left.status == 204 and nothing_left.headers["Upload-Offset"] == str(len(data))
    again = await patch(client, url, 1000, data[1000:])
    await assert_error(again, 409, "offset_mismatch")
    assert again.headers["Upload-Offset"] == str(len(data))
    assert len(await get_json(client, "/tasks")) == 1
    assert (await client.delete(f"/tasks/{task_id}")).status in (200, 204)
    assert (await head(client, url)).status == 404  # its task gone: so is the upload


async def test_create_head_patch_from_the_endpoint_with_a_slash(client: AppClient, settings: Settings,
                                                                 clips: Clips) -> None:
    data = clips.small().read_bytes()
    response = await create(client, len(data), "slash.mp4", "480", endpoint="/files/")
    assert response.status == 201, await response.text()
    url = response.headers["Location"]
    assert url.startswith("/files/") and response.headers["Tus-Resumable"] == "1.0.0"
    listed = await get_json(client, "/files/")
    assert [upload["url"] for upload in listed] == [url]
    assert await offset_of(client, url) == 0
    assert (await patch(client, url, 0, data[:1000])).status == 204
    assert await offset_of(client, url) == 1000
    last = await patch(client, url, 1000, data[1000:])
    assert last.status == 204 and last.headers["Upload-Offset"] == str(len(data))
    task = await get_json(client, f"/tasks/{url.rsplit('/', 1)[-1]}")
    assert (task["filename"], task["resolution"], task["size"]) == ("slash.mp4", "480", len(data))


async def test_creation_with_upload(client: AppClient, settings: Settings, clips: Clips) -> None:
    data = clips.small().read_bytes()
    response = await client.post("/files", data=data[:5000], headers={
        **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": metadata(filename="a.mp4"),
        "Content-Type": OFFSET_STREAM})
    assert response.status == 201, await response.text()
    assert response.headers["Upload-Offset"] == "5000"
    url = response.headers["Location"]
    assert await offset_of(client, url) == 5000
    assert (await patch(client, url, 5000, data[5000:])).status == 204
    task = await get_json(client, f"/tasks/{url.rsplit('/', 1)[-1]}")
    assert task["resolution"] == "720"  # the default, as the multipart route's
    assert settings.layout.source(task["id"], ".mp4").read_bytes() == data


async def test_another_protocol_version_is_412(client: AppClient, settings: Settings) -> None:
    url = await created(client, 100)
    for method, path in (("POST", "/files"), ("HEAD", url), ("PATCH", url), ("DELETE", url)):
        for version in ("0.2.2", None):
            headers = {"Upload-Length": "100", "Upload-Offset": "0", "Content-Type": OFFSET_STREAM}
            if version:
                headers["Tus-Resumable"] = version
            response = await client.request(method, path, headers=headers, data=b"x" * 10)
            assert response.status == 412, (method, version)
            assert response.headers["Tus-Version"] == "1.0.0"
            assert response.headers["Tus-Resumable"] == "1.0.0"
    assert await offset_of(client, url) == 0  # nothing was done
    assert len(tus_files(settings)) == 2  # the one upload's sidecar and its empty bytes' file


@pytest.mark.unit
def test_upload_metadata_is_read_as_the_protocol_writes_it() -> None:
    assert read_tus_metadata("") == {}
    assert read_tus_metadata(metadata(filename="été.mp4", resolution="480") + ",is_draft") == {
        "filename": "été.mp4", "resolution": "480", "is_draft": ""}  # a value may be left out
    for bad in ("filename a.mp4!", "filename YQ==,filename Yg==", "name " + "YQ" * MAX_METADATA,
                "filename " + base64.b64encode(b"\xff").decode()):
        with pytest.raises(ApiError) as refused:
            read_tus_metadata(bad)
        assert refused.value.status == 400 and b"bad_metadata" in (refused.value.body or b"")


async def test_creation_refusals_store_nothing(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(max_upload_bytes=10 * MIB)
    await assert_error(await create(client, 10 * MIB + 1), 413, "too_large")
    await assert_error(await create(client, 1000, "notes.txt"), 415, "unsupported_type")
    await assert_error(await create(client, 1000, resolution="4k"), 400, "bad_resolution")
    await assert_error(await create(client, 0), 415, "empty_file")
    no_name = await client.post("/files", headers={**TUS, "Upload-Length": "10"})
    await assert_error(no_name, 400, "no_filename")
    not_base64 = await client.post("/files", headers={
        **TUS, "Upload-Length": "10", "Upload-Metadata": "filename a.mp4!"})
    await assert_error(not_base64, 400, "bad_metadata")
    no_length = await client.post("/files", headers={**TUS, "Upload-Metadata": metadata(filename="a.mp4")})
    await assert_error(no_length, 400, "bad_header")
    assert files_in(settings.layout.uploads_dir) == []
    assert (await unfinished(client))["count"] == 0


async def test_patch_refusals(client: AppClient, settings: Settings, clips: Clips) -> None:
    data = clips.small().read_bytes()
    url = await created(client, len(data))
    wrong_type = await client.patch(url, data=data[:100], headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/octet-stream"})
    await assert_error(wrong_type, 415, "not_offset_stream")
    assert (await patch(client, url, 0, data[:100])).status == 204
    conflict = await patch(client, url, 50, data[50:200])
    await assert_error(conflict, 409, "offset_mismatch")
    assert conflict.headers["Upload-Offset"] == "100"
    await assert_error(await patch(client, url, 100, data[100:] + b"more"), 413, "past_length")
    assert await offset_of(client, url) == 100  # none of them stored a byte
    await assert_error(await patch(client, "/files/" + "0" * 32, 0, b"x"), 404, "not_found")
    assert (await head(client, "/files/nonsense")).status == 404


async def test_not_enough_disk_is_507_and_unfinished_uploads_keep_their_room(
        make_client: MakeClient, settings: Settings) -> None:
    free = shutil.disk_usage(settings.data_dir.parent).free
    # Sizes are declared, never written: each of two uploads 40 % of the free space, with
    # 30 % kept free. One fits; the second does not while the first still has its room.
    client = await make_client(max_upload_bytes=free, min_free_bytes=free * 3 // 10)
    length = free * 4 // 10
    first = await created(client, length)
    await assert_error(await create(client, length), 507, "disk_full")
    assert len(tus_files(settings)) == 2  # the first upload's two files, nothing of the second
    assert (await client.delete(first, headers=TUS)).status == 204  # its room goes back
    await created(client, length)


async def test_hang_up_mid_patch_keeps_every_byte_received(client: AppClient, settings: Settings,
                                                          clips: Clips, tmp_path: Path) -> None:
    data = pad_to(clips.small(), tmp_path / "a.mp4", 3 * MIB + 12345).read_bytes()
    url = await created(client, len(data))
    cut = 2 * MIB + 777  # not a whole number of the server's write batches
    stored = settings.layout.resumable(url.rsplit("/", 1)[-1])

    async def handled() -> None:  # the server is reading the body: 2 MiB are on disk
        async def reading() -> bool:
            return stored.stat().st_size >= 2 * MIB
        await wait_until(reading, 10, "the server to write the first 2 MiB")
    await raw_patch_cut(*address(client), url, 0, data[:cut], announced=len(data), handled=handled)

    async def stopped_receiving() -> bool:
        return await uploads_in_progress(client, 0)
    await wait_until(stopped_receiving, 10, "the server to notice the hang-up")
    # Every byte the server had read is kept. Usually that is all of them; bytes still
    # in aiohttp's buffer when the hang-up arrives are dropped by aiohttp, unread (the
    # partial batch is checked exactly by the silent-PATCH test).
    kept = await offset_of(client, url)
    assert 2 * MIB <= kept <= cut
    assert (await unfinished(client))["bytes"] == kept
    assert stored.read_bytes() == data[:kept]
    assert (await patch(client, url, kept, data[kept:])).status == 204
    task_id = url.rsplit("/", 1)[-1]
    assert settings.layout.source(task_id, ".mp4").read_bytes() == data


async def test_a_new_request_takes_over_from_a_stalled_patch(client: AppClient, clips: Clips,
                                                           tmp_path: Path) -> None:
    """A client that lost its connection asks HEAD while the server still waits on the
    old PATCH: the old one is stopped, and HEAD reports every byte it had received."""
    data = pad_to(clips.small(), tmp_path / "a.mp4", 4 * MIB).read_bytes()
    url = await created(client, len(data))
    trickle = Trickle(data, 256 * 1024)
    trickle.release(5)
    old = asyncio.create_task(patch(client, url, 0, trickle.body()))
    await wait_until(lambda: uploads_in_progress(client, 1), 10, "the PATCH to start")

    async def sent_five() -> bool:
        return trickle.sent == 5 * 256 * 1024
    await wait_until(sent_five, 10, "five pieces to be sent")
    offset = 0

    async def all_in() -> bool:  # each HEAD stops whatever PATCH is running then
        nonlocal offset
        offset = await offset_of(client, url)
        return offset == trickle.sent
    await wait_until(all_in, 10, "HEAD to report every byte sent")
    trickle.release(100)
    outcome = await answer_or_hang_up(old)
    if outcome is not None:  # the answer was read before the connection closed
        await assert_error(outcome, 409, "superseded")
    # either way, the old request's bytes are the offset HEAD reported, and no more
    assert await offset_of(client, url) == offset
    assert (await patch(client, url, offset, data[offset:])).status == 204


async def test_silent_patch_is_dropped_and_its_bytes_kept(make_client: MakeClient, clips: Clips,
                                                          tmp_path: Path) -> None:
    client = await make_client(upload_idle_timeout=0.5)
    data = pad_to(clips.small(), tmp_path / "a.mp4", 2 * MIB).read_bytes()
    url = await created(client, len(data))
    trickle = Trickle(data, 300_000)
    trickle.release(3)
    response = await patch(client, url, 0, trickle.body())  # then it sends nothing more
    await assert_error(response, 408, "idle_timeout")
    assert await offset_of(client, url) == 900_000


async def test_same_upload_limit_as_the_multipart_route(make_client: MakeClient, clips: Clips) -> None:
    client = await make_client(max_uploads=1)
    data = clips.small().read_bytes()
    url = await created(client, len(data))
    _, writer = await open_upload(*address(client), PART_HEAD + data)  # a multipart upload, open
    await wait_until(lambda: uploads_in_progress(client, 1), 10, "the multipart upload to start")
    await assert_error(await patch(client, url, 0, data), 503, "busy")
    await hang_up(writer)
    await wait_until(lambda: uploads_in_progress(client, 0), 10, "the multipart upload to end")
    assert (await patch(client, url, 0, data)).status == 204


async def test_last_byte_runs_the_multipart_checks(make_client: MakeClient, settings: Settings,
                                                   clips: Clips) -> None:
    client = await make_client(max_duration=0.5)
    data = clips.small().read_bytes()  # a second long
    url = await created(client, len(data))
    assert (await patch(client, url, 0, data[:2000])).status == 204
    await assert_error(await patch(client, url, 2000, data[2000:]), 422, "too_long")
    assert files_in(settings.layout.uploads_dir) == []  # its bytes are gone
    assert (await head(client, url)).status == 410
    assert (await client.get("/tasks")).status == 200 and await get_json(client, "/tasks") == []

    # an MP4's first box, then nothing ffmpeg can read: the signature passes, the probe does not
    fake = data[:32] + bytes(5000)
    url = await created(client, len(fake))
    await assert_error(await patch(client, url, 0, fake), 415, "not_video")
    # not a video at all: refused at its first bytes, as the multipart route does
    url = await created(client, 10_000)
    await assert_error(await patch(client, url, 0, b"hello, world" * 100), 415, "not_video")
    assert files_in(settings.layout.uploads_dir) == []
    assert (await unfinished(client))["count"] == 0


async def test_termination(client: AppClient, settings: Settings, clips: Clips) -> None:
    data = clips.small().read_bytes()
    url = await created(client, len(data))
    assert (await patch(client, url, 0, data[:4000])).status == 204
    assert len(tus_files(settings)) == 2  # its bytes and its sidecar
    deleted = await client.delete(url, headers=TUS)
    assert deleted.status == 204 and deleted.headers["Tus-Resumable"] == "1.0.0"
    assert files_in(settings.layout.uploads_dir) == []
    assert (await head(client, url)).status == 410
    await assert_error(await patch(client, url, 4000, data[4000:]), 410, "upload_gone")
    assert (await unfinished(client))["count"] == 0


async def test_expiry(make_client: MakeClient, settings: Settings, clips: Clips) -> None:
    client = await make_client(upload_expiry=0.5)
    data = clips.small().read_bytes()
    url = await created(client, len(data))
    assert (await patch(client, url, 0, data[:4000])).status == 204

    async def swept() -> bool:  # by the server's own sweep: nobody asks about the upload
        return files_in(settings.layout.uploads_dir) == []
    await wait_until(swept, 10, "the expired upload to be removed")
    assert (await unfinished(client))["count"] == 0
    assert (await head(client, url)).status == 410


async def test_method_override(client: AppClient, settings: Settings, clips: Clips) -> None:
    data = clips.small().read_bytes()
    url = await created(client, len(data))
    as_patch = await client.post(url, data=data[:3000], headers={
        **TUS, "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0",
        "Content-Type": OFFSET_STREAM})
    assert as_patch.status == 204 and as_patch.headers["Upload-Offset"] == "3000"
    as_head = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    assert as_head.status == 200 and as_head.headers["Upload-Offset"] == "3000"
    plain = await client.post(url, headers=TUS)
    assert plain.status == 405
    as_delete = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert as_delete.status == 204
    assert files_in(settings.layout.uploads_dir) == []


async def test_cors_preflight_and_exposed_headers(make_client: MakeClient, clips: Clips) -> None:
    client = await make_client(cors_origins=(REACT,))
    preflight = await client.options("/files/" + "0" * 32, headers={
        "Origin": REACT, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "tus-resumable,upload-offset,content-type"})
    assert preflight.status == 204
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    assert "HEAD" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = {name.strip().lower() for name in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"tus-resumable", "upload-offset", "upload-length", "upload-metadata",
            "x-http-method-override", "content-type"} <= allowed
    data = clips.small().read_bytes()
    response = await create(client, len(data), headers={"Origin": REACT})
    assert response.status == 201
    exposed = {name.strip() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Tus-Resumable",
            "Tus-Version", "Tus-Extension", "Tus-Max-Size"} <= exposed
    sent = await patch(client, response.headers["Location"], 0, data[:10], headers={"Origin": REACT})
    assert sent.headers["Access-Control-Allow-Origin"] == REACT
    assert "Upload-Offset" in sent.headers["Access-Control-Expose-Headers"]


async def test_other_sites_cannot_patch(client: AppClient, clips: Clips) -> None:
    data = clips.small().read_bytes()
    url = await created(client, len(data))
    response = await patch(client, url, 0, data, headers={"Origin": "https://evil.example"})
    await assert_error(response, 403, "cross_site")
    assert await offset_of(client, url) == 0


# -- a crash -------------------------------------------------------------------------------

async def test_sigkill_mid_patch_then_resume(tmp_path: Path, clips: Clips) -> None:
    data_dir = tmp_path / "data"
    data = pad_to(clips.small(), tmp_path / "long-trip.mp4", 12 * MIB).read_bytes()
    server = await start_server(data_dir)
    async with server.session() as session:
        url = await created(session, len(data), "long-trip.mp4")
        terminated = await created(session, len(data), "gone.mp4")
        assert (await patch(session, terminated, 0, data[:5000])).status == 204
        assert (await session.delete(terminated, headers=TUS)).status == 204
        expired = await created(session, len(data), "old.mp4")
        assert (await patch(session, expired, 0, data[:5000])).status == 204

        trickle = Trickle(data, MIB)
        trickle.release(4)
        sending = asyncio.create_task(patch(session, url, 0, trickle.body()))
        stored = data_dir / "uploads" / (url.rsplit("/", 1)[-1] + ".tus")

        async def on_disk() -> bool:
            return stored.exists() and stored.stat().st_size >= 2 * MIB
        await wait_until(on_disk, 20, "the PATCH to reach the disk")
        await server.kill()
        with pytest.raises(aiohttp.ClientError):
            await sending
    # the expired one was last written to two days ago
    two_days_ago = time.time() - 2 * 86400
    for name in tus_files(data_dir):
        if name.startswith(expired.rsplit("/", 1)[-1]):
            os.utime(data_dir / "uploads" / name, (two_days_ago, two_days_ago))

    server = await start_server(data_dir)
    try:
        async with server.session() as session:
            offset = await offset_of(session, url)
            assert 0 < offset <= trickle.sent
            # ended before the restart, and still known as ended after it
            assert (await head(session, expired)).status == 410
            assert (await head(session, terminated)).status == 410
            assert sorted(tus_files(data_dir)) == sorted(
                f"{url.rsplit('/', 1)[-1]}{ext}" for ext in (".tus", ".tus.json"))
            health = await get_json(session, "/healthz")
            assert health["unfinished_uploads"]["count"] == 1
            assert health["unreferenced_files"] == []  # the unfinished upload is not a stray

            assert (await patch(session, url, offset, data[offset:])).status == 204
            task_id = url.rsplit("/", 1)[-1]
            assert sha256((data_dir / "uploads" / f"{task_id}.mp4").read_bytes()) == sha256(data)
            done = await wait_for_state(session, task_id, "COMPLETED", "FAILED", timeout=90)
            assert done["state"] == "COMPLETED", done["error"]
            assert len(await download(session, task_id)) > 0
        assert tus_files(data_dir) == []
        assert "its resumable upload had expired" in server.output()
    finally:
        assert await server.stop() == 0
    assert "Traceback" not in server.output()
