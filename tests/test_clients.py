"""Hostile clients: what one client may hold of the server, and what the server shows
of itself to others (the files it writes, its logs, its redirects, its refusals)."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .support import tus
from .support.checks import assert_error, assert_nothing_left
from .support.clips import Clips
from .support.internals import Settings
from .support.raw import BOUNDARY, address, exchange, hang_up, post_raw
from .support.servers import MakeClient, Serve, running_server, session_from, url_of
from .support.uploading import AppClient, Http, get_json, upload_ok, wait_for_state
from .support.waiting import in_snapshot, wait_until


async def test_the_data_dir_is_private_whatever_the_umask(tmp_path: Path, clips: Clips) -> None:
    data_dir = tmp_path / "data"
    async with running_server(data_dir, umask=0o000) as server, server.session() as session:
        task = await upload_ok(session, clips.small(), "480")
        await wait_for_state(session, task["id"], "COMPLETED")
        await in_snapshot(data_dir, task["id"], "COMPLETED")
        unfinished = await tus.created(session, 1000)
        assert (await tus.patch(session, unfinished, 0, clips.small().read_bytes()[:500])).status == 204
        ended = await tus.created(session, 1000)
        assert (await session.delete(ended, headers=tus.TUS)).status == 204
    kinds = {path.relative_to(data_dir).as_posix(): stat.S_IMODE(path.stat().st_mode)
             for path in [data_dir, *data_dir.rglob("*")]}
    # the kinds of file the server writes, each seen at least once
    names = " ".join(kinds)
    for expected in ("uploads/", "outputs/", ".mp4", ".jpg", ".tus", ".tus.json", "tasks.json",
                     "tasks.json.lock", "resumable-ended.json"):
        assert expected in names, names
    opened = {name: oct(mode) for name, mode in kinds.items()
              if mode != (0o700 if (data_dir / name).is_dir() else 0o600)}
    assert opened == {}


# -- unfinished resumable uploads ---------------------------------------------------------

FLOODER, NEIGHBOUR = "127.0.0.2", "127.0.0.1"


async def flood(http: Http, length: int, at_most: int = 400) -> tuple[list[str], aiohttp.ClientResponse]:
    """Empty creations, as fast as they are answered, until one is refused: the uploads
    made, and the refusal."""
    made: list[str] = []
    for _ in range(at_most):
        response = await tus.create(http, length)
        if response.status != 201:
            return made, response
        made.append(response.headers["Location"])
    pytest.fail(f"{at_most} creations of {length} bytes each, and none refused")


async def test_one_clients_flood_of_empty_creations_leaves_room_for_others(
        serve: Serve, clips: Clips, settings: Settings) -> None:
    server = await serve()
    async with session_from(FLOODER, url_of(server)) as flooder, \
            session_from(NEIGHBOUR, url_of(server)) as neighbour:
        made, refused = await flood(flooder, settings.max_upload_bytes)
        await assert_error(refused, 429, "too_many_unfinished")
        assert int(refused.headers["Retry-After"]) >= 1
        assert 1 <= len(made) <= settings.max_unfinished_per_client

        # the neighbour's uploads go through, both kinds
        await upload_ok(neighbour, clips.small(), "480")
        data = clips.small().read_bytes()
        mine = await tus.created(neighbour, len(data))
        assert (await tus.patch(neighbour, mine, 0, data)).status == 204
        assert (await get_json(neighbour, f"/tasks/{mine.rpartition('/')[2]}"))["size"] == len(data)

        # the operator sees the flood, and ends it
        listed = await get_json(neighbour, "/files")
        assert sorted(upload["url"] for upload in listed) == sorted(made)
        assert {(upload["client"], upload["offset"], upload["length"]) for upload in listed} == {
            (FLOODER, 0, settings.max_upload_bytes)}
        assert all(upload["holds_room"] and upload["idle_seconds"] >= 0 for upload in listed)
        assert (await get_json(neighbour, "/healthz"))["unfinished_uploads"]["count"] == len(made)
        for url in made:
            assert (await neighbour.delete(url, headers=tus.TUS)).status == 204
        assert await get_json(neighbour, "/files") == []
        assert (await tus.create(flooder, settings.max_upload_bytes)).status == 201


async def test_an_idle_upload_holds_only_what_it_has_until_it_resumes(
        serve: Serve, clips: Clips) -> None:
    server = await serve(max_unfinished_per_client=2, reserve_idle=0.5)
    data = clips.small().read_bytes()
    async with session_from(FLOODER, url_of(server)) as client:
        first = await tus.created(client, len(data))
        assert (await tus.patch(client, first, 0, data[:1000])).status == 204
        await tus.created(client, len(data))
        refused = await tus.create(client, len(data))
        await assert_error(refused, 429, "too_many_unfinished")

        async def all_idle() -> bool:
            return not any(upload["holds_room"] for upload in await get_json(client, "/files"))
        await wait_until(all_idle, 10, "the client's uploads to go idle")
        # idle, they hold only what they have: room for two more
        later = [await tus.created(client, len(data)) for _ in range(2)]
        # the idle one must find room again to go on, and the client has none
        await assert_error(await tus.patch(client, first, 1000, data[1000:]), 429,
                           "too_many_unfinished")
        assert await tus.offset_of(client, first) == 1000
        assert (await client.delete(later[0], headers=tus.TUS)).status == 204
        assert (await tus.patch(client, first, 1000, data[1000:])).status == 204


async def test_a_creation_whose_body_is_past_its_length_leaves_nothing(
        client: AppClient, clips: Clips, settings: Settings) -> None:
    video = clips.small().read_bytes()[:20]

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        yield video

    for body in (video, streamed()):
        response = await client.post("/files", data=body, headers={
            **tus.TUS, "Content-Type": tus.OFFSET_STREAM, "Upload-Length": "10",
            "Upload-Metadata": tus.metadata(filename="clip.mp4", resolution="480")})
        await assert_error(response, 413, "past_length")
    await assert_nothing_left(client, settings)
    assert (await get_json(client, "/healthz"))["unfinished_uploads"]["count"] == 0
    assert await get_json(client, "/files") == []


# -- behind a proxy, in the log, in redirects ----------------------------------------------

TOKEN = "t0ken-for-tests"


async def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", f"--token={TOKEN}",
                              "--trusted-proxy", FLOODER) as server:
        for address, secure in ((FLOODER, True), (NEIGHBOUR, False)):
            async with session_from(address, server.url) as session, session.get(
                    f"/?token={TOKEN}", allow_redirects=False,
                    headers={"X-Forwarded-Proto": "https"}) as response:
                assert response.status == 303
                cookie = response.cookies[f"video_async_token_{server.port}"]
                assert bool(cookie["secure"]) is secure, (address, response.headers)
                assert cookie["httponly"] and cookie["samesite"] == "Strict"


async def test_the_token_never_reaches_the_log(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", f"--token={TOKEN}") as server, \
            server.session() as session:
        for referer in (f"{server.url}/?token={TOKEN}", f"{server.url}/tasks?a=1&token={TOKEN}"):
            async with session.get("/nowhere", headers={
                    "Authorization": f"Bearer {TOKEN}", "Referer": referer}) as response:
                assert response.status == 404
        async with session.get(f"/?x=1&token={TOKEN}", allow_redirects=False) as response:
            assert response.status == 303
        await server.printed(r'GET /\?x=1&token=\(hidden\)')
        await server.printed(r'"GET /nowhere HTTP/1.1" 404 .*"http://[^"]*/tasks\?a=1&token=\(hidden\)"')
        logged = [line for line in server.output().splitlines()
                  if TOKEN in line and not line.strip().startswith("http://")]
        assert logged == []


@pytest.mark.parametrize("target", ["//evil.example/", "/\\evil.example/", "///evil.example/",
                                    "/%2F/evil.example/"])
async def test_the_token_links_redirect_stays_on_this_site(make_client: MakeClient,
                                                           target: str) -> None:
    client = await make_client(token=TOKEN)
    status, headers, _ = await exchange(*address(client), (
        f"GET {target}?token={TOKEN}&keep=1 HTTP/1.1\r\nHost: localhost\r\n"
        "Connection: close\r\n\r\n").encode())
    assert status == 303
    location = headers["location"]
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    assert location.endswith("?keep=1") and TOKEN not in location


async def test_headers_sent_a_byte_at_a_time_are_cut_off(make_client: MakeClient) -> None:
    client = await make_client(header_timeout=1.0, token=TOKEN)
    reader, writer = await asyncio.open_connection(*address(client))

    async def dribble() -> None:
        """A header line that never ends, a byte every tenth of a second (pacing, as a
        slow link would send it, not waiting for anything)."""
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /tasks HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 10_000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)

    loop = asyncio.get_running_loop()
    started = loop.time()
    dribbling = asyncio.create_task(dribble())
    try:
        async with asyncio.timeout(4):  # the limit, and room for a loaded machine
            assert await reader.read() == b""  # closed, unanswered
        assert not dribbling.done()  # while the client was still sending
    finally:
        dribbling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dribbling
        await hang_up(writer)
    assert loop.time() - started >= 0.9


async def test_refusals_the_app_can_shape_are_json(client: AppClient, settings: Settings) -> None:
    missing = await client.get("/static/nothing-here.js")
    await assert_error(missing, 404, "not_found")
    assert missing.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/static/app.js")).status == 200

    # a part name with a quote its client did not escape: aiohttp cannot read the header
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"; x=y.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n").encode()
    odd = await post_raw(client, head + b"\x00" * 5000 + f"\r\n--{BOUNDARY}--\r\n".encode())
    await assert_error(odd, 400, "bad_multipart")
    message = (await odd.json())["error"]["message"]
    assert "None" not in message and "Content-Disposition" in message
    await assert_nothing_left(client, settings)
