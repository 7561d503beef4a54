"""All sizes: an upload asked for at resolution "all" becomes an HLS ladder (every rung no
larger than the source, fMP4 segments, a master playlist) and an MP4 of its top rung; its
files are served by name with Range and caching headers, and leave nothing behind when the
task is deleted, fails, or is started again after a restart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from video_async.ffmpeg import Limits, Media, ladder_args, ladder_rungs
from video_async.layout import DataLayout
from video_async.store import Order

from .support.checks import assert_error, assert_nothing_left, files_in
from .support.clips import Clips, describe, realtime_ffmpeg, video_size
from .support.internals import Settings
from .support.queue import Redis, start_worker, workers_ready
from .support.servers import MakeClient, start_server, stopping
from .support.uploading import (AppClient, Http, delete, download, get_json, transcoding, upload,
                                upload_ok, wait_for_state)
from .support.waiting import in_snapshot, wait_until

TASK_ID = "0123456789abcdef0123456789abcdef"


def hd_clip(clips: Clips) -> Path:
    """2 s of 1080p with sound: a ladder of four rungs, made in seconds."""
    return clips.make("hd-2s.mp4", size="1920x1080", seconds=2,
                      vcodec=("-c:v", "libx264", "-preset", "ultrafast", "-crf", "35"))


def variants(master: str) -> list[tuple[int, int, str]]:
    """(width, height, playlist name) of each rung a master playlist lists."""
    found = re.findall(r"#EXT-X-STREAM-INF:[^\n]*RESOLUTION=(\d+)x(\d+)[^\n]*\n([^\n#]+)", master)
    return [(int(width), int(height), name.strip()) for width, height, name in found]


async def ladder_text(http: Http, task: dict[str, Any], name: str) -> str:
    response = await http.get(f"/tasks/{task['id']}/ladder/{name}")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    return await response.text()


async def completed_ladder(http: Http, clip: Path) -> dict[str, Any]:
    task = await upload_ok(http, clip, "all")
    assert task["resolution"] == "all"
    done = await wait_for_state(http, task["id"], "COMPLETED", "FAILED", timeout=120)
    assert done["state"] == "COMPLETED", done["error"]
    return done


# -- planning, naming, ordering: pure ---------------------------------------------------

def test_rungs_are_never_larger_than_the_source() -> None:
    full_hd = Media(duration=2.0, width=1920, height=1080, video_codec="h264", audio_codec=None)
    assert [(r.width, r.height) for r in ladder_rungs(full_hd)] == [
        (1920, 1080), (1280, 720), (854, 480), (640, 360)]
    caps = [r.max_kbps for r in ladder_rungs(full_hd)]
    assert caps == sorted(caps, reverse=True)
    # a source between two sizes is its own top rung; none is made twice
    between = Media(duration=2.0, width=1066, height=600, video_codec="h264", audio_codec=None)
    assert [min(r.width, r.height) for r in ladder_rungs(between)] == [600, 480, 360]
    tiny = Media(duration=2.0, width=320, height=240, video_codec="h264", audio_codec=None)
    assert [(r.width, r.height, r.max_kbps) for r in ladder_rungs(tiny)] == [(320, 240, 800)]
    # a portrait phone clip: the short side is its width
    portrait = Media(duration=2.0, width=1920, height=1080, video_codec="h264", audio_codec=None,
                     rotation=90)
    assert [(r.width, r.height) for r in ladder_rungs(portrait)][:2] == [(1080, 1920), (720, 1280)]


def test_a_ladders_encoders_start_at_most_8_threads_each(tmp_path: Path) -> None:
    """x264 would start 1.5 threads a core for each rung: on 16 cores, four rungs of 24
    threads each outgrow the default 4 GiB cap (measured), and the task would fail."""
    rungs = ladder_rungs(Media(duration=2.0, width=1920, height=1080, video_codec="h264",
                               audio_codec=None))
    args = ladder_args("ffmpeg", tmp_path / "a.mp4", tmp_path / "a.hls", rungs, False,
                       Limits(max_pixels=1))
    threads = int(args[args.index("-threads") + 1])
    assert 1 <= threads <= 8


def test_an_order_for_all_sizes_round_trips() -> None:
    order = Order.from_json({"filename": "a.mp4", "resolution": "all"})
    assert order.ladder and order.top_size == 1080
    assert Order.from_json(order.order_json()).order_json() == {"filename": "a.mp4", "resolution": "all"}
    assert not Order.from_json({"filename": "a.mp4", "resolution": "720"}).ladder
    with pytest.raises(ValueError):
        Order.from_json({"filename": "a.mp4", "resolution": "every"})


@pytest.mark.parametrize("name", ["../tasks.json", "joined.mp4", "master.m3u8.bak", "v0.1.m4s",
                                  "v0/init.mp4", "v100.m3u8", "", ".."])
def test_a_ladder_file_is_named_as_ffmpeg_names_it_or_refused(tmp_path: Path, name: str) -> None:
    layout = DataLayout(tmp_path)
    with pytest.raises(ValueError):
        layout.ladder_file(TASK_ID, name)


def test_the_ladder_files_ffmpeg_writes_are_allowed(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    for name in ("master.m3u8", "v0.m3u8", "v3.init.mp4", "v2.00017.m4s"):
        assert layout.ladder_file(TASK_ID, name) == tmp_path / "outputs" / f"{TASK_ID}.hls" / name
    assert layout.is_partial(layout.partial_ladder(TASK_ID))


# -- through the server ------------------------------------------------------------------

async def test_all_sizes_makes_a_ladder_and_an_mp4_of_its_top_rung(
        client: AppClient, clips: Clips, settings: Settings) -> None:
    done = await completed_ladder(client, hd_clip(clips))
    assert done["ladder_url"] == f"/tasks/{done['id']}/ladder/master.m3u8"
    assert done["display"]["resolution"] == "all sizes, up to 1080p"
    master = await ladder_text(client, done, "master.m3u8")
    rungs = variants(master)
    assert [(w, h) for w, h, _ in rungs] == [(1920, 1080), (1280, 720), (854, 480), (640, 360)]
    bandwidths = [int(b) for b in re.findall(r"[:,]BANDWIDTH=(\d+)", master)]
    assert bandwidths == sorted(bandwidths, reverse=True) and len(bandwidths) == 4

    for width, height, name in rungs:
        playlist = await ladder_text(client, done, name)
        assert "#EXT-X-ENDLIST" in playlist and "#EXT-X-PLAYLIST-TYPE:VOD" in playlist
        init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', playlist)
        assert init, playlist
        segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
        assert segments and all(s.endswith(".m4s") for s in segments)
        # each rung is what the master says: its init segment and first media segment,
        # end to end, are a fragment of an MP4 that size
        joined = settings.layout.data_dir / f"rung-{height}.mp4"
        parts = [await (await client.get(f"/tasks/{done['id']}/ladder/{part}")).read()
                 for part in (init.group(1), segments[0])]
        joined.write_bytes(b"".join(parts))
        assert video_size(describe(joined)) == (width, height)
        joined.unlink()

    # the download is the top rung, whole, with its index first
    mp4 = settings.layout.data_dir / "download.mp4"
    mp4.write_bytes(await download(client, done["id"]))
    said = describe(mp4)
    assert video_size(said) == (1920, 1080) and "Audio: aac" in said
    assert done["output"]["width"] == 1920 and done["output"]["height"] == 1080
    assert 1.5 < done["output"]["duration"] < 2.5


async def test_ladder_files_are_served_with_range_and_caching(client: AppClient, clips: Clips) -> None:
    done = await completed_ladder(client, clips.small())
    master = await ladder_text(client, done, "master.m3u8")
    [(_, _, playlist_name)] = variants(master)  # a 240p source: one rung, its own size
    playlist = await ladder_text(client, done, playlist_name)
    segment = next(line for line in playlist.splitlines() if line.endswith(".m4s"))
    url = f"/tasks/{done['id']}/ladder/{segment}"
    whole = await client.get(url)
    assert whole.status == 200
    assert whole.headers["Content-Type"] == "video/iso.segment"
    assert "immutable" in whole.headers["Cache-Control"]
    assert whole.headers["Accept-Ranges"] == "bytes"
    body = await whole.read()
    part = await client.get(url, headers={"Range": "bytes=10-109"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 10-109/{len(body)}"
    assert await part.read() == body[10:110]
    again = await client.get(url, headers={"If-None-Match": whole.headers["ETag"]})
    assert again.status == 304


async def test_ladder_names_from_a_request_never_reach_the_disk(
        client: AppClient, clips: Clips) -> None:
    done = await completed_ladder(client, clips.small())
    for name in ("joined.mp4", "..%2Ftasks.json", "v9.m3u8", "master.m3u8%00"):
        await assert_error(await client.get(f"/tasks/{done['id']}/ladder/{name}"), 404, "not_found")
    single = await upload_ok(client, clips.small(), "480")
    await wait_for_state(client, single["id"], "COMPLETED")
    assert (await get_json(client, f"/tasks/{single['id']}"))["ladder_url"] is None
    await assert_error(await client.get(f"/tasks/{single['id']}/ladder/master.m3u8"), 404, "no_ladder")


async def test_a_resolution_is_one_offered_or_all(client: AppClient, clips: Clips) -> None:
    response = await upload(client, clips.small(), "every")
    await assert_error(response, 400, "bad_resolution")
    assert "all" in (await response.json())["error"]["message"]


# -- nothing left behind ------------------------------------------------------------------

async def test_delete_removes_every_rung(client: AppClient, clips: Clips, settings: Settings) -> None:
    done = await completed_ladder(client, clips.small())
    assert f"{done['id']}.hls" in files_in(settings.layout.outputs_dir)
    await delete(client, done["id"])
    await assert_nothing_left(client, settings)


async def test_delete_mid_ladder_removes_what_was_written(
        make_client: MakeClient, clips: Clips, settings: Settings, tmp_path: Path) -> None:
    client = await make_client(ffmpeg=str(realtime_ffmpeg(tmp_path)))  # 12 s, on any machine
    task = await upload_ok(client, clips.long(), "all")
    await transcoding(client, task["id"])  # the ladder's one ffmpeg reports its progress
    partial = settings.layout.partial_ladder(task["id"])

    async def segments_written() -> bool:
        return partial.is_dir() and any(name.endswith(".m4s") for name in files_in(partial))
    await wait_until(segments_written, 60, "the ladder's first segments")
    await delete(client, task["id"])
    await assert_nothing_left(client, settings)


async def test_a_failed_ladder_leaves_nothing_behind(
        make_client: MakeClient, clips: Clips, settings: Settings, tmp_path: Path) -> None:
    # the realtime ffmpeg takes 12 s for this clip on any machine: past the job's time limit
    client = await make_client(ffmpeg=str(realtime_ffmpeg(tmp_path)), job_timeout=4.0)
    task = await upload_ok(client, clips.long(), "all")
    failed = await wait_for_state(client, task["id"], "FAILED", "COMPLETED", timeout=60)
    assert failed["state"] == "FAILED" and "time limit" in failed["error"]
    assert failed["display"]["resolution"] == "all sizes"
    assert files_in(settings.layout.outputs_dir) == []


# -- restarts -------------------------------------------------------------------------------

async def test_a_ladder_task_survives_a_restart(tmp_path: Path, clips: Clips) -> None:
    data_dir = tmp_path / "data"
    server = await start_server(data_dir)
    try:
        async with server.session() as session:
            done = await completed_ladder(session, clips.small())
            await in_snapshot(data_dir, done["id"], "COMPLETED")
            master = await ladder_text(session, done, "master.m3u8")
    finally:
        assert await server.stop() == 0

    server = await start_server(data_dir)
    try:
        async with server.session() as session:
            again = await get_json(session, f"/tasks/{done['id']}")
            assert again["state"] == "COMPLETED" and again["resolution"] == "all"
            assert again["ladder_url"] == done["ladder_url"]
            assert await ladder_text(session, again, "master.m3u8") == master
            assert (await get_json(session, "/healthz"))["unreferenced_files"] == []
            await delete(session, done["id"])
            assert files_in(data_dir / "outputs") == []
    finally:
        assert await server.stop() == 0
    assert "Traceback" not in server.output()


# -- queue workers ----------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [True, False], ids=["shared folder", "own folder"])
async def test_a_queue_worker_makes_the_ladder(tmp_path: Path, clips: Clips, redis: Redis,
                                               shared: bool) -> None:
    """In a shared folder, or in one of its own: then every file of the ladder travels
    back over HTTP, and the server serves it as its own."""
    data_dir = tmp_path / "data"
    token = "w0rker-t0ken-for-ladders"
    server = await start_server(data_dir, "--queue", redis.url, "--worker-token", token)
    worker = await (start_worker(data_dir, redis.url) if shared else start_worker(
        tmp_path / "own", redis.url, "--server", server.url, "--worker-token", token))
    async with stopping(server, worker), server.session() as session:
        await workers_ready(session, 1)
        done = await completed_ladder(session, clips.small())
        assert worker.completed(done["id"])
        master = await ladder_text(session, done, "master.m3u8")
        assert [(w, h) for w, h, _ in variants(master)] == [(320, 240)]
        assert done["display"]["resolution"] == "all sizes, up to 240p"
        rung = await ladder_text(session, done, "v0.m3u8")
        assert "v0.init.mp4" in rung and ".m4s" in rung
        if not shared:  # the worker's copies are gone once delivered
            assert files_in(tmp_path / "own" / "outputs") == []
        await delete(session, done["id"])
        assert files_in(data_dir / "outputs") == []
