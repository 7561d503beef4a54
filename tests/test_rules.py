"""Each rule has one home, and what it says reaches every place that shows it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from .support.clips import Clips
from .support.internals import RESOLUTIONS, SOURCE_EXTENSIONS, DataLayout, Settings
from .support.raw import post_named
from .support.uploading import AppClient, upload_ok, wait_for_state


@pytest.mark.unit
def test_flags_default_to_the_settings_defaults() -> None:
    assert Settings.from_args([], environ={}) == Settings()


@pytest.mark.unit
def test_generated_names_are_ours_and_nothing_else_is(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    task_id = "0" * 32
    for extension in SOURCE_EXTENSIONS:
        assert layout.ours(f"uploads/{task_id}{extension}", task_id, "source") == \
            layout.source(task_id, extension)
    assert layout.ours(f"outputs/{task_id}.mp4", task_id, "output") == layout.output(task_id, ".mp4")
    for stored in (f"uploads/{task_id}.txt", f"../uploads/{task_id}.mp4", "/etc/passwd",
                   f"outputs/{'1' * 32}.mp4", f"uploads/{task_id}.partial"):
        with pytest.raises(ValueError):
            layout.ours(stored, task_id, "source" if "uploads" in stored else "output")
    assert layout.is_partial(layout.partial_upload(task_id))
    assert layout.is_partial(layout.partial_output(task_id, ".mp4"))
    assert not layout.is_partial(layout.output(task_id, ".mp4"))


async def test_the_page_offers_what_the_server_accepts(client: AppClient) -> None:
    page = await (await client.get("/")).text()
    for resolution in RESOLUTIONS:
        assert f'name="resolution" value="{resolution}"' in page
    assert f'accept="{",".join(SOURCE_EXTENSIONS)}"' in page
    assert f'data-extensions="{",".join(SOURCE_EXTENSIONS)}"' in page


async def test_a_quoted_name_is_listed_as_typed(client: AppClient, clips: Clips) -> None:
    """Browsers and curl send '"' in a file name as %22 (HTML's form encoding)."""
    response = await post_named(client, clips.small().read_bytes(), "my %22best%22 take.mp4")
    assert response.status == 201, await response.text()
    assert (await response.json())["filename"] == 'my "best" take.mp4'
    listed = await (await client.get("/tasks")).json()
    assert [task["filename"] for task in listed] == ['my "best" take.mp4']


async def test_escaped_line_breaks_in_a_name_go(client: AppClient, clips: Clips) -> None:
    """A name typed with a line break arrives as %0D%0A (or %0a): decoded, then dropped
    with the other control characters, so it never reaches a header or the log as one."""
    response = await post_named(client, clips.small().read_bytes(), "two%0D%0Alines%0a.mp4")
    assert response.status == 201, await response.text()
    task = await response.json()
    assert task["filename"] == "twolines.mp4"
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    disposition = (await client.get(done["download_url"])).headers["Content-Disposition"]
    assert "twolines-240p.mp4" in disposition and "%0" not in disposition


async def test_a_file_in_the_wrong_field_is_named(client: AppClient, clips: Clips,
                                                  settings: Settings) -> None:
    with clips.small().open("rb") as video:
        response = await client.post("/videos/upload", data={"file": video})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "no_file"
    assert error["message"] == "No file in the 'video' field (got a file in 'file')."
    assert not any(settings.layout.uploads_dir.iterdir())


async def test_card_texts_come_with_the_task(client: AppClient, clips: Clips) -> None:
    task = await upload_ok(client, clips.make("wide.mp4", size="640x360"), resolution="720")
    texts = task["display"]
    assert texts["label"] == task["state"].capitalize()
    page = await (await client.get("/")).text()
    assert f'<span class="res">{texts["resolution"]}</span>' in page
    assert f'<span class="size">{texts["size"]}</span>' in page


async def test_a_smaller_source_is_named_by_what_it_is(client: AppClient, clips: Clips,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """640x360 asked for at 1080: never upscaled, and never called 1080p, not even in the log."""
    caplog.set_level(logging.INFO, logger="video_async")
    task = await upload_ok(client, clips.make("wide.mp4", size="640x360"), resolution="1080")
    kept = "kept at 360p: the source is smaller"
    assert task["display"]["resolution"] == kept  # known from the probe, before the transcode
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    assert (done["output"]["width"], done["output"]["height"]) == (640, 360)
    assert done["display"]["resolution"] == kept
    response = await client.get(done["download_url"])
    assert 'filename="wide-360p.mp4"' in response.headers["Content-Disposition"]
    page = await (await client.get("/")).text()
    assert kept in page
    logged = [record.getMessage() for record in caplog.records]
    assert any(line.endswith("bytes, 360p (asked for 1080p)") for line in logged), logged
    assert any(done["id"] in line and line.endswith(": 640x360 (360p)") for line in logged), logged


async def test_output_duration_is_what_a_player_reads(client: AppClient, clips: Clips) -> None:
    clip = clips.make("four.mp4", seconds=4)
    task = await upload_ok(client, clip, resolution="480")
    done = await wait_for_state(client, task["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["error"]
    assert abs(done["output"]["duration"] - 4.0) <= 1 / 25  # within one frame at 25 fps
