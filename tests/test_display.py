"""Every text on a task card, from the task alone: the badge, the resolution it is (or will
be) made at, its size and length, and the one status line for each state."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from .support.internals import Media, Output, State, a_task, card_texts, one_of, ordinal, time_left

pytestmark = pytest.mark.unit

SOURCE_360 = Media(duration=62.5, width=640, height=360, video_codec="h264", audio_codec=None)


def texts(tmp_path: Path, queue_position: int | None = None, **fields: object) -> dict[str, str]:
    task = a_task(tmp_path / "a.mp4")
    for name, value in fields.items():
        setattr(task, name, value)
    return card_texts(task, queue_position)


@pytest.mark.parametrize(("position", "status"), [
    (1, "Waiting: next in line"), (4, "Waiting: number 4 in the queue"), (None, "Waiting")])
def test_a_queued_card_says_its_place(tmp_path: Path, position: int | None, status: str) -> None:
    shown = texts(tmp_path, position)
    assert (shown["label"], shown["status"]) == ("Queued", status)


@pytest.mark.parametrize(("eta", "status"), [
    (None, "Transcoding: 40%"), (12.3, "Transcoding: 40%, about 12 s left"),
    (0.2, "Transcoding: 40%, about 1 s left"), (130, "Transcoding: 40%, about 2 min left")])
def test_a_running_card_says_how_far_and_how_long(tmp_path: Path, eta: float | None,
                                                  status: str) -> None:
    shown = texts(tmp_path, state=State.PROCESSING, progress=40, eta_seconds=eta)
    assert (shown["label"], shown["status"]) == ("Processing", status)


def test_a_failed_card_says_why_and_what_ffmpeg_said(tmp_path: Path) -> None:
    shown = texts(tmp_path, state=State.FAILED, error="The file is damaged.",
                  error_detail="moov atom not found")
    assert (shown["label"], shown["status"], shown["detail"]) == (
        "Failed", "The file is damaged.", "ffmpeg said: moov atom not found")
    assert texts(tmp_path, state=State.FAILED)["status"] == "Failed."


def test_a_completed_card_shows_what_was_made(tmp_path: Path) -> None:
    output = Output(size=3 * 1024 * 1024, width=854, height=480, duration=62.0)
    source = Media(duration=62.5, width=1280, height=720, video_codec="h264", audio_codec="aac")
    shown = texts(tmp_path, state=State.COMPLETED, media=source, output=output,
                  size=10 * 1024 * 1024)
    assert shown == {"label": "Completed", "resolution": "480p", "size": "10 MiB",
                     "uploaded": shown["uploaded"], "duration": "1:02", "output": "→ 3 MiB",
                     "status": "", "detail": ""}


def test_an_output_cut_short_is_said_with_ffmpegs_reason(tmp_path: Path) -> None:
    output = Output(size=1000, width=640, height=360, duration=20.0,
                    source_warning="Packet corrupt")
    shown = texts(tmp_path, state=State.COMPLETED, media=SOURCE_360, output=output)
    assert shown["status"] == ("Only 20.0 s of 62.5 s could be read: the rest of the file is "
                               "missing or damaged.")
    assert shown["detail"] == "ffmpeg said: Packet corrupt"
    # a last frame or two less, or a tenth of it, is not "cut short", and ffmpeg's grumble
    # is not shown
    for made in (62.2, 57.0):
        nearly = Output(size=1000, width=640, height=360, duration=made, source_warning="Packet corrupt")
        shown = texts(tmp_path, state=State.COMPLETED, media=SOURCE_360, output=nearly)
        assert (shown["status"], shown["detail"]) == ("", ""), made


def test_a_smaller_source_is_named_by_what_it_will_be(tmp_path: Path) -> None:
    # asked for 480, from a 360p source: never upscaled, so named 360p before and after
    assert texts(tmp_path, media=SOURCE_360)["resolution"] == "kept at 360p: the source is smaller"
    made = Output(size=1, width=640, height=360, duration=62.5)
    assert texts(tmp_path, state=State.COMPLETED, media=SOURCE_360, output=made)["resolution"] == \
        "kept at 360p: the source is smaller"
    # a failure will make nothing: it shows what was asked
    assert texts(tmp_path, state=State.FAILED, media=SOURCE_360)["resolution"] == "480p"
    assert texts(tmp_path)["resolution"] == "480p"  # not probed yet: what was asked


def test_a_card_shows_no_length_it_does_not_know(tmp_path: Path) -> None:
    unknown = Media(duration=None, width=1280, height=720, video_codec="vp9", audio_codec=None)
    assert texts(tmp_path, media=unknown)["duration"] == ""
    assert texts(tmp_path)["duration"] == ""


@pytest.mark.parametrize(("number", "text"), [
    (1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th"),
    (21, "21st"), (22, "22nd"), (101, "101st"), (111, "111th")])
def test_ordinal(number: int, text: str) -> None:
    assert ordinal(number) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "about 1 s left"), (59.4, "about 59 s left"), (60, "about 1 min left"),
    (3600, "about 60 min left")])
def test_time_left(seconds: float, text: str) -> None:
    assert time_left(seconds) == text


def test_one_of() -> None:
    assert one_of((480, 720, 1080)) == "480, 720 or 1080"
    assert one_of([".mp4", ".mov"], "and") == ".mp4 and .mov"
    assert one_of(["only"]) == "only"


def test_a_retry_time_is_read_on_the_servers_clock(tmp_path: Path) -> None:
    moment = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    shown = texts(tmp_path, state=State.FAILED, error="Broken.", retries=3, retried_at=moment)
    assert shown["status"] == (f"Retried at {moment.astimezone():%H:%M} (3rd retry), "
                               "failed again: Broken.")


def test_each_card_says_when_it_was_uploaded(tmp_path: Path) -> None:
    """Two cards of the same file are told apart by when they came in."""
    moment = datetime(2026, 3, 7, 9, 5, tzinfo=UTC)
    local = moment.astimezone()
    shown = texts(tmp_path, created_at=moment)["uploaded"]
    assert shown == f"{local.day} {local:%b} {local.year}, {local:%H:%M}"
    assert shown.startswith(("6 Mar 2026, ", "7 Mar 2026, "))  # whatever this machine's zone
